"""The official default chain through the real alibabacloud-credentials, against loopback stand-ins of STS and a
credentials URI: which source wins, that the exchange really went over the wire to the stand-in, and what
is refused. The ECS metadata service is never called: its paths are checked by configuration alone."""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import pytest

from snapbatch.errors import CredentialsError
from snapbatch.models import ACCEPTED
from snapbatch.vod.chain import chain_sources, find_provider, sts_endpoint
from snapbatch.vod.client import VodClient
from snapbatch.vod.providers import CredentialsProvider, RenewingCredentials, StaticCredentials
from tests.conftest import CliRunner
from tests.emulated import AK_ID, AK_SECRET
from tests.sts import OIDC_PROVIDER, OIDC_TOKEN, ROLE, cli_config, ram_role_profile, stand_in
from tests.test_run import _manifest

NO_ECS = {"ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true"}


def _submit(url: str, provider: CredentialsProvider) -> str:
    async def go() -> str:
        async with VodClient(url, provider) as client:
            return (await client.submit({"VideoId": "v1", "Count": "1"})).kind

    return anyio.run(go)


def test_ram_role_arn_profile_assumes_the_role_at_the_stand_in(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    """A RamRoleArn CLI profile: AssumeRole reaches the loopback STS signed by the profile's key, with its role
    and session name; the STS credentials it returns are accepted by VOD; the source names mode and role; and
    the library's request logging (DEBUG=sdk) prints no signed URL."""
    cli_config(tmp_path, [ram_role_profile()])
    monkeypatch.setenv("DEBUG", "sdk")
    with stand_in(monkeypatch, tmp_path) as sts:
        provider = find_provider(sts.env(), tmp_path)
        assert _submit(sts.vod_url, provider) == ACCEPTED
    printed = capfd.readouterr()
    assert "Signature" not in printed.err + printed.out and "AssumeRole" not in printed.err
    [assume] = sts.calls("AssumeRole")
    assert assume["ak"] == AK_ID and assume["outcome"] == "issued"
    assert assume["params"]["RoleArn"] == ROLE and assume["params"]["RoleSessionName"] == "nightly-snapshots"
    assert provider.current().access_key_id == assume["issued"] != AK_ID
    [submit] = sts.calls("SubmitSnapshotJob")
    assert submit["ak"] == assume["issued"] and submit["outcome"] == "accepted"
    assert isinstance(provider, RenewingCredentials) and provider.expires_at is not None
    assert "aliyun CLI profile 'default' (RamRoleArn, role " + ROLE in provider.source
    assert sts.sts_host in provider.source


def test_oidc_profile_and_its_token_never_logged(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """An OIDC CLI profile: AssumeRoleWithOIDC at the stand-in with the token file's token (checked there), and
    the token appears in no log entry."""
    (tmp_path / "token").write_text(OIDC_TOKEN)
    profile = {
        "name": "rrsa",
        "mode": "OIDC",
        "ram_role_arn": ROLE,
        "oidc_provider_arn": OIDC_PROVIDER,
        "oidc_token_file": str(tmp_path / "token"),
    }
    cli_config(tmp_path, [profile], current="rrsa")
    with stand_in(monkeypatch, tmp_path) as sts:
        provider = find_provider(sts.env(), tmp_path)
        assert _submit(sts.vod_url, provider) == ACCEPTED
    [assume] = sts.calls("AssumeRoleWithOIDC")
    assert assume["outcome"] == "issued" and assume["params"]["OIDCProviderArn"] == OIDC_PROVIDER
    assert OIDC_TOKEN not in repr(sts.emulator.calls)
    assert provider.source.startswith("aliyun CLI profile 'rrsa' (OIDC, role ")


def test_oidc_environment_comes_before_the_cli_profile(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """ACK RRSA's three variables win over an AK profile (the official order); a wrong token is refused by the
    stand-in and the error says so without the token."""
    cli_config(tmp_path, [{"name": "default", "mode": "AK", "access_key_id": "cli", "access_key_secret": "s"}])
    token = tmp_path / "token"
    token.write_text(OIDC_TOKEN)
    oidc = {
        "ALIBABA_CLOUD_ROLE_ARN": ROLE,
        "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": OIDC_PROVIDER,
        "ALIBABA_CLOUD_OIDC_TOKEN_FILE": str(token),
        "ALIBABA_CLOUD_ROLE_SESSION_NAME": "ack-cronjob",
    }
    with stand_in(monkeypatch, tmp_path) as sts:
        provider = find_provider(sts.env(**oidc), tmp_path)
        assert _submit(sts.vod_url, provider) == ACCEPTED
        token.write_text("a-forged-token-SHOULD-NOT-SHOW")
        with pytest.raises(CredentialsError) as caught:
            find_provider(sts.env(**oidc), tmp_path)
    assert [c["params"]["RoleSessionName"] for c in sts.calls("AssumeRoleWithOIDC")] == ["ack-cronjob"] * 2
    assert provider.source.startswith("OIDC from ALIBABA_CLOUD_ROLE_ARN")
    assert "AuthenticationFail.OIDCToken.Invalid" in str(caught.value)
    assert "SHOULD-NOT-SHOW" not in str(caught.value)


def test_chainable_ram_role_arn_assumes_twice(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """ChainableRamRoleArn: the source profile's role is assumed first, and its STS credentials (token checked
    by the stand-in) sign the second AssumeRole."""
    second = "acs:ram::6543210987654321:role/partner-vod"
    cli_config(
        tmp_path,
        [
            ram_role_profile("jump"),
            {"name": "partner", "mode": "ChainableRamRoleArn", "source_profile": "jump", "ram_role_arn": second},
        ],
    )
    with stand_in(monkeypatch, tmp_path) as sts:
        provider = find_provider(sts.env(), tmp_path, "partner")
        assert _submit(sts.vod_url, provider) == ACCEPTED
    first, then = sts.calls("AssumeRole")
    assert (first["ak"], first["params"]["RoleArn"]) == (AK_ID, ROLE)
    assert (then["ak"], then["params"]["RoleArn"]) == (first["issued"], second)
    assert provider.current().access_key_id == then["issued"]
    assert "ChainableRamRoleArn from aliyun CLI profile 'jump'" in provider.source


def test_credentials_uri(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """ALIBABA_CLOUD_CREDENTIALS_URI (last in the chain) is fetched from the stand-in; the log's source leaves
    out the URI's query string."""
    with stand_in(monkeypatch, tmp_path) as sts:
        env = sts.env(ALIBABA_CLOUD_CREDENTIALS_URI=sts.uri + "?token=uri-secret-SHOULD-NOT-SHOW")
        provider = find_provider(env, tmp_path)
        assert _submit(sts.vod_url, provider) == ACCEPTED
    [fetched] = sts.calls("CredentialsURI")
    assert provider.current().access_key_id == fetched["issued"]
    assert provider.source == f"ALIBABA_CLOUD_CREDENTIALS_URI ({sts.uri})"


def test_ecs_role_by_configuration_only(tmp_path: Path) -> None:
    """EcsRamRole is checked by configuration alone, never called (it would ask 100.100.100.200, and the library
    has no setting to move that address): the profile maps to the ECS source with its role name; the implicit
    chain probes ECS before the credentials URI, as the official chain does; the metadata switch removes it."""
    cli_config(tmp_path, [{"name": "default", "mode": "EcsRamRole", "ram_role_name": "vod-snapshots"}])
    [ecs] = chain_sources({}, tmp_path)
    assert (ecs.kind, ecs.options["role_name"], ecs.probe) == ("ecs_ram_role", "vod-snapshots", False)
    assert ecs.label == "aliyun CLI profile 'default' (EcsRamRole, role 'vod-snapshots')"
    with pytest.raises(CredentialsError, match="ALIBABA_CLOUD_ECS_METADATA_DISABLED=true forbids"):
        chain_sources(NO_ECS, tmp_path)
    bare = tmp_path / "bare"
    bare.mkdir()
    uri = {"ALIBABA_CLOUD_CREDENTIALS_URI": "http://127.0.0.1:9/credentials"}
    probe, then = chain_sources({**uri, "ALIBABA_CLOUD_ECS_METADATA": "r1"}, bare)
    assert (probe.kind, probe.options["role_name"], probe.probe, then.kind) == (
        "ecs_ram_role",
        "r1",
        True,
        "credentials_uri",
    )
    assert [s.kind for s in chain_sources({**uri, **NO_ECS}, bare)] == ["credentials_uri"]


def test_chain_order(tmp_path: Path) -> None:
    """Environment AccessKey > OIDC environment > CLI profile > credentials.ini > ECS > URI."""
    token = tmp_path / "token"
    token.write_text("t")
    oidc = {
        "ALIBABA_CLOUD_ROLE_ARN": ROLE,
        "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": OIDC_PROVIDER,
        "ALIBABA_CLOUD_OIDC_TOKEN_FILE": str(token),
    }
    keys = {"ALIBABA_CLOUD_ACCESS_KEY_ID": "env-id", "ALIBABA_CLOUD_ACCESS_KEY_SECRET": "env-secret"}
    cli_config(tmp_path, [ram_role_profile()])
    (tmp_path / ".alibabacloud").mkdir()
    (tmp_path / ".alibabacloud" / "credentials.ini").write_text(
        f"[default]\ntype = ram_role_arn\naccess_key_id = a\naccess_key_secret = b\nrole_arn = {ROLE}\n"
    )

    def first(env: dict[str, str]) -> str:
        return chain_sources({**NO_ECS, **env}, tmp_path)[0].label

    assert first({**keys, **oidc}) == "environment"
    assert first(oidc).startswith("OIDC from ALIBABA_CLOUD_ROLE_ARN")
    assert first({}).startswith("aliyun CLI profile 'default' (RamRoleArn")
    assert first({"ALIBABA_CLOUD_CLI_PROFILE_DISABLED": "true"}).endswith(
        f"[default] (ram_role_arn, role {ROLE}, via sts.aliyuncs.com)"
    )


def test_sts_endpoint_like_the_library() -> None:
    """sts.aliyuncs.com by default; region and VPC variables as the library reads them; a profile's
    sts_endpoint, and ALIBABA_CLOUD_STS_ENDPOINT over it (as the aliyun CLI reads them), as host[:port]."""
    assert sts_endpoint({}) == "sts.aliyuncs.com"
    assert sts_endpoint({"ALIBABA_CLOUD_STS_REGION": "cn-shanghai"}) == "sts.cn-shanghai.aliyuncs.com"
    vpc = {"ALIBABA_CLOUD_VPC_ENDPOINT_ENABLED": "true"}
    assert sts_endpoint(vpc, "cn-beijing") == "sts-vpc.cn-beijing.aliyuncs.com"
    assert sts_endpoint(vpc, "cn-beijing", False) == "sts.cn-beijing.aliyuncs.com"
    assert sts_endpoint({}, "cn-beijing", given="sts.example.internal:8443") == "sts.example.internal:8443"
    override = {"ALIBABA_CLOUD_STS_ENDPOINT": "https://127.0.0.1:8443/"}
    assert sts_endpoint(override, "cn-beijing", given="sts.example.internal") == "127.0.0.1:8443"
    with pytest.raises(CredentialsError, match="host name with an optional :port"):
        sts_endpoint({"ALIBABA_CLOUD_STS_ENDPOINT": "http://127.0.0.1:8443/"})


def test_failed_exchange_says_why_without_secrets(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """STS refusing (a bad role ARN) and STS unreachable both stop with a sentence naming the source and the
    reason; neither the secret nor the request signature appears."""
    cli_config(tmp_path, [ram_role_profile(ram_role_arn="not-an-arn")])
    with stand_in(monkeypatch, tmp_path) as sts:
        with pytest.raises(CredentialsError) as refused:
            find_provider(sts.env(), tmp_path)
        closed = sts.env(ALIBABA_CLOUD_STS_ENDPOINT="127.0.0.1:9")  # discard port: connection refused
    cli_config(tmp_path, [ram_role_profile()])
    with pytest.raises(CredentialsError) as unreachable:
        find_provider(closed, tmp_path)
    assert "InvalidParameter.RoleArn" in str(refused.value)
    assert "cannot get credentials from aliyun CLI profile 'default'" in str(unreachable.value)
    for message in (str(refused.value), str(unreachable.value)):
        assert AK_SECRET not in message and "Signature=" not in message and "SignatureNonce" not in message


def test_profile_modes_the_chain_refuses(tmp_path: Path) -> None:
    """A mode snapbatch does not map (CloudSSO) and a ChainableRamRoleArn loop are refused with what to do."""
    cli_config(
        tmp_path,
        [
            {"name": "sso", "mode": "CloudSSO"},
            {"name": "a", "mode": "ChainableRamRoleArn", "source_profile": "b", "ram_role_arn": ROLE},
            {"name": "b", "mode": "ChainableRamRoleArn", "source_profile": "a", "ram_role_arn": ROLE},
        ],
    )
    with pytest.raises(CredentialsError, match="mode CloudSSO, which snapbatch does not support; use a profile"):
        chain_sources(NO_ECS, tmp_path, "sso")
    with pytest.raises(CredentialsError, match=r"its own source_profile \(through a -> b\)"):
        chain_sources(NO_ECS, tmp_path, "a")


def test_without_the_extra_exchanges_are_refused_with_the_install_command(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """With alibabacloud-credentials not importable, an AK key still works, while a RamRoleArn profile and the
    OIDC environment are refused naming `pip install 'snapbatch[aliyun]'`."""
    monkeypatch.setitem(sys.modules, "alibabacloud_credentials", None)
    monkeypatch.setitem(sys.modules, "alibabacloud_credentials.provider", None)
    keys = {"ALIBABA_CLOUD_ACCESS_KEY_ID": AK_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": AK_SECRET}
    assert isinstance(find_provider({**NO_ECS, **keys}, tmp_path), StaticCredentials)
    cli_config(tmp_path, [ram_role_profile()])
    with pytest.raises(CredentialsError, match=r"mode RamRoleArn.*pip install 'snapbatch\[aliyun\]'"):
        find_provider(NO_ECS, tmp_path)
    oidc = {
        "ALIBABA_CLOUD_ROLE_ARN": ROLE,
        "ALIBABA_CLOUD_OIDC_PROVIDER_ARN": "p",
        "ALIBABA_CLOUD_OIDC_TOKEN_FILE": "f",
    }
    with pytest.raises(CredentialsError, match=r"needs the alibabacloud-credentials package: pip install"):
        find_provider({**NO_ECS, **oidc}, tmp_path / "nowhere")


def test_run_without_usable_credentials_exits_4(
    cli: CliRunner, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`snapbatch run` whose role cannot be assumed stops before sending anything, with exit 4 and STS's
    reason; with no credentials at all, exit 4 naming the ways to give them."""
    manifest = _manifest(tmp_path, 3)
    cli_config(tmp_path, [ram_role_profile(ram_role_arn="acs:ram::1:role/")])
    with stand_in(monkeypatch, tmp_path) as sts:
        refused = cli("run", str(manifest), "--endpoint", sts.vod_url, env=sts.env(HOME=str(tmp_path)))
        nothing = cli("run", str(manifest), "--endpoint", sts.vod_url, env=sts.env(HOME=str(tmp_path / "nowhere")))
    assert refused.code == 4 and "InvalidParameter.RoleArn" in refused.err and AK_SECRET not in refused.err
    assert nothing.code == 4 and "no Alibaba Cloud credentials found" in nothing.err
    assert sts.calls("SubmitSnapshotJob") == []


def test_credentials_ini_role_types(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """credentials.ini [default] of type oidc_role_arn exchanges at the stand-in; type ecs_ram_role maps to
    the ECS source with its role name (by configuration only, never called)."""
    (tmp_path / "token").write_text(OIDC_TOKEN)
    (tmp_path / ".alibabacloud").mkdir()
    ini = tmp_path / ".alibabacloud" / "credentials.ini"
    ini.write_text(
        f"[default]\ntype = oidc_role_arn\nrole_arn = {ROLE}\noidc_provider_arn = {OIDC_PROVIDER}\n"
        f"oidc_token_file_path = {tmp_path / 'token'}\nrole_session_name = from-ini\n"
    )
    with stand_in(monkeypatch, tmp_path) as sts:
        provider = find_provider(sts.env(), tmp_path)
        assert _submit(sts.vod_url, provider) == ACCEPTED
    [assume] = sts.calls("AssumeRoleWithOIDC")
    assert assume["params"]["RoleSessionName"] == "from-ini" and provider.current().access_key_id == assume["issued"]
    ini.write_text("[default]\ntype = ecs_ram_role\nrole_name = vod-role\n")
    [ecs] = chain_sources({}, tmp_path)
    assert (ecs.kind, ecs.options["role_name"]) == ("ecs_ram_role", "vod-role")


def test_credentials_file_variable_names_the_ini_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """ALIBABA_CLOUD_CREDENTIALS_FILE moves credentials.ini, as the official chain's ProfileCredentialsProvider
    reads it: with the library and without it, its [default] section is used instead of ~/.alibabacloud's."""
    elsewhere = tmp_path / "etc" / "aliyun.ini"
    elsewhere.parent.mkdir()
    elsewhere.write_text("[default]\ntype = access_key\naccess_key_id = from-file\naccess_key_secret = s\n")
    (tmp_path / ".alibabacloud").mkdir()
    (tmp_path / ".alibabacloud" / "credentials.ini").write_text(
        "[default]\naccess_key_id = from-home\naccess_key_secret = s\n"
    )
    env = {**NO_ECS, "ALIBABA_CLOUD_CREDENTIALS_FILE": str(elsewhere)}
    [source] = chain_sources(env, tmp_path)
    assert source.static is not None and source.static.access_key_id == "from-file"
    assert source.label == f"{elsewhere} [default]"
    monkeypatch.setitem(sys.modules, "alibabacloud_credentials", None)
    monkeypatch.setitem(sys.modules, "alibabacloud_credentials.provider", None)
    assert find_provider(env, tmp_path).current().access_key_id == "from-file"
