"""The local VOD endpoint: the service logic (``service``, no sockets) behind an HTTP/1.1 server (``server``,
on h11), optionally a stand-in for STS (``sts``) issuing credentials it accepts until they expire, and a
harness that runs it in a thread or a process of its own (``harness``). Imports only ``snapbatch.vod.signing``
and ``snapbatch.vod.api`` from the rest of snapbatch, so it stays faithful to the documented service rather
than to snapbatch's client."""

from snapbatch.emulator.callbacks import Callbacks, snapshot_event
from snapbatch.emulator.harness import EmulatorProcess, RunningEmulator, emulator_process, running_emulator
from snapbatch.emulator.server import serve
from snapbatch.emulator.service import (
    DROP_AFTER,
    DROP_BEFORE,
    Emulator,
    EmulatorConfig,
    Reply,
    busiest_window,
    load_videos,
    rate_at_server,
)
from snapbatch.emulator.sts import CREDENTIALS_URI_PATH, Sts, StsConfig

__all__ = [
    "CREDENTIALS_URI_PATH",
    "DROP_AFTER",
    "DROP_BEFORE",
    "Callbacks",
    "Emulator",
    "EmulatorConfig",
    "EmulatorProcess",
    "Reply",
    "RunningEmulator",
    "Sts",
    "StsConfig",
    "busiest_window",
    "emulator_process",
    "load_videos",
    "rate_at_server",
    "running_emulator",
    "serve",
    "snapshot_event",
]
