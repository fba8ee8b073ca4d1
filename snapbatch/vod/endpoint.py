"""Which URL the calls go to: --endpoint, else the manifest's endpoint, else the region's VOD endpoint."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from snapbatch.errors import UsageError
from snapbatch.models import DEFAULT_REGION

__all__ = ["LOOPBACK_HOSTS", "check_url", "resolve_endpoint", "resolve_region"]

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1")
_REGION_ALIASES = {"cn-hangzhou": "cn-shanghai"}  # VOD has no cn-hangzhou region of its own


_REGION = re.compile(r"[a-z0-9]+(-[a-z0-9]+)+")  # as the manifest schema has it


def resolve_region(cli_region: str | None, manifest_region: str | None, env_region: str | None) -> str:
    """--region, else the manifest's, else ALIBABA_CLOUD_REGION_ID, else cn-shanghai; refuses a malformed
    one, which would otherwise surface as an unreachable endpoint."""
    for source, region in (
        ("--region", cli_region),
        ("the manifest's region", manifest_region),
        ("ALIBABA_CLOUD_REGION_ID", env_region),
    ):
        if region:
            if not _REGION.fullmatch(region):
                raise UsageError(
                    f"{source} {region!r} is not a region ID; give one such as cn-shanghai or ap-southeast-1"
                )
            return region
    return DEFAULT_REGION


def resolve_endpoint(cli_endpoint: str | None, manifest_endpoint: str | None, region: str) -> str:
    url = cli_endpoint or manifest_endpoint
    if url is None:
        url = f"https://vod.{_REGION_ALIASES.get(region, region)}.aliyuncs.com"
    check_url(url)
    return url.rstrip("/")


def check_url(url: str) -> None:
    """Refuse what would leak credentials or cannot work: plain http to anything but loopback."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"endpoint {url!r} is not an http(s) URL; give e.g. https://vod.cn-shanghai.aliyuncs.com")
    if parts.scheme == "http" and parts.hostname not in LOOPBACK_HOSTS and not parts.hostname.startswith("127."):
        raise UsageError(
            f"endpoint {url!r} uses plain http:// to a remote host, which would send signed requests in the clear; "
            "use https:// (plain http is allowed only to loopback, for the emulator)"
        )
    if parts.path not in ("", "/"):
        raise UsageError(
            f"endpoint {url!r} has a path; VOD answers at the root, e.g. https://vod.cn-shanghai.aliyuncs.com"
        )
