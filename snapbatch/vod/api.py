"""Facts of the VOD API that the client, the manifest checks and the emulator must agree on.

Imports nothing from snapbatch, so the emulator can share them without depending on the client.
"""

from __future__ import annotations

import re

__all__ = ["API_VERSION", "REFERENCE_ID", "TIMESTAMP_FORMAT"]

API_VERSION = "2017-03-21"
# ISO 8601 in UTC to the second: x-acs-date, V1's Timestamp, and every time VOD's answers carry
TIMESTAMP_FORMAT = "%Y-%m-%dT%H:%M:%SZ"
# a ReferenceId, the caller's own ID of a video
REFERENCE_ID = re.compile(r"[A-Za-z0-9_-]{6,64}")
