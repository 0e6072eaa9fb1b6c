"""Which connections the node takes, decided before any association exists for them.

pynetdicom starts an association (a thread, counted against the association limit) for every
accepted socket, and keeps it until the ACSE timeout even when the connection was refused
or its TLS handshake failed. Refused peers then held the slots a modality needed, and a
modality that retried while locked out kept itself locked out. Here a connection is counted
from the moment it is accepted, by the server itself:

- ``Admission`` decides from the connections held now (accepted but not yet an association,
  and running associations) whether one more from an address may start: at most
  ``max_per_address`` from one address, at most ``max_total`` in all, and of those at most
  ``max_total - reserved`` from addresses not known as callers, so unknown peers never take
  the last ``reserved`` slots. Known: a configured caller's address, or one that has had an
  association accepted since the node started.
- ``AdmittingServer`` asks it in ``verify_request`` (socketserver's hook, in the accept
  loop, before a thread exists): a refused connection is closed at once and holds nothing.
  An admitted one, in its own thread, does its TLS handshake and sends its whole
  A-ASSOCIATE-RQ within the ACSE timeout (limits.py guards the bytes) before pynetdicom
  creates an association for it; a connection that fails, closes or stalls before that
  frees its slot at once, or at the ACSE deadline, and never becomes an association.
"""

from __future__ import annotations

import itertools
import ssl
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from pynetdicom import evt
from pynetdicom.transport import ThreadedAssociationServer

from .limits import ConnectionLimits, GuardedReader, LimitExceeded, PduGuard, await_request, guard_connection
from .tls import handshake


@dataclass(frozen=True)
class AdmissionLimits:
    max_total: int
    max_per_address: int
    reserved: int  # of max_total, kept for known callers' addresses


class Admission:
    """Counts the connections that are not yet associations and decides on new ones; thread-safe."""

    def __init__(self, limits: AdmissionLimits, known: Iterable[str] = ()) -> None:
        self.limits = limits
        self._known = set(known)
        self._pending: dict[int, str] = {}  # token -> address
        self._tokens = itertools.count()
        self._lock = threading.Lock()

    def know(self, address: str) -> None:
        """``address`` has had an association accepted: it counts as a caller's from now on."""
        with self._lock:
            self._known.add(address)

    def admit(self, address: str, associations: Iterable[str]) -> tuple[int | None, str]:
        """A token for a new connection from ``address``, given the addresses of the running
        associations; or None and why it is refused."""
        with self._lock:
            held = Counter(associations)
            held.update(self._pending.values())
            reason = self._refusal(address, held)
            if reason:
                return None, reason
            token = next(self._tokens)
            self._pending[token] = address
            return token, ""

    def release(self, token: int) -> None:
        """The connection is an association now (counted as one), or gone."""
        with self._lock:
            self._pending.pop(token, None)

    def _refusal(self, address: str, held: Counter[str]) -> str:
        limits = self.limits
        if held[address] >= limits.max_per_address:
            return f"{held[address]} connections from this address (limit {limits.max_per_address})"
        total = sum(held.values())
        if total >= limits.max_total:
            return f"{total} connections in all (limit {limits.max_total})"
        if address not in self._known:
            unknown = sum(count for peer, count in held.items() if peer not in self._known)
            if unknown >= limits.max_total - limits.reserved:
                return (f"{unknown} connections from addresses not known as callers (limit "
                        f"{limits.max_total - limits.reserved}: {limits.reserved} kept for known callers)")
        return ""


class AdmittingServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with connections admitted, TLS handshakes done and the
    A-ASSOCIATE-RQ read before an association starts; ``admit_with`` must be called before it
    serves."""

    def admit_with(self, admission: Admission, limits: ConnectionLimits, tls: ssl.SSLContext | None,
                   on_closed: Callable[[str, str, str], None]) -> None:
        """``on_closed(address, event, reason)`` hears of every connection the node ends:
        ``connection_refused``, ``tls_refused`` or ``connection_closed``."""
        self.admission, self.limits, self.tls, self.on_closed = admission, limits, tls, on_closed
        self._tokens: dict[int, int] = {}  # id(socket) -> admission token, until its thread takes it
        self._connected: dict[int, float] = {}  # id(socket) -> when it was accepted, until its association reads it
        self.bind(evt.EVT_CONN_OPEN, self._guard)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        address = str(client_address[0])
        token, reason = self.admission.admit(address, (str(a.requestor.address) for a in self.active_associations))
        if token is None:
            self.on_closed(address, "connection_refused", reason)
            return False  # socketserver closes it: no thread, no association
        self._tokens[id(request)] = token
        return True

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)  # starts the connection's thread
        except Exception:
            self.admission.release(self._tokens.pop(id(request), -1))  # no thread: socketserver closes it
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        token = self._tokens.pop(id(request), None)
        address = str(client_address[0])
        connected_at = time.monotonic()
        try:
            try:
                if self.tls is not None:
                    request = handshake(request, self.tls, self.limits.request_timeout_s)
            except (OSError, ValueError) as error:  # ssl.SSLError is an OSError; a timeout too
                self.on_closed(address, "tls_refused", _tls_reason(error))
                self.shutdown_request(request)
                return
            try:
                requested = await_request(request, connected_at, self.limits)
            except (LimitExceeded, OSError) as error:
                requested = False
                self.on_closed(address, "connection_closed", str(error) or type(error).__name__)
            if not requested:
                self.shutdown_request(request)
                return
            self._connected[id(request)] = connected_at
            super().process_request_thread(request, client_address)  # the association thread is running now
        finally:
            self._connected.pop(id(request), None)
            if token is not None:
                self.admission.release(token)

    def _guard(self, event: Any) -> None:
        """EVT_CONN_OPEN: the association reads its socket through a guard, whose deadlines count
        from the moment the connection was accepted."""
        association_socket = event.assoc.dul.socket
        reader = GuardedReader(PduGuard(self.limits, self._connected.pop(id(association_socket.socket))))
        address = str(event.address[0])
        guard_connection(association_socket, reader,
                         lambda reason: self.on_closed(address, "connection_closed", reason))


def _tls_reason(error: Exception) -> str:
    """One line: OpenSSL's reason ('CERTIFICATE_VERIFY_FAILED', 'WRONG_VERSION_NUMBER', ...) or the socket's."""
    reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or type(error).__name__
    return str(reason)
