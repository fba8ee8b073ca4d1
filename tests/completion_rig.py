"""The emulator and the SnapshotComplete receiver on loopback, in one thread and event loop, for tests.

The emulator's wall clock is a FakeClock the test moves forward: jobs complete when it passes their time,
and ``deliver()`` posts every event then due to the receiver over HTTP and returns once each was answered.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from anyio.from_thread import BlockingPortal, start_blocking_portal

from snapbatch.completion.events import EventStore
from snapbatch.completion.receiver import Receiver, ReceiverConfig
from snapbatch.emulator import Callbacks, Emulator, EmulatorConfig, serve
from tests.emulated import AK_ID, AK_SECRET

ENV = {"ALIBABA_CLOUD_ACCESS_KEY_ID": AK_ID, "ALIBABA_CLOUD_ACCESS_KEY_SECRET": AK_SECRET, "HOME": "/nonexistent"}
AUTH_KEY = "TestAuthKey0123"


class FakeClock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@dataclass
class Rig:
    emulator: Emulator
    callbacks: Callbacks
    receiver: Receiver
    store: EventStore
    events: Path
    url: str
    receiver_url: str
    clock: FakeClock
    portal: BlockingPortal
    log: list[str] = field(default_factory=list)

    def deliver(self) -> int:
        """Post every event due by the fake clock; returns how many jobs that was."""
        return int(self.portal.call(self.callbacks.deliver_due))

    def complete_all(self) -> int:
        self.clock.advance(self.emulator.config.job_seconds + 1)
        return self.deliver()


@contextmanager
def rig(tmp: Path, config: EmulatorConfig | None = None, *, auth: bool = True) -> Iterator[Rig]:
    config = config or EmulatorConfig()
    config.credentials = {AK_ID: (AK_SECRET, None)}
    config.callback_retry_s = 0.0
    clock = FakeClock()
    emulator = Emulator(config, wall=clock)
    events = tmp / ".snapbatch" / "events.sqlite3"
    store = EventStore(events)
    log: list[str] = []
    with start_blocking_portal() as portal:
        # the receiver's public URL is known only once it listens: start it, then configure both sides
        receiver = Receiver(store, ReceiverConfig(), log=log.append)
        receiver_future, receiver_port = portal.start_task(receiver.serve)
        receiver_url = f"http://127.0.0.1:{receiver_port}/vod/events"
        if auth:
            receiver.config = ReceiverConfig(public_url=receiver_url, auth_keys=(AUTH_KEY,))
            config.callback_auth_key = AUTH_KEY
        if config.callback_url is None:
            config.callback_url = receiver_url
        emulator_future, port = portal.start_task(partial(serve, emulator))
        try:
            yield Rig(
                emulator,
                Callbacks(emulator),
                receiver,
                store,
                events,
                f"http://127.0.0.1:{port}",
                receiver_url,
                clock,
                portal,
                log,
            )
        finally:
            emulator_future.cancel()
            receiver_future.cancel()
            store.close()


def manifest(tmp: Path, n: int, *, batch: str = "t", qps: int = 30, extra: str = "") -> Path:
    (tmp / "ids.txt").write_text("".join(f"video-{i:05d}\n" for i in range(n)))
    path = tmp / "m.yaml"
    path.write_text(
        f"version: 1\nbatch: {batch}\nqps: {qps}\njobs:\n"
        f"  - {{name: all, videos: {{file: ids.txt}}, params: {{Count: 4{extra}}}}}\n"
    )
    return path
