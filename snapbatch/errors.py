"""Every error snapbatch raises on purpose.

    SnapbatchError                 root; str() is a whole sentence for the user
    ├── ManifestError              the manifest (or an ID file) is wrong: carries every Problem found
    ├── UsageError                 a command line that cannot work (bad flag value, http:// to a remote host)
    ├── CredentialsError           no usable AccessKey was found, or its token exchange failed; says what to do
    ├── StateError                 the state file cannot be opened, read or written (disk full, read-only)
    └── LockedError                another run holds the state file; names the holder

A failed *request* is never an exception: the client turns every answer into an Outcome.
Only ``cli.main`` turns these into exit codes.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "CredentialsError",
    "LockedError",
    "ManifestError",
    "Problem",
    "SnapbatchError",
    "StateError",
    "UsageError",
    "echo",
    "printable",
]


class SnapbatchError(Exception):
    """Root of snapbatch's own errors."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong (or worth a warning) in a manifest, located as precisely as possible."""

    file: str
    line: int | None
    col: int | None
    where: str
    message: str
    severity: str = "error"  # "error" or "warning"

    def format(self) -> str:
        """FILE:LINE:COL: WHERE: MESSAGE on one line, whatever characters the manifest held."""
        loc = printable(self.file)
        if self.line is not None:
            loc += f":{self.line}:{self.col if self.col is not None else 1}"
        label = "warning: " if self.severity == "warning" else ""
        where = f" {printable(_capped(self.where, 120))}:" if self.where else ""
        return f"{loc}:{where} {label}{printable(_capped(self.message))}"


def printable(text: str) -> str:
    """``text`` with control, bidi and other unprintable characters escaped (\\x1b, \\u202e), so that what
    a manifest or a server wrote cannot move the cursor, reorder a line or clear a terminal."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


ECHO_CHARS = 60
_MESSAGE_CHARS = 2000


def echo(value: object, limit: int = ECHO_CHARS, *, quote: bool = True) -> str:
    """User text quoted for a message: shortened to ``limit`` characters (saying how long it was) and
    escaped, so a 100 KB batch name or a line of terminal escapes is neither echoed whole nor obeyed.
    ``quote=False`` for a word the message has always shown bare (a mode, a role): escaped, not quoted."""
    text = value if isinstance(value, str) else str(value)
    shown = (repr if quote else printable)(text[: limit - 10] if len(text) > limit else text)
    return shown + f"... ({len(text)} characters)" if len(text) > limit else shown


def _capped(text: str, limit: int = _MESSAGE_CHARS) -> str:
    # The last guard: text built from long user input is cut in the middle, keeping what to do at its end.
    if len(text) <= limit:
        return text
    return text[: limit // 2] + " [...] " + text[-limit // 4 :]


class ManifestError(SnapbatchError):
    """The manifest cannot be used; ``problems`` lists every error (and the warnings found so far)."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = _in_file_order(problems)
        errors = [p for p in self.problems if p.severity == "error"]
        first = errors[0].format() if errors else "invalid manifest"
        more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
        super().__init__(first + more)


def _in_file_order(problems: list[Problem]) -> list[Problem]:
    """Sorted as a reader meets them: by file (in the order the files first appear), then line and column;
    a problem of a whole file comes before its located ones."""
    rank = {file: i for i, file in reversed(list(enumerate(p.file for p in problems)))}
    return sorted(problems, key=lambda p: (rank[p.file], p.line or 0, p.col or 0))


class UsageError(SnapbatchError):
    """A command line or setting that cannot work."""


class CredentialsError(SnapbatchError):
    """No AccessKey could be found, or the one found is unusable."""


class StateError(SnapbatchError):
    """The state file cannot be used."""


class LockedError(SnapbatchError):
    """Another run holds the state file."""

    def __init__(self, message: str, holder: dict[str, object]) -> None:
        self.holder = holder
        super().__init__(message)
