"""Credentials during a run: renewed ahead of expiry without holding up calls, an expired-token answer renewed
and sent again (never counted as the service failing), and a static token that expires stopping cleanly."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from snapbatch.emulator import EmulatorConfig
from snapbatch.emulator.sts import StsConfig
from snapbatch.errors import CredentialsError
from snapbatch.models import ACCEPTED, EXPIRED
from snapbatch.run.limiter import Limiter, RateWindow
from snapbatch.run.runner import RunOptions, run_batch
from snapbatch.run.state import State
from snapbatch.vod.chain import find_provider
from snapbatch.vod.client import VodClient
from snapbatch.vod.credentials import Credentials
from snapbatch.vod.providers import RenewingCredentials, describe
from tests.conftest import CliRunner
from tests.emulated import AK_ID, AK_SECRET, renewing_at_two_thirds, running
from tests.sts import cli_config, ram_role_profile, stand_in
from tests.test_run import _manifest
from tests.test_run_resilience import _state_for


class _Issuer:
    """Numbered credentials valid for ``life_s`` on an injected clock; ``fail`` makes the next fetches raise,
    ``same`` hand back the last ones again (as a cache would)."""

    def __init__(self, clock: list[float], life_s: float = 30.0) -> None:
        self.clock, self.life_s, self.fetches, self.fail, self.same = clock, life_s, 0, False, False

    def __call__(self) -> tuple[Credentials, float]:
        self.fetches += 1
        if self.fail:
            raise OSError("https://sts.example/?AccessKeyId=a&Signature=SIGNATURE-SHOULD-NOT-SHOW refused")
        n = self.fetches - 1 if self.same else self.fetches
        return Credentials(f"STS.{n}", f"secret-{n}", f"token-{n}", "test source"), self.clock[0] + self.life_s


def test_usable_renews_only_once_expired_and_renew_is_single_flight() -> None:
    """Before the expiry (less the guard) calls get the current credentials with no fetch; after it, the
    next call waits for one renewal; a renew() for a token already replaced fetches nothing; when the source
    hands back the very token the service refused, a CredentialsError says to check the clock."""
    clock = [1000.0]
    issuer = _Issuer(clock)
    provider = RenewingCredentials(issuer, "test source", wall=lambda: clock[0])
    assert provider.prime().access_key_id == "STS.1"

    async def go() -> list[str]:
        seen = [(await provider.usable()).access_key_id]
        clock[0] = 1000.0 + 29.5  # inside the last second (the guard): known expired
        seen.append((await provider.usable()).access_key_id)
        seen.append((await provider.renew("token-1")).access_key_id)  # answered for the old token: no fetch
        seen.append((await provider.renew("token-2")).access_key_id)  # the service refused token-2: renew
        issuer.same = True
        with pytest.raises(CredentialsError, match=r"has expired, and no fresh one could be had.*check this machine"):
            await provider.renew("token-3")
        return seen

    assert anyio.run(go) == ["STS.1", "STS.2", "STS.2", "STS.3"]
    assert issuer.fetches == 4


def test_keep_fresh_renews_two_thirds_into_the_life() -> None:
    """The background task renews at two thirds of the credentials' life (before they expire), and logs the
    renewal with the source and the new expiry."""
    clock = [1000.0]
    issuer = _Issuer(clock)
    logged: list[str] = []
    renewed = anyio.Event()

    def log(message: str) -> None:
        logged.append(message)
        renewed.set()

    provider = RenewingCredentials(issuer, "test source", wall=lambda: clock[0], log=log)
    provider.prime()

    async def go() -> str:
        async with anyio.create_task_group() as tg:
            clock[0] = 1000.0 + 19.0  # not yet two thirds (20 s): keep_fresh must not fetch
            tg.start_soon(provider.keep_fresh)
            await anyio.wait_all_tasks_blocked()
            assert issuer.fetches == 1
            clock[0] = 1000.0 + 20.5
            provider.wake()  # the clock jumped: let the task look again
            with anyio.fail_after(30):  # a hang guard only: a regression fails instead of hanging the suite
                await renewed.wait()
            tg.cancel_scope.cancel()
        return provider.current().access_key_id

    assert anyio.run(go) == "STS.2" and issuer.fetches == 2 and provider.renewals == 1
    assert logged == ["credentials renewed from test source, valid until 1970-01-01T00:17:30Z"]


def test_failed_renewals_keep_the_current_credentials_then_stop_without_secrets() -> None:
    """A renewal that fails leaves the still-valid credentials in use and logs why (redacted); once they have
    expired, a call gets a CredentialsError saying they could not be renewed, with no signature in it."""
    clock = [1000.0]
    issuer = _Issuer(clock)
    logged: list[str] = []
    tried = anyio.Event()

    def log(message: str) -> None:
        logged.append(message)
        tried.set()

    provider = RenewingCredentials(issuer, "test source", wall=lambda: clock[0], log=log)
    provider.prime()
    issuer.fail = True

    async def go() -> str:
        async with anyio.create_task_group() as tg:
            clock[0] = 1000.0 + 21.0
            tg.start_soon(provider.keep_fresh)
            with anyio.fail_after(30):  # a hang guard only
                await tried.wait()
            tg.cancel_scope.cancel()
        still = (await provider.usable()).access_key_id
        clock[0] = 1000.0 + 31.0
        with pytest.raises(CredentialsError) as caught:
            await provider.usable()
        return still + " | " + str(caught.value)

    text = anyio.run(go)
    assert text.startswith("STS.1 | the credentials from test source expired at 1970-01-01T00:17:10Z and could not")
    assert logged and logged[0].startswith("cannot renew credentials from test source (OSError: https://sts.example/?…")
    assert "SIGNATURE-SHOULD-NOT-SHOW" not in text + " ".join(logged)


def test_credentials_already_expired_by_this_clock_do_not_trigger_an_exchange_per_call() -> None:
    """Credentials that arrive already past their expiry by this machine's clock (it runs ahead of the
    source's) are used rather than exchanged again at every call or in a loop: at most one exchange a
    second, and a log line says to check the clock."""
    clock = [1000.0]
    fetches: list[float] = []
    logged: list[str] = []
    renewed = anyio.Event()

    def fetch() -> tuple[Credentials, float]:
        fetches.append(clock[0])
        n = len(fetches)
        return Credentials(f"STS.{n}", f"secret-{n}", f"token-{n}", "test source"), clock[0] - 5.0

    def log(message: str) -> None:
        logged.append(message)
        if message.startswith("credentials renewed"):
            renewed.set()

    provider = RenewingCredentials(fetch, "test source", wall=lambda: clock[0], log=log)
    provider.prime()

    async def go() -> list[str]:
        with anyio.fail_after(30):  # a hang guard only: nothing here waits on real time
            async with anyio.create_task_group() as tg:
                tg.start_soon(provider.keep_fresh)
                await anyio.wait_all_tasks_blocked()
                seen = [(await provider.usable()).access_key_id for _ in range(5)]
                assert len(fetches) == 1  # neither the calls nor the background task exchanged again
                clock[0] += 1.5
                provider.wake()
                await renewed.wait()
                tg.cancel_scope.cancel()
        return seen

    assert anyio.run(go) == ["STS.1"] * 5
    assert fetches == [1000.0, 1001.5]
    assert any("check this machine's clock" in message for message in logged)


def test_describe_redacts_urls_and_secret_fields() -> None:
    """Error text from the library loses query strings and the values of secret-named fields."""
    body = '{"AccessKeyId": "STS.x", "AccessKeySecret": "s3cr3t", "SecurityToken": "t0k3n"}'
    text = describe(ValueError(f"GET https://h/?Signature=abc&OIDCToken=t failed; result: {body}"))
    assert "s3cr3t" not in text and "t0k3n" not in text and "abc" not in text
    assert '"AccessKeyId": "STS.x"' in text and "https://h/?…" in text
    xml = describe(
        ValueError("result: <AccessKeySecret>xml-s3cr3t</AccessKeySecret><SecurityToken>xml-t0k3n</SecurityToken>")
    )
    assert "xml-s3cr3t" not in xml and "xml-t0k3n" not in xml and "<AccessKeySecret>***</AccessKeySecret>" in xml
    assert "pa55" not in describe(OSError("GET http://user:pa55@127.0.0.1:9/credentials refused"))


def test_expired_answer_gets_fresh_credentials_and_goes_again(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """VOD answering InvalidSecurityToken.Expired (the stand-in revoked the key early) makes the client fetch
    new credentials through the library (a second AssumeRole over the wire) and return EXPIRED; the next call
    is accepted with the new key."""
    cli_config(tmp_path, [ram_role_profile()])
    with stand_in(monkeypatch, tmp_path) as sts:
        provider = find_provider(sts.env(), tmp_path)
        first = provider.current().access_key_id

        async def go() -> list[Any]:
            async with VodClient(sts.vod_url, provider) as client:
                kinds: list[Any] = [(await client.submit({"VideoId": "v1", "Count": "1"})).kind]
                sts.emulator.config.expiries[first] = 0.0
                expired = await client.submit({"VideoId": "v2", "Count": "1"})
                kinds += [expired.kind, expired.code, (await client.submit({"VideoId": "v2", "Count": "1"})).kind]
                return kinds

        kinds = anyio.run(go)
    assert kinds == [ACCEPTED, EXPIRED, "InvalidSecurityToken.Expired", ACCEPTED]
    issued = [c["issued"] for c in sts.calls("AssumeRole")]
    assert len(issued) == 2 and issued[0] == first and provider.current().access_key_id == issued[1]
    assert [c["ak"] for c in sts.calls("SubmitSnapshotJob")] == [first, issued[1]]
    assert [c["status"] for c in sts.emulator.calls if c.get("code") == "InvalidSecurityToken.Expired"] == [400]


def test_expired_answers_in_a_row_are_not_an_outage() -> None:
    """Waves of expired-token answers (the key revoked every 15 jobs, many calls in flight) each get fresh
    credentials and go again at once: every request is submitted, and even with outage_after=1 the run does
    not take them for the service being down."""
    with running(EmulatorConfig(qps=10_000, latency_ms=(5.0, 5.0), sts=StsConfig())) as emu:
        sts = emu.emulator.sts
        assert sts is not None

        def fetch() -> tuple[Credentials, float]:
            got = sts.issue(3600)
            return Credentials(got["AccessKeyId"], got["AccessKeySecret"], got["SecurityToken"], "stand-in"), 9e9

        provider = RenewingCredentials(fetch, "stand-in")
        provider.prime()
        accepted: list[str] = []

        def revoke(entry: dict[str, Any]) -> None:
            if entry.get("outcome") == "accepted":
                accepted.append(entry["ak"])
                if len(accepted) % 15 == 0:
                    emu.emulator.config.expiries[entry["ak"]] = 0.0

        emu.emulator.observers.append(revoke)

        async def go(state: State) -> tuple[str | None, int, int]:
            async with VodClient(emu.url, provider) as client:
                options = RunOptions(concurrency=20, outage_after=1)
                result = await run_batch(state, client, Limiter(RateWindow(2000)), options)
                return result.stop_reason, result.submitted, result.codes.get("InvalidSecurityToken.Expired", 0)

        with _state_for(emu, 90) as state:
            reason, submitted, expired = anyio.run(go, state)
    assert (reason, submitted) == (None, 90)
    assert expired >= 5  # one wave after each of the 5 revocations that had work left after them
    assert len(set(accepted)) >= 6 and len(accepted) == 90


def test_static_token_that_expires_stops_with_4_and_resumes(cli: CliRunner, tmp_path: Path) -> None:
    """An STS token from the environment that expires: exit 4 with what to do, nothing marked done; with a
    fresh token the next run sends everything."""
    token = "static-token-SHOULD-NOT-SHOW"
    config = EmulatorConfig(credentials={"STS.old": ("old-secret", token)}, expiries={"STS.old": 0.0})
    manifest = _manifest(tmp_path, 5)
    old = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "STS.old", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "old-secret"}
    with running(config) as emu:
        first = cli("run", str(manifest), "--endpoint", emu.url, env={**old, "ALIBABA_CLOUD_SECURITY_TOKEN": token})
        config.credentials["STS.new"] = ("new-secret", "new-token")
        new = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "STS.new", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "new-secret"}
        second = cli(
            "run",
            str(manifest),
            "--endpoint",
            emu.url,
            "--json",
            env={**new, "ALIBABA_CLOUD_SECURITY_TOKEN": "new-token"},
        )
    assert first.code == 4, first.err
    assert "the STS token given (environment) has expired; put a fresh one there and run again" in first.err
    assert token not in first.err and "old-secret" not in first.err
    assert second.code == 0, second.err
    assert json.loads(second.out)["submitted"] == 5


def test_a_run_renews_ahead_of_expiry_in_the_background(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`snapbatch run` keeps its credentials fresh itself: with credentials two thirds into their life (by an
    injected clock that then stands still, so no call ever finds them expired and no answer says so), the
    run's background task exchanges them once and the calls after it are signed with the new key. Slow by nature:
    60 calls at the real 30/s, so that the background renewal lands among them."""
    provider, fetches = renewing_at_two_thirds()
    monkeypatch.setattr("snapbatch.cli.run.find_provider", lambda env, home, profile, log: provider)
    keys: dict[str, tuple[str, str | None]] = {key: (f"secret-{key}", f"token-{key}") for key in ("STS.1", "STS.2")}
    with running(EmulatorConfig(credentials=keys)) as emu:
        r = cli("run", str(_manifest(tmp_path, 60)), "--endpoint", emu.url, "--json")
    assert r.code == 0, r.err
    assert json.loads(r.out)["submitted"] == 60
    assert fetches == ["STS.1", "STS.2"] and provider.renewals == 1
    used = [c["ak"] for c in emu.emulator.calls if c.get("outcome") == "accepted"]
    assert "STS.2" in used and "InvalidSecurityToken.Expired" not in r.err


def test_a_run_whose_credentials_run_out_unrenewed_stops_with_4_having_sent_nothing_expired(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Credentials past their expiry (injected clock) whose source now fails: no call goes out with them,
    the run stops with exit 4 saying they could not be renewed (not that the service answered anything), and
    every request is still pending for the next run."""
    clock = [1000.0]
    issuer = _Issuer(clock)
    provider = RenewingCredentials(issuer, "test source", wall=lambda: clock[0])
    provider.prime()
    issuer.fail = True
    clock[0] = 1000.0 + 31.0
    monkeypatch.setattr("snapbatch.cli.run.find_provider", lambda env, home, profile, log: provider)
    with running(EmulatorConfig(credentials={"STS.1": ("secret-1", "token-1")})) as emu:
        r = cli("run", str(_manifest(tmp_path, 5)), "--endpoint", emu.url, "--json")
    assert r.code == 4, r.err
    assert "stopped: the credentials from test source expired at 1970-01-01T00:17:10Z and could not be" in r.err
    assert "the service answered" not in r.err and "SIGNATURE-SHOULD-NOT-SHOW" not in r.err
    assert [c for c in emu.emulator.calls if c.get("action") == "SubmitSnapshotJob"] == []
    assert json.loads(r.out)["submitted"] == 0


def test_run_across_many_renewals_loses_nothing(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A RamRoleArn run of 120 requests at 30/s (at least 3.9 s, by the limiter) with credentials that last 3 s:
    exit 0, each request accepted exactly once, at least two different keys used (so renewal happened
    mid-run), renewals logged by source, no secret in the log. Rate figures: bench/credentials_refresh.py.
    Slow by nature: the run must outlive one credential's life at the real rate."""
    cli_config(tmp_path, [ram_role_profile()])
    manifest = _manifest(tmp_path, 120)
    with stand_in(monkeypatch, tmp_path, lifetime_s=3.0) as sts:
        r = cli("run", str(manifest), "--endpoint", sts.vod_url, "--json", env=sts.env(HOME=str(tmp_path)))
    accepted = [c for c in sts.calls("SubmitSnapshotJob") if c["outcome"] == "accepted"]
    assert r.code == 0, r.err
    assert json.loads(r.out)["submitted"] == 120
    assert sorted(c["params"]["VideoId"] for c in accepted) == [f"video-{i:05d}" for i in range(120)]
    assert len({c["ak"] for c in accepted}) >= 2 and len(sts.calls("AssumeRole")) >= 2
    assert "(aliyun CLI profile 'default' (RamRoleArn, role" in r.err
    assert "credentials renewed from aliyun CLI profile 'default'" in r.err
    issued = sts.emulator.config.credentials
    assert AK_SECRET not in r.err and not any(
        secret in r.err or token in r.err for secret, token in issued.values() if token
    )
    assert AK_ID in sts.calls("AssumeRole")[0]["ak"]
