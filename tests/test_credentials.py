"""Credentials: environment, then the aliyun CLI profile, then credentials.ini; never a secret in a message."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from snapbatch.errors import CredentialsError
from snapbatch.vod.credentials import find_credentials

ENV = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIenv", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "env-secret-1"}


def _cli_config(home: Path, profiles: list[dict[str, str]], current: str = "default") -> None:
    (home / ".aliyun").mkdir()
    (home / ".aliyun" / "config.json").write_text(json.dumps({"current": current, "profiles": profiles}))


def _ini(home: Path, body: str) -> None:
    (home / ".alibabacloud").mkdir()
    (home / ".alibabacloud" / "credentials.ini").write_text(body)


def test_environment_first(tmp_path: Path) -> None:
    """The environment wins over a CLI profile; the STS token comes along."""
    _cli_config(tmp_path, [{"name": "default", "mode": "AK", "access_key_id": "cli", "access_key_secret": "s"}])
    creds = find_credentials({**ENV, "ALIBABA_CLOUD_SECURITY_TOKEN": "tok"}, tmp_path)
    assert (creds.access_key_id, creds.access_key_secret, creds.security_token) == ("LTAIenv", "env-secret-1", "tok")
    assert creds.source == "environment"


def test_half_set_environment_is_an_error(tmp_path: Path) -> None:
    """An id without its secret says which variable is missing, not the value of the other."""
    with pytest.raises(CredentialsError, match="ALIBABA_CLOUD_ACCESS_KEY_SECRET is not set"):
        find_credentials({"ALIBABA_CLOUD_ACCESS_KEY_ID": "LTAIenv"}, tmp_path)


def test_cli_profile_current_named_and_env_selected(tmp_path: Path) -> None:
    """The CLI's `current`, else --profile, else ALIBABA_CLOUD_PROFILE picks the profile; StsToken mode works."""
    _cli_config(
        tmp_path,
        [
            {"name": "default", "mode": "AK", "access_key_id": "id-default", "access_key_secret": "s1"},
            {
                "name": "prod",
                "mode": "StsToken",
                "access_key_id": "id-prod",
                "access_key_secret": "s2",
                "sts_token": "t2",
            },
        ],
        current="default",
    )
    assert find_credentials({}, tmp_path).access_key_id == "id-default"
    prod = find_credentials({}, tmp_path, profile="prod")
    assert (prod.access_key_id, prod.security_token, prod.source) == ("id-prod", "t2", "aliyun CLI profile 'prod'")
    assert find_credentials({"ALIBABA_CLOUD_PROFILE": "prod"}, tmp_path).access_key_id == "id-prod"
    assert find_credentials({"ALIBABA_CLOUD_PROFILE": "prod"}, tmp_path, "default").access_key_id == "id-default"


def test_cli_profile_needing_token_exchange(tmp_path: Path) -> None:
    """RamRoleArn and the like are refused with what to do instead."""
    _cli_config(tmp_path, [{"name": "default", "mode": "RamRoleArn", "access_key_id": "a", "access_key_secret": "b"}])
    with pytest.raises(CredentialsError, match="mode RamRoleArn, which needs a token exchange"):
        find_credentials({}, tmp_path)


def test_missing_named_profile(tmp_path: Path) -> None:
    """--profile naming an absent profile lists those that exist."""
    _cli_config(tmp_path, [{"name": "default", "mode": "AK", "access_key_id": "a", "access_key_secret": "b"}])
    with pytest.raises(CredentialsError, match=r"no profile 'nope' \(profiles: default\)"):
        find_credentials({}, tmp_path, profile="nope")


def test_credentials_ini(tmp_path: Path) -> None:
    """~/.alibabacloud/credentials.ini [default] access_key is the last resort."""
    _ini(tmp_path, "[default]\ntype = access_key\naccess_key_id = id-ini\naccess_key_secret = ini-secret\n")
    creds = find_credentials({}, tmp_path)
    assert (creds.access_key_id, creds.access_key_secret) == ("id-ini", "ini-secret")


def test_nothing_found_lists_the_three_ways(tmp_path: Path) -> None:
    """No credentials anywhere: one error naming the environment, the CLI profile and credentials.ini."""
    with pytest.raises(CredentialsError) as caught:
        find_credentials({}, tmp_path)
    message = str(caught.value)
    assert "ALIBABA_CLOUD_ACCESS_KEY_ID" in message and "~/.aliyun/config.json" in message
    assert "~/.alibabacloud/credentials.ini" in message


def test_errors_never_hold_secrets(tmp_path: Path) -> None:
    """Broken configurations are reported without echoing secrets or tokens."""
    _cli_config(
        tmp_path,
        [
            {
                "name": "default",
                "mode": "StsToken",
                "access_key_id": "id",
                "access_key_secret": "cli-secret-SHOULD-NOT-SHOW",
            }
        ],
    )
    with pytest.raises(CredentialsError) as caught:
        find_credentials({}, tmp_path)
    assert "has no sts_token" in str(caught.value)
    assert "cli-secret-SHOULD-NOT-SHOW" not in str(caught.value)
