"""The local VOD endpoint: the service logic (``service``) behind a small HTTP server, and optionally a
stand-in for STS (``sts``) issuing credentials it accepts until they expire. Imports only
``snapbatch.vod.signing`` from the rest of snapbatch, so it stays faithful to the documented service rather
than to snapbatch's client."""

from snapbatch.emulator.callbacks import Callbacks, snapshot_event
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
    "Reply",
    "Sts",
    "StsConfig",
    "busiest_window",
    "load_videos",
    "rate_at_server",
    "snapshot_event",
]
