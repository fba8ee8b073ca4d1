"""What is read as credentials must have the shape it should: whitespace refused, odd files named."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from snapbatch.errors import CredentialsError
from snapbatch.vod.credentials import find_credentials

SECRET = "s3cr3t-never-in-a-message"


def _write(home: Path, relative: str, data: bytes) -> Path:
    path = home / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _config(profile: dict[str, object], **top: object) -> bytes:
    return json.dumps(
        {"current": "default", "profiles": [{"name": "default", "mode": "AK", **profile}], **top}
    ).encode()


@pytest.mark.parametrize(
    ("key_id", "secret", "token", "field", "where"),
    [
        ("LTAI5t ", SECRET, None, "AccessKeyId", "at its end"),
        ("LTAI5t", SECRET + "\n", None, "AccessKey secret", "at its end"),
        ("LTAI5t", " " + SECRET, None, "AccessKey secret", "at its start"),
        ("LTAI5t", SECRET, "tok en", "security token", "at position 4"),
        ("LTAI\u200b5t", SECRET, None, "AccessKeyId", "at position 5"),
    ],
)
def test_whitespace_in_environment_keys_is_refused_naming_the_source(
    tmp_path: Path, key_id: str, secret: str, token: str | None, field: str, where: str
) -> None:
    """A key, secret or token with whitespace (or an invisible character) from the environment: refused,
    naming the source, the field and where, never the value."""
    env = {"ALIBABA_CLOUD_ACCESS_KEY_ID": key_id, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": secret}
    if token:
        env["ALIBABA_CLOUD_SECURITY_TOKEN"] = token
    with pytest.raises(CredentialsError) as caught:
        find_credentials(env, tmp_path)
    message = str(caught.value)
    assert f"the {field} from environment" in message and where in message
    assert SECRET not in message and "tok en" not in message


def test_whitespace_in_a_cli_profile_and_in_credentials_ini_is_refused(tmp_path: Path) -> None:
    """The same rule for the aliyun CLI profile and credentials.ini, each named as the source."""
    _write(tmp_path, ".aliyun/config.json", _config({"access_key_id": "LTAI5t", "access_key_secret": SECRET + " "}))
    with pytest.raises(
        CredentialsError, match=r"AccessKey secret from aliyun CLI profile 'default' contains whitespace"
    ):
        find_credentials({}, tmp_path)
    other = tmp_path / "other"
    _write(
        other,
        ".alibabacloud/credentials.ini",
        f"[default]\naccess_key_id = LTAI\t5t\naccess_key_secret = {SECRET}\n".encode(),
    )
    with pytest.raises(CredentialsError) as caught:
        find_credentials({}, other)
    assert "AccessKeyId from " in str(caught.value) and "credentials.ini [default] contains whitespace" in str(
        caught.value
    )


def test_a_byte_order_mark_is_fine_in_both_files(tmp_path: Path) -> None:
    """config.json and credentials.ini saved with a UTF-8 BOM (Notepad does) are read as without one."""
    _write(
        tmp_path,
        ".aliyun/config.json",
        b"\xef\xbb\xbf" + _config({"access_key_id": "id-cli", "access_key_secret": SECRET}),
    )
    assert find_credentials({}, tmp_path).access_key_id == "id-cli"
    other = tmp_path / "other"
    _write(
        other,
        ".alibabacloud/credentials.ini",
        f"\ufeff[default]\naccess_key_id = id-ini\naccess_key_secret = {SECRET}\n".encode(),
    )
    assert find_credentials({}, other).access_key_id == "id-ini"


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"current": "default", "profiles": {"default": {}}}', "`profiles` must be a list"),
        (b'{"current": 3, "profiles": []}', "`current` must be text"),
        (b'{"profiles": ["default"]}', "profiles[0] must be an object"),
        (
            _config({"access_key_id": 12345, "access_key_secret": SECRET}),
            "profiles[0].access_key_id must be text, not int",
        ),
        (b'{"profiles": [}', "is not valid JSON: Expecting value at line 1, column 15"),
        (b"[1, 2]", "expected a JSON object at the top"),
        (b"\xff\xfe{}", "is not UTF-8 text"),
    ],
)
def test_a_cli_config_of_unexpected_shape_is_named_with_what_is_wrong(
    tmp_path: Path, content: bytes, expected: str
) -> None:
    """A config.json with wrong types or broken JSON: a message naming the file and what is wrong, not
    "no credentials found" (which is what a profiles mapping used to give)."""
    path = _write(tmp_path, ".aliyun/config.json", content)
    with pytest.raises(CredentialsError) as caught:
        find_credentials({}, tmp_path)
    assert str(path) in str(caught.value) and expected in str(caught.value)
    assert "no Alibaba Cloud credentials found" not in str(caught.value)


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (f"access_key_secret = {SECRET}\n[default]\n", "line 1: a setting before any [section]"),
        (
            f"[default]\naccess_key_id = a\naccess_key_id = b\naccess_key_secret = {SECRET}\n",
            "line 3: option 'access_key_id' in [default] appears twice",
        ),
        (f"[default]\naccess_key_id = a\n{SECRET}\n", "line 3: not `name = value`"),
    ],
)
def test_a_malformed_credentials_ini_names_the_line_not_its_text(tmp_path: Path, content: str, expected: str) -> None:
    """A broken credentials.ini: the file and the line number, never the line's text (it may be a secret)."""
    path = _write(tmp_path, ".alibabacloud/credentials.ini", content.encode())
    with pytest.raises(CredentialsError) as caught:
        find_credentials({}, tmp_path)
    assert str(caught.value).startswith(str(path)) and expected in str(caught.value)
    assert SECRET not in str(caught.value)


def test_the_official_chain_applies_the_same_checks(tmp_path: Path) -> None:
    """Through the default chain (snapbatch[aliyun]) too: a fixed key with whitespace is refused naming its
    source, and a BOM in config.json does not hide an exchange profile."""
    from snapbatch.vod.chain import chain_sources

    _write(
        tmp_path,
        ".alibabacloud/credentials.ini",
        f"[default]\naccess_key_id = LTAI5t\naccess_key_secret = {SECRET} x\n".encode(),
    )
    with pytest.raises(
        CredentialsError, match=r"AccessKey secret from .*credentials.ini \[default\] contains whitespace"
    ):
        chain_sources({}, tmp_path)
    other = tmp_path / "other"
    profile = {"name": "default", "mode": "RamRoleArn", "access_key_id": "LTAI5t", "access_key_secret": SECRET}
    profile["ram_role_arn"] = "acs:ram::1:role/r"
    _write(
        other,
        ".aliyun/config.json",
        b"\xef\xbb\xbf" + json.dumps({"current": "default", "profiles": [profile]}).encode(),
    )
    (source,) = chain_sources({"ALIBABA_CLOUD_STS_ENDPOINT": "127.0.0.1:1"}, other)
    assert source.kind == "ram_role_arn"


@pytest.mark.parametrize("relative", [".aliyun/config.json", ".alibabacloud/credentials.ini"])
@pytest.mark.parametrize("kind", ["fifo", "directory"])
def test_a_credentials_file_that_is_no_regular_file_is_named_at_once(tmp_path: Path, relative: str, kind: str) -> None:
    """config.json or credentials.ini that is a FIFO (a read would wait forever) or a directory (once silently
    skipped, ending in 'no credentials found') is refused at once naming the file, by both readers."""
    from snapbatch.vod.chain import chain_sources

    path = tmp_path / relative
    path.parent.mkdir(parents=True)
    if kind == "fifo":
        os.mkfifo(path)
    else:
        path.mkdir()
    for find in (find_credentials, chain_sources):
        with pytest.raises(CredentialsError, match=f"^{path} is not a regular file"):
            find({}, tmp_path)


def test_credentials_file_named_by_the_environment_may_not_be_a_device(tmp_path: Path) -> None:
    """ALIBABA_CLOUD_CREDENTIALS_FILE=/dev/zero is refused at once, not read until memory runs out."""
    with pytest.raises(CredentialsError, match=r"^/dev/zero is not a regular file"):
        find_credentials({"ALIBABA_CLOUD_CREDENTIALS_FILE": "/dev/zero"}, tmp_path)
