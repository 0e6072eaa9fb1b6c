"""The DICOM Storage SCP in front of the node (pynetdicom): who may call, what it accepts.

Associations are accepted only from allowed calling AE titles (and their IP addresses, where
given) and only when they call our AE title; anything else is rejected at association
(rejected-permanent, "calling AE title not recognised" / "called AE title not recognised").
Presentation contexts: Verification (C-ECHO) and the CR and DX storage SOP classes, with every
transfer syntax pydicom can decode here. A C-STORE is answered Success only once the instance
is stored durably; Out of Resources (A700) when the queue is full or storing failed.
"""

from __future__ import annotations

from typing import Any

from .config import NodeConfig
from .events import EventLog, uid_hash
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


class StorageSCP:
    """The listening AE; ``start`` returns once it listens, ``stop`` closes it."""

    def __init__(self, config: NodeConfig, node: Node, log: EventLog) -> None:
        from pynetdicom import AE, evt

        self.config, self.node, self.log = config, node, log
        self.ae = AE(ae_title=config.ae_title)
        self.ae.maximum_pdu_size = 0  # no limit on what we receive
        self.ae.add_supported_context(VERIFICATION)
        syntaxes = decodable_transfer_syntaxes()
        for sop_class in RADIOGRAPH_STORAGE:
            self.ae.add_supported_context(sop_class, syntaxes)
        self.handlers = [(evt.EVT_REQUESTED, self._on_requested), (evt.EVT_C_STORE, self._on_store),
                         (evt.EVT_C_ECHO, self._on_echo)]
        self.server: Any = None

    def start(self) -> None:
        self.server = self.ae.start_server((self.config.host, self.config.port), block=False,
                                           evt_handlers=self.handlers)
        self.log("listening", ae_title=self.config.ae_title, host=self.config.host, port=self.config.port,
                 storage=list(RADIOGRAPH_STORAGE.values()))

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server = None

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

    def _on_store(self, event: Any) -> int:
        request = event.request
        origin = {"calling_ae": str(event.assoc.requestor.ae_title).strip(),
                  "sop": uid_hash(str(request.AffectedSOPInstanceUID)),
                  "sop_class": RADIOGRAPH_STORAGE.get(str(request.AffectedSOPClassUID), str(request.AffectedSOPClassUID))}
        try:
            outcome = self.node.submit(event.encoded_dataset(), ".dcm", key=origin["sop"], origin=origin)
        except OSError as error:
            self.log("store_failed", error=str(error), **origin)
            return OUT_OF_RESOURCES
        return OUT_OF_RESOURCES if outcome == "refused" else SUCCESS
