"""Where the command line's words go (``Out``: stdout for results, stderr for the log) and the exit codes
it returns (``EXIT``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TextIO

from snapbatch.errors import Problem, printable

__all__ = ["EXIT", "Out"]

EXIT = {"ok": 0, "failed": 1, "usage": 2, "locked": 3, "fatal": 4, "stopped": 5, "state": 6, "interrupted": 130}


class Out:
    """The streams a command writes to: results on ``stdout``, problems and the log on ``stderr``."""

    def __init__(self, stdout: TextIO, stderr: TextIO) -> None:
        self.stdout = stdout
        self.stderr = stderr

    def problems(self, problems: Sequence[Problem]) -> None:
        for p in problems:
            print(p.format(), file=self.stderr)

    def log(self, message: str) -> None:
        # escaped: a log line may quote a server's message or a manifest's text
        print(f"snapbatch: {printable(message)}", file=self.stderr, flush=True)
