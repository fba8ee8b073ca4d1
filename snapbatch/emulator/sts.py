"""A stand-in for STS beside the emulated VOD: AssumeRole, AssumeRoleWithOIDC and a credentials URI.

Each issues a fresh STS AccessKeyId, secret and token that the emulated VOD then accepts, until their
expiry, after which it answers InvalidSecurityToken.Expired, as the service does. ``lifetime_s`` makes
them short-lived (STS itself grants 900 s at least), to rehearse renewal in minutes. The answers have the
shapes alibabacloud-credentials reads; AssumeRole's V1 signature is checked by the emulator like any call.
"""

from __future__ import annotations

import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from snapbatch.vod.api import TIMESTAMP_FORMAT

__all__ = ["CREDENTIALS_URI_PATH", "STS_ACTIONS", "STS_VERSION", "Sts", "StsConfig", "StsError"]

STS_VERSION = "2015-04-01"
STS_ACTIONS = ("AssumeRole", "AssumeRoleWithOIDC")
CREDENTIALS_URI_PATH = "/credentials"  # GET: the ALIBABA_CLOUD_CREDENTIALS_URI document
_ROLE_ARN = re.compile(r"acs:ram::\d+:role/[A-Za-z0-9._-]{1,64}", re.IGNORECASE)
_SESSION_NAME = re.compile(r"[A-Za-z0-9.@_-]{2,64}")


@dataclass
class StsConfig:
    """``lifetime_s``: how long issued credentials last (None: DurationSeconds, as STS does).
    ``oidc_tokens``: OIDCProviderArn -> the OIDC token it accepts."""

    lifetime_s: float | None = None
    oidc_tokens: dict[str, str] = field(default_factory=dict)


class StsError(Exception):
    def __init__(self, code: str, message: str, status: int = 400) -> None:
        self.code, self.message, self.status = code, message, status


class Sts:
    """Issues credentials into ``credentials`` (AccessKeyId -> (secret, token)), ``expiries`` (AccessKeyId ->
    wall-clock expiry) and ``accounts`` (AccessKeyId -> the account whose quota its calls use: the role's),
    the tables the emulated VOD checks calls against."""

    def __init__(
        self,
        config: StsConfig,
        credentials: dict[str, tuple[str, str | None]],
        expiries: dict[str, float],
        accounts: dict[str, str],
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.config, self.credentials, self.expiries, self.accounts = config, credentials, expiries, accounts
        self.wall = wall
        self.issued = 0

    def assume_role(self, params: dict[str, str], caller: str, request_id: str) -> dict[str, Any]:
        role, session, duration = self._role_params(params)
        return {
            "RequestId": request_id,
            "AssumedRoleUser": {"Arn": f"{role}/{session}", "AssumedRoleId": f"3{caller[-8:]}:{session}"},
            "Credentials": self.issue(duration, _account(role)),
        }

    def assume_role_with_oidc(self, params: dict[str, str], request_id: str) -> dict[str, Any]:
        role, session, duration = self._role_params(params)
        provider = params.get("OIDCProviderArn", "")
        expected = self.config.oidc_tokens.get(provider)
        if expected is None:
            raise StsError("EntityNotExist.OIDCProvider", f"The OIDC provider {provider!r} does not exist.", 404)
        if not secrets.compare_digest(expected, params.get("OIDCToken", "")):
            raise StsError("AuthenticationFail.OIDCToken.Invalid", "The OIDC token is invalid.")
        return {
            "RequestId": request_id,
            "AssumedRoleUser": {"Arn": f"{role}/{session}", "AssumedRoleId": f"3oidc:{session}"},
            "OIDCTokenInfo": {"Issuer": "https://oidc.emulator.snapbatch", "Subject": "system:serviceaccount"},
            "Credentials": self.issue(duration, _account(role)),
        }

    def credentials_document(self) -> dict[str, Any]:
        """What a credentials URI answers (the shape URLCredentialsProvider reads)."""
        return {"Code": "Success", **self.issue(3600, "credentials-uri")}

    def _role_params(self, params: dict[str, str]) -> tuple[str, str, int]:
        role = params.get("RoleArn", "")
        if not _ROLE_ARN.fullmatch(role):
            raise StsError("InvalidParameter.RoleArn", f"The parameter RoleArn {role!r} is wrong.")
        session = params.get("RoleSessionName", "")
        if not _SESSION_NAME.fullmatch(session):
            raise StsError("InvalidParameter.RoleSessionName", "The parameter RoleSessionName is wrong.")
        duration = params.get("DurationSeconds", "3600")
        if not duration.isdigit() or not 900 <= int(duration) <= 43200:
            raise StsError("InvalidParameter.DurationSeconds", "The parameter DurationSeconds is wrong.")
        return role, session, int(duration)

    def issue(self, duration_s: int, account: str = "sts") -> dict[str, str]:
        """New STS credentials (the answer's Credentials object), accepted by VOD until they expire."""
        lifetime = self.config.lifetime_s if self.config.lifetime_s is not None else float(duration_s)
        key_id = "STS.NU" + secrets.token_hex(12)
        secret, token = secrets.token_urlsafe(30), "CAIS" + secrets.token_urlsafe(60)
        expires = self.wall() + lifetime
        self.credentials[key_id] = (secret, token)
        self.expiries[key_id] = expires
        self.accounts[key_id] = account
        self.issued += 1
        return {
            "AccessKeyId": key_id,
            "AccessKeySecret": secret,
            "SecurityToken": token,
            # STS gives whole seconds; rounding down keeps the client's idea of the expiry never later than ours
            "Expiration": datetime.fromtimestamp(int(expires), UTC).strftime(TIMESTAMP_FORMAT),
        }


def _account(role_arn: str) -> str:
    return role_arn.split(":")[3]  # acs:ram::ACCOUNT:role/NAME
