"""The state store: any sequence of changes survives close/reopen and a kill in the middle of writing."""

from __future__ import annotations

import json
import random
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from snapbatch.models import (
    ACCEPTED,
    FAILED,
    IN_DOUBT,
    THROTTLED,
    TRANSIENT,
    Outcome,
    OutcomeKind,
    Request,
    RequestStatus,
)
from snapbatch.run.state import Change, Intent, Settled, State, Unsent

KEYS = [f"k{i}" for i in range(6)]
kinds = st.sampled_from([ACCEPTED, FAILED, IN_DOUBT, THROTTLED, TRANSIENT])
ops = st.one_of(
    st.tuples(st.just("sending"), st.sampled_from(KEYS)),
    st.tuples(st.just("outcome"), st.sampled_from(KEYS), kinds),
    st.tuples(st.just("unsend"), st.sampled_from(KEYS), st.sampled_from(["pending", "in_doubt"])),
)


def _requests() -> list[Request]:
    return [Request(k, "job", None, "VideoId", f"v-{k}", {"VideoId": f"v-{k}", "Count": "1"}) for k in KEYS]


def _real(op: tuple[Any, ...]) -> Change:
    """The State change an op (a plain tuple, so it can travel as JSON) describes."""
    if op[0] == "sending":
        return Intent(op[1])
    if op[0] == "unsend":
        return Unsent(op[1], RequestStatus(op[2]))
    kind = OutcomeKind(op[2])
    return Settled(
        op[1], Outcome(kind, job_id="J" + op[1] if kind == ACCEPTED else None, code=None if kind == ACCEPTED else "C")
    )


def _model(groups: list[list[tuple[Any, ...]]]) -> dict[str, tuple[str, int, str | None]]:
    """What the store must hold after ``groups``, worked out independently of the code under test."""
    rows: dict[str, list[Any]] = {k: ["pending", 0, None] for k in KEYS}
    for group in groups:
        for op in group:
            row = rows[op[1]]
            if op[0] == "sending":
                row[0], row[1] = "sending", row[1] + 1
            elif op[0] == "unsend":
                if row[0] != "submitted":  # a request proven submitted (by an event) is never taken back
                    row[0], row[1] = op[2], row[1] - 1
            elif op[2] == ACCEPTED:
                row[0], row[2] = "submitted", "J" + op[1]
            elif row[0] != "submitted":
                row[0] = {FAILED: "failed", IN_DOUBT: "in_doubt"}.get(op[2], "pending")
    return {k: (v[0], v[1], v[2]) for k, v in rows.items()}


def _stored(path: Path) -> dict[str, tuple[str, int, str | None]]:
    with sqlite3.connect(path) as db:
        return {k: (s, a, j) for k, s, a, j in db.execute("SELECT key, status, attempts, job_id FROM requests")}


@settings(max_examples=100, deadline=None)
@given(st.lists(st.lists(ops, min_size=1, max_size=5), max_size=12))
def test_any_sequence_survives_close_and_reopen(groups: list[list[tuple[Any, ...]]]) -> None:
    """Groups of changes applied, the store closed and reopened: exactly what the model says."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "s.sqlite3"
        state = State(path)
        state.ingest(_requests(), "fp", "b")
        for group in groups:
            state.apply([_real(op) for op in group])
        state.close()
        reopened = State(path)
        reopened.close()
        assert _stored(path) == _model(groups)


WRITER = """
import json, sys
from snapbatch.run.state import State
from tests.test_state import _real
state = State(__import__("pathlib").Path(sys.argv[1]))
for line in sys.stdin:
    state.apply([_real(tuple(op)) for op in json.loads(line)])
    print("ok", flush=True)
"""


def test_kill_while_writing_keeps_a_committed_prefix() -> None:
    """A writer killed (SIGKILL) at a random moment: the store reopens intact and holds exactly the groups
    it acknowledged, or one more (the one being committed when it died)."""
    rnd = random.Random(20261125)
    for _ in range(8):
        groups: list[list[tuple[str, ...]]] = [
            [(rnd.choice(["sending", "outcome", "unsend"]), rnd.choice(KEYS)) for _ in range(rnd.randint(1, 4))]
            for _ in range(40)
        ]
        groups = [
            [
                op
                if op[0] == "sending"
                else (op[0], op[1], rnd.choice([ACCEPTED, FAILED, IN_DOUBT]))
                if op[0] == "outcome"
                else (op[0], op[1], "pending")
                for op in g
            ]
            for g in groups
        ]
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "s.sqlite3"
            state = State(path)
            state.ingest(_requests(), "fp", "b")
            state.close()
            proc = subprocess.Popen(
                [sys.executable, "-c", WRITER, str(path)],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                text=True,
                cwd=Path(__file__).parent.parent,
            )
            assert proc.stdin is not None and proc.stdout is not None
            acknowledged = 0
            kill_after = rnd.randint(0, len(groups) - 1)
            for group in groups:
                proc.stdin.write(json.dumps(group) + "\n")
                proc.stdin.flush()
                if acknowledged == kill_after:
                    break
                assert proc.stdout.readline() == "ok\n"
                acknowledged += 1
            proc.kill()
            proc.wait()
            proc.stdin.close()
            proc.stdout.close()
            with sqlite3.connect(path) as db:
                assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            stored = _stored(path)
            assert stored in (_model(groups[:acknowledged]), _model(groups[: acknowledged + 1]))
