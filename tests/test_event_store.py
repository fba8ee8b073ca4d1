"""The event store and absorbing: any order, duplication and chunking of events gives the same state."""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from snapbatch.completion.events import EventStore, absorb, parse_event
from snapbatch.models import ACCEPTED, IN_DOUBT, Outcome, Request
from snapbatch.run.state import Intent, Settled, State

FATES = ["success", "fail", "success", "fail", "success", "success"]


def _event(job: int) -> bytes:
    """Job J0..J2 belong to submitted requests k0..k2; J3..J5 to requests k3..k5 whose answer was lost."""
    return json.dumps(
        {
            "EventType": "SnapshotComplete",
            "EventTime": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "Status": FATES[job],
            "ErrorCode": None if FATES[job] == "success" else "Broken",
            "Extend": json.dumps({"campaign": "x", "snapbatch": f"k{job}"}),
            "SnapshotInfos": [{"JobId": f"J{job}", "SnapshotType": "NormalSnapshot", "SnapshotCount": 2}],
        }
    ).encode()


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 5), max_size=6), max_size=5))
def test_any_order_duplication_and_chunking_give_the_same_state(chunks: list[list[int]]) -> None:
    """Events arriving in any order, any number of times, absorbed after any chunk: each job whose event
    came has its fate recorded on its request (a request in doubt becomes submitted with that JobId), the
    others stay unknown, and absorbing again changes nothing. Slow: 60 generated orders, each on two fresh SQLite
    files."""
    with tempfile.TemporaryDirectory() as tmp:
        state = State(Path(tmp) / "s.sqlite3")
        store = EventStore(Path(tmp) / "e.sqlite3")
        try:
            requests = [
                Request(f"k{i}", "j", None, "VideoId", f"v{i}", {"VideoId": f"v{i}", "Count": "1"}) for i in range(6)
            ]
            state.ingest(requests, "fp", "b")
            for i in range(6):
                outcome = Outcome(ACCEPTED, job_id=f"J{i}") if i < 3 else Outcome(IN_DOUBT, message="lost")
                state.apply([Intent(f"k{i}"), Settled(f"k{i}", outcome)])
            for chunk in chunks:
                for job in chunk:
                    store.add(parse_event(_event(job)) or [])
                absorb(state, store)
            assert absorb(state, store) == 0
            seen = {job for chunk in chunks for job in chunk}
            assert store.count() == len(seen)
            for row in state.rows():
                i = int(row.key[1:])
                if i in seen:
                    assert (row.status, row.job_id, row.completion) == ("submitted", f"J{i}", FATES[i])
                    assert row.completion_code == (None if FATES[i] == "success" else "Broken")
                else:
                    assert row.completion is None
                    assert row.status == ("submitted" if i < 3 else "in_doubt")
        finally:
            state.close()
            store.close()


def test_parse_event_reads_the_documented_fields() -> None:
    """A SnapshotComplete event gives its JobId, status, error, time, the request key from Extend and
    every snapshot kind; another event type gives nothing; a body that is not JSON gives None."""
    body = json.dumps(
        {
            "EventTime": "2026-11-27T01:02:03Z",
            "EventType": "SnapshotComplete",
            "VideoId": "v1",
            "Status": "fail",
            "ErrorCode": "InvalidVideo.NotFound",
            "ErrorMessage": "gone",
            "Extend": '{"snapbatch":"abc"}',
            "SnapshotInfos": [
                {
                    "JobId": "J9",
                    "SnapshotType": "NormalSnapshot",
                    "SnapshotCount": 0,
                    "SnapshotRegular": "u/{SnapshotCount}",
                },
                {
                    "JobId": "J9",
                    "SnapshotType": "SpriteSnapshot",
                    "SnapshotCount": 0,
                    "SnapshotRegular": "s/{SnapshotCount}",
                },
            ],
        }
    ).encode()
    (record,) = parse_event(body) or []
    assert (record.job_id, record.status, record.error_code, record.request_key) == (
        "J9",
        "fail",
        "InvalidVideo.NotFound",
        "abc",
    )
    assert record.completed_at == 1795741323.0
    assert [s["type"] for s in json.loads(record.snapshots or "[]")] == ["NormalSnapshot", "SpriteSnapshot"]
    assert parse_event(b'{"EventType": "FileUploadComplete"}') == []
    assert parse_event(b"<html>") is None
