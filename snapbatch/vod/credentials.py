"""Where the AccessKey comes from: the environment, the aliyun CLI's profile, or credentials.ini.

The secret and the token never leave the Credentials object: no message built here contains them.
"""

from __future__ import annotations

import configparser
import json
import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from snapbatch.errors import CredentialsError, echo

__all__ = [
    "Credentials",
    "checked",
    "find_credentials",
    "ini_path",
    "profile_label",
    "profile_names",
    "read_config_file",
]

_MAX_CONFIG_BYTES = 1 << 20  # an aliyun CLI config or credentials.ini is a few KB

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
        return checked(Credentials(key_id, secret, env.get("ALIBABA_CLOUD_SECURITY_TOKEN") or None, "environment"))
    found = _from_cli_config(home / ".aliyun" / "config.json", profile or env.get("ALIBABA_CLOUD_PROFILE"))
    if found is not None:
        return checked(found)
    if profile:
        raise CredentialsError(f"no aliyun CLI profile {echo(profile)} in {home / '.aliyun' / 'config.json'}")
    found = _from_ini(ini_path(env, home))
    if found is not None:
        return checked(found)
    raise CredentialsError(f"no Alibaba Cloud credentials found; {_HOW}")


def profile_label(name: object) -> str:
    """How messages and logs name an aliyun CLI profile: its name quoted, escaped and shortened (it is text
    from a file, and may hold terminal escapes or run to any length)."""
    return f"aliyun CLI profile {echo(name)}"


def profile_names(profiles: list[Any]) -> str:
    """The profiles' names for a message: escaped, the first ten."""
    names = [echo(p.get("name") if isinstance(p, dict) else "?", 40, quote=False) for p in profiles]
    more = f" and {len(names) - 10} more" if len(names) > 10 else ""
    return (", ".join(names[:10]) + more) or "none"


def ini_path(env: Mapping[str, str], home: Path) -> Path:
    """credentials.ini: ALIBABA_CLOUD_CREDENTIALS_FILE (as the official chain reads it), else ~/.alibabacloud's."""
    given = env.get("ALIBABA_CLOUD_CREDENTIALS_FILE", "").strip()
    return Path(given).expanduser() if given else home / ".alibabacloud" / "credentials.ini"


def _from_cli_config(path: Path, wanted: str | None) -> Credentials | None:
    config = _read_cli_config(path)
    if config is None:
        return None
    name = wanted or config.get("current") or "default"
    profiles = config.get("profiles", [])
    chosen = next((p for p in profiles if p.get("name") == name), None)
    if chosen is None:
        if wanted:
            raise CredentialsError(f"{path} has no profile {echo(wanted)} (profiles: {profile_names(profiles)})")
        return None
    mode = chosen.get("mode", "AK")
    where = profile_label(name)
    if mode not in ("AK", "StsToken"):
        raise CredentialsError(
            f"{where} uses mode {echo(mode, quote=False)}, which needs a token exchange: install "
            "alibabacloud-credentials for snapbatch to perform it (pip install 'snapbatch[aliyun]'), or use a "
            "profile of mode AK or StsToken, or export ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET/_SECURITY_TOKEN"
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
    if not _read_ini(parser, path):
        return None
    if not parser.has_section("default"):
        return None
    section = parser["default"]
    kind = section.get("type", "access_key")
    if kind != "access_key":
        raise CredentialsError(
            f"[default] in {path} is of type {echo(kind, quote=False)}; snapbatch reads type access_key, and with "
            "pip install 'snapbatch[aliyun]' also ram_role_arn, oidc_role_arn and ecs_ram_role"
        )
    key_id, secret = section.get("access_key_id"), section.get("access_key_secret")
    if not key_id or not secret:
        raise CredentialsError(f"[default] in {path} needs access_key_id and access_key_secret")
    return Credentials(key_id, secret, None, f"{path} [default]")


# -- what is read must have the shape it should: every message names the file and what is wrong, never a value --


def checked(creds: Credentials) -> Credentials:
    """``creds`` unchanged, or CredentialsError naming the source and the field when a value holds whitespace
    or a character no AccessKey has (a pasted trailing space or newline would make every signature wrong)."""
    for field, value in (
        ("AccessKeyId", creds.access_key_id),
        ("AccessKey secret", creds.access_key_secret),
        ("security token", creds.security_token),
    ):
        if value is None:
            continue
        bad = next((i for i, c in enumerate(value) if c.isspace() or not c.isprintable() or not c.isascii()), None)
        if bad is not None:
            what = "whitespace" if value[bad].isspace() else "a character that is not printable ASCII"
            where = "at its end" if bad == len(value) - 1 else "at its start" if bad == 0 else f"at position {bad + 1}"
            raise CredentialsError(
                f"the {field} from {creds.source} contains {what} ({where}); no AccessKey does, so it was probably "
                "pasted with extra characters: remove them"
            )
    return creds


def _read_cli_config(path: Path) -> dict[str, Any] | None:
    """The aliyun CLI's config.json (a UTF-8 BOM is fine), checked for the shape snapbatch reads; None if absent."""
    data = read_config_file(path)
    if data is None:
        return None
    try:
        config = json.loads(data.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise CredentialsError(f"{path} is not UTF-8 text; save it as UTF-8 or run `aliyun configure` again") from None
    except json.JSONDecodeError as exc:
        raise CredentialsError(
            f"{path} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; fix it or run "
            "`aliyun configure` again"
        ) from None
    if not isinstance(config, dict):
        raise CredentialsError(f"{path} is not an aliyun CLI configuration: expected a JSON object at the top")
    problems = []
    if not isinstance(config.get("current", ""), str):
        problems.append("`current` must be text")
    profiles = config.get("profiles", [])
    if not isinstance(profiles, list):
        problems.append("`profiles` must be a list")
    else:
        for i, profile in enumerate(profiles):
            if not isinstance(profile, dict):
                problems.append(f"profiles[{i}] must be an object")
                continue
            for key in ("name", "mode", "access_key_id", "access_key_secret", "sts_token"):
                if profile.get(key) is not None and not isinstance(profile[key], str):
                    problems.append(f"profiles[{i}].{key} must be text, not {type(profile[key]).__name__}")
    if problems:
        raise CredentialsError(f"{path} is not shaped as the aliyun CLI writes it: {'; '.join(problems)}")
    return config


def _read_ini(parser: configparser.ConfigParser, path: Path) -> bool:
    """Read credentials.ini into ``parser`` (a UTF-8 BOM is fine); False if absent. Errors name the line, not
    its text, which may hold a secret."""
    data = read_config_file(path)
    if data is None:
        return False
    try:
        parser.read_string(data.decode("utf-8-sig"), source=str(path))
        return True
    except UnicodeDecodeError:
        raise CredentialsError(f"{path} is not UTF-8 text; save it as UTF-8") from None
    except configparser.MissingSectionHeaderError as exc:
        raise CredentialsError(
            f"{path} line {exc.lineno}: a setting before any [section]; start with [default]"
        ) from None
    except (configparser.DuplicateSectionError, configparser.DuplicateOptionError) as exc:
        what = (
            f"option {echo(exc.option)} in [{echo(exc.section, quote=False)}]"
            if isinstance(exc, configparser.DuplicateOptionError)
            else f"section [{echo(exc.section, quote=False)}]"
        )
        raise CredentialsError(f"{path} line {exc.lineno}: {what} appears twice; keep one") from None
    except configparser.ParsingError as exc:
        lines = ", ".join(str(number) for number, _ in exc.errors)
        raise CredentialsError(f"{path} line {lines}: not `name = value`; fix the line") from None
    except configparser.Error:
        raise CredentialsError(f"cannot parse {path}; it should be an INI file with a [default] section") from None


def read_config_file(path: Path) -> bytes | None:
    """The bytes of a credentials file, or None if there is none. Opened without blocking and checked to be a
    regular file of sane size first: a FIFO would wait forever and /dev/zero fill memory, and a directory or an
    unreadable file must be named rather than skipped (ending in a puzzling 'no credentials found')."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
    except FileNotFoundError:
        return None
    except IsADirectoryError:
        raise CredentialsError(
            f"{path} is not a regular file (a directory); give the credentials file itself"
        ) from None
    except OSError as exc:
        raise CredentialsError(f"cannot read {path}: {exc.strerror or exc}; fix its permissions or remove it") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        kind = "a directory" if stat.S_ISDIR(info.st_mode) else "a FIFO, socket or device"
        raise CredentialsError(f"{path} is not a regular file ({kind}); give the credentials file itself")
    with os.fdopen(fd, "rb") as f:
        data = f.read(_MAX_CONFIG_BYTES + 1)
    if len(data) > _MAX_CONFIG_BYTES:
        raise CredentialsError(f"{path} is over {_MAX_CONFIG_BYTES} bytes, too big for a credentials file; check it")
    return data
