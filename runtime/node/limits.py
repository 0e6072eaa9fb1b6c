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
  later PDU not complete within ``pdu_timeout_s`` of its first byte;
- a DIMSE message (its command, and its dataset where the command announces one) not complete
  within ``message_timeout_s`` of its first PDV, a limit that grows by one second for every
  ``MIN_MESSAGE_RATE`` bytes received: a large instance on a slow link goes through, a peer
  that trickles small PDUs to hold its association open is cut.

``await_request`` waits for the whole A-ASSOCIATE-RQ before an association exists for the
connection (admission.py); ``guard_connection`` then puts a ``GuardedReader`` between
pynetdicom and the socket for the rest of the connection.
"""

from __future__ import annotations

import select
import socket
import ssl
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

MAX_CONTROL_PDU = 1 << 20  # A-ASSOCIATE-RQ with user identity, release, abort: far smaller in practice
A_ASSOCIATE_RQ, P_DATA_TF = 0x01, 0x04
PDU_HEADER = PDV_HEADER = 6  # type, reserved, length (4) | length (4), context ID, message control header
COMMAND_FRAGMENT_BIT, LAST_FRAGMENT_BIT = 0x01, 0x02  # bit 0: command (1) or dataset (0); bit 1: last fragment
MIN_MESSAGE_RATE = 64 << 10  # bytes a second: 0.5 Mbit/s, below any link a modality sends over
MAX_COMMAND_BYTES = 1 << 16  # a command set is a few hundred bytes; beyond this it is not read for its type
NO_DATA_SET = 0x0101


class LimitExceeded(OSError):
    """A connection broke one of the node's limits; pynetdicom then closes it (as a transport error)."""


@dataclass(frozen=True)
class ConnectionLimits:
    max_pdu_bytes: int
    max_dataset_bytes: int
    request_timeout_s: float
    pdu_timeout_s: float
    message_timeout_s: float = 60.0


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
        self._message_started: float | None = None  # a DIMSE message is arriving since then
        self._message_bytes = 0
        self._command = bytearray()

    def deadline(self) -> tuple[float, str] | None:
        """When the bytes now awaited must have arrived, and what they are (None: between
        messages, where pynetdicom's own network timeout applies)."""
        if not self.requested:
            return self.connected_at + self.limits.request_timeout_s, (
                f"the A-ASSOCIATE-RQ did not arrive whole within {self.limits.request_timeout_s:g} s")
        candidates = []
        if self._header or self._body_left:
            candidates.append((self._started_at + self.limits.pdu_timeout_s,
                               f"a PDU did not arrive whole within {self.limits.pdu_timeout_s:g} s"))
        if self._message_started is not None:
            allowed = self.limits.message_timeout_s + self._message_bytes / MIN_MESSAGE_RATE
            candidates.append((self._message_started + allowed,
                               f"a DIMSE message of {self._message_bytes} bytes so far did not arrive whole within "
                               f"{allowed:.3g} s ({self.limits.message_timeout_s:g} s, more while it flows at "
                               f"{MIN_MESSAGE_RATE >> 10} KiB/s)"))
        return min(candidates, default=None)

    def feed(self, data: bytes, now: float) -> None:
        view = memoryview(data)
        while view:
            if self._body_left == 0:
                view = self._read_pdu_header(view, now)
            else:
                taken = min(len(view), self._body_left)
                if self._type == P_DATA_TF:
                    self._follow_pdvs(view[:taken], now)
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

    def _follow_pdvs(self, view: memoryview, now: float) -> None:
        while view:
            if self._pdv_left == 0:
                taken = min(len(view), PDV_HEADER - len(self._pdv_header))
                self._pdv_header += view[:taken]
                view = view[taken:]
                if self._message_started is None:
                    self._message_started, self._message_bytes = now, 0
                self._message_bytes += taken
                if len(self._pdv_header) == PDV_HEADER:
                    length, _, control = struct.unpack(">LBB", self._pdv_header)
                    self._pdv_header.clear()
                    self._pdv_left = max(length - 2, 0)  # the length counts the context ID and the control byte
                    self._pdv_dataset = not control & COMMAND_FRAGMENT_BIT
                    self._pdv_last = bool(control & LAST_FRAGMENT_BIT)
                    self._count(view[:0])
                continue
            taken = min(len(view), self._pdv_left)
            self._pdv_left -= taken
            self._message_bytes += taken
            self._count(view[:taken])
            view = view[taken:]

    def _count(self, received: memoryview) -> None:
        if not self._pdv_dataset:
            self._follow_command(received)
            return
        self._dataset_bytes += len(received)
        if self._dataset_bytes > self.limits.max_dataset_bytes:
            raise LimitExceeded(f"a dataset of more than {self.limits.max_dataset_bytes} bytes "
                                f"(limit {self.limits.max_dataset_bytes // (1 << 20)} MiB)")
        if self._pdv_left == 0 and self._pdv_last:
            self._dataset_bytes = 0
            self._message_started = None  # the dataset ends the message

    def _follow_command(self, received: memoryview) -> None:
        """Keep the command set's bytes; at its last fragment, the message ends unless the command
        announces a dataset (Command Data Set Type, PS3.7 E.1; unreadable: one is awaited)."""
        if len(self._command) < MAX_COMMAND_BYTES:
            self._command += received[:MAX_COMMAND_BYTES - len(self._command)]
        if self._pdv_left == 0 and self._pdv_last:
            if _data_set_type(bytes(self._command)) == NO_DATA_SET:
                self._message_started = None
            self._command.clear()


def _data_set_type(command: bytes) -> int | None:
    """The Command Data Set Type of an implicit VR little endian command set, None if not found."""
    offset = 0
    while offset + 8 <= len(command):
        group, element, length = struct.unpack_from("<HHL", command, offset)
        if (group, element) == (0x0000, 0x0800) and length == 2 and offset + 10 <= len(command):
            return struct.unpack_from("<H", command, offset + 8)[0]
        if group != 0x0000:
            return None
        offset += 8 + length
    return None


REQUEST_POLL_S = 0.02  # between looks at a partly arrived A-ASSOCIATE-RQ


def await_request(raw: Any, connected_at: float, limits: ConnectionLimits,
                  clock: Callable[[], float] = time.monotonic) -> bool:
    """Wait, before pynetdicom takes the connection, until its first PDU (the A-ASSOCIATE-RQ)
    lies whole in the socket's receive buffer; the bytes stay there for pynetdicom to read.
    False when the peer closed first; LimitExceeded when the PDU declares more than
    MAX_CONTROL_PDU or is not whole within ``request_timeout_s`` of ``connected_at``.

    A TLS socket cannot be looked into without reading it: for one, only its first bytes are
    awaited (a peer that closes after its handshake, which needed a trusted certificate,
    becomes an association that ends at the ACSE timeout)."""
    needed = PDU_HEADER
    previous = raw.gettimeout()
    try:
        while True:
            remaining = connected_at + limits.request_timeout_s - clock()
            if remaining <= 0:
                raise LimitExceeded(f"the A-ASSOCIATE-RQ did not arrive whole within {limits.request_timeout_s:g} s")
            if isinstance(raw, ssl.SSLSocket):
                if raw.pending() or select.select([raw], [], [], remaining)[0]:
                    return True
                continue
            raw.settimeout(remaining)
            try:
                buffered = raw.recv(needed, socket.MSG_PEEK)
            except TimeoutError:
                continue
            if not buffered:
                return False
            if len(buffered) >= PDU_HEADER:
                length = struct.unpack(">L", buffered[2:PDU_HEADER])[0]
                if length > MAX_CONTROL_PDU:
                    raise LimitExceeded(f"a PDU of type 0x{buffered[0]:02X} declares {length} bytes "
                                        f"(limit {MAX_CONTROL_PDU})")
                needed = PDU_HEADER + length
                if len(buffered) >= needed:
                    return True
            time.sleep(REQUEST_POLL_S)  # a peek returns at once while anything is buffered
    finally:
        if raw.fileno() != -1:
            raw.settimeout(previous)


class GuardedReader:
    """Reads one connection's socket through a PduGuard: each read waits at most until the
    guard's deadline, and every piece is handed to the guard as it arrives."""

    def __init__(self, guard: PduGuard, clock: Callable[[], float] = time.monotonic) -> None:
        self.guard, self.clock = guard, clock

    def read(self, raw: Any, count: int) -> bytearray:
        """Up to ``count`` bytes: fewer only when the peer closed."""
        received = bytearray()
        previous = raw.gettimeout()
        try:
            while len(received) < count:
                awaited = self.guard.deadline()
                deadline = None
                if awaited is not None:
                    deadline, what = awaited
                    remaining = deadline - self.clock()
                    if remaining <= 0:
                        raise LimitExceeded(what)
                    raw.settimeout(remaining if previous is None else min(previous, remaining))
                try:
                    piece = raw.recv(min(count - len(received), 1 << 16))
                except TimeoutError:
                    if deadline is None:
                        raise  # pynetdicom's own timeout on the socket
                    continue  # ours: the deadline decides, on the next turn
                if not piece:
                    break  # the peer closed: the caller sees a short read
                received += piece
                self.guard.feed(piece, self.clock())
        finally:
            if raw.fileno() != -1:
                raw.settimeout(previous)
        return received


def guard_connection(association_socket: Any, reader: GuardedReader, on_violation: Callable[[str], None]) -> None:
    """Read ``association_socket`` (pynetdicom's AssociationSocket) through ``reader``: its
    ``recv`` is replaced. ``on_violation`` is told why before the connection is closed."""

    def recv(count: int) -> bytearray:
        raw = association_socket.socket
        if raw is None:
            return bytearray()
        try:
            return reader.read(raw, count)
        except LimitExceeded as error:
            on_violation(str(error))
            raise

    association_socket.recv = recv
