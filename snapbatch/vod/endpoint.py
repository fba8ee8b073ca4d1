"""Which URL the calls go to: --endpoint, else the manifest's endpoint, else the region's VOD endpoint."""

from __future__ import annotations

import ipaddress
import re
from urllib.parse import urlsplit

from snapbatch.errors import UsageError, echo
from snapbatch.models import DEFAULT_REGION

__all__ = ["LOOPBACK_HOSTS", "check_url", "is_loopback", "resolve_endpoint", "resolve_region", "url_problem"]

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
    """Refuse what would leak credentials or cannot work: a malformed URL, a bad port, a user name, a path, a
    query or fragment, and plain http to anything but a loopback address."""
    problem = url_problem(url)
    if problem is not None:
        raise UsageError(f"endpoint {echo(url)} {problem}; give e.g. https://vod.cn-shanghai.aliyuncs.com")
    host = urlsplit(url).hostname or ""
    if urlsplit(url).scheme == "http" and not is_loopback(host):
        raise UsageError(
            f"endpoint {echo(url)} uses plain http:// to a remote host (not a loopback address), which would send "
            "signed requests in the clear; use https:// (plain http is allowed only to 127.0.0.0/8, ::1 or "
            "localhost, for the emulator)"
        )
    if "?" in url or "#" in url:
        # a query would be signed into no request and a fragment never sent: either is a pasted URL, not VOD's
        raise UsageError(
            f"endpoint {echo(url)} has a query (?...) or a fragment (#...); an endpoint is scheme://host[:port] "
            "with nothing after the host but an optional /: remove everything from the ? or #, e.g. "
            "https://vod.cn-shanghai.aliyuncs.com"
        )
    if urlsplit(url).path not in ("", "/"):
        raise UsageError(
            f"endpoint {echo(url)} has a path; VOD answers at the root, e.g. https://vod.cn-shanghai.aliyuncs.com"
        )


def url_problem(url: str) -> str | None:
    """What makes ``url`` unusable as an http(s) URL (no host, a bad port, spaces, control characters, a user
    name), or None. Says nothing about where it points."""
    if any(c.isspace() or not c.isprintable() for c in url):
        return "contains a space or a control character"
    try:
        parts = urlsplit(url)
        port = parts.port  # raises for a port that is not a number or out of range
        host = parts.hostname
    except ValueError as exc:
        return f"is not a well-formed URL ({exc})"
    if parts.scheme not in ("http", "https"):
        return "is not an http:// or https:// URL"
    if not host:
        return "has no host"
    if port == 0 or (parts.netloc.endswith(":") and port is None):
        return "has an empty or zero port (a port is 1-65535, or left out)"
    if "@" in parts.netloc:
        return "carries a user name or password, which would be sent to the host; remove it"
    if host.startswith("[") or not _HOST.fullmatch(host):
        return f"has a malformed host {echo(host)}"
    return None


# a DNS name (letters, digits, hyphens, dots, underscores, and non-ASCII for IDNs) or an IP address literal
_HOST = re.compile(r"[^\x00-\x2c/:;<=>?@\[\\\]^`{|}~\x7f]+|[0-9a-fA-F:.]+(%[^\]]+)?")


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1, or ::ffff:127.x.y.z), judged on the parsed IP,
    never on how its text starts. ``localhost`` is the one name accepted (reserved for loopback by RFC 6761)."""
    if host.lower() == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback
