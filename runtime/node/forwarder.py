"""Send the node's DICOM results on to destinations — AEs by C-STORE, DICOMweb services by
STOW-RS (``stow.py``) —: one queue per destination, and an answer handled by its status
category, so that no object holds up the others.

Every ``.dcm`` in the outbox is sent once to each destination. The destination's answer
decides, by pynetdicom's status categories (PS3.7 annex C):

- Success or Warning: stored (a warning, e.g. 0x0107 "attribute list error" or 0xB000
  "coercion of data elements", is logged with its status); a ``<name>.sent.<destination>``
  marker is written durably beside the file, so a restart sends only what is left.
- Failure that says "not now" (``TRANSIENT``: out of resources, resource limitation,
  processing failure): that object alone is tried again later, its delay doubling from
  ``retry_initial_s`` to ``retry_max_s``; the objects behind it go on.
- Any other answer (a refusal: cannot understand, SOP class not supported, no presentation
  context for it at the destination, ...): the object is permanently rejected by that
  destination. A copy goes to ``rejected/<destination>/<item>/`` with the status beside it,
  and the rest go on.
- No answer (the association failed, was aborted or timed out at ``Timeouts``; for STOW-RS
  also an HTTP answer about the destination rather than the object: credentials refused, no
  service at the URL): the destination is down; everything for it waits, with the same
  doubling delay, while the other destinations go on.

A STOW-RS answer is read into the same categories (``stow.py``): the Failure Reason the server
gives for the instance is a C-STORE status; without one, 408, 429 and 5xx are "not now" and
other 4xx a refusal.

Delivery is at least once: the marker is written after the destination's answer, so an
object whose answer was lost (the node killed between the two) is sent again after the
restart, with the same SOP Instance UID. A PACS keeps one instance per SOP Instance UID, so
the second copy replaces, or is refused as a duplicate of, the first; no object is lost and
none is stored twice under two identities.
"""

from __future__ import annotations

import os
import re
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .basic_text_sr import BASIC_TEXT_SR_STORAGE
from .config import Destination, WebDestination
from .events import EventLog, Metrics, uid_hash
from .key_objects import KEY_OBJECT_SELECTION_STORAGE
from .measurement_report import COMPREHENSIVE_3D_SR_STORAGE
from .secondary_capture import LOSSLESS, SECONDARY_CAPTURE_STORAGE
from .segmentation import SEGMENTATION_STORAGE
from .spool import PARTIAL_PREFIX, fsync_dir, write_durably
from .stow import RETRIED_HTTP, DestinationRefused, StowAnswer, StowChannel

SENT_SUFFIX = ".sent"
STATUS_SUFFIX = ".status.txt"
UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")  # explicit, implicit VR little endian
# The presentation contexts proposed for what the node writes. The captures get one context per
# compressed syntax: offered in one context with the uncompressed ones, an SCP picks one syntax
# for it, often uncompressed; in contexts of their own each is accepted or refused on its own,
# and an uncompressed context remains for a destination that refuses them.
PROPOSED = [*((SECONDARY_CAPTURE_STORAGE, (syntax,)) for syntax in LOSSLESS), (SECONDARY_CAPTURE_STORAGE, UNCOMPRESSED),
            (BASIC_TEXT_SR_STORAGE, UNCOMPRESSED), (COMPREHENSIVE_3D_SR_STORAGE, UNCOMPRESSED),
            (SEGMENTATION_STORAGE, UNCOMPRESSED), (KEY_OBJECT_SELECTION_STORAGE, UNCOMPRESSED)]
OUT_OF_RESOURCES = range(0xA700, 0xA800)  # Storage service class (PS3.4 B.2.3)
RESOURCE_LIMITATION, PROCESSING_FAILURE = 0x0213, 0x0110  # general statuses (PS3.7 C.5)
NO_CONTEXT = "no presentation context for this SOP class accepted by the destination"


def destination_key(destination: Destination | WebDestination) -> str:
    """A file-name-safe name of a destination for its markers and its rejected/ folder."""
    if isinstance(destination, WebDestination):
        return "web_" + re.sub(r"[^A-Za-z0-9.-]", "_", destination.url.split("://", 1)[1])
    return re.sub(r"[^A-Za-z0-9.-]", "_", f"{destination.ae_title.strip()}_{destination.host}_{destination.port}")


def is_transient(status: int) -> bool:
    """A failure the destination may not give next time: worth retrying this object later."""
    return status in OUT_OF_RESOURCES or status in (RESOURCE_LIMITATION, PROCESSING_FAILURE)


@dataclass(frozen=True)
class Answer:
    """What a destination said to one object: its status code (None: refused before sending)
    and pynetdicom's category of it (Success, Warning, Failure, Cancel, Pending, Unknown)."""

    status: int | None
    category: str
    reason: str = ""
    http: int | None = None  # a STOW-RS answer's HTTP status
    retry: bool = False  # "not now" said by HTTP alone (408, 429, 5xx)

    @classmethod
    def of(cls, status: int, http: int | None = None) -> Answer:
        from pynetdicom.status import STORAGE_SERVICE_CLASS_STATUS, code_to_category

        category = code_to_category(status)
        described = STORAGE_SERVICE_CLASS_STATUS.get(status)
        return cls(status, category, f"{described[0]}: {described[1]}" if described else category, http)

    @classmethod
    def of_web(cls, answer: StowAnswer) -> Answer:
        """A STOW-RS answer in C-STORE's categories (the rules in ``stow.py``)."""
        if answer.reason is not None:
            return cls.of(answer.reason, answer.http)
        if 200 <= answer.http < 300:
            return cls(None, "Warning" if answer.warning else "Success", "stored", answer.http)
        retry = answer.http in RETRIED_HTTP or answer.http >= 500
        return cls(None, "Failure", "not now" if retry else "refused", answer.http, retry)

    @property
    def stored(self) -> bool:
        return self.category in ("Success", "Warning")

    @property
    def transient(self) -> bool:
        return self.retry or (self.status is not None and is_transient(self.status))

    def code(self) -> str | None:
        """The status as logged: ``0xA700``, ``HTTP 503``, both, or None (refused before sending)."""
        parts = ([f"HTTP {self.http}"] if self.http is not None else []) + (
            [f"0x{self.status:04X}"] if self.status is not None else [])
        return " ".join(parts) or None

    def describe(self) -> str:
        code = self.code()
        return f"status {code} ({self.reason})" if code else self.reason


class Unreachable(Exception):
    """The destination could not be reached or gave no answer: everything for it waits."""


class Outbox:
    """One destination's view of the outbox: what it has accepted (markers) and rejected (copies)."""

    def __init__(self, outbox: Path, rejected: Path, destination: Destination) -> None:
        self.outbox = outbox
        self.key = destination_key(destination)
        self.rejected = rejected / self.key

    def sent_marker(self, path: Path) -> Path:
        return path.with_name(f"{path.name}{SENT_SUFFIX}.{self.key}")

    def rejected_copy(self, path: Path) -> Path:
        return self.rejected / path.parent.name / path.name

    def unsent(self) -> list[Path]:
        """The DICOM results neither accepted nor rejected by this destination, oldest item first."""
        files = []
        for folder in sorted(p for p in self.outbox.iterdir() if p.is_dir() and not p.name.startswith(PARTIAL_PREFIX)):
            files += [f for f in sorted(folder.glob("*.dcm"))
                      if not self.sent_marker(f).exists() and not self.rejected_copy(f).exists()]
        return files

    def mark_sent(self, path: Path) -> None:
        write_durably(self.sent_marker(path), b"")
        fsync_dir(path.parent)

    def reject(self, path: Path, why: str) -> Path:
        """Keep a copy with the reason in rejected/ (written aside, then renamed): that is the
        record that this destination will never take it."""
        target = self.rejected_copy(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        write_durably(target.with_name(target.name + STATUS_SUFFIX), (why.rstrip() + "\n").encode())
        partial = target.with_name(PARTIAL_PREFIX + target.name)
        write_durably(partial, path.read_bytes())
        os.replace(partial, target)
        fsync_dir(target.parent)
        return target


@dataclass(frozen=True)
class Timeouts:
    """How long, in seconds, the forwarder waits on a destination: to connect (TCP and TLS), for
    its association answer, for each DIMSE response, and in silence. The node passes its own
    [limits] values; a destination that never answers is let go, and retried, at these."""

    connect: float = 10.0
    acse: float = 10.0
    dimse: float = 60.0
    network: float = 60.0


class DimseChannel:
    """One association with a C-STORE destination, for a batch of objects."""

    def __init__(self, destination: Destination, calling_ae: str, tls: ssl.SSLContext | None,
                 timeouts: Timeouts) -> None:
        self.destination, self.calling_ae, self.tls, self.timeouts = destination, calling_ae, tls, timeouts
        self.assoc: Any = None
        self.accepted: dict[str, set[str]] = {}

    def __enter__(self) -> DimseChannel:
        from pynetdicom import AE

        ae = AE(ae_title=self.calling_ae)
        ae.connection_timeout, ae.acse_timeout = self.timeouts.connect, self.timeouts.acse
        ae.dimse_timeout, ae.network_timeout = self.timeouts.dimse, self.timeouts.network
        for sop_class, syntaxes in PROPOSED:
            ae.add_requested_context(sop_class, list(syntaxes))
        target = self.destination
        tls_args = (self.tls, target.host) if target.tls and self.tls is not None else None
        if target.tls and tls_args is None:
            raise Unreachable(f"{target.name} needs TLS and no TLS context was given")
        self.assoc = ae.associate(target.host, target.port, ae_title=target.ae_title, tls_args=tls_args)
        if not self.assoc.is_established:
            raise Unreachable(f"no association with {target.name}")
        for context in self.assoc.accepted_contexts:
            self.accepted.setdefault(str(context.abstract_syntax), set()).update(map(str, context.transfer_syntax))
        return self

    def __exit__(self, *exc: object) -> None:
        if self.assoc.is_established:
            self.assoc.release()

    def store(self, path: Path, ds: Any) -> Answer:
        """C-STORE ``ds`` (decoded first where the destination takes its SOP class only uncompressed)."""
        sop_class = str(ds.SOPClassUID)
        if sop_class not in self.accepted:
            return Answer(None, "Failure", NO_CONTEXT)
        if str(ds.file_meta.TransferSyntaxUID) not in self.accepted[sop_class]:
            if not self.accepted[sop_class] & set(UNCOMPRESSED):  # neither as written nor decoded
                return Answer(None, "Failure", "the destination takes this SOP class only as "
                              + ", ".join(sorted(self.accepted[sop_class])))
            ds.decompress(generate_instance_uid=False)  # the destination takes it only uncompressed: same pixels
        response = self.assoc.send_c_store(ds)
        if "Status" not in response:
            raise Unreachable(f"{path.name}: no response from {self.destination.name}")
        return Answer.of(int(response.Status))


class WebChannel(StowChannel):
    """One HTTP session with a DICOMweb destination (STOW-RS), for a batch of objects."""

    def __init__(self, destination: WebDestination, timeouts: Timeouts) -> None:
        super().__init__(destination, timeouts.connect, timeouts.network)

    def store(self, path: Path, ds: Any) -> Answer:
        """POST the file as written (every STOW-RS server takes the transfer syntaxes it names)."""
        try:
            return Answer.of_web(self.post(path, str(ds.SOPInstanceUID)))
        except (ConnectionError, DestinationRefused) as error:
            raise Unreachable(f"{path.name}: {error}") from None


class Forwarder:
    """One destination with its own queue and back-off; ``send`` is one association, ``run`` the
    loop of the destination's thread."""

    def __init__(self, outbox: Path, rejected: Path, destination: Destination, calling_ae: str, log: EventLog,
                 metrics: Metrics | None = None, clock: Callable[[], float] = time.monotonic,
                 tls: ssl.SSLContext | None = None, timeouts: Timeouts = Timeouts()) -> None:
        self.queue = Outbox(outbox, rejected, destination)
        self.timeouts = timeouts
        self.tls = tls  # used when the destination says tls
        self.destination = destination
        self.calling_ae = calling_ae
        self.log = log
        self.metrics = metrics
        self.clock = clock
        self.retry_at: dict[Path, tuple[float, float]] = {}  # object -> (when it is due, its next delay)

    @property
    def name(self) -> str:
        return self.destination.name

    def due(self) -> list[Path]:
        """Unsent objects whose back-off has passed."""
        now = self.clock()
        return [f for f in self.queue.unsent() if self.retry_at.get(f, (0.0, 0.0))[0] <= now]

    def send(self, files: Sequence[Path]) -> None:
        """Offer ``files`` over one association (or HTTP session), read one at a time (a long
        backlog never sits in memory), each handled by its answer. Raises Unreachable when the
        destination gives none."""
        if isinstance(self.destination, WebDestination):
            channel: DimseChannel | WebChannel = WebChannel(self.destination, self.timeouts)
        else:
            channel = DimseChannel(self.destination, self.calling_ae, self.tls, self.timeouts)
        with channel:
            for path in files:
                self._offer(channel, path)

    def _offer(self, channel: DimseChannel | WebChannel, path: Path) -> None:
        from pydicom import dcmread

        try:
            ds = dcmread(path)
            sop = uid_hash(str(ds.SOPInstanceUID))
        except Exception as error:  # a damaged result: never sendable, so rejected with the reason
            self._rejected(path, "", Answer(None, "Failure", f"unreadable: {str(error).splitlines()[0]}"))
            return
        try:
            answer = channel.store(path, ds)
        except Unreachable:  # aborted or timed out under this object: it waits its own turn too
            self._defer(path)
            raise
        fields = {"file": path.name, "item": path.parent.name, "sop": sop, "destination": self.name,
                  "status": answer.code(), "category": answer.category,
                  "transfer_syntax": str(ds.file_meta.TransferSyntaxUID)}
        if answer.stored:
            self.queue.mark_sent(path)
            self.retry_at.pop(path, None)
            if self.metrics:
                self.metrics.count("forwarded")
            self.log("forwarded", **fields, **({"warning": answer.reason} if answer.category == "Warning" else {}))
        elif answer.transient:
            self.log("forward_deferred", **fields, reason=answer.reason, retry_in_s=self._defer(path))
        else:
            self._rejected(path, sop, answer)

    def _defer(self, path: Path) -> float:
        """Hold this object back for its own doubling delay (the others go on); returns the delay."""
        delay = self.retry_at.get(path, (0.0, self.destination.retry_initial_s))[1]
        self.retry_at[path] = (self.clock() + delay, min(delay * 2, self.destination.retry_max_s))
        return delay

    def _rejected(self, path: Path, sop: str, answer: Answer) -> None:
        copy = self.queue.reject(path, f"{self.name}: {answer.describe()}")
        self.retry_at.pop(path, None)
        if self.metrics:
            self.metrics.count("rejected")
        self.log("forward_rejected", file=path.name, item=path.parent.name, sop=sop, destination=self.name,
                 status=answer.code(), category=answer.category,
                 reason=answer.reason, kept=str(copy))

    def next_wait(self, poll_s: float) -> float:
        """Seconds until the earliest deferred object is due (at most ``poll_s``)."""
        if not self.retry_at:
            return poll_s
        return max(0.0, min(poll_s, min(at for at, _ in self.retry_at.values()) - self.clock()))

    def run(self, stop: threading.Event, wake: threading.Event, poll_s: float = 30.0) -> None:
        """Send what is due whenever woken (a result was written), when a deferred object is due,
        or every ``poll_s``; when the destination is unreachable, wait with a doubling delay."""
        delay = self.destination.retry_initial_s
        while not stop.is_set():
            files = self.due()
            if files:
                try:
                    self.send(files)
                except Exception as error:  # network errors of every kind: keep the files, retry later
                    failure = str(error).splitlines()[0] if str(error) else type(error).__name__
                    self.log("forward_failed", destination=self.name, error=failure,
                             unsent=len(self.queue.unsent()), retry_in_s=delay)
                    stop.wait(delay)
                    delay = min(delay * 2, self.destination.retry_max_s)
                    continue
                delay = self.destination.retry_initial_s
            wake.wait(self.next_wait(poll_s))
            wake.clear()
