"""The node: a durable queue of received radiographs, one worker that explains them, and the
services that feed it (the DICOM Storage SCP, the folder watcher) and drain it (forwarding).

Received data is kept in the spool's inbox before the sender hears that it arrived; the
worker explains the oldest item, writes its results to the outbox and only then removes it
from the inbox, so a crash at any moment loses nothing and duplicates nothing (see spool).
The queue is bounded: past ``max_queue`` items waiting, ``submit`` refuses (the SCP answers
Out of Resources) rather than accept what it cannot keep up with. An item that cannot be
explained goes to quarantine with its reason; the worker goes on. So does an item that the
process died on ``MAX_ATTEMPTS`` times (killed, out of memory, a crash in native code): it is
quarantined instead of being begun again, so a restart never loops on it.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from ...errors import InputError
from .events import EventLog, Metrics, pseudonymise
from .processor import InstanceProcessor
from .spool import Spool, digest, item_id, item_key

MAX_ATTEMPTS = 3
WRITE_RETRY_S = (1.0, 30.0)  # first and longest pause before writing again after a failed write


class Node:
    """The spool, the bounded queue and the worker thread."""

    def __init__(self, spool: Spool, processor: InstanceProcessor, log: EventLog, max_queue: int,
                 on_result: Callable[[], None] | None = None) -> None:
        self.spool = spool
        self.processor = processor
        self.log = log
        self.max_queue = max_queue
        self.metrics = Metrics()
        self.on_result = on_result
        self.stopping = threading.Event()
        self._queue: deque[Path] = deque()
        self._origins: dict[Path, dict[str, Any]] = {}
        self._keys: dict[str, str] = {}  # key (hashed SOP Instance UID) -> digest of what was received
        self._cannot_write = ""  # why results cannot be written now; while set, nothing new is accepted
        self._condition = threading.Condition()
        self._worker: threading.Thread | None = None

    def start(self) -> None:
        """Recover the spool (items left by a previous run go first), then start the worker."""
        recovered = self.spool.recover()
        self._keys = self.spool.keys()
        self._queue.extend(recovered)
        if recovered:
            self.log("recovered", items=len(recovered))
        self._worker = threading.Thread(target=self._work, name="chexplain-worker", daemon=True)
        self._worker.start()

    @property
    def depth(self) -> int:
        return len(self._queue)

    def submit(self, data: bytes, suffix: str, key: str = "", origin: Mapping[str, Any] | None = None) -> str:
        """Keep ``data`` and queue it: 'accepted'; 'duplicate' (the same content under a key already
        received: acknowledged, not explained twice); 'conflict' (different content under a known
        key: kept in quarantine with that reason); or 'refused' (queue full, results cannot be
        written, or shutting down; nothing kept). Raises OSError when it cannot be stored."""
        content = digest(data) if key else ""
        with self._condition:
            if key and key in self._keys and self._keys[key] in (content, ""):
                self.log("duplicate", key=key, **(origin or {}))
                return "duplicate"
            why = ("shutting down" if self.stopping.is_set() else f"cannot write results: {self._cannot_write}"
                   if self._cannot_write else "queue full" if len(self._queue) >= self.max_queue else "")
            if why:
                self.metrics.count("refused")
                self.log("refused", reason=why, queue=len(self._queue), **(origin or {}))
                return "refused"
            if key and key in self._keys:
                item = self.spool.accept(data, suffix)
                self.spool.quarantine(item, f"SOP Instance UID (hashed {key}) was received before with different "
                                            "content; this instance was not explained")
                self.metrics.count("failed")
                self.log("quarantined", item=item_id(item), reason="re-used SOP Instance UID, different content",
                         **(origin or {}))
                return "conflict"
            item = self.spool.accept(data, suffix, key)
            if key:
                self._keys[key] = content
            self._queue.append(item)
            self._origins[item] = dict(origin or {})
            self.metrics.count("received")
            self._condition.notify()
        self.log("received", item=item_id(item), queue=len(self._queue), **(origin or {}))
        return "accepted"

    def stop(self, timeout: float | None = None) -> None:
        """Stop taking work; the worker finishes the item in hand, the rest stays in the inbox."""
        with self._condition:
            self.stopping.set()
            self._condition.notify_all()
        if self._worker is not None:
            self._worker.join(timeout)

    def _next(self) -> Path | None:
        with self._condition:
            while not self._queue and not self.stopping.is_set():
                self._condition.wait()
            return None if self.stopping.is_set() else self._queue[0]

    def _work(self) -> None:
        while (item := self._next()) is not None:
            self.process(item)
            with self._condition:
                self._queue.popleft()
                self._origins.pop(item, None)

    def process(self, item: Path) -> None:
        """Explain one inbox item into the outbox, or quarantine it; never raises."""
        start = time.perf_counter()
        origin = self._origins.get(item, {"recovered": True})
        attempt = self._writing(lambda: self.spool.begin(item), item)
        if attempt is None:
            return
        if attempt > MAX_ATTEMPTS:
            self._quarantine(item, f"the node stopped {attempt - 1} times while explaining this item (killed, out "
                                   "of memory or crashed); it is not tried again", origin)
            return
        try:
            files, record = self.processor.process(item, origin)
        except InputError as error:
            self._quarantine(item, error.reason, origin)
            return
        except Exception as error:  # a bug or a backend failure must not stop the node
            detail = str(error).splitlines()[0] if str(error) else ""
            self._quarantine(item, f"the node failed while explaining this image ({type(error).__name__}: {detail}); "
                                   "it is kept here with this reason for a bug report", origin)
            return
        if self._writing(lambda: self.spool.finish(item, files), item) is None:
            return
        latency_ms = (time.perf_counter() - start) * 1e3
        self.metrics.done(latency_ms)
        self.log("explained", item=item_id(item), findings=record["findings"], files=len(files),
                 ms=round(latency_ms, 1), **origin)
        if record.get("failed") or record.get("header_repairs"):
            self.log("results_incomplete" if record.get("failed") else "header_repaired", item=item_id(item),
                     failed=record.get("failed", []), repaired=record.get("header_repairs", {}), **origin)
        if self.on_result:
            self.on_result()

    def _writing(self, write: Callable[[], Any], item: Path) -> Any:
        """``write()``'s result once the spool can be written. While a write fails (a full disk, a
        read-only remount) the node says so once, refuses new instances (Out of Resources) and
        tries again with a growing pause; None when it is stopped meanwhile (the item stays in
        the inbox for the next start)."""
        pause = WRITE_RETRY_S[0]
        while True:
            try:
                result = write()
            except OSError as error:
                reason = f"{error.strerror or error}" + (f" ({error.filename})" if error.filename else "")
                if not self._cannot_write:
                    self.log("write_failed", item=item_id(item), error=reason, retry_in_s=pause)
                self._cannot_write = reason
                if self.stopping.wait(pause):
                    return None
                pause = min(pause * 2, WRITE_RETRY_S[1])
                continue
            if self._cannot_write:
                self._cannot_write = ""
                self.log("write_resumed", item=item_id(item))
            return result

    def _quarantine(self, item: Path, reason: str, origin: Mapping[str, Any]) -> None:
        with self._condition:
            self._keys.pop(item_key(item.name), None)
        if self._writing(lambda: self.spool.quarantine(item, reason), item) is None:
            return
        self.metrics.count("failed")
        self.log("quarantined", item=item_id(item), reason=pseudonymise(reason.splitlines()[0])[:300], **origin)

    def health(self) -> dict[str, Any]:
        return self.metrics.snapshot(queue=self.depth, **({"cannot_write": self._cannot_write} if self._cannot_write
                                                          else {}))

    def report_health(self, interval_s: float, extra: Callable[[], Mapping[str, Any]] | None = None) -> None:
        """Log a health line every ``interval_s`` until stopped (run in its own thread)."""
        while not self.stopping.wait(interval_s):
            self.log("health", **self.health(), **(extra() if extra else {}))
