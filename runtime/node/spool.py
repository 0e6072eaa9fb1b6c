"""A durable spool for the DICOM node and the folder watcher: nothing received is lost and
nothing is done twice, whatever moment the process dies.

Layout under the spool's root::

    inbox/<id><suffix>      received: written to inbox/.incoming/, fsynced, renamed into place
                            (and the folder fsynced) before the sender is told it arrived
    inbox/.attempts/<id>    how many times the worker has begun this item (written before it
                            begins), so that an item that kills the process is not retried forever
    outbox/<id>/            the results, written whole in outbox/.partial-<id>/ and renamed,
                            with source.sha256: the digest of the input they explain
    quarantine/<id>/        an input that cannot be explained, with reason.txt
    rejected/<destination>/<id>/   a copy of a result a destination refused, with its status

Item ids start with the arrival time in nanoseconds, so sorting them is arrival order. On
a restart every inbox item is processed again, except one whose results (or quarantine
entry) already exist — the process died between the rename and the removal — which is only
removed, so each result exists exactly once. Leftover partial writes are discarded: an
incoming file was never acknowledged, a partial result is recomputed.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import shutil
import time
from collections.abc import Mapping
from pathlib import Path

INCOMING = ".incoming"
ATTEMPTS = ".attempts"
PARTIAL_PREFIX = ".partial-"
REASON_FILE = "reason.txt"
SOURCE_DIGEST = "source.sha256"
_counter = itertools.count()


def fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def digest(data: bytes) -> str:
    """The content digest that tells a re-sent instance from a different one under the same UID."""
    return hashlib.sha256(data).hexdigest()


def new_item_id(key: str = "") -> str:
    """Arrival time, a process-local counter and an optional key (letters and digits, e.g. a hashed UID)."""
    if key and not key.isalnum():
        raise ValueError(f"an item key is letters and digits only, not {key!r}")
    stamp = f"{time.time_ns():020d}-{os.getpid()}-{next(_counter):06d}"
    return f"{stamp}-{key}" if key else stamp


def item_id(item: Path) -> str:
    """The id of an inbox item (its name without the suffix)."""
    return item.name.split(".", 1)[0]


def item_key(name: str) -> str:
    """The key an item id was given ('' when none)."""
    parts = name.split(".", 1)[0].split("-")
    return parts[3] if len(parts) > 3 else ""


class Spool:
    """Inbox, outbox and quarantine folders under ``root``, created when missing."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.inbox = self.root / "inbox"
        self.outbox = self.root / "outbox"
        self.quarantined = self.root / "quarantine"
        self.rejected = self.root / "rejected"
        self.attempts = self.inbox / ATTEMPTS
        for folder in (self.inbox / INCOMING, self.attempts, self.outbox, self.quarantined, self.rejected):
            folder.mkdir(parents=True, exist_ok=True)

    def accept(self, data: bytes, suffix: str = "", key: str = "") -> Path:
        """Keep ``data`` durably in the inbox; returns the item. Only after this returns may
        the sender be told that the data arrived."""
        name = new_item_id(key) + suffix
        incoming = self.inbox / INCOMING / name
        try:
            write_durably(incoming, data)
        except OSError:
            incoming.unlink(missing_ok=True)  # a disk-full write leaves nothing behind
            raise
        item = self.inbox / name
        os.replace(incoming, item)
        fsync_dir(self.inbox)
        return item

    def recover(self) -> list[Path]:
        """At start-up, before anything is received: discard partial writes, finish the
        bookkeeping a crash interrupted, and return the inbox items still to process."""
        for leftover in (self.inbox / INCOMING).iterdir():
            leftover.unlink()
        for partial in [*self.outbox.glob(PARTIAL_PREFIX + "*"), *self.quarantined.glob(PARTIAL_PREFIX + "*")]:
            shutil.rmtree(partial)
        pending = self.pending()
        waiting = {item_id(item) for item in pending}
        for counter in self.attempts.iterdir():
            if counter.name not in waiting:
                counter.unlink()
        return pending

    def begin(self, item: Path) -> int:
        """Count one more attempt at ``item``, durably, before it is begun; returns the count."""
        counter = self.attempts / item_id(item)
        try:
            attempts = int(counter.read_text() or 0) + 1
        except (OSError, ValueError):
            attempts = 1
        write_durably(counter, str(attempts).encode())
        return attempts

    def keys(self) -> dict[str, str]:
        """The key of everything received and not quarantined (inbox items and results), with
        the digest of its content ('' for results written without one)."""
        known = {}
        for item in self.inbox.iterdir():
            if item.is_file() and not item.name.startswith(".") and item_key(item.name):
                known[item_key(item.name)] = digest(item.read_bytes())
        for folder in self.outbox.iterdir():
            if not folder.name.startswith(".") and item_key(folder.name):
                recorded = folder / SOURCE_DIGEST
                known[item_key(folder.name)] = recorded.read_text().strip() if recorded.exists() else ""
        return known

    def pending(self) -> list[Path]:
        """Inbox items still to process, oldest first."""
        items = []
        for item in sorted(p for p in self.inbox.iterdir() if p.is_file() and not p.name.startswith(".")):
            if (self.outbox / item_id(item)).exists() or (self.quarantined / item_id(item)).exists():
                self._remove(item)
            else:
                items.append(item)
        return items

    def finish(self, item: Path, files: Mapping[str, bytes]) -> Path:
        """Write an item's results as one folder of the outbox, then drop it from the inbox."""
        target = self.outbox / item_id(item)
        if not target.exists():
            partial = self.outbox / (PARTIAL_PREFIX + item_id(item))
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir()
            for name, data in {**files, SOURCE_DIGEST: digest(item.read_bytes()).encode()}.items():
                write_durably(partial / name, data)
            fsync_dir(partial)
            os.replace(partial, target)
            fsync_dir(self.outbox)
        self._remove(item)
        return target

    def quarantine(self, item: Path, reason: str) -> Path:
        """Move an input that cannot be explained aside, with the reason beside it."""
        target = self.quarantined / item_id(item)
        partial = self.quarantined / (PARTIAL_PREFIX + item_id(item))
        shutil.rmtree(partial, ignore_errors=True)
        partial.mkdir()
        write_durably(partial / REASON_FILE, (reason.rstrip() + "\n").encode())
        write_durably(partial / item.name, item.read_bytes())
        fsync_dir(partial)
        os.replace(partial, target)
        fsync_dir(self.quarantined)
        self._remove(item)
        return target

    def _remove(self, item: Path) -> None:
        item.unlink(missing_ok=True)
        fsync_dir(self.inbox)
        (self.attempts / item_id(item)).unlink(missing_ok=True)
