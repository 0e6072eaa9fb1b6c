"""The forwarder against destinations that answer what real ones do: warnings, refusals, a
missing SR context, "out of resources", and a destination that is down, each on loopback with
an in-process pynetdicom Storage SCP. No object may hold up the others."""

from __future__ import annotations

import io
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from pynetdicom import AE, evt

from chexplain.runtime.node.basic_text_sr import BASIC_TEXT_SR_STORAGE
from chexplain.runtime.node.config import Destination
from chexplain.runtime.node.events import EventLog
from chexplain.runtime.node.forwarder import Forwarder, Timeouts, Unreachable
from chexplain.runtime.node.secondary_capture import SECONDARY_CAPTURE_STORAGE
from chexplain.runtime.node.spool import Spool

from outboxes import forwarding, outbox_with, uid_of

CANNOT_UNDERSTAND, ATTRIBUTE_LIST_ERROR, OUT_OF_RESOURCES = 0xC000, 0x0107, 0xA700


class LoopbackStorage:
    """A Storage SCP on loopback whose answer per C-STORE comes from ``answer(dataset, attempt)``."""

    def __init__(self, ae_title: str, sop_classes: tuple[str, ...],
                 answer: Callable[[Dataset, int], int] = lambda ds, attempt: 0x0000, tls=None,
                 syntaxes: tuple[str, ...] = (ExplicitVRLittleEndian,)) -> None:
        self.stored: list[str] = []  # SOP Instance UIDs answered with Success or Warning
        self.received: dict[str, tuple[str, Dataset]] = {}  # SOP Instance UID -> (transfer syntax, dataset)
        self.attempts: dict[str, int] = {}
        self.answer = answer
        self.ae = AE(ae_title=ae_title)
        for sop_class in sop_classes:
            self.ae.add_supported_context(sop_class, list(syntaxes))
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            self.port = probe.getsockname()[1]
        self.server = self.ae.start_server(("127.0.0.1", self.port), block=False, ssl_context=tls,
                                           evt_handlers=[(evt.EVT_C_STORE, self._on_store)])

    def _on_store(self, event) -> int:
        ds = event.dataset
        uid = str(ds.SOPInstanceUID)
        self.received[uid] = (str(event.context.transfer_syntax), ds)
        self.attempts[uid] = self.attempts.get(uid, 0) + 1
        status = self.answer(ds, self.attempts[uid])
        if status == 0x0000 or status & 0xF000 == 0xB000 or status == ATTRIBUTE_LIST_ERROR:
            self.stored.append(uid)
        return status

    def destination(self) -> Destination:
        return Destination(self.ae.ae_title, "127.0.0.1", self.port, retry_initial_s=0.2, retry_max_s=0.4)

    def close(self) -> None:
        self.server.shutdown()


@pytest.fixture
def scps() -> Iterator[list[LoopbackStorage]]:
    started: list[LoopbackStorage] = []
    yield started
    for scp in started:
        scp.close()



def test_a_refused_object_and_a_missing_sr_context_are_set_aside_and_the_rest_go_on(tmp_path, scps):
    spool = Spool(tmp_path / "spool")
    folders = outbox_with(spool, 8)
    refused = uid_of(folders[0] / "sc-1.dcm")
    scps.append(LoopbackStorage("PACS", (SECONDARY_CAPTURE_STORAGE,),  # no Basic Text SR context
                                lambda ds, attempt: CANNOT_UNDERSTAND if str(ds.SOPInstanceUID) == refused else 0x0000))
    pacs = scps[0]
    forwarder, events, metrics = forwarding(spool, pacs.destination(), lambda: len(pacs.stored) == 7)
    assert not forwarder.queue.unsent()
    assert sorted(pacs.stored) == sorted(uid_of(f / "sc-1.dcm") for f in folders[1:])  # each once
    rejected = sorted(p.relative_to(forwarder.queue.rejected) for p in forwarder.queue.rejected.glob("*/*.dcm"))
    assert rejected == sorted([Path(folders[0].name, "sc-1.dcm"), *(Path(f.name, "sr.dcm") for f in folders)])
    status = (forwarder.queue.rejected / folders[0].name / "sc-1.dcm.status.txt").read_text()
    assert "0xC000" in status and "PACS@127.0.0.1" in status
    assert "no presentation context" in (forwarder.queue.rejected / folders[3].name / "sr.dcm.status.txt").read_text()
    assert all((f / "sr.dcm").exists() for f in folders)  # a copy set aside; the outbox keeps its results
    assert metrics.rejected == 9 and metrics.forwarded == 7
    assert {e["category"] for e in events if e["event"] == "forward_rejected"} == {"Failure"}


def test_warnings_mean_stored_and_are_sent_once(tmp_path, scps):
    spool = Spool(tmp_path / "spool")
    folders = outbox_with(spool, 8)
    scps.append(LoopbackStorage("PACS", (SECONDARY_CAPTURE_STORAGE, BASIC_TEXT_SR_STORAGE),
                                lambda ds, attempt: ATTRIBUTE_LIST_ERROR))
    pacs = scps[0]
    forwarder, events, _ = forwarding(spool, pacs.destination(), lambda: len(pacs.stored) == 16)
    time.sleep(0.5)  # a few more polls: nothing is sent again
    assert len(pacs.stored) == len(set(pacs.stored)) == 16 and not forwarder.queue.unsent()
    assert all(forwarder.queue.sent_marker(f / "sr.dcm").exists() for f in folders)
    warned = [e for e in events if e["event"] == "forwarded"]
    assert {(e["status"], e["category"]) for e in warned} == {("0x0107", "Warning")} and "warning" in warned[0]


def test_out_of_resources_defers_that_object_only(tmp_path, scps):
    spool = Spool(tmp_path / "spool")
    folders = outbox_with(spool, 4)
    busy = uid_of(folders[0] / "sc-1.dcm")
    scps.append(LoopbackStorage(
        "PACS", (SECONDARY_CAPTURE_STORAGE, BASIC_TEXT_SR_STORAGE),
        lambda ds, attempt: OUT_OF_RESOURCES if str(ds.SOPInstanceUID) == busy and attempt <= 2 else 0x0000))
    pacs = scps[0]
    forwarder, events, _ = forwarding(spool, pacs.destination(), lambda: len(pacs.stored) == 8)
    assert pacs.stored[-1] == busy and pacs.attempts[busy] == 3  # the others went first, then it went through
    assert len(set(pacs.stored)) == 8 and not forwarder.queue.unsent() and not list(spool.rejected.rglob("*.dcm"))
    deferred = [e for e in events if e["event"] == "forward_deferred"]
    assert [e["retry_in_s"] for e in deferred] == [0.2, 0.4]  # its own delay, doubling, capped


def test_a_destination_that_is_down_does_not_hold_up_another(tmp_path, scps):
    spool = Spool(tmp_path / "spool")
    outbox_with(spool, 3)
    scps.append(LoopbackStorage("PACS", (SECONDARY_CAPTURE_STORAGE, BASIC_TEXT_SR_STORAGE)))
    pacs = scps[0]
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        down = Destination("ARCHIVE", "127.0.0.1", probe.getsockname()[1], retry_initial_s=0.2, retry_max_s=0.4)
    stream = io.StringIO()
    archive = Forwarder(spool.outbox, spool.rejected, down, "CHEXPLAIN", EventLog(stream))
    stop, wake = threading.Event(), threading.Event()
    thread = threading.Thread(target=archive.run, args=(stop, wake, 0.2), daemon=True)
    thread.start()
    try:
        forwarder, _, _ = forwarding(spool, pacs.destination(), lambda: len(pacs.stored) == 6)
    finally:
        stop.set()
        wake.set()
        thread.join(10)
    assert not forwarder.queue.unsent() and len(archive.queue.unsent()) == 6  # kept for the archive
    failed = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert failed and {e["event"] for e in failed} == {"forward_failed"} and failed[0]["destination"] == down.name


def test_a_tls_destination_is_reached_and_an_untrusted_one_is_not(tmp_path, scps):
    from chexplain.runtime.node.tls import client_context, server_context

    from certificates import make_pki

    pki = make_pki(tmp_path / "pki")
    spool = Spool(tmp_path / "spool")
    outbox_with(spool, 2)
    scps.append(LoopbackStorage("PACS", (SECONDARY_CAPTURE_STORAGE, BASIC_TEXT_SR_STORAGE),
                                tls=server_context(pki.node_cert, pki.node_key, pki.ca, require_client_certificate=True)))
    pacs = scps[0]
    secure = replace(pacs.destination(), tls=True)
    ours = client_context(pki.caller_cert, pki.caller_key, pki.ca)
    forwarder, events, _ = forwarding(spool, secure, lambda: len(pacs.stored) == 4, tls=ours)
    assert not forwarder.queue.unsent() and {e["event"] for e in events} == {"forwarded"}
    spool = Spool(tmp_path / "spool2")
    outbox_with(spool, 1)
    stream = io.StringIO()
    untrusting = Forwarder(spool.outbox, spool.rejected, secure, "CHEXPLAIN", EventLog(stream),
                           tls=client_context(pki.caller_cert, pki.caller_key, pki.caller_cert))  # not the CA
    with pytest.raises(Unreachable):  # the handshake fails; the run loop logs forward_failed and retries
        untrusting.send(untrusting.due())
    assert len(pacs.stored) == 4 and len(untrusting.queue.unsent()) == 2


def test_compressed_captures_go_as_they_are_or_decoded_where_only_uncompressed_is_taken(tmp_path, scps):
    import cv2
    import numpy as np
    import pydicom

    from chexplain.runtime.node.secondary_capture import JPEG_LS_LOSSLESS, Algorithm, secondary_capture, to_bytes

    from dicom_builders import dx_from_png
    from helpers import IMAGES

    source = pydicom.dcmread(dx_from_png(IMAGES / "00013125_000.png", tmp_path / "source.dcm"))
    heat = cv2.applyColorMap(cv2.imread(str(IMAGES / "00013125_000.png"), cv2.IMREAD_GRAYSCALE), cv2.COLORMAP_JET)
    capture = secondary_capture(source, heat, series_uid=generate_uid(), series_number=9001, instance_number=1,
                                series_description="chexplain gradcam", derivation="gradcam heatmap",
                                algorithm=Algorithm("densenet121-chexpert", "ab" * 32, ("gradcam",)))
    assert capture.file_meta.TransferSyntaxUID == JPEG_LS_LOSSLESS
    spool = Spool(tmp_path / "spool")
    spool.finish(spool.accept(b"input", ".dcm"), {"result.json": b"{}", "sc-1.dcm": to_bytes(capture)})
    scps.append(LoopbackStorage("PACS", (SECONDARY_CAPTURE_STORAGE,), syntaxes=(JPEG_LS_LOSSLESS, ExplicitVRLittleEndian)))
    scps.append(LoopbackStorage("OLDPACS", (SECONDARY_CAPTURE_STORAGE,)))  # uncompressed only
    for scp in scps:
        forwarding(spool, scp.destination(), lambda scp=scp: len(scp.stored) == 1)
    uid = str(capture.SOPInstanceUID)
    (kept_syntax, kept), (decoded_syntax, decoded) = scps[0].received[uid], scps[1].received[uid]
    assert kept_syntax == JPEG_LS_LOSSLESS and decoded_syntax == ExplicitVRLittleEndian
    decoded.file_meta = FileMetaDataset()
    decoded.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    assert np.array_equal(decoded.pixel_array, capture.pixel_array)  # lossless both ways
    equipment = kept.ContributingEquipmentSequence[0]
    assert equipment.Manufacturer == "chexplain" and equipment.ManufacturerModelName == "densenet121-chexpert"
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"


def test_a_capture_the_destination_takes_in_no_syntax_we_can_give_is_set_aside(tmp_path, scps):
    import numpy as np

    from chexplain.runtime.node.secondary_capture import JPEG_2000_LOSSLESS, secondary_capture, to_bytes

    ds = Dataset()
    ds.PatientID, ds.StudyInstanceUID, ds.SOPClassUID, ds.SOPInstanceUID = "P", generate_uid(), "1.2.3", generate_uid()
    capture = secondary_capture(ds, np.zeros((64, 64, 3), np.uint8), series_uid=generate_uid(), series_number=1,
                                instance_number=1, series_description="x", derivation="d")
    spool = Spool(tmp_path / "spool")
    spool.finish(spool.accept(b"input", ".dcm"), {"result.json": b"{}", "sc-1.dcm": to_bytes(capture)})
    scps.append(LoopbackStorage("J2KONLY", (SECONDARY_CAPTURE_STORAGE,), syntaxes=(JPEG_2000_LOSSLESS,)))
    forwarder, events, _ = forwarding(spool, scps[0].destination(), lambda: bool(list(spool.rejected.rglob("sc-1.dcm"))))
    assert not scps[0].stored and not forwarder.queue.unsent()
    [rejected] = [e for e in events if e["event"] == "forward_rejected"]
    assert JPEG_2000_LOSSLESS in rejected["reason"]


def test_a_destination_that_accepts_and_never_answers_is_let_go_at_the_acse_timeout(tmp_path):
    spool = Spool(tmp_path / "spool")
    outbox_with(spool, 1)
    with socket.socket() as silent:  # takes the connection, never says a word
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        destination = Destination("PACS", "127.0.0.1", silent.getsockname()[1])
        forwarder = Forwarder(spool.outbox, spool.rejected, destination, "CHEXPLAIN", EventLog(io.StringIO()),
                              timeouts=Timeouts(connect=1.0, acse=1.0, dimse=1.0, network=1.0))
        started = time.monotonic()
        with pytest.raises(Unreachable):
            forwarder.send(forwarder.queue.unsent())
        assert time.monotonic() - started < 5  # pynetdicom's own default would wait 30 s
    assert len(forwarder.queue.unsent()) == 2  # kept for the next try
