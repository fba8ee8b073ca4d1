"""What a server says in a SearchMedia error reaches the terminal escaped and shortened, with the exit code
the error always had."""

from __future__ import annotations

import http.server
import json
import re
import textwrap
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import CliRunner
from tests.emulated import AK_ID, AK_SECRET

ENV = {"ALIBABA_CLOUD_ACCESS_KEY_ID": AK_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": AK_SECRET, "HOME": "/nonexistent"}
HOSTILE = "\x1b[2J\x1b]0;owned\x07\u202e" + "A" * 100_000 + "\x1b[0m"


@contextmanager
def _answering(status: int, answer: dict[str, Any]) -> Iterator[str]:
    """A loopback server giving every request ``status`` and ``answer``; yields its URL."""

    class Fixed(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Fixed)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _manifest(tmp_path: Path) -> Path:
    path = tmp_path / "m.yaml"
    path.write_text(
        textwrap.dedent(
            """\
            version: 1
            batch: hostile
            defaults: {Count: 1}
            jobs:
              - name: found
                videos:
                  search: "CateId = 1"
            """
        )
    )
    return path


@pytest.mark.parametrize(
    ("status", "code", "exit_code"),
    [
        (403, "Forbidden.RAM\x1b[31m", 4),  # fatal: SearchMedia answered CODE: MESSAGE
        (400, "InvalidParameter\x1b[31m", 2),  # the query refused: check the Match expression
    ],
)
def test_a_hostile_searchmedia_message_is_escaped_and_shortened(
    cli: CliRunner, tmp_path: Path, status: int, code: str, exit_code: int
) -> None:
    """A SearchMedia error whose Code and Message carry terminal escapes and 100,000 characters: the run exits
    as before, and stderr shows them escaped (\\x1b, \\u202e) and cut to a few hundred characters."""
    answer = {"RequestId": "r-1", "Code": code, "Message": HOSTILE}
    with _answering(status, answer) as url:
        result = cli("run", str(_manifest(tmp_path)), "--endpoint", url, env=ENV)
    assert result.code == exit_code
    line = next(line for line in result.err.splitlines() if "SearchMedia" in line)
    assert line.startswith("snapbatch: ")
    assert "\x1b" not in result.err and "\x07" not in result.err and "\u202e" not in result.err
    assert "\\x1b[2J" in line and "\\u202e" in line and "\\x1b[31m" in line
    shortened = re.search(r"\.\.\. \((\d+) characters\)", line)  # saying how long the Message was
    assert shortened and int(shortened.group(1)) >= len(HOSTILE)
    assert len(line) < 1000


def test_a_credentials_error_is_escaped_like_every_other_error(cli: CliRunner, tmp_path: Path) -> None:
    """A CredentialsError quoting a path with a terminal escape in it (a HOME named so) goes through the same
    escaping as the other errors: exit 4, the escape shown as \\x1b, never sent to the terminal."""
    home = tmp_path / "home\x1b[2J"
    home.mkdir()
    result = cli("run", str(_manifest(tmp_path)), "--profile", "nope", env={"HOME": str(home)})
    assert result.code == 4
    assert "\x1b" not in result.err
    assert "no aliyun CLI profile 'nope' in " in result.err and "home\\x1b[2J" in result.err
