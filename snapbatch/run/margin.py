"""The margin a run learned from throttles, kept per (endpoint, AccessKeyId) so the next run starts from it.

Tomorrow night's cron slice meets the same network path as tonight's: if tonight's throttles widened the
margin, starting tomorrow from the base margin would cost the same throttles again. The file lives in the
user's cache directory and is named by a hash of the endpoint and the AccessKeyId: never the secret, and
not even the key id in clear in a file name. Losing it costs a throttle or two, never correctness, so a
cache that cannot be read or written is ignored.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Mapping
from pathlib import Path

from snapbatch.files import write_atomically
from snapbatch.run.limiter import MAX_MARGIN_S

__all__ = ["MarginStore", "cache_dir", "key_digest"]


def cache_dir(env: Mapping[str, str]) -> Path:
    """snapbatch's cache directory: $XDG_CACHE_HOME/snapbatch, else ~/.cache/snapbatch."""
    xdg = env.get("XDG_CACHE_HOME", "")
    if xdg and Path(xdg).is_absolute():  # the XDG spec says a relative value is to be ignored
        return Path(xdg) / "snapbatch"
    home = env.get("HOME") or str(Path.home())
    return Path(home) / ".cache" / "snapbatch"


def key_digest(endpoint: str, access_key_id: str) -> str:
    """A stable name for the pair (endpoint, AccessKeyId) that does not show the key id."""
    return hashlib.sha256(f"{endpoint.rstrip('/')}\0{access_key_id}".encode()).hexdigest()[:32]


class MarginStore:
    def __init__(self, directory: Path, endpoint: str, access_key_id: str) -> None:
        self.path = directory / "margins" / f"{key_digest(endpoint, access_key_id)}.json"

    def load(self) -> float | None:
        """The margin the last run on this key ended with, in seconds; None when none is known."""
        try:
            value = json.loads(self.path.read_text())["margin_s"]
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not isinstance(value, int | float) or not 0 <= value <= MAX_MARGIN_S:
            return None
        return float(value)

    def save(self, margin_s: float) -> bool:
        """Keep ``margin_s`` for the next run (atomically: a concurrent reader sees the old or the new)."""
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            write_atomically(self.path, json.dumps({"margin_s": round(margin_s, 6), "saved_at": time.time()}))
        except OSError:
            return False
        return True
