"""The node's structured log: one JSON object per line, no patient data, and its metrics.

UIDs are logged only hashed (``uid_hash``): enough to follow one instance through the log
and to match it with its results, nothing that names a patient or a study. What the
libraries say (pydicom's and pynetdicom's loggers, Python warnings) comes into the same log
as ``library`` events, pseudonymised first (``pseudonymise``): their messages quote element
values — UIDs, names, dates — as they are.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
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


LIBRARY_LOGGERS = ("pydicom", "pynetdicom", "py.warnings")
REPEAT_WINDOW_S = 60.0  # the same library message within this is logged once
_QUOTED = re.compile(r"'[^']*'|\"[^\"]*\"")
_IDENTIFIERS = re.compile(r"\b[0-9]+(?:\.[0-9]+){3,}\b|\b[0-9]{8}\b|[^\s'\"]*\^[^\s'\"]*")  # UIDs, dates, PN
_WARNING_ORIGIN = re.compile(r"^.*?:[0-9]+: (?=\w+: )")  # "file.py:440: " before "UserWarning: ..."


def pseudonymise(text: str) -> str:
    """``text`` with every quoted value, UID, eight-digit date and person name (a caret) replaced
    by its hash: what a library says about an element, without the element's value."""
    text = _QUOTED.sub(lambda m: f"<{uid_hash(m.group()[1:-1])}>", text)
    return _IDENTIFIERS.sub(lambda m: f"<{uid_hash(m.group())}>", text)


class LibraryEvents(logging.Handler):
    """Log records of the libraries as pseudonymised ``library`` events (no tracebacks: the
    exception's type and message), each distinct message once per REPEAT_WINDOW_S."""

    def __init__(self, log: EventLog, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(logging.WARNING)
        self.log, self.clock = log, clock
        self._last: dict[str, float] = {}

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage().splitlines()[0] if record.getMessage() else ""
            if record.name == "py.warnings":
                message = _WARNING_ORIGIN.sub("", message)
            if record.exc_info and record.exc_info[1] is not None:
                message += f" ({type(record.exc_info[1]).__name__}: {str(record.exc_info[1]).splitlines()[0] if str(record.exc_info[1]) else ''})"
            message = pseudonymise(message)
            now = self.clock()
            if now - self._last.get(message, -REPEAT_WINDOW_S) < REPEAT_WINDOW_S:
                return
            if len(self._last) > 1000:
                self._last.clear()
            self._last[message] = now
            self.log("library", source=record.name.split(".")[0], level=record.levelname.lower(), message=message)
        except Exception:  # a log line must never take the node down
            self.handleError(record)


def route_library_logs(log: EventLog) -> None:
    """Send the libraries' warnings and errors to ``log`` instead of stderr as they are."""
    handler = LibraryEvents(log)
    logging.captureWarnings(True)
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        logger.handlers[:] = [handler]
        logger.setLevel(logging.WARNING)
        logger.propagate = False


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
