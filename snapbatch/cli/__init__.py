"""The command line: argument parsing (``main``), the run/status/report commands (``run``), exit codes."""

from snapbatch.cli.main import main

__all__ = ["main"]
