"""The client's fast paths (x-acs-date formatted once a second, percent-encoding skipped for unreserved text)
give exactly what the plain computations give."""

from __future__ import annotations

from datetime import datetime
from urllib.parse import quote, urlencode
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from snapbatch.vod.client import VodClient, query_string
from snapbatch.vod.credentials import Credentials
from snapbatch.vod.signing import encode

TEXT = st.one_of(
    st.text(st.characters(exclude_categories=["Cs"])),
    st.text(st.sampled_from(list("aZ09_.~-*+% /&=?#\u00e9\u4e2d\U0001f600\n\x00\u212a")), max_size=20),
)


@settings(max_examples=500, deadline=None)
@given(TEXT)
def test_encode_is_quote_with_tilde_safe(text: str) -> None:
    """encode() percent-encodes every text exactly as quote(text, safe='~') does."""
    assert encode(text) == quote(text, safe="~")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(TEXT, TEXT, max_size=5))
def test_query_string_is_urlencode_of_the_sorted_items(params: dict[str, str]) -> None:
    """query_string() is urlencode(sorted(params.items())) for any names and values."""
    assert query_string(params) == urlencode(sorted(params.items()))


def test_x_acs_date_follows_the_instant_across_a_fall_back_hour() -> None:
    """A clock in a zone with daylight saving gives 01:30:00 twice on the fall-back night, an hour apart
    (fold 0 then fold 1): each request is dated by its own instant, not by the date cached for the first."""
    first = datetime(2026, 11, 1, 1, 30, 0, tzinfo=ZoneInfo("America/New_York"))  # 05:30:00Z (EDT)
    times = iter([first, first.replace(fold=1)])  # 06:30:00Z (EST), an hour later
    client = VodClient("http://127.0.0.1:9", Credentials("LTAIexample0000", "secret"), clock=lambda: next(times))
    dates = [client.signed_request("GetJobDetail", {"JobId": "j"}).headers["x-acs-date"] for _ in range(2)]
    assert dates == ["2026-11-01T05:30:00Z", "2026-11-01T06:30:00Z"]
