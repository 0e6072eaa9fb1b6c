"""A hot folder in front of the node: files dropped into a directory are explained like
received instances.

Only the folder's top level is watched. A file is taken once it is complete: its size and
modification time unchanged for ``settle_s`` seconds and its content whole by its format's
own account (a PNG's IEND chunk, a JPEG's end-of-image marker, a DICOM's pixel data of the
length its header gives, or the sequence delimiter closing encapsulated frames). A file
that looks cut short is left for ``INCOMPLETE_FACTOR`` x ``settle_s`` (a writer that
pauses), and only then taken, to be quarantined as truncated. Names starting with '.' or
ending in '.part', '.tmp' or '.partial' are never taken, so a writer that renames into place
when done is picked up at once after the rename. A taken file is copied durably into the
spool under its content digest (the same file dropped again is not explained twice), then
moved to ``done_dir`` (kept, never deleted; across filesystems: copied, synced, then
removed). When the queue is full the file simply waits. File names are logged hashed only:
they often name the patient.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import struct
import threading
import time
import warnings
from pathlib import Path

from .events import EventLog, uid_hash
from .spool import digest, fsync_dir, write_durably
from .worker import Node

PARTIAL_SUFFIXES = (".part", ".tmp", ".partial")
INCOMPLETE_FACTOR = 10
DICOM_PREAMBLE = 132  # 128 bytes, then "DICM"
SEQUENCE_DELIMITER = struct.pack("<HHI", 0xFFFE, 0xE0DD, 0)  # ends encapsulated pixel data


def is_partial(path: Path) -> bool:
    return path.name.startswith(".") or path.name.lower().endswith(PARTIAL_SUFFIXES)


def known_format(data: bytes) -> bool:
    """Whether the bytes begin as a PNG, a JPEG or a DICOM Part 10 file (or are too short to tell yet)."""
    from ..inputs.bitmap import JPEG_SIGNATURE, PNG_SIGNATURE

    return (data.startswith((PNG_SIGNATURE, JPEG_SIGNATURE)) or len(data) < DICOM_PREAMBLE
            or data[128:DICOM_PREAMBLE] == b"DICM")


def looks_complete(data: bytes) -> bool:
    """Whether a file's bytes are whole by its format's own account. Content of no known format
    counts as complete: the reader then says what it is not."""
    from ..inputs.bitmap import JPEG_SIGNATURE, PNG_SIGNATURE

    if data.startswith(PNG_SIGNATURE):
        return data[-8:-4] == b"IEND"
    if data.startswith(JPEG_SIGNATURE):
        return data.rstrip(b"\x00").endswith(b"\xff\xd9")
    if len(data) < DICOM_PREAMBLE:
        return False  # too short to say what it will be
    if data[128:DICOM_PREAMBLE] != b"DICM":
        return True
    return _dicom_complete(data)


def _dicom_complete(data: bytes) -> bool:
    """pydicom reads a cut file without complaint, dropping a cut pixel data element or reading it short.
    A deflated dataset is whole when its deflate stream ends (followed without keeping it)."""
    from ..inputs.dicom_bounds import deflate_complete, deflated_body

    body = deflated_body(data)
    if body is not None:
        return deflate_complete(body)
    try:
        import pydicom

        with warnings.catch_warnings():  # a probe: a cut file's warnings say nothing new
            warnings.simplefilter("ignore")
            ds = pydicom.dcmread(io.BytesIO(data))
    except Exception:
        return True  # not a dataset: corrupt rather than cut
    if data.endswith(SEQUENCE_DELIMITER):
        return True
    if "PixelData" not in ds:
        return False
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    expected = (int(ds.get("Rows", 0)) * int(ds.get("Columns", 0)) * int(ds.get("SamplesPerPixel", 1))
                * -(-int(ds.get("BitsAllocated", 8)) // 8) * frames)
    return len(ds.PixelData) >= expected


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
        # path -> (size, mtime_ns, what) for the version of a file already reported and set aside:
        # "unreadable", "waiting" (looks cut short), "stuck" (cannot be moved to the done folder),
        # "skipped" (not an image file: left in place)
        self._held: dict[Path, tuple[int, int, str]] = {}
        self._links: set[Path] = set()  # symbolic links already reported: never followed

    def complete_files(self, now: float) -> list[Path]:
        """Files whose size and mtime have not changed for ``settle_s`` (oldest first)."""
        current, links = {}, set()
        for entry in os.scandir(self.folder):
            path = Path(entry.path)
            if entry.is_symlink() and not is_partial(path):
                links.add(path)
                if path not in self._links:
                    self.log("watch_skipped", file=uid_hash(path.name), reason="a symbolic link: not followed (a link "
                             "can point anywhere); move or copy the file itself into the folder")
                continue
            if not entry.is_file(follow_symlinks=False) or is_partial(path):
                continue
            stat = entry.stat(follow_symlinks=False)
            signature = (stat.st_size, stat.st_mtime_ns)
            previous = self._seen.get(path)
            since = previous[2] if previous and previous[:2] == signature else now
            current[path] = (*signature, since)
        self._seen, self._links = current, links
        self._held = {p: held for p, held in self._held.items() if p in current and current[p][:2] == held[:2]}
        ready = [p for p, (_, _, since) in current.items() if now - since >= self.settle_s]
        return sorted(ready, key=lambda p: (current[p][1], p.name))

    def _hold(self, path: Path, what: str, **fields: object) -> None:
        """Set this version of the file aside and say why, once (not at every poll)."""
        size, mtime_ns, _ = self._seen.get(path, (0, 0, 0.0))
        self._held[path] = (size, mtime_ns, what)
        self.log(f"watch_{what}", file=uid_hash(path.name), **fields)

    def take(self, path: Path, now: float) -> str:
        """Submit one stable file that is whole (or has looked cut short for long enough); once
        the node has it, move it to the done folder."""
        held = self._held.get(path, (0, 0, ""))[2]
        stable_for = now - self._seen.get(path, (0, 0, now))[2]
        if held in ("unreadable", "stuck", "skipped") or (held == "waiting" and stable_for < INCOMPLETE_FACTOR * self.settle_s):
            return held
        try:
            data = path.read_bytes()
        except OSError as error:
            self._hold(path, "unreadable", error=error.strerror or str(error))
            return "unreadable"
        if not known_format(data):
            self._hold(path, "skipped", size=len(data), reason="not a PNG, JPEG or DICOM file; left where it is")
            return "skipped"
        if not looks_complete(data) and stable_for < INCOMPLETE_FACTOR * self.settle_s:
            self._hold(path, "waiting", size=len(data), reason="looks cut short; waiting for the writer")
            return "waiting"
        origin = {"file": uid_hash(path.name), "size": len(data)}
        suffix = path.suffix.lower() if path.suffix[1:].isascii() and path.suffix[1:].isalnum() else ""
        outcome = self.node.submit(data, suffix, key=digest(data)[:16], origin=origin)
        if outcome in ("accepted", "duplicate"):
            try:
                self._move_to_done(path)
            except OSError as error:
                self._hold(path, "stuck", error=error.strerror or str(error), done=str(self.done_dir))
                return outcome
            self._seen.pop(path, None)
            self._held.pop(path, None)
        return outcome

    def _move_to_done(self, path: Path) -> None:
        """Rename into the done folder; across filesystems, copy durably and then remove."""
        self.done_dir.mkdir(parents=True, exist_ok=True)
        target = self.done_dir / path.name
        if target.exists():
            target = self.done_dir / f"{path.stem}-{time.time_ns()}{path.suffix}"
        try:
            os.replace(path, target)
            return
        except OSError as error:
            if error.errno != errno.EXDEV:
                raise
        partial = target.with_name(f".{target.name}.partial")
        try:
            write_durably(partial, path.read_bytes())
            shutil.copystat(path, partial)
            os.replace(partial, target)
        except OSError:  # a full disk: no partial copy is left behind; the file stays where it was
            partial.unlink(missing_ok=True)
            raise
        fsync_dir(self.done_dir)
        path.unlink()

    def run(self, stop: threading.Event) -> None:
        self.log("watching", folder=str(self.folder), settle_s=self.settle_s)
        while not stop.is_set():
            now = time.monotonic()
            for path in self.complete_files(now):
                if stop.is_set() or self.take(path, now) == "refused":
                    break  # queue full: the rest waits in the folder
            stop.wait(self.poll_s)
