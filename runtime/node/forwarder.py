"""Send the node's DICOM results on to a destination AE (C-STORE SCU), retrying with back-off.

Every ``.dcm`` in an outbox folder is sent once; a file the destination accepted gets a
``<name>.sent`` marker beside it (written durably), so a restart sends only what is left.
What cannot be sent stays in the outbox and is tried again after a delay that doubles from
``retry_initial_s`` up to ``retry_max_s``.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path

from .basic_text_sr import BASIC_TEXT_SR_STORAGE
from .config import Destination
from .events import EventLog, Metrics, uid_hash
from .secondary_capture import SECONDARY_CAPTURE_STORAGE
from .spool import PARTIAL_PREFIX, fsync_dir, write_durably

SENT_SUFFIX = ".sent"
TRANSFER_SYNTAXES = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")  # explicit, implicit VR little endian
RESULT_SOP_CLASSES = (SECONDARY_CAPTURE_STORAGE, BASIC_TEXT_SR_STORAGE)  # what the node writes


def unsent(outbox: Path) -> list[Path]:
    """The DICOM results not yet accepted by the destination, oldest item first."""
    files = []
    for folder in sorted(p for p in outbox.iterdir() if p.is_dir() and not p.name.startswith(PARTIAL_PREFIX)):
        files += [f for f in sorted(folder.glob("*.dcm")) if not f.with_name(f.name + SENT_SUFFIX).exists()]
    return files


def mark_sent(path: Path) -> None:
    write_durably(path.with_name(path.name + SENT_SUFFIX), b"")
    fsync_dir(path.parent)


class Forwarder:
    """One destination; ``send`` is one attempt, ``run`` the retry loop of the node's thread."""

    def __init__(self, outbox: Path, destination: Destination, calling_ae: str, log: EventLog,
                 metrics: Metrics | None = None) -> None:
        self.outbox = outbox
        self.destination = destination
        self.calling_ae = calling_ae
        self.log = log
        self.metrics = metrics

    def send(self, files: Sequence[Path]) -> str | None:
        """Try to send ``files`` over one association, reading one at a time (a long backlog
        never sits in memory); None when all were accepted, else why not."""
        from pydicom import dcmread
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_ae)
        for sop_class in RESULT_SOP_CLASSES:
            ae.add_requested_context(sop_class, list(TRANSFER_SYNTAXES))
        target = self.destination
        assoc = ae.associate(target.host, target.port, ae_title=target.ae_title)
        if not assoc.is_established:
            return f"no association with {target.ae_title}@{target.host}:{target.port}"
        try:
            for path in files:
                try:
                    ds = dcmread(path)
                except Exception as error:  # a damaged result: say so once, keep it out of the retries
                    self.log("forward_unreadable", file=str(path), error=str(error).splitlines()[0])
                    path.rename(path.with_suffix(".unreadable"))
                    continue
                code = getattr(assoc.send_c_store(ds), "Status", None)
                if code is None or not (code == 0x0000 or code & 0xF000 == 0xB000):  # neither success nor warning
                    return f"{path.name}: " + (f"status 0x{code:04X}" if code is not None else "no response")
                mark_sent(path)
                if self.metrics:
                    self.metrics.count("forwarded")
                self.log("forwarded", file=path.name, item=path.parent.name, sop=uid_hash(str(ds.SOPInstanceUID)),
                         destination=target.ae_title, status=f"0x{code:04X}")
            return None
        finally:
            if assoc.is_established:
                assoc.release()

    def run(self, stop: threading.Event, wake: threading.Event, poll_s: float = 30.0) -> None:
        """Send what is unsent whenever woken (a result was written) or every ``poll_s``; back off on failure."""
        delay = self.destination.retry_initial_s
        while not stop.is_set():
            files = unsent(self.outbox)
            if files:
                try:
                    failure = self.send(files)
                except Exception as error:  # network errors of every kind: keep the files, retry later
                    failure = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                if failure:
                    self.log("forward_failed", error=failure, unsent=len(unsent(self.outbox)), retry_in_s=delay)
                    stop.wait(delay)
                    delay = min(delay * 2, self.destination.retry_max_s)
                    continue
                delay = self.destination.retry_initial_s
            wake.wait(poll_s)
            wake.clear()
