"""A spool's outbox with results to send, and a forwarder thread run until a condition holds:
what the forwarder tests share, whatever the destination speaks."""

from __future__ import annotations

import io
import json
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from chexplain.runtime.node.basic_text_sr import BASIC_TEXT_SR_STORAGE
from chexplain.runtime.node.config import Destination, WebDestination
from chexplain.runtime.node.events import EventLog, Metrics
from chexplain.runtime.node.forwarder import Forwarder
from chexplain.runtime.node.secondary_capture import SECONDARY_CAPTURE_STORAGE
from chexplain.runtime.node.spool import Spool


def result_object(sop_class: str) -> bytes:
    """A minimal result object of the node's SOP classes (the destination only reads its UIDs)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.PatientID, ds.Modality = "TEST-0001", "OT"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def outbox_with(spool: Spool, items: int) -> list[Path]:
    """``items`` results in the outbox, each with a Secondary Capture and a Basic Text SR."""
    folders = []
    for _ in range(items):
        item = spool.accept(b"input", ".dcm")
        folders.append(spool.finish(item, {"result.json": b"{}", "sc-1.dcm": result_object(SECONDARY_CAPTURE_STORAGE),
                                           "sr.dcm": result_object(BASIC_TEXT_SR_STORAGE)}))
    return folders


def forwarding(spool: Spool, destination: Destination | WebDestination, until: Callable[[], bool], timeout: float = 30.0, tls=None):
    """Run one destination's forwarder thread until ``until()`` holds; returns its log and metrics."""
    stream, metrics = io.StringIO(), Metrics()
    forwarder = Forwarder(spool.outbox, spool.rejected, destination, "CHEXPLAIN", EventLog(stream), metrics, tls=tls)
    stop, wake = threading.Event(), threading.Event()
    thread = threading.Thread(target=forwarder.run, args=(stop, wake, 0.2), daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not until():
            assert time.monotonic() < deadline, f"forwarding did not finish; log:\n{stream.getvalue()[-3000:]}"
            time.sleep(0.05)
    finally:
        stop.set()
        wake.set()
        thread.join(10)
    return forwarder, [json.loads(line) for line in stream.getvalue().splitlines()], metrics


def uid_of(path: Path) -> str:
    from pydicom import dcmread

    return str(dcmread(path).SOPInstanceUID)
