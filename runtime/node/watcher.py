"""A hot folder in front of the node: files dropped into a directory are explained like
received instances.

Only the folder's top level is watched. A file is taken once it is complete: its size and
modification time unchanged for ``settle_s`` seconds; names starting with '.' or ending in
'.part', '.tmp' or '.partial' are never taken, so a writer that renames into place when done
is picked up at once after the rename. A taken file is copied durably into the spool, then
moved to ``done_dir`` (kept, never deleted). When the queue is full the file simply waits.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

from .events import EventLog, uid_hash
from .worker import Node

PARTIAL_SUFFIXES = (".part", ".tmp", ".partial")


def is_partial(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower().endswith(PARTIAL_SUFFIXES)


class FolderWatcher:
    """Polls ``folder`` every ``poll_s`` and submits complete files to the node."""

    def __init__(self, folder: Path, node: Node, log: EventLog, done_dir: Path | None = None,
                 settle_s: float = 2.0, poll_s: float = 0.5) -> None:
        self.folder = folder
        self.node = node
        self.log = log
        self.done_dir = done_dir or folder / "done"
        self.settle_s = settle_s
        self.poll_s = poll_s
        self._seen: dict[Path, tuple[int, int, float]] = {}  # path -> (size, mtime_ns, stable since)

    def complete_files(self, now: float) -> list[Path]:
        """Files whose size and mtime have not changed for ``settle_s`` (oldest first)."""
        current = {}
        for entry in os.scandir(self.folder):
            path = Path(entry.path)
            if not entry.is_file(follow_symlinks=False) or is_partial(path):
                continue
            stat = entry.stat(follow_symlinks=False)
            signature = (stat.st_size, stat.st_mtime_ns)
            previous = self._seen.get(path)
            since = previous[2] if previous and previous[:2] == signature else now
            current[path] = (*signature, since)
        self._seen = current
        ready = [p for p, (_, _, since) in current.items() if now - since >= self.settle_s]
        return sorted(ready, key=lambda p: (current[p][1], p.name))

    def take(self, path: Path) -> str:
        """Submit one complete file; on acceptance move it to the done folder."""
        try:
            data = path.read_bytes()
        except OSError as error:
            self.log("watch_unreadable", file=path.name, error=error.strerror)
            return "unreadable"
        origin = {"file": uid_hash(path.name), "size": len(data)}
        suffix = path.suffix.lower() if path.suffix[1:].isascii() and path.suffix[1:].isalnum() else ""
        outcome = self.node.submit(data, suffix, origin=origin)
        if outcome == "accepted":
            self.done_dir.mkdir(parents=True, exist_ok=True)
            target = self.done_dir / path.name
            if target.exists():
                target = self.done_dir / f"{path.stem}-{time.time_ns()}{path.suffix}"
            os.replace(path, target)
            self._seen.pop(path, None)
        return outcome

    def run(self, stop: threading.Event) -> None:
        self.log("watching", folder=str(self.folder), settle_s=self.settle_s)
        while not stop.is_set():
            for path in self.complete_files(time.monotonic()):
                if stop.is_set() or self.take(path) == "refused":
                    break  # queue full: the rest waits in the folder
            stop.wait(self.poll_s)
