"""Bounds on what one connection may cost the node before anyone is trusted: time, PDU size,
dataset size, connections per address.

pynetdicom reads a PDU's declared length and then that many bytes, so a peer that declares
4 GiB gets 4 GiB buffered; a peer that trickles its A-ASSOCIATE-RQ a byte at a time holds an
association slot for as long as it likes, because the ARTIM timer is not looked at while a
PDU is being read. ``PduGuard`` follows the byte stream as it arrives (PDU headers, and in
P-DATA the PDV headers, PS3.8 9.3) and refuses, as soon as a header says so:

- an A-ASSOCIATE-RQ (or any PDU but P-DATA) longer than ``MAX_CONTROL_PDU``;
- a P-DATA-TF PDU longer than the maximum PDU length the node advertises;
- a dataset whose fragments add up to more than ``max_dataset_bytes``;
- an A-ASSOCIATE-RQ not complete within ``request_timeout_s`` of the connection, and any
  later PDU not complete within ``pdu_timeout_s`` of its first byte.

``guard_connection`` puts it between pynetdicom and the socket of each accepted connection.
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_CONTROL_PDU = 1 << 20  # A-ASSOCIATE-RQ with user identity, release, abort: far smaller in practice
A_ASSOCIATE_RQ, P_DATA_TF = 0x01, 0x04
PDU_HEADER = PDV_HEADER = 6  # type, reserved, length (4) | length (4), context ID, message control header
DATASET_FRAGMENT_BIT, LAST_FRAGMENT_BIT = 0x01, 0x02  # bit 0: command (1) or dataset (0); bit 1: last fragment


class LimitExceeded(OSError):
    """A connection broke one of the node's limits; pynetdicom then closes it (as a transport error)."""


@dataclass(frozen=True)
class ConnectionLimits:
    max_pdu_bytes: int
    max_dataset_bytes: int
    request_timeout_s: float
    pdu_timeout_s: float


class PduGuard:
    """Follows the bytes received on one connection and raises LimitExceeded when they break a limit."""

    def __init__(self, limits: ConnectionLimits, connected_at: float) -> None:
        self.limits = limits
        self.connected_at = connected_at
        self.requested = False  # a whole A-ASSOCIATE-RQ has arrived
        self._header = bytearray()
        self._type = 0
        self._body_left = 0
        self._started_at = 0.0
        self._pdv_header = bytearray()
        self._pdv_left = 0
        self._pdv_dataset = False
        self._pdv_last = False
        self._dataset_bytes = 0

    def deadline(self) -> float | None:
        """When the bytes now awaited must have arrived (None: between PDUs, where pynetdicom's own
        network timeout applies)."""
        if not self.requested:
            return self.connected_at + self.limits.request_timeout_s
        if self._header or self._body_left:
            return self._started_at + self.limits.pdu_timeout_s
        return None

    def feed(self, data: bytes, now: float) -> None:
        view = memoryview(data)
        while view:
            if self._body_left == 0:
                view = self._read_pdu_header(view, now)
            else:
                taken = min(len(view), self._body_left)
                if self._type == P_DATA_TF:
                    self._follow_pdvs(view[:taken])
                self._body_left -= taken
                view = view[taken:]
                if self._body_left == 0:
                    self._pdu_done()

    def _read_pdu_header(self, view: memoryview, now: float) -> memoryview:
        if not self._header:
            self._started_at = now
        taken = min(len(view), PDU_HEADER - len(self._header))
        self._header += view[:taken]
        if len(self._header) == PDU_HEADER:
            self._type, _, length = struct.unpack(">BBL", self._header)
            limit = self.limits.max_pdu_bytes if self._type == P_DATA_TF else MAX_CONTROL_PDU
            if length > limit:
                raise LimitExceeded(f"a PDU of type 0x{self._type:02X} declares {length} bytes (limit {limit})")
            self._body_left = length
            self._pdv_header.clear()
            self._pdv_left = 0
            if length == 0:
                self._pdu_done()
        return view[taken:]

    def _pdu_done(self) -> None:
        if self._type == A_ASSOCIATE_RQ:
            self.requested = True
        self._header.clear()

    def _follow_pdvs(self, view: memoryview) -> None:
        while view:
            if self._pdv_left == 0:
                taken = min(len(view), PDV_HEADER - len(self._pdv_header))
                self._pdv_header += view[:taken]
                view = view[taken:]
                if len(self._pdv_header) == PDV_HEADER:
                    length, _, control = struct.unpack(">LBB", self._pdv_header)
                    self._pdv_header.clear()
                    self._pdv_left = max(length - 2, 0)  # the length counts the context ID and the control byte
                    self._pdv_dataset = not control & DATASET_FRAGMENT_BIT
                    self._pdv_last = bool(control & LAST_FRAGMENT_BIT)
                    self._count(0)
                continue
            taken = min(len(view), self._pdv_left)
            self._pdv_left -= taken
            view = view[taken:]
            self._count(taken)

    def _count(self, received: int) -> None:
        if not self._pdv_dataset:
            return
        self._dataset_bytes += received
        if self._dataset_bytes > self.limits.max_dataset_bytes:
            raise LimitExceeded(f"a dataset of more than {self.limits.max_dataset_bytes} bytes "
                                f"(limit {self.limits.max_dataset_bytes // (1 << 20)} MiB)")
        if self._pdv_left == 0 and self._pdv_last:
            self._dataset_bytes = 0


def guard_connection(association_socket: Any, limits: ConnectionLimits,
                     on_violation: Callable[[str], None], clock: Callable[[], float] = time.monotonic) -> PduGuard:
    """Read ``association_socket`` (pynetdicom's AssociationSocket) through a PduGuard: its
    ``recv`` is replaced by one that reads the real socket with the guard's deadline as the
    timeout and hands every piece to the guard as it arrives. ``on_violation`` is told why
    before the connection is closed."""
    guard = PduGuard(limits, clock())

    def recv(count: int) -> bytearray:
        raw = association_socket.socket
        received = bytearray()
        if raw is None:
            return received
        previous = raw.gettimeout()
        try:
            while len(received) < count:
                deadline = guard.deadline()
                if deadline is not None:
                    remaining = deadline - clock()
                    if remaining <= 0:
                        what = "the A-ASSOCIATE-RQ" if not guard.requested else "a PDU"
                        allowed = limits.request_timeout_s if not guard.requested else limits.pdu_timeout_s
                        raise LimitExceeded(f"{what} did not arrive whole within {allowed:g} s")
                    raw.settimeout(remaining if previous is None else min(previous, remaining))
                try:
                    piece = raw.recv(min(count - len(received), 1 << 16))
                except TimeoutError:
                    if deadline is None:
                        raise  # pynetdicom's own timeout on the socket
                    continue  # ours: the deadline decides, on the next turn
                if not piece:
                    break  # the peer closed: pynetdicom sees a short read
                received += piece
                guard.feed(piece, clock())
        except LimitExceeded as error:
            on_violation(str(error))
            raise
        finally:
            if association_socket.socket is not None:
                raw.settimeout(previous)
        return received

    association_socket.recv = recv
    return guard
