"""The command line: argument parsing and the validate/plan/emulator commands (``main``), the run, status and
report commands (``run``), the output streams and exit codes (``output``). The only part of snapbatch that
prints or reads os.environ."""

from snapbatch.cli.main import main

__all__ = ["main"]
