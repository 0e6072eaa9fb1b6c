"""The node under a hostile network, on loopback: idle and trickling connections, a PDU that
declares 4 GiB, an oversized dataset on an allowed association. Attackers connect from
127.0.0.2 and 127.0.0.3, the modality from 127.0.0.1; memory is read from /proc."""

from __future__ import annotations

import contextlib
import socket
import struct
import time

import numpy as np
import pydicom
import pytest
from pynetdicom import AE

from node_process import DX, EXPLICIT, free_port, serve, store

pytestmark = pytest.mark.slow
LIMITS = ("--acse-timeout", "2", "--max-associations-per-address", "3", "--max-dataset-mb", "16")


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
    ae = AE(ae_title="MODALITY")
    ae.add_requested_context(DX, pydicom.uid.RLELossless)
    assoc = ae.associate("127.0.0.1", port, ae_title="CHEXPLAIN")
    assert assoc.is_established
    try:
        assert assoc.send_c_store(pydicom.dcmread(bomb)).Status == 0x0000
    finally:
        assoc.release()
    node.wait_for(lambda: any("decodes to 512 MiB" in (q / "reason.txt").read_text()
                              for q in (spool / "quarantine").iterdir()), 60, "the bomb quarantined")
    assert node.rss_mb() - before < 64  # never decoded
