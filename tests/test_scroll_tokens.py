"""The emulator's ScrollTokens are bounded as a search service bounds its scroll contexts: one expires
SCROLL_TTL_S after its last use, at most MAX_SCROLLS live ones are kept (the least recently used goes), and a
token that is gone gets VOD's documented error shape, which makes a listing start over."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import anyio

from snapbatch.emulator import Emulator, EmulatorConfig
from snapbatch.emulator.catalogue import MAX_SCROLLS, SCROLL_TTL_S, Catalogue
from snapbatch.emulator.harness import running_emulator
from snapbatch.models import Search
from snapbatch.run.limiter import Limiter, RateWindow
from snapbatch.run.listings import ListingInfo, ListingStore, list_videos
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from snapbatch.vod.signing import sign_v1
from tests.emulated import AK_ID, AK_SECRET

T0 = int(datetime(2026, 1, 1, tzinfo=UTC).timestamp())


class Clock:
    """A monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _catalogue(n: int, **bounds: Any) -> Catalogue:
    catalogue = Catalogue(**bounds)
    for i in range(n):
        created = datetime.fromtimestamp(T0 + i * 60, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        catalogue.add({"VideoId": f"v{i:07d}", "CateId": 7, "CreationTime": created, "Status": "Normal"})
    return catalogue


def _held(catalogue: Catalogue) -> int:
    """How many result indices the live ScrollTokens hold: the memory they keep."""
    return sum(len(scroll.found) for scroll in catalogue.scrolls.values())


def test_a_long_running_emulators_scroll_tokens_stay_bounded() -> None:
    """3,000 searches that each start a traversal, over most of an hour of the emulator's clock: never more than the
    cap of live tokens (so never more than cap x results held), and once every token has sat unused past its
    expiry, the next search leaves only its own."""
    catalogue = _catalogue(100, max_scrolls=8)
    clock = Clock()
    for i in range(3_000):
        clock.now += 1.0
        catalogue.search({"Match": "CateId = 7", "PageNo": "1", "PageSize": "100"}, f"r{i}", clock.now)
        assert len(catalogue.scrolls) <= 8
    assert _held(catalogue) == 8 * 100
    clock.now += SCROLL_TTL_S
    catalogue.search({"Match": "CateId = 7", "PageNo": "1", "PageSize": "100"}, "last", clock.now)
    assert len(catalogue.scrolls) == 1 and _held(catalogue) == 100


def _signed(action: str, params: dict[str, str], nonce: int) -> str:
    query = {
        "Action": action,
        "Version": "2017-03-21",
        "Format": "JSON",
        "AccessKeyId": AK_ID,
        "SignatureMethod": "HMAC-SHA1",
        "SignatureVersion": "1.0",
        "SignatureNonce": f"nonce-{nonce}",
        "Timestamp": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **params,
    }
    query["Signature"] = sign_v1("GET", query, AK_SECRET)
    return "/?" + urlencode(query)


def test_the_emulator_keeps_its_default_cap_of_live_tokens() -> None:
    """Through the whole service (signed SearchMedia calls), the default cap holds: MAX_SCROLLS live tokens."""
    clock = Clock()
    catalogue = _catalogue(150)
    emulator = Emulator(
        EmulatorConfig(credentials={AK_ID: (AK_SECRET, None)}, catalogue=catalogue, search_qps=1e9), mono=clock
    )
    for i in range(MAX_SCROLLS * 3):
        clock.now += 0.5
        reply = emulator.handle("GET", _signed("SearchMedia", {"Match": "CateId = 7"}, i), {"host": "x"}, b"")
        assert reply.status == 200, reply.body
    assert len(catalogue.scrolls) == MAX_SCROLLS


def test_an_expired_or_evicted_token_gets_the_documented_error_shape() -> None:
    """A token used within SCROLL_TTL_S of its last use lives on; one unused for SCROLL_TTL_S, or pushed out
    by the cap, is answered HTTP 400 with RequestId, HostId, Code InvalidParameter, a Message naming the
    ScrollToken, and Recommend: VOD's error shape (vod-api.md, "Errors")."""
    clock = Clock()
    catalogue = _catalogue(450, max_scrolls=2)
    emulator = Emulator(
        EmulatorConfig(credentials={AK_ID: (AK_SECRET, None)}, catalogue=catalogue, search_qps=1e9), mono=clock
    )
    calls = iter(range(100))

    def search(page: int, token: str | None = None) -> Any:
        params = {"Match": "CateId = 7", "PageNo": str(page), "PageSize": "100"}
        if token:
            params["ScrollToken"] = token
        return emulator.handle("GET", _signed("SearchMedia", params, next(calls)), {"host": "x"}, b"")

    first = search(1)
    token = first.body["ScrollToken"]
    clock.now += SCROLL_TTL_S - 1
    assert search(2, token).status == 200  # used in time: its life starts again
    clock.now += SCROLL_TTL_S - 1
    assert search(3, token).status == 200
    clock.now += SCROLL_TTL_S
    expired = search(4, token)
    other = search(1).body["ScrollToken"]
    search(1), search(1)  # two newer traversals push `other` out (cap 2)
    evicted = search(2, other)
    for reply in (expired, evicted):
        assert reply.status == 400
        assert set(reply.body) == {"RequestId", "HostId", "Code", "Message", "Recommend"}
        assert reply.body["Code"] == "InvalidParameter" and "ScrollToken" in reply.body["Message"]


def test_a_listing_whose_token_expired_starts_over_and_gets_the_exact_set(tmp_path: Path) -> None:
    """A listing paused past the token's expiry (a long backoff, a resumed run) is told so, lists again from
    page 1, and freezes exactly the matching videos, each once."""
    clock = Clock()
    catalogue = _catalogue(450)
    expected = [f"v{i:07d}" for i in reversed(range(450))]  # CreationTime:Desc
    config = EmulatorConfig(credentials={AK_ID: (AK_SECRET, None)}, catalogue=catalogue, search_qps=1e9)
    store = ListingStore(tmp_path / "s.sqlite3")
    expired_once: list[int] = []

    def on_page(info: ListingInfo) -> None:
        # runs before the next page is asked for: the emulator sees that call after the token's expiry
        if info.pages == 2 and not expired_once:
            expired_once.append(info.listed)
            clock.now += SCROLL_TTL_S + 1

    async def go(url: str) -> ListingInfo:
        async with VodClient(url, Credentials(AK_ID, AK_SECRET, None, "test")) as client:
            limiter = Limiter(RateWindow(1000))
            return await list_videos(store, "j", Search("CateId = 7"), client, limiter, on_page=on_page)

    with running_emulator(Emulator(config, mono=clock)) as served:
        try:
            info = anyio.run(go, served.url)
            videos = list(store.videos("j"))
        finally:
            store.close()
        searches = [c for c in served.emulator.calls if c.get("action") == "SearchMedia"]
    assert expired_once == [200]
    assert [c["status"] for c in searches].count(400) == 1
    assert info.complete and info.listed == 450
    assert videos == expected
