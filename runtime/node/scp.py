"""The DICOM Storage SCP in front of the node (pynetdicom): who may call, what it accepts.

Associations are accepted only from allowed calling AE titles (and their IP addresses, where
given) and only when they call our AE title; anything else is rejected at association
(rejected-permanent, "calling AE title not recognised" / "called AE title not recognised").
Presentation contexts: Verification (C-ECHO) and the CR and DX storage SOP classes, with every
transfer syntax pydicom can decode here. A C-STORE is answered Success only once the instance
is stored durably; Out of Resources (A700) when the queue is full or storing failed.

Every connection is bounded before its caller is known: admitted or closed before an
association exists for it, with capacity kept for known callers (admission.py); then the
time to send a whole A-ASSOCIATE-RQ, each PDU and each DIMSE message, the PDU length we
advertise and accept, the size of one dataset (limits.py); pynetdicom's timeouts do the rest.
"""

from __future__ import annotations

import socketserver
import threading
from typing import Any

from .admission import Admission, AdmissionLimits, AdmittingServer
from .config import NodeConfig
from .events import EventLog, uid_hash
from .limits import ConnectionLimits
from .received import CANNOT_UNDERSTAND, refusal
from .tls import SECURE_PORT
from .worker import Node

VERIFICATION = "1.2.840.10008.1.1"
RADIOGRAPH_STORAGE = {
    "1.2.840.10008.5.1.4.1.1.1": "CR Image Storage",
    "1.2.840.10008.5.1.4.1.1.1.1": "Digital X-Ray Image Storage - For Presentation",
    "1.2.840.10008.5.1.4.1.1.1.1.1": "Digital X-Ray Image Storage - For Processing",
}
SUCCESS, OUT_OF_RESOURCES = 0x0000, 0xA700
REJECTED_PERMANENT, SERVICE_USER, CALLING_AE_UNKNOWN, CALLED_AE_UNKNOWN = 0x01, 0x01, 0x03, 0x07


def decodable_transfer_syntaxes() -> list[str]:
    """Transfer syntaxes whose pixel data the installed pydicom decoders can read."""
    from pydicom import uid
    from pydicom.pixels import get_decoder

    candidates = [uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian, uid.DeflatedExplicitVRLittleEndian,
                  uid.ExplicitVRBigEndian, *uid.JPEGTransferSyntaxes, *uid.JPEGLSTransferSyntaxes,
                  *uid.JPEG2000TransferSyntaxes, uid.RLELossless]
    found = []
    for syntax in candidates:
        try:
            if get_decoder(syntax).is_available and syntax not in found:
                found.append(syntax)
        except (NotImplementedError, ValueError):
            continue
    return found


def _loopback(host: str) -> bool:
    return host in ("localhost", "127.0.0.1", "::1") or host.startswith("127.")


class StorageSCP:
    """The listening AE; ``start`` returns once it listens, ``stop`` closes it."""

    def __init__(self, config: NodeConfig, node: Node, log: EventLog) -> None:
        from pynetdicom import AE, evt

        self.config, self.node, self.log = config, node, log
        self.ae = AE(ae_title=config.ae_title)
        self.ae.maximum_pdu_size = config.max_pdu_size
        self.ae.maximum_associations = config.max_associations
        self.ae.acse_timeout = config.acse_timeout_s
        self.ae.dimse_timeout = config.dimse_timeout_s
        self.ae.network_timeout = config.network_timeout_s
        self.tls = config.server_tls()
        self.limits = ConnectionLimits(max_pdu_bytes=config.max_pdu_size, max_dataset_bytes=config.max_dataset_mb << 20,
                                       request_timeout_s=config.acse_timeout_s, pdu_timeout_s=config.network_timeout_s,
                                       message_timeout_s=config.dimse_timeout_s)
        self.admission = Admission(AdmissionLimits(config.max_associations, config.max_associations_per_address,
                                                   config.reserved_associations),
                                   known=(address for caller in config.callers for address in caller.addresses))
        self.ae.add_supported_context(VERIFICATION)
        syntaxes = decodable_transfer_syntaxes()
        for sop_class in RADIOGRAPH_STORAGE:
            self.ae.add_supported_context(sop_class, syntaxes)
        self.handlers = [(evt.EVT_REQUESTED, self._on_requested),
                         (evt.EVT_ACCEPTED, self._on_accepted), (evt.EVT_C_STORE, self._on_store),
                         (evt.EVT_C_ECHO, self._on_echo)]
        self.server: Any = None

    def start(self) -> None:
        server = self.ae.make_server((self.config.host, self.config.port), evt_handlers=self.handlers,
                                     server_class=AdmittingServer)
        server.admit_with(self.admission, self.limits, self.tls,
                          lambda address, event, reason: self.log(event, address=address, reason=reason))
        threading.Thread(target=server.serve_forever, name="chexplain-scp", daemon=True).start()
        self.server = server
        self.log("listening", ae_title=self.config.ae_title, host=self.config.host, port=self.config.port,
                 storage=list(RADIOGRAPH_STORAGE.values()), max_associations=self.config.max_associations,
                 max_associations_per_address=self.config.max_associations_per_address,
                 max_pdu_size=self.config.max_pdu_size, max_dataset_mb=self.config.max_dataset_mb,
                 timeouts_s={"acse": self.config.acse_timeout_s, "dimse": self.config.dimse_timeout_s,
                             "network": self.config.network_timeout_s},
                 tls=None if self.tls is None else {"client_certificate": "required" if self.config.tls_require_client_certificate
                                                    and self.config.tls_ca_bundle else "optional"})
        if self.tls is None and not _loopback(self.config.host):
            self.log("warning", message=f"listening without TLS on {self.config.host}: AE titles are not credentials; "
                                        f"configure [tls] (DICOM over TLS, port {SECURE_PORT}) where the network is "
                                        "not trusted")

    def stop(self) -> None:
        if self.server is not None:
            socketserver.BaseServer.shutdown(self.server)  # pynetdicom's shutdown also unlists it from the AE
            self.server.server_close()
            self.server = None

    def _on_accepted(self, event: Any) -> None:
        self.admission.know(str(event.assoc.requestor.address))

    def _on_requested(self, event: Any) -> None:
        requestor = event.assoc.requestor
        calling = str(requestor.primitive.calling_ae_title).strip()
        called = str(requestor.primitive.called_ae_title).strip()
        address = str(requestor.address)
        if called != self.config.ae_title:
            reason = CALLED_AE_UNKNOWN
        elif not self.config.allows(calling, address):
            reason = CALLING_AE_UNKNOWN
        else:
            return
        self.log("association_rejected", calling_ae=calling, called_ae=called, address=address,
                 reason="called AE title not ours" if reason == CALLED_AE_UNKNOWN else "calling AE not allowed")
        event.assoc.acse.send_reject(REJECTED_PERMANENT, SERVICE_USER, reason)
        event.assoc.kill()  # lets the reject PDU go out before the socket closes, as pynetdicom's own rejections do

    def _on_echo(self, event: Any) -> int:
        self.log("echo", calling_ae=str(event.assoc.requestor.ae_title).strip())
        return SUCCESS

    def _on_store(self, event: Any) -> Any:
        """Success once the instance is kept; Out of Resources when it cannot be now; Cannot
        Understand (with an error comment) for an instance whose UIDs are not valid."""
        from pydicom.dataset import Dataset

        request = event.request
        origin = {"calling_ae": str(event.assoc.requestor.ae_title).strip(),
                  "sop": uid_hash(str(request.AffectedSOPInstanceUID)),
                  "sop_class": RADIOGRAPH_STORAGE.get(str(request.AffectedSOPClassUID), str(request.AffectedSOPClassUID))}
        problem = refusal(request.DataSet, str(event.context.transfer_syntax),
                          str(request.AffectedSOPClassUID), str(request.AffectedSOPInstanceUID))
        if problem:
            self.log("store_refused", reason=problem, **origin)
            status = Dataset()
            status.Status, status.ErrorComment = CANNOT_UNDERSTAND, problem[:64]
            return status
        try:
            outcome = self.node.submit(event.encoded_dataset(), ".dcm", key=origin["sop"], origin=origin)
        except OSError as error:
            self.log("store_failed", error=str(error), **origin)
            return OUT_OF_RESOURCES
        return OUT_OF_RESOURCES if outcome == "refused" else SUCCESS
