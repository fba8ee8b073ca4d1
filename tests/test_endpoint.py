"""An endpoint is scheme://host[:port][/]: a query, a fragment or a user name is refused with exit 2 and what
to change, wherever the endpoint comes from (--endpoint, the manifest's key, an environment variable in it)."""

from __future__ import annotations

from pathlib import Path

import pytest

from snapbatch.errors import UsageError
from snapbatch.vod.endpoint import check_url
from tests.conftest import ROOT, CliRunner

REFUSED = [
    ("https://vod.cn-shanghai.aliyuncs.com?x=1", "has a query (?...) or a fragment (#...)"),
    ("https://vod.cn-shanghai.aliyuncs.com/?Action=SearchMedia", "has a query (?...) or a fragment (#...)"),
    ("https://vod.cn-shanghai.aliyuncs.com?", "has a query (?...) or a fragment (#...)"),
    ("https://vod.cn-shanghai.aliyuncs.com#top", "has a query (?...) or a fragment (#...)"),
    ("https://vod.cn-shanghai.aliyuncs.com/#", "has a query (?...) or a fragment (#...)"),
    ("http://127.0.0.1:8080/?debug", "has a query (?...) or a fragment (#...)"),
    ("https://user:pass@vod.cn-shanghai.aliyuncs.com", "carries a user name or password"),
    ("https://user@vod.cn-shanghai.aliyuncs.com", "carries a user name or password"),
    ("https://@vod.cn-shanghai.aliyuncs.com", "carries a user name or password"),
]


@pytest.mark.parametrize(("url", "words"), REFUSED)
def test_check_url_refuses_queries_fragments_and_user_names(url: str, words: str) -> None:
    """check_url (which the client, the manifest loader and the CLI all call) refuses each, saying what to do."""
    with pytest.raises(UsageError) as caught:
        check_url(url)
    assert words in str(caught.value) and "e.g. https://vod.cn-shanghai.aliyuncs.com" in str(caught.value)


@pytest.mark.parametrize("url", ["https://vod.cn-shanghai.aliyuncs.com", "https://vod.x.example:8443/"])
def test_check_url_accepts_scheme_host_port_and_a_slash(url: str) -> None:
    """scheme://host[:port] with an optional trailing / stays accepted."""
    check_url(url)


@pytest.mark.parametrize(("url", "words"), REFUSED[:6])
def test_endpoint_flag_with_a_query_or_fragment_exits_2(cli: CliRunner, url: str, words: str) -> None:
    """--endpoint with a query or fragment: exit 2 with the sentence, no traceback."""
    r = cli("plan", str(ROOT / "jobs.example.yaml"), "--summary", "--endpoint", url)
    assert r.code == 2 and words in r.err and "remove everything from the ? or #" in r.err, r.err
    assert "Traceback" not in r.err


def _manifest(tmp_path: Path, endpoint: str) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(
        f"version: 1\nbatch: e\nendpoint: {endpoint!r}\ndefaults: {{Count: 1}}\njobs: [{{name: a, videos: [v-0001]}}]\n"
    )
    return path


@pytest.mark.parametrize(("url", "words"), REFUSED)
def test_manifest_endpoint_with_a_query_fragment_or_user_name_is_a_located_error(
    cli: CliRunner, tmp_path: Path, url: str, words: str
) -> None:
    """The manifest's endpoint key: validate and plan exit 2 naming FILE:LINE:COL of the key and the problem."""
    path = _manifest(tmp_path, url)
    for command in ("validate", "plan"):
        r = cli(command, str(path))
        assert r.code == 2 and f"{path}:3:" in r.err and words in r.err, r.err


def test_manifest_endpoint_from_an_environment_variable_is_checked_too(cli: CliRunner, tmp_path: Path) -> None:
    """An endpoint taken from the environment through ${VAR} in the manifest is checked after expansion."""
    path = _manifest(tmp_path, "${VOD_ENDPOINT}")
    bad = cli("plan", str(path), "--summary", env={"VOD_ENDPOINT": "https://vod.cn-shanghai.aliyuncs.com#frag"})
    assert bad.code == 2 and "has a query (?...) or a fragment (#...)" in bad.err, bad.err
    good = cli("plan", str(path), "--summary", env={"VOD_ENDPOINT": "https://vod.cn-shanghai.aliyuncs.com/"})
    assert good.code == 0, good.err
