"""The official default credentials chain, through the optional ``alibabacloud-credentials`` package.

In the order its DefaultCredentialsProvider uses: the AccessKey in the environment; the OIDC environment (ACK
RRSA); the aliyun CLI profile (modes AK, StsToken, RamRoleArn, EcsRamRole, OIDC, ChainableRamRoleArn);
``~/.alibabacloud/credentials.ini`` (or ALIBABA_CLOUD_CREDENTIALS_FILE); the ECS instance's RAM role (unless
ALIBABA_CLOUD_ECS_METADATA_DISABLED=true); ALIBABA_CLOUD_CREDENTIALS_URI. The library performs the token
exchanges; snapbatch maps the configuration to its providers itself (``chain_sources``, pure: reads files, no
network), so the environment it is given is the one obeyed and the STS endpoint can be set, and renews ahead
of expiry (``providers.RenewingCredentials``). Without the package, ``find_credentials`` (fixed AccessKeys
only) decides, and a source that needs an exchange is refused with the install command.
"""

from __future__ import annotations

import configparser
import importlib
import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from snapbatch.errors import CredentialsError, echo
from snapbatch.vod.credentials import (
    Credentials,
    _from_cli_config,
    _from_ini,
    checked,
    find_credentials,
    ini_path,
    profile_label,
    read_config_file,
)
from snapbatch.vod.providers import CredentialsProvider, Fetch, RenewingCredentials, StaticCredentials, redact

__all__ = ["INSTALL", "Source", "chain_sources", "find_provider", "library", "sts_endpoint"]

INSTALL = "pip install 'snapbatch[aliyun]'"
EXCHANGE_MODES = ("RamRoleArn", "EcsRamRole", "OIDC", "ChainableRamRoleArn")
_INI_TYPES = ("ram_role_arn", "oidc_role_arn", "ecs_ram_role")
_OIDC_ENV = ("ALIBABA_CLOUD_ROLE_ARN", "ALIBABA_CLOUD_OIDC_PROVIDER_ARN", "ALIBABA_CLOUD_OIDC_TOKEN_FILE")
_HOST_PORT = re.compile(r"[A-Za-z0-9.-]+(:\d{1,5})?|\[[0-9A-Fa-f:]+\](:\d{1,5})?")


@dataclass(frozen=True)
class Source:
    """One link of the chain, before anything is fetched. ``options`` are the library provider's arguments
    (they may hold a secret: never shown)."""

    kind: str  # "static", "ram_role_arn", "oidc_role_arn", "ecs_ram_role", "credentials_uri"
    label: str  # what the log says the credentials came from
    options: Mapping[str, Any] = field(default_factory=dict, repr=False)
    static: Credentials | None = None
    base: Source | None = None  # ram_role_arn: the credentials that assume the role
    probe: bool = False  # tried because nothing else was configured: when it fails, the chain goes on


def library() -> ModuleType | None:
    """``alibabacloud_credentials.provider``, or None when the extra is not installed."""
    try:
        providers = importlib.import_module("alibabacloud_credentials.provider")
    except ImportError:
        return None
    # It logs failed refreshes, and its HTTP layer every request when DEBUG=sdk, with the signed URL (the
    # signature, the OIDC token) to stderr through handlers of their own; snapbatch reports failures itself,
    # redacted.
    for name in ("credentials", "alibabacloud-tea"):
        logging.getLogger(name).disabled = True
    return providers


def sts_endpoint(
    env: Mapping[str, str], region: str | None = None, vpc: bool | None = None, given: str | None = None
) -> str:
    """The STS host for an exchange: ALIBABA_CLOUD_STS_ENDPOINT (which the aliyun CLI and ACK's RRSA webhook
    use, though this Python library does not read it), else a profile's ``sts_endpoint`` (``given``), else
    what the library derives from the region and VPC settings."""
    for name, value in (("ALIBABA_CLOUD_STS_ENDPOINT", env.get("ALIBABA_CLOUD_STS_ENDPOINT")), ("sts_endpoint", given)):
        value = (value or "").strip()
        if value:
            host = value.removeprefix("https://").rstrip("/")
            if not _HOST_PORT.fullmatch(host):
                raise CredentialsError(
                    f"{name} is {echo(value)}; give a host name with an optional :port (STS is always called over "
                    "HTTPS), e.g. sts-vpc.cn-shanghai.aliyuncs.com"
                )
            return host
    if vpc is None:
        vpc = env.get("ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED", "false").lower() == "true"
    prefix = "sts-vpc" if vpc else "sts"
    region = region or env.get("ALIBABA_CLOUD_STS_REGION")
    return f"{prefix}.{region}.aliyuncs.com" if region else "sts.aliyuncs.com"


def find_provider(
    env: Mapping[str, str], home: Path, profile: str | None = None, *, log: Callable[[str], None] | None = None
) -> CredentialsProvider:
    """The run's credentials, fetched once now (blocking); CredentialsError saying how when there are none.
    ``log(message)`` hears of renewals and failed attempts during the run."""
    lib = library()
    if lib is None:
        try:
            return StaticCredentials(find_credentials(env, home, profile))
        except CredentialsError as exc:
            wanted = [n for n in ("ALIBABA_CLOUD_CREDENTIALS_URI", *_OIDC_ENV) if env.get(n)]
            if wanted and str(exc).startswith("no Alibaba Cloud credentials found"):
                raise CredentialsError(
                    f"{', '.join(wanted)} is set, but reading credentials from there needs the "
                    f"alibabacloud-credentials package: {INSTALL}"
                ) from None
            raise
    failures: list[str] = []
    for source in chain_sources(env, home, profile):
        if source.static is not None:
            return StaticCredentials(source.static)
        provider = RenewingCredentials(_fetcher(lib, source), source.label, log=log or (lambda message: None))
        try:
            provider.prime()
        except CredentialsError as exc:
            if not source.probe:
                raise
            failures.append(str(exc))
            continue
        return provider
    raise CredentialsError(f"no Alibaba Cloud credentials found ({'; '.join(failures)}); {_how()}")


def chain_sources(env: Mapping[str, str], home: Path, profile: str | None = None) -> list[Source]:
    """The sources to try, in order: the first configured one alone, or the ECS role and credentials URI
    probes when nothing is configured. Reads the configuration files; no network."""
    if env.get("ALIBABA_CLOUD_ACCESS_KEY_ID") or env.get("ALIBABA_CLOUD_ACCESS_KEY_SECRET"):
        return [_static(find_credentials(env, home, profile))]
    if all(env.get(name) for name in _OIDC_ENV):
        return [_oidc_from_env(env)]
    cli = home / ".aliyun" / "config.json"
    wanted = profile or env.get("ALIBABA_CLOUD_PROFILE")
    if env.get("ALIBABA_CLOUD_CLI_PROFILE_DISABLED", "false").lower() != "true":
        config = _read_cli_config(cli)
        chosen = _cli_profile(config, wanted) if config is not None else None
        if chosen is not None and chosen.get("mode") not in (None, "AK", "StsToken"):
            return [_from_profile(env, cli, config or {}, chosen, [])]
        found = _from_cli_config(cli, wanted)
        if found is not None:
            return [_static(found)]
    if profile:
        raise CredentialsError(f"no aliyun CLI profile {echo(profile)} in {cli}")
    ini = ini_path(env, home)
    section = _ini_default(ini)
    if section is not None and section.get("type") in _INI_TYPES:
        return [_from_ini_section(env, ini, section)]
    found = _from_ini(ini)
    if found is not None:
        return [_static(found)]
    sources = []
    if env.get("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "false").lower() != "true":
        sources.append(_ecs(env, env.get("ALIBABA_CLOUD_ECS_METADATA") or None, probe=True))
    uri = env.get("ALIBABA_CLOUD_CREDENTIALS_URI")
    if uri:
        sources.append(
            Source("credentials_uri", f"ALIBABA_CLOUD_CREDENTIALS_URI ({_without_query(uri)})", {"uri": uri})
        )
    if not sources:
        raise CredentialsError(f"no Alibaba Cloud credentials found; {_how()}")
    return sources


def _how() -> str:
    return (
        "give an AccessKey in the environment (ALIBABA_CLOUD_ACCESS_KEY_ID, ALIBABA_CLOUD_ACCESS_KEY_SECRET and "
        "for STS ALIBABA_CLOUD_SECURITY_TOKEN), or ALIBABA_CLOUD_ROLE_ARN, ALIBABA_CLOUD_OIDC_PROVIDER_ARN and "
        "ALIBABA_CLOUD_OIDC_TOKEN_FILE (ACK RRSA), or an aliyun CLI profile in ~/.aliyun/config.json (modes AK, "
        "StsToken, RamRoleArn, EcsRamRole, OIDC, ChainableRamRoleArn), or ~/.alibabacloud/credentials.ini, or "
        "an ECS instance RAM role, or ALIBABA_CLOUD_CREDENTIALS_URI"
    )


def _static(credentials: Credentials) -> Source:
    return Source("static", credentials.source, static=checked(credentials))


def _session_name(env: Mapping[str, str], given: object) -> str:
    # shows in ActionTrail as who made the calls
    return str(given or env.get("ALIBABA_CLOUD_ROLE_SESSION_NAME") or f"snapbatch-{int(time.time())}")


def _arn(role: object) -> str:
    # a role ARN from the environment or a file: shown bare, as ever, but escaped and bounded
    return echo(role, 200, quote=False)


def _oidc_from_env(env: Mapping[str, str]) -> Source:
    role, provider_arn, token_file = (env[name] for name in _OIDC_ENV)
    endpoint = sts_endpoint(env)
    return Source(
        "oidc_role_arn",
        f"OIDC from ALIBABA_CLOUD_ROLE_ARN/_OIDC_PROVIDER_ARN/_OIDC_TOKEN_FILE (role {_arn(role)}, via {endpoint})",
        {
            "role_arn": role,
            "oidc_provider_arn": provider_arn,
            "oidc_token_file_path": token_file,
            "role_session_name": _session_name(env, None),
            "sts_endpoint": endpoint,
        },
    )


def _read_cli_config(path: Path) -> dict[str, Any] | None:
    """The CLI's configuration when it reads as one; anything else is left to ``_from_cli_config``'s errors."""
    data = read_config_file(path)  # a FIFO, device or directory is named here, never read
    try:
        config = json.loads(data.decode("utf-8-sig")) if data is not None else None
    except ValueError:
        return None
    return config if isinstance(config, dict) else None


def _cli_profile(config: dict[str, Any], wanted: str | None) -> dict[str, Any] | None:
    name = wanted or config.get("current") or "default"
    profiles = config.get("profiles")
    if not isinstance(profiles, list):
        return None
    return next((p for p in profiles if isinstance(p, dict) and p.get("name") == name), None)


def _from_profile(
    env: Mapping[str, str], path: Path, config: dict[str, Any], chosen: dict[str, Any], seen: list[str]
) -> Source:
    name, mode = str(chosen.get("name")), chosen.get("mode")
    where = profile_label(name)
    if name in seen:
        through = " -> ".join(echo(s, 40, quote=False) for s in seen)
        raise CredentialsError(f"{where} in {path} is its own source_profile (through {through}); fix it")
    seen = [*seen, name]
    if mode in ("AK", "StsToken"):
        found = _from_cli_config(path, name)
        assert found is not None  # the profile exists: _from_cli_config returns it or raises
        return _static(found)
    if mode not in EXCHANGE_MODES:
        raise CredentialsError(
            f"{where} uses mode {echo(mode, quote=False)}, which snapbatch does not support; use a profile of mode AK, "
            f"StsToken, {', '.join(EXCHANGE_MODES)}, or export ALIBABA_CLOUD_ACCESS_KEY_ID/_SECRET/_SECURITY_TOKEN"
        )
    if mode == "EcsRamRole":
        if env.get("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "false").lower() == "true":
            raise CredentialsError(
                f"{where} is of mode EcsRamRole, but ALIBABA_CLOUD_ECS_METADATA_DISABLED=true forbids asking the "
                "instance metadata service; unset it or use another profile"
            )
        return _ecs(env, chosen.get("ram_role_name") or None, where=where)
    region, vpc = chosen.get("sts_region") or None, chosen.get("enable_vpc")
    given = chosen.get("sts_endpoint")
    endpoint = sts_endpoint(env, region, vpc if isinstance(vpc, bool) else None, str(given) if given else None)
    role = chosen.get("ram_role_arn")
    if not role:
        raise CredentialsError(f"{where} is of mode {mode} but has no ram_role_arn; run `aliyun configure`")
    common = {
        "role_arn": str(role),
        "duration_seconds": chosen.get("expired_seconds") or None,
        "policy": chosen.get("policy") or None,
        "sts_endpoint": endpoint,
    }
    if mode == "OIDC":
        for key in ("oidc_provider_arn", "oidc_token_file"):
            if not chosen.get(key):
                raise CredentialsError(f"{where} is of mode OIDC but has no {key}")
        return Source(
            "oidc_role_arn",
            f"{where} (OIDC, role {_arn(role)}, via {endpoint})",
            {
                **common,
                "oidc_provider_arn": str(chosen["oidc_provider_arn"]),
                "oidc_token_file_path": str(chosen["oidc_token_file"]),
                "role_session_name": _session_name(env, chosen.get("role_session_name")),
            },
        )
    options = {
        **common,
        "role_session_name": _session_name(env, chosen.get("ram_session_name")),
        "external_id": chosen.get("external_id") or None,
    }
    if mode == "RamRoleArn":
        key_id, secret = chosen.get("access_key_id"), chosen.get("access_key_secret")
        if not key_id or not secret:
            raise CredentialsError(f"{where} has no access_key_id/access_key_secret; run `aliyun configure`")
        base = _static(Credentials(str(key_id), str(secret), None, where))
        return Source("ram_role_arn", f"{where} (RamRoleArn, role {_arn(role)}, via {endpoint})", options, base=base)
    source_name = chosen.get("source_profile")
    source = _cli_profile(config, str(source_name)) if source_name else None
    if source is None:
        raise CredentialsError(
            f"{where} is of mode ChainableRamRoleArn but its source_profile {echo(source_name)} is not in {path}"
        )
    base = _from_profile(env, path, config, source, seen)
    return Source(
        "ram_role_arn",
        f"{where} (ChainableRamRoleArn from {base.label}, role {_arn(role)}, via {endpoint})",
        options,
        base=base,
    )


def _ini_default(path: Path) -> dict[str, str] | None:
    parser = configparser.ConfigParser(interpolation=None)
    data = read_config_file(path)  # a FIFO, device or directory is named here, never read
    if data is None:
        return None
    try:
        parser.read_string(data.decode("utf-8-sig"), source=str(path))
        if not parser.has_section("default"):
            return None
    except (configparser.Error, UnicodeDecodeError):
        return None  # _from_ini says what is wrong
    return {k: v.split("#")[0].strip() for k, v in parser["default"].items()}


def _from_ini_section(env: Mapping[str, str], path: Path, section: dict[str, str]) -> Source:
    where, kind = f"{path} [default]", section["type"]
    if kind == "ecs_ram_role":
        if env.get("ALIBABA_CLOUD_ECS_METADATA_DISABLED", "false").lower() == "true":
            raise CredentialsError(
                f"{where} is of type ecs_ram_role, but ALIBABA_CLOUD_ECS_METADATA_DISABLED=true forbids asking "
                "the instance metadata service"
            )
        return _ecs(env, section.get("role_name") or None, where=where)
    role = section.get("role_arn")
    if not role:
        raise CredentialsError(f"{where} is of type {kind} but has no role_arn")
    endpoint = sts_endpoint(env)
    options: dict[str, Any] = {
        "role_arn": role,
        "role_session_name": _session_name(env, section.get("role_session_name")),
        "policy": section.get("policy") or None,
        "sts_endpoint": endpoint,
    }
    if kind == "oidc_role_arn":
        for key in ("oidc_provider_arn", "oidc_token_file_path"):
            if not section.get(key):
                raise CredentialsError(f"{where} is of type oidc_role_arn but has no {key}")
        options.update(
            oidc_provider_arn=section["oidc_provider_arn"], oidc_token_file_path=section["oidc_token_file_path"]
        )
        return Source("oidc_role_arn", f"{where} (oidc_role_arn, role {_arn(role)}, via {endpoint})", options)
    key_id, secret = section.get("access_key_id"), section.get("access_key_secret")
    if not key_id or not secret:
        raise CredentialsError(f"{where} is of type ram_role_arn but has no access_key_id/access_key_secret")
    base = _static(Credentials(key_id, secret, None, where))
    return Source("ram_role_arn", f"{where} (ram_role_arn, role {_arn(role)}, via {endpoint})", options, base=base)


def _ecs(env: Mapping[str, str], role_name: str | None, *, where: str = "", probe: bool = False) -> Source:
    role = f"role {echo(role_name)}" if role_name else "its role"
    label = f"{where} (EcsRamRole, {role})" if where else f"the ECS instance's RAM role ({role}, from its metadata)"
    disable_v1 = env.get("ALIBABA_CLOUD_IMDSV1_DISABLED", "false").lower() == "true"
    return Source("ecs_ram_role", label, {"role_name": role_name, "disable_imds_v1": disable_v1}, probe=probe)


def _without_query(uri: str) -> str:
    return redact(uri.split("?", 1)[0])  # and without a user:password


def _build(lib: ModuleType, source: Source) -> Any:
    """The library's provider for ``source``."""
    options = {k: v for k, v in source.options.items() if v is not None}
    if source.kind == "static":
        assert source.static is not None
        c = source.static
        if c.security_token:
            return lib.StaticSTSCredentialsProvider(
                access_key_id=c.access_key_id, access_key_secret=c.access_key_secret, security_token=c.security_token
            )
        return lib.StaticAKCredentialsProvider(access_key_id=c.access_key_id, access_key_secret=c.access_key_secret)
    if source.kind == "ram_role_arn":
        assert source.base is not None
        return lib.RamRoleArnCredentialsProvider(credentials_provider=_build(lib, source.base), **options)
    if source.kind == "oidc_role_arn":
        return lib.OIDCRoleArnCredentialsProvider(**options)
    if source.kind == "ecs_ram_role":
        # snapbatch renews ahead of expiry itself: no scheduler thread of the library's as well
        return lib.EcsRamRoleCredentialsProvider(**options, async_update_enabled=False)
    if source.kind == "credentials_uri":
        return lib.URLCredentialsProvider(**options)
    raise AssertionError(f"unknown source kind {source.kind}")


def _fetcher(lib: ModuleType, source: Source) -> Fetch:
    def fetch() -> tuple[Credentials, float | None]:
        # A new provider each time: the library keeps STS credentials until 15 minutes before their expiry
        # and would hand back the very ones the service just refused; snapbatch decides when to renew.
        # (Built here, so a bad option is reported like any failed fetch.)
        got = _build(lib, source).get_credentials()
        expiration = got.get_expiration()
        credentials = Credentials(
            got.get_access_key_id(), got.get_access_key_secret(), got.get_security_token() or None, source.label
        )
        return credentials, float(expiration) if expiration else None

    return fetch
