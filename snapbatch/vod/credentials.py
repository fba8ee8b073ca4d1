"""Where the AccessKey comes from: the environment, the aliyun CLI's profile, or credentials.ini.

The secret and the token never leave the Credentials object: no message built here contains them.
"""

from __future__ import annotations

import configparser
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from snapbatch.errors import CredentialsError

__all__ = ["Credentials", "find_credentials", "ini_path"]

_HOW = (
    "give an AccessKey in one of three ways: (1) ALIBABA_CLOUD_ACCESS_KEY_ID and ALIBABA_CLOUD_ACCESS_KEY_SECRET "
    "(and ALIBABA_CLOUD_SECURITY_TOKEN for STS) in the environment; (2) an aliyun CLI profile in "
    "~/.aliyun/config.json (`aliyun configure`, mode AK or StsToken), chosen with --profile, "
    "ALIBABA_CLOUD_PROFILE or its `current`; (3) a [default] section with access_key_id and access_key_secret "
    "in ~/.alibabacloud/credentials.ini (or the file ALIBABA_CLOUD_CREDENTIALS_FILE names)"
)


@dataclass(frozen=True)
class Credentials:
    """An AccessKey pair and, for STS, its token. repr() never shows the secret or the token."""

    access_key_id: str
    access_key_secret: str
    security_token: str | None = None
    source: str = ""  # where they came from, for messages: "environment", "aliyun CLI profile 'x'", ...

    def __repr__(self) -> str:
        token = ", security_token=***" if self.security_token else ""
        return (
            f"Credentials(access_key_id={self.access_key_id!r}, access_key_secret=***{token}, source={self.source!r})"
        )

    __str__ = __repr__


def find_credentials(env: Mapping[str, str], home: Path, profile: str | None = None) -> Credentials:
    """The first credentials found, in the documented order; CredentialsError saying how when none are."""
    key_id = env.get("ALIBABA_CLOUD_ACCESS_KEY_ID")
    secret = env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET")
    if key_id or secret:
        if not (key_id and secret):
            missing = "ALIBABA_CLOUD_ACCESS_KEY_SECRET" if key_id else "ALIBABA_CLOUD_ACCESS_KEY_ID"
            raise CredentialsError(f"{missing} is not set but its partner is; set both")
        return Credentials(key_id, secret, env.get("ALIBABA_CLOUD_SECURITY_TOKEN") or None, "environment")
    found = _from_cli_config(home / ".aliyun" / "config.json", profile or env.get("ALIBABA_CLOUD_PROFILE"))
    if found is not None:
        return found
    if profile:
        raise CredentialsError(f"no aliyun CLI profile {profile!r} in {home / '.aliyun' / 'config.json'}")
    found = _from_ini(ini_path(env, home))
    if found is not None:
        return found
    raise CredentialsError(f"no Alibaba Cloud credentials found; {_HOW}")


def ini_path(env: Mapping[str, str], home: Path) -> Path:
    """credentials.ini: ALIBABA_CLOUD_CREDENTIALS_FILE (as the official chain reads it), else ~/.alibabacloud's."""
    given = env.get("ALIBABA_CLOUD_CREDENTIALS_FILE", "").strip()
    return Path(given).expanduser() if given else home / ".alibabacloud" / "credentials.ini"


def _from_cli_config(path: Path, wanted: str | None) -> Credentials | None:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise CredentialsError(f"cannot read {path}: {type(exc).__name__}; fix or remove it") from None
    if not isinstance(config, dict):
        raise CredentialsError(f"{path} is not an aliyun CLI configuration (expected a JSON object)")
    name = wanted or config.get("current") or "default"
    profiles = [p for p in config.get("profiles", []) if isinstance(p, dict)]
    chosen = next((p for p in profiles if p.get("name") == name), None)
    if chosen is None:
        if wanted:
            names = ", ".join(str(p.get("name")) for p in profiles) or "none"
            raise CredentialsError(f"{path} has no profile {wanted!r} (profiles: {names})")
        return None
    mode = chosen.get("mode", "AK")
    where = f"aliyun CLI profile {name!r}"
    if mode not in ("AK", "StsToken"):
        raise CredentialsError(
            f"{where} uses mode {mode}, which needs a token exchange: install alibabacloud-credentials for "
            "snapbatch to perform it (pip install 'snapbatch[aliyun]'), or use a profile of mode AK or StsToken, "
            "or export ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET/_SECURITY_TOKEN"
        )
    key_id, secret = chosen.get("access_key_id"), chosen.get("access_key_secret")
    if not key_id or not secret:
        raise CredentialsError(f"{where} has no access_key_id/access_key_secret; run `aliyun configure`")
    token = chosen.get("sts_token") if mode == "StsToken" else None
    if mode == "StsToken" and not token:
        raise CredentialsError(f"{where} is of mode StsToken but has no sts_token")
    return Credentials(str(key_id), str(secret), str(token) if token else None, where)


def _from_ini(path: Path) -> Credentials | None:
    parser = configparser.ConfigParser(interpolation=None)
    try:
        if not parser.read(path, encoding="utf-8"):
            return None
    except (configparser.Error, UnicodeDecodeError):
        raise CredentialsError(f"cannot parse {path}; it should be an INI file with a [default] section") from None
    if not parser.has_section("default"):
        return None
    section = parser["default"]
    kind = section.get("type", "access_key")
    if kind != "access_key":
        raise CredentialsError(
            f"[default] in {path} is of type {kind}; snapbatch reads type access_key, and with "
            "pip install 'snapbatch[aliyun]' also ram_role_arn, oidc_role_arn and ecs_ram_role"
        )
    key_id, secret = section.get("access_key_id"), section.get("access_key_secret")
    if not key_id or not secret:
        raise CredentialsError(f"[default] in {path} needs access_key_id and access_key_secret")
    return Credentials(key_id, secret, None, f"{path} [default]")
