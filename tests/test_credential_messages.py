"""Credentials messages quote what a configuration file or the environment says (profile names, modes, types,
role ARNs) through errors.echo: escaped, so terminal escapes are shown and never obeyed, and shortened, so a
huge value is not echoed whole."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from snapbatch.errors import CredentialsError
from snapbatch.vod.chain import chain_sources
from snapbatch.vod.credentials import find_credentials
from snapbatch.vod.providers import describe
from tests.conftest import ROOT, CliRunner
from tests.emulated import AK_ID, AK_SECRET
from tests.sts import cli_config

HOSTILE = "\x1b]0;owned\x07\x1b[2J" + "p" * 5000  # sets the terminal title, clears the screen, runs on
NO_ECS = {"ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true"}


def _assert_shown_safely(message: str) -> None:
    assert "\x1b" not in message and "\x07" not in message
    assert "\\x1b" in message  # escaped, so the reader sees what is there
    assert "p" * 200 not in message and "characters)" in message  # shortened, saying how long it was
    assert len(message) < 1000


Finder = Callable[[dict[str, str], Path, str | None], object]
FINDERS: list[Finder] = [find_credentials, chain_sources]  # without and with the exchange library


@pytest.mark.parametrize("find", FINDERS, ids=["credentials", "chain"])
def test_a_hostile_profile_name_is_escaped_and_shortened(find: Finder, tmp_path: Path) -> None:
    """--profile naming no profile, and the list of profiles there is, are shown escaped and shortened."""
    cli_config(tmp_path, [{"name": HOSTILE, "mode": "AK", "access_key_id": "k", "access_key_secret": "s"}])
    with pytest.raises(CredentialsError) as caught:
        find(NO_ECS, tmp_path, "x" + HOSTILE)
    _assert_shown_safely(str(caught.value))


@pytest.mark.parametrize("find", FINDERS, ids=["credentials", "chain"])
def test_a_hostile_mode_and_profile_name_are_escaped_and_shortened(find: Finder, tmp_path: Path) -> None:
    """A profile whose name and mode carry terminal escapes and run to 5,000 characters: the refusal of the
    mode says which profile and which mode, escaped and shortened."""
    cli_config(tmp_path, [{"name": HOSTILE, "mode": HOSTILE}], current=HOSTILE)
    with pytest.raises(CredentialsError) as caught:
        find(NO_ECS, tmp_path, None)
    message = str(caught.value)
    _assert_shown_safely(message)
    assert message.count("characters)") == 2  # the name and the mode


def test_a_hostile_source_profile_chain_is_escaped(tmp_path: Path) -> None:
    """A ChainableRamRoleArn profile whose source_profile names a missing profile: escaped and shortened."""
    profile = {"name": "jump", "mode": "ChainableRamRoleArn", "ram_role_arn": "acs:ram::1:role/x"}
    cli_config(tmp_path, [{**profile, "source_profile": HOSTILE}], current="jump")
    with pytest.raises(CredentialsError) as caught:
        chain_sources(NO_ECS, tmp_path)
    _assert_shown_safely(str(caught.value))


def test_a_hostile_role_arn_is_escaped_in_the_source_label(tmp_path: Path) -> None:
    """The source label (logged at the start of every run) shows a role ARN from the file escaped and bounded."""
    profile = {"name": "default", "mode": "RamRoleArn", "access_key_id": AK_ID, "access_key_secret": AK_SECRET}
    cli_config(tmp_path, [{**profile, "ram_role_arn": HOSTILE}])
    [source] = chain_sources(NO_ECS, tmp_path)
    _assert_shown_safely(source.label)


def test_run_prints_a_hostile_mode_escaped(cli: CliRunner, tmp_path: Path) -> None:
    """End to end: `run` with such a profile exits 4 and stderr holds no escape character and no 5,000-long run."""
    cli_config(tmp_path, [{"name": HOSTILE, "mode": HOSTILE}], current=HOSTILE)
    r = cli("run", str(ROOT / "jobs.example.yaml"), "--state", str(tmp_path / "s.sqlite3"), env={"HOME": str(tmp_path)})
    assert r.code == 4, r.err
    _assert_shown_safely(r.err)


def test_a_failed_fetch_is_described_escaped() -> None:
    """A credentials source's failure (its text may quote a server's answer) is described without raw escapes."""
    described = describe(RuntimeError("STS said \x1b[2J\x1b]0;owned\x07 no"))
    assert "\x1b" not in described and "\x07" not in described and "\\x1b[2J" in described
