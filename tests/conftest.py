from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

from snapbatch.cli.main import main

ROOT = Path(__file__).parent.parent


@dataclass
class Result:
    code: int
    out: str
    err: str


CliRunner = Callable[..., Result]


@pytest.fixture
def cli() -> CliRunner:
    """Run snapbatch in-process; return exit code, stdout and stderr."""

    def run(*argv: str, env: Mapping[str, str] | None = None) -> Result:
        out, err = io.StringIO(), io.StringIO()
        code = main(list(argv), env=dict(env or {}), stdout=out, stderr=err)
        return Result(code, out.getvalue(), err.getvalue())

    return run
