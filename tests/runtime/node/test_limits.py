"""The connection guard on byte streams built by hand (PS3.8 9.3): PDU and dataset limits and
deadlines, whatever sizes the stream arrives in."""

from __future__ import annotations

import random
import struct

import pytest

from chexplain.runtime.node.limits import MAX_CONTROL_PDU, ConnectionLimits, LimitExceeded, PduGuard

LIMITS = ConnectionLimits(max_pdu_bytes=4096, max_dataset_bytes=10_000, request_timeout_s=10.0, pdu_timeout_s=30.0)
COMMAND_LAST, DATASET, DATASET_LAST = 0x03, 0x00, 0x02


def pdu(kind: int, body: bytes) -> bytes:
    return struct.pack(">BBL", kind, 0, len(body)) + body


def pdv(control: int, data: bytes, context: int = 1) -> bytes:
    return struct.pack(">LBB", len(data) + 2, context, control) + data


def associate_rq() -> bytes:
    return pdu(0x01, b"\x00\x01\x00\x00" + b"CHEXPLAIN".ljust(16) + b"MODALITY".ljust(16) + bytes(32) + bytes(60))


def c_store(dataset_bytes: int, fragment: int = 2000) -> bytes:
    """A command set, then the dataset in P-DATA PDUs of one fragment each."""
    stream = pdu(0x04, pdv(COMMAND_LAST, bytes(100)))
    sizes = [fragment] * (dataset_bytes // fragment) + ([dataset_bytes % fragment] if dataset_bytes % fragment else [])
    for index, size in enumerate(sizes):
        stream += pdu(0x04, pdv(DATASET_LAST if index == len(sizes) - 1 else DATASET, bytes(size)))
    return stream


def feed(stream: bytes, chunks: int | None = None, seed: int = 0) -> PduGuard:
    """Feed ``stream`` whole, or cut at random into about ``chunks`` pieces."""
    guard = PduGuard(LIMITS, connected_at=0.0)
    if chunks is None:
        guard.feed(stream, now=1.0)
        return guard
    cuts = sorted(random.Random(seed).sample(range(1, len(stream)), min(chunks, len(stream) - 1)))
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        guard.feed(stream[start:end], now=1.0)
    return guard


@pytest.mark.parametrize("chunks", [None, 7, 500])
def test_instances_within_the_limits_pass_however_the_stream_is_cut(chunks):
    guard = feed(associate_rq() + c_store(9_999) + c_store(9_999) + pdu(0x05, bytes(4)), chunks)
    assert guard.requested and guard.deadline() is None  # between PDUs: pynetdicom's own timeout


@pytest.mark.parametrize("chunks", [None, 7, 500])
def test_a_dataset_over_the_limit_is_refused_however_the_stream_is_cut(chunks):
    with pytest.raises(LimitExceeded, match="a dataset of more than 10000 bytes"):
        feed(associate_rq() + c_store(9_999) + c_store(10_001), chunks)


def test_a_declared_length_is_refused_at_its_header_before_any_body():
    guard = PduGuard(LIMITS, connected_at=0.0)
    header = struct.pack(">BBL", 0x01, 0, 0xFFFFFFFF)
    for byte in header[:-1]:
        guard.feed(bytes([byte]), now=1.0)
    with pytest.raises(LimitExceeded, match=f"declares 4294967295 bytes \\(limit {MAX_CONTROL_PDU}\\)"):
        guard.feed(header[-1:], now=1.0)
    with pytest.raises(LimitExceeded, match="type 0x04 declares 4097 bytes"):
        feed(associate_rq() + struct.pack(">BBL", 0x04, 0, LIMITS.max_pdu_bytes + 1))
    feed(associate_rq() + pdu(0x04, pdv(COMMAND_LAST, bytes(LIMITS.max_pdu_bytes - 6))))  # exactly the maximum


def test_deadlines_for_the_request_and_for_each_pdu():
    guard = PduGuard(LIMITS, connected_at=100.0)
    assert guard.deadline()[0] == 110.0  # the A-ASSOCIATE-RQ within request_timeout_s of connecting
    request = associate_rq()
    guard.feed(request[:20], now=101.0)
    assert guard.deadline()[0] == 110.0
    guard.feed(request[20:], now=102.0)
    assert guard.deadline() is None
    store = c_store(5_000)
    guard.feed(store[:3], now=200.0)  # a PDU begun: it must be whole within pdu_timeout_s of its first byte
    assert guard.deadline()[0] == 230.0
    guard.feed(store[3:], now=201.0)
    assert guard.deadline() is None


def command(data_set_type: int) -> bytes:
    """A command set (implicit VR little endian) with its Command Data Set Type."""
    elements = [(0x0100, struct.pack("<H", 0x0030)), (0x0800, struct.pack("<H", data_set_type))]  # C-ECHO-RQ
    body = b"".join(struct.pack("<HHL", 0x0000, element, len(value)) + value for element, value in elements)
    return struct.pack("<HHLL", 0x0000, 0x0000, 4, len(body)) + body


def test_a_message_trickled_in_small_pdus_is_cut_at_the_message_timeout():
    guard = PduGuard(LIMITS, connected_at=0.0)
    guard.feed(associate_rq(), now=0.5)
    guard.feed(pdu(0x04, pdv(COMMAND_LAST, bytes(100))), now=1.0)  # a command that announces a dataset
    now = 1.0
    while (awaited := guard.deadline()) is not None and now < awaited[0]:
        now += 4.0  # one 300-byte PDU every 4 s: each PDU whole at once, the message never
        guard.feed(pdu(0x04, pdv(DATASET, bytes(300))), now=now)
    deadline, what = awaited
    assert deadline < 1.0 + LIMITS.message_timeout_s + 1 and "DIMSE message" in what


def test_a_large_message_that_flows_is_never_cut_and_a_command_alone_ends_its_message():
    guard = PduGuard(ConnectionLimits(max_pdu_bytes=1 << 16, max_dataset_bytes=1 << 30, request_timeout_s=10.0,
                                      pdu_timeout_s=30.0, message_timeout_s=5.0), connected_at=0.0)
    guard.feed(associate_rq(), now=0.0)
    guard.feed(pdu(0x04, pdv(COMMAND_LAST, command(0x0101))), now=1.0)  # C-ECHO: no dataset follows
    assert guard.deadline() is None
    guard.feed(pdu(0x04, pdv(COMMAND_LAST, command(0x0000))), now=2.0)  # a dataset follows
    assert guard.deadline() is not None
    for second in range(1, 600):  # 10 minutes at 128 KiB/s: 75 MiB, twice the slowest rate allowed
        guard.feed(pdu(0x04, pdv(DATASET, bytes(1 << 15))) * 4, now=2.0 + second)
        assert guard.deadline()[0] > 2.0 + second
    guard.feed(pdu(0x04, pdv(DATASET_LAST, bytes(10))), now=700.0)
    assert guard.deadline() is None
