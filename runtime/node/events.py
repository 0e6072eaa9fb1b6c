"""The node's structured log: one JSON object per line, no patient data, and its metrics.

UIDs are logged only hashed (``uid_hash``): enough to follow one instance through the log
and to match it with its results, nothing that names a patient or a study.
"""

from __future__ import annotations

import hashlib
import json
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from datetime import datetime, timezone
from typing import Any, TextIO

from ..percentiles import percentile


def uid_hash(uid: str) -> str:
    """A short, stable pseudonym for a DICOM UID (or any identifier)."""
    return hashlib.sha256(uid.encode()).hexdigest()[:16]


class EventLog:
    """Writes ``{"time", "event", ...}`` lines to a stream (stderr by default), thread-safe."""

    def __init__(self, stream: TextIO | None = None, clock: Callable[[], datetime] | None = None) -> None:
        self.stream = stream or sys.stderr
        self.clock = clock or (lambda: datetime.now(timezone.utc))
        self._lock = threading.Lock()

    def __call__(self, event: str, **fields: Any) -> None:
        record = {"time": self.clock().isoformat(timespec="milliseconds"), "event": event, **fields}
        line = json.dumps(record, default=str, separators=(",", ":"))
        with self._lock:
            self.stream.write(line + "\n")
            self.stream.flush()


class Metrics:
    """Counters and the latencies of the last ``window`` instances, for the health line."""

    def __init__(self, window: int = 1000) -> None:
        self.started = time.monotonic()
        self.received = self.processed = self.failed = self.refused = self.forwarded = self.rejected = 0
        self.latencies_ms: deque[float] = deque(maxlen=window)
        self._lock = threading.Lock()

    def count(self, name: str, amount: int = 1) -> None:
        with self._lock:
            setattr(self, name, getattr(self, name) + amount)

    def done(self, latency_ms: float) -> None:
        with self._lock:
            self.processed += 1
            self.latencies_ms.append(latency_ms)

    def snapshot(self, **extra: Any) -> dict[str, Any]:
        with self._lock:
            latencies = list(self.latencies_ms)
            record: dict[str, Any] = {
                "uptime_s": round(time.monotonic() - self.started, 1),
                "received": self.received, "processed": self.processed, "failed": self.failed,
                "refused": self.refused, "forwarded": self.forwarded, "rejected": self.rejected,
            }
        record.update(extra)
        if latencies:
            record["latency_ms"] = {f"p{q}": round(percentile(latencies, q), 1) for q in (50, 90, 99)}
        return record
