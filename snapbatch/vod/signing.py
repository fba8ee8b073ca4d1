"""Alibaba Cloud request signatures, V1 (HMAC-SHA1, RPC) and V3 (ACS3-HMAC-SHA256). Pure functions.

snapbatch sends V3; the emulator verifies both, since the official SDKs use either.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from urllib.parse import quote

from snapbatch.vod.api import TIMESTAMP_FORMAT

__all__ = [
    "EMPTY_SHA256",
    "UNRESERVED",
    "V3_ALGORITHM",
    "canonical_query",
    "encode",
    "iso_timestamp",
    "parse_authorization",
    "sign_v1",
    "sign_v3",
    "v1_string_to_sign",
    "v3_string_to_sign",
]

V3_ALGORITHM = "ACS3-HMAC-SHA256"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
# what percent-encoding leaves as it is, whatever the safe characters: most names and values are only that
UNRESERVED = re.compile(r"[A-Za-z0-9_.~-]*").fullmatch


def encode(text: str) -> str:
    """Percent-encode UTF-8, keeping only A-Z a-z 0-9 - _ . ~ (space is %20, * is %2A)."""
    return text if UNRESERVED(text) else quote(text, safe="~")


def iso_timestamp(now: datetime) -> str:
    return now.astimezone(UTC).strftime(TIMESTAMP_FORMAT)


def canonical_query(params: Mapping[str, str]) -> str:
    return "&".join(f"{encode(k)}={encode(v)}" for k, v in sorted(params.items()))


def v1_string_to_sign(method: str, params: Mapping[str, str]) -> str:
    return f"{method.upper()}&%2F&{encode(canonical_query(params))}"


def sign_v1(method: str, params: Mapping[str, str], secret: str) -> str:
    """The V1 Signature of ``params`` (every parameter but Signature itself)."""
    string_to_sign = v1_string_to_sign(method, params)
    digest = hmac.new(f"{secret}&".encode(), string_to_sign.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def sign_v3(
    *,
    method: str,
    path: str,
    query: Mapping[str, str],
    headers: Mapping[str, str],
    payload_sha256: str,
    access_key_id: str,
    secret: str,
) -> str:
    """The Authorization header value for ``headers`` (every one of them signed)."""
    signed, string_to_sign = v3_string_to_sign(method, path, query, headers, payload_sha256)
    signature = hmac.digest(secret.encode(), string_to_sign.encode(), "sha256").hex()
    return f"{V3_ALGORITHM} Credential={access_key_id},SignedHeaders={signed},Signature={signature}"


def v3_string_to_sign(
    method: str, path: str, query: Mapping[str, str], headers: Mapping[str, str], payload_sha256: str
) -> tuple[str, str]:
    """(signed header names joined by ;, string to sign)."""
    lowered = {name.lower(): value.strip() for name, value in headers.items()}
    names = sorted(lowered)
    canonical_headers = "".join(f"{n}:{lowered[n]}\n" for n in names)
    signed = ";".join(names)
    canonical_request = "\n".join(
        [method.upper(), path or "/", canonical_query(query), canonical_headers, signed, payload_sha256]
    )
    return signed, f"{V3_ALGORITHM}\n{hashlib.sha256(canonical_request.encode()).hexdigest()}"


def parse_authorization(value: str) -> dict[str, str] | None:
    """{'Credential', 'SignedHeaders', 'Signature'} from a V3 Authorization header, or None."""
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != V3_ALGORITHM:
        return None
    fields = {}
    for part in rest.split(","):
        name, sep, val = part.strip().partition("=")
        if not sep:
            return None
        fields[name] = val
    if not {"Credential", "SignedHeaders", "Signature"} <= fields.keys():
        return None
    return fields
