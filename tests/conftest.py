from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from snapbatch.cli.main import main
from snapbatch.run.runner import set_testing

ROOT = Path(__file__).parent.parent

# Nothing in the suite may reach beyond loopback: alibabacloud-credentials' default chain would ask the ECS
# metadata address unless told not to, and a proxy from the environment must not carry loopback calls.
os.environ["ALIBABA_CLOUD_ECS_METADATA_DISABLED"] = "true"
os.environ["NO_PROXY"] = os.environ["no_proxy"] = "127.0.0.1,localhost,::1"


@pytest.fixture(autouse=True, scope="session")
def no_backoff() -> Iterator[None]:
    """No test sits through real retry backoff (a test of backoff itself turns test mode off)."""
    set_testing(True)
    yield
    set_testing(False)


@dataclass
class Result:
    code: int
    out: str
    err: str


CliRunner = Callable[..., Result]


@pytest.fixture(autouse=True)
def _cache_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Each test gets its own cache directory (learned margins, shared-quota files), in processes it starts too."""
    cache = tmp_path_factory.mktemp("cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(cache))
    return cache


@pytest.fixture
def cli() -> CliRunner:
    """Run snapbatch in-process; return exit code, stdout and stderr. The test's own cache directory is in
    the environment unless ``env`` names one."""

    def run(*argv: str, env: Mapping[str, str] | None = None) -> Result:
        out, err = io.StringIO(), io.StringIO()
        environ = {
            "ALIBABA_CLOUD_ECS_METADATA_DISABLED": "true",
            "XDG_CACHE_HOME": os.environ["XDG_CACHE_HOME"],
            **(env or {}),
        }
        code = main(list(argv), env=environ, stdout=out, stderr=err)
        return Result(code, out.getvalue(), err.getvalue())

    return run
