"""The node under a hostile network, on loopback: idle, churning and trickling connections,
failed associations from the modality's own address, a PDU that declares 4 GiB, an oversized
dataset, invalid UIDs and imperfect headers on an allowed association. Attackers connect from
127.0.0.2-127.0.0.9, the modality (a known caller) from 127.0.0.1; memory is read from /proc."""

from __future__ import annotations

import contextlib
import socket
import struct
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pydicom
import pytest
from pynetdicom import AE

from dicom_builders import dx_from_png
from helpers import IMAGES
from node_process import DX, EXPLICIT, free_port, results, serve, store

pytestmark = pytest.mark.slow
LIMITS = ("--acse-timeout", "2", "--max-associations-per-address", "3", "--max-dataset-mb", "16",
          "--dimse-timeout", "3", "--sr", "--seg")


@contextlib.contextmanager
def association(port: int, syntax: str = EXPLICIT) -> Iterator[Any]:
    """The modality's association with the node, for DX in ``syntax``; released after."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(DX, syntax)
    assoc = ae.associate("127.0.0.1", port, ae_title="CHEXPLAIN")
    assert assoc.is_established
    try:
        yield assoc
    finally:
        if assoc.is_established:
            assoc.release()


def connect_from(source: str, port: int) -> socket.socket:
    peer = socket.socket()
    peer.bind((source, 0))
    peer.connect(("127.0.0.1", port))
    return peer


def closed_by_node(peer: socket.socket, within_s: float) -> bool:
    """Whether the node closes the connection within ``within_s`` (reading what it sends)."""
    peer.settimeout(0.2)
    deadline = time.monotonic() + within_s
    while time.monotonic() < deadline:
        try:
            if peer.recv(65536) == b"":
                return True
        except TimeoutError:
            continue
        except OSError:
            return True
    return False


@pytest.fixture(scope="module")
def guarded_node(node_model, tmp_path_factory):
    spool = tmp_path_factory.mktemp("limits") / "spool"
    port = free_port()
    node = serve(node_model, spool, port, *LIMITS)
    yield node, port, spool
    assert node.stop() == 0


def test_idle_connections_hold_no_slot_a_modality_needs(guarded_node, dx_files):
    node, port, _ = guarded_node
    idle = [connect_from("127.0.0.2", port) for _ in range(5)]
    try:
        # past the per-address limit: closed at once; the first three are closed at the ACSE timeout
        assert sum(closed_by_node(peer, 0.8) for peer in idle[3:]) == 2
        started = time.monotonic()
        assert store(port, [dx_files[0]]) == [0x0000]  # the modality is not locked out meanwhile
        assert time.monotonic() - started < 2.0
        assert all(closed_by_node(peer, 4.0) for peer in idle[:3])
    finally:
        for peer in idle:
            peer.close()
    refused = [e for e in node.events() if e["event"] == "connection_refused"]
    assert len(refused) == 2 and refused[0]["address"] == "127.0.0.2" and "limit 3" in refused[0]["reason"]


def test_a_trickled_association_request_is_cut_at_the_acse_timeout(guarded_node):
    node, port, _ = guarded_node
    peer = connect_from("127.0.0.3", port)
    started = time.monotonic()
    try:
        with contextlib.suppress(OSError):
            for byte in struct.pack(">BBL", 0x01, 0, 200) + bytes(200):
                peer.send(bytes([byte]))
                if closed_by_node(peer, 0.3):
                    break
        elapsed = time.monotonic() - started
    finally:
        peer.close()
    assert elapsed < 5.0  # cut at 2 s (plus one poll), not when the trickle ends (60 s)
    closed = [e for e in node.events() if e["event"] == "connection_closed" and e["address"] == "127.0.0.3"]
    assert closed and "did not arrive whole within 2 s" in closed[-1]["reason"]


def test_a_pdu_declaring_4_gib_is_refused_before_it_is_buffered(guarded_node):
    node, port, _ = guarded_node
    before = node.rss_mb()
    peer = connect_from("127.0.0.3", port)
    sent = 0
    try:
        with contextlib.suppress(OSError):
            peer.sendall(struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF))
            chunk = bytes(1 << 20)
            while sent < 256 << 20:  # at most 256 MiB of the declared 4 GiB
                peer.sendall(chunk)
                sent += len(chunk)
    finally:
        peer.close()
    assert sent < 64 << 20  # the node hung up long before
    assert node.rss_mb() - before < 32
    closed = [e for e in node.events() if e["event"] == "connection_closed"]
    assert any("declares 4294967295 bytes" in e["reason"] for e in closed)


def test_an_oversized_dataset_from_an_allowed_caller_closes_its_association(guarded_node, dx_files):
    node, port, _ = guarded_node
    ds = pydicom.dcmread(dx_files[1])
    ds.Rows, ds.Columns = 4096, 4096
    ds.PixelData = np.zeros((4096, 4096), np.uint16).tobytes()  # 32 MiB, over the 16 MiB limit
    before = node.rss_mb()
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(DX, EXPLICIT)
    assoc = ae.associate("127.0.0.1", port, ae_title="CHEXPLAIN")
    assert assoc.is_established
    try:
        response = assoc.send_c_store(ds)
    finally:
        if assoc.is_established:
            assoc.abort()
    assert "Status" not in response  # no answer: the connection was closed under it
    assert node.rss_mb() - before < 48  # what pynetdicom buffered before the limit, not the 32 MiB and its copies
    closed = [e for e in node.events() if e["event"] == "connection_closed" and e["address"] == "127.0.0.1"]
    assert closed and "a dataset of more than 16777216 bytes" in closed[-1]["reason"]
    assert store(port, [dx_files[2]]) == [0x0000]  # the node goes on


def test_an_rle_bomb_is_quarantined_from_its_header_with_memory_flat(guarded_node, dx_files):
    """A few bytes of RLE that would decode to 16384 x 16384 x 16 bit (512 MiB)."""
    node, port, spool = guarded_node
    ds = pydicom.dcmread(dx_files[3])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.Rows = ds.Columns = 16384
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.file_meta.TransferSyntaxUID = pydicom.uid.RLELossless
    ds.PixelData = pydicom.encaps.encapsulate([bytes(64)])
    bomb = spool.parent / "bomb.dcm"
    ds.save_as(bomb, enforce_file_format=True)
    before = node.rss_mb()
    with association(port, pydicom.uid.RLELossless) as assoc:
        assert assoc.send_c_store(pydicom.dcmread(bomb)).Status == 0x0000
    node.wait_for(lambda: any("decodes to 512 MiB" in (q / "reason.txt").read_text()
                              for q in (spool / "quarantine").iterdir()), 60, "the bomb quarantined")
    assert node.rss_mb() - before < 64  # never decoded


def echo(port: int) -> int | None:
    """A C-ECHO as the modality: its status, or None when no association was made."""
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context("1.2.840.10008.1.1")
    assoc = ae.associate("127.0.0.1", port, ae_title="CHEXPLAIN")
    if not assoc.is_established:
        return None
    try:
        return assoc.send_c_echo().Status
    finally:
        assoc.release()


def served_within(port: int, dx, seconds: float) -> bool:
    """Whether the modality's C-ECHO and C-STORE both succeed within ``seconds``."""
    started = time.monotonic()
    return echo(port) == 0x0000 and store(port, [dx]) == [0x0000] and time.monotonic() - started < seconds


@pytest.mark.parametrize("sources", [["127.0.0.1"], [f"127.0.0.{n}" for n in range(2, 7)]],
                         ids=["the-modality's-address", "five-other-addresses"])
def test_connection_churn_locks_nobody_out(guarded_node, dx_files, sources):
    node, port, _ = guarded_node
    seen = len(node.events())
    for index in range(50):  # connect and close at once, as scanners and load-balancer probes do
        connect_from(sources[index % len(sources)], port).close()
    assert served_within(port, dx_files[0], 1.0)
    time.sleep(2.5)  # past the ACSE timeout: a closed connection left waiting for its request would show
    assert not [e for e in node.events()[seen:] if e["event"] == "connection_closed"]


def test_a_modality_retrying_while_at_its_limit_does_not_lock_itself_out(guarded_node, dx_files):
    node, port, _ = guarded_node
    held = [connect_from("127.0.0.1", port) for _ in range(3)]  # its 3 slots, taken by stuck connections
    try:
        time.sleep(0.2)
        for _ in range(20):  # it retries, and is refused each time
            assert echo(port) is None
    finally:
        for peer in held:
            peer.close()
    assert served_within(port, dx_files[1], 1.0)  # within a second of the churn ending
    refused = [e for e in node.events() if e["event"] == "connection_refused" and e["address"] == "127.0.0.1"]
    assert len(refused) >= 20 and "limit 3" in refused[-1]["reason"]


@pytest.fixture
def patient_node(node_model, tmp_path_factory):
    """A node that waits 30 s for an association request: idle connections stay held however
    slowly a busy machine accepts them (at 2 s the first ones were closed before the last arrived)."""
    spool = tmp_path_factory.mktemp("patient") / "spool"
    port = free_port()
    node = serve(node_model, spool, port, "--acse-timeout", "30", "--max-associations-per-address", "3")
    yield node, port, spool
    assert node.stop() == 0


def test_unknown_peers_never_take_the_slots_kept_for_known_callers(patient_node, dx_files):
    node, port, _ = patient_node
    idle = []
    try:
        for n in range(2, 9):  # 7 addresses x 3 = 21 idle sockets against 16 slots, 4 of them kept
            idle += [connect_from(f"127.0.0.{n}", port) for _ in range(3)]
        time.sleep(0.3)
        assert served_within(port, dx_files[2], 1.0)
    finally:
        for peer in idle:
            peer.close()
    reasons = [e["reason"] for e in node.events() if e["event"] == "connection_refused"]
    assert any("not known as callers (limit 12" in reason for reason in reasons)


def test_a_dimse_message_trickled_by_an_allowed_caller_is_cut_at_the_dimse_timeout(guarded_node, dx_files):
    from pydicom.dataset import Dataset
    from pynetdicom.dsutils import encode

    node, port, _ = guarded_node
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(DX, EXPLICIT)
    assoc = ae.associate("127.0.0.1", port, ae_title="CHEXPLAIN")
    assert assoc.is_established
    command = Dataset()
    command.AffectedSOPClassUID, command.CommandField, command.MessageID = DX, 0x0001, 1
    command.Priority, command.CommandDataSetType = 0, 0x0000  # a C-STORE-RQ: a dataset follows
    command.AffectedSOPInstanceUID = pydicom.uid.generate_uid()
    body = encode(command, True, True)
    body = encode(Dataset(), True, True) + struct.pack("<HHLL", 0, 0, 4, len(body)) + body
    context = assoc.accepted_contexts[0].context_id

    def pdata(control: int, data: bytes) -> bytes:
        pdv = struct.pack(">LBB", len(data) + 2, context, control) + data
        return struct.pack(">BBL", 0x04, 0, len(pdv)) + pdv

    raw = assoc.dul.socket.socket
    started = time.monotonic()
    try:
        raw.sendall(pdata(0x03, body))
        with contextlib.suppress(OSError):
            while time.monotonic() - started < 20:  # 300 bytes every second: each PDU whole, the message never
                raw.sendall(pdata(0x00, bytes(300)))
                time.sleep(1.0)
                if not assoc.is_established:
                    break
    finally:
        assoc.abort()
    assert time.monotonic() - started < 10
    closed = [e for e in node.events() if e["event"] == "connection_closed" and "DIMSE message" in e["reason"]]
    assert closed and "within 3" in closed[-1]["reason"]
    assert served_within(port, dx_files[3], 1.0)


@pytest.mark.parametrize("uid", ["../../../../tmp/x", "1.2.3.ABC", "1.2." + "3" * 80, "1.02.3"],
                         ids=["path", "letters", "84-characters", "zero-led"])
def test_an_instance_with_an_invalid_uid_is_refused_before_anything_is_written(guarded_node, dx_files, uid):
    node, port, spool = guarded_node
    before = {p.name for p in (spool / "inbox").iterdir()}  # earlier tests' items may still leave it
    ds = pydicom.dcmread(dx_files[4])
    ds.SOPInstanceUID = pydicom.uid.generate_uid()
    ds.StudyInstanceUID = uid
    with association(port) as assoc:
        status = assoc.send_c_store(ds)
    assert status.Status == 0xC000 and "StudyInstanceUID" in status.ErrorComment
    assert {p.name for p in (spool / "inbox").iterdir()} <= before  # nothing new
    assert not any(uid in str(path) for path in spool.rglob("*"))
    assert not any(uid in e.get("reason", "") for e in node.events())


def test_imperfect_headers_get_every_result(guarded_node, tmp_path):
    """A DX with only its Type 1 attributes, and DX headers whose values are not valid: each gets
    its Secondary Captures, TID 1500 report and SEG; the log names what was repaired, not the values."""
    node, port, spool = guarded_node
    png = sorted(IMAGES.glob("*.png"))[0]
    sent = [dx_from_png(png, tmp_path / "type-1.dcm", type_1_only=True),
            dx_from_png(png, tmp_path / "dates.dcm", PatientBirthDate="19471313", StudyTime="10:15:00"),
            dx_from_png(png, tmp_path / "iso.dcm", PatientBirthDate="1947-12-13", PatientSex="HOSTILEDOE")]
    no_study_id = pydicom.dcmread(sent[0])
    no_study_id.SOPInstanceUID = pydicom.uid.generate_uid()
    no_study_id.PatientName = "Hostile^Doe"
    no_study_id.save_as(tmp_path / "no-study-id.dcm", enforce_file_format=True)
    sent.append(tmp_path / "no-study-id.dcm")
    uids = {str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID) for path in sent}
    assert store(port, sent) == [0x0000] * 4

    def ours() -> list[dict]:
        return [r for r in results(spool) if r["image"]["sop_instance_uid"] in uids]

    node.wait_for(lambda: len(ours()) == 4, 120, "four results")
    for record in ours():
        assert record["failed"] == [] and record["structured_report"] == "sr.dcm" and record["segmentation"] == "seg.dcm"
        assert all("secondary_capture" in entry["files"]["gradcam"] for entry in record["explained"])
        folder = spool / "outbox" / record["item"]
        assert pydicom.dcmread(folder / "sr.dcm").PatientBirthDate in ("", "19471213")
    repaired = [e for e in node.events() if e["event"] == "header_repaired"]
    assert {key for e in repaired for key in e["repaired"]} >= {"PatientBirthDate", "PatientSex", "StudyTime"}
    log = (spool.parent / f"node-{port}.log").read_text()
    assert "1947-12-13" not in log and "HOSTILEDOE" not in log and "Hostile^Doe" not in log
