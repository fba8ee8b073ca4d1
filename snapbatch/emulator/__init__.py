"""The local VOD endpoint: the service logic (``service``) behind a small HTTP server. Imports only
``snapbatch.vod.signing`` from the rest of snapbatch, so it stays faithful to the documented service rather
than to snapbatch's client."""

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

__all__ = [
    "DROP_AFTER",
    "DROP_BEFORE",
    "Emulator",
    "EmulatorConfig",
    "Reply",
    "busiest_window",
    "load_videos",
    "rate_at_server",
]
