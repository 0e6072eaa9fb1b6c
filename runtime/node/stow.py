"""DICOMweb STOW-RS (PS3.18 10.5) as a forwarder channel: each result POSTed on its own, the
server's answer read as a C-STORE status would be.

One request per object (multipart/related; type="application/dicom", one part, the file as
written), so each object gets its own answer and a refusal never holds up the next. The
answer, by HTTP status and, where the server sends one, the Store Instances Response (PS3.18
10.5.3: Failed SOP Sequence with a Failure Reason, Referenced SOP Sequence with a Warning
Reason):

- 200, or 202 with this instance referenced: stored (a Warning Reason makes it a warning);
- 202 or 409 with this instance failed: the Failure Reason decides as a C-STORE status does
  (out of resources, processing failure: retried later; anything else: a refusal);
- 408, 429 and every 5xx: "not now", this object retried with its doubling delay;
- 401, 403, 404, 405, 407: the destination refuses us or is not at this URL, whatever the
  object: everything for it waits (like an association that fails) and the log says why;
- any other 4xx (400, 413, 415, ...): a refusal of this object, kept in rejected/;
- no answer (connection refused or reset, TLS failure, timeout): the destination waits.

Needs ``requests`` (the node extra).
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import WebDestination

RETRIED_HTTP = frozenset({408, 429})  # and every 5xx
DESTINATION_HTTP = frozenset({401, 403, 404, 405, 407})  # not about the object: the destination waits
FAILED_SOP_SEQUENCE, REFERENCED_SOP_SEQUENCE = "00081198", "00081199"
FAILURE_REASON, WARNING_REASON, REFERENCED_SOP_INSTANCE_UID = "00081197", "00081196", "00081155"


class DestinationRefused(Exception):
    """An HTTP answer about the destination rather than the object (credentials, URL)."""


@dataclass(frozen=True)
class StowAnswer:
    """The server's answer to one object: the HTTP status, and the DICOM status (Failure or
    Warning Reason) it gave for the instance, if any."""

    http: int
    reason: int | None = None
    warning: bool = False


def _tag(item: dict[str, Any], tag: str) -> Any:
    values = item.get(tag, {}).get("Value") or [None]
    return values[0]


def read_answer(http: int, body: bytes, sop_instance_uid: str) -> StowAnswer:
    """The answer for ``sop_instance_uid`` from a STOW-RS response; DestinationRefused for a status
    that is about the destination (credentials, URL)."""
    if http in DESTINATION_HTTP:
        raise DestinationRefused(f"HTTP {http}" + {401: ": not authenticated, check the credentials",
                                                  403: ": not allowed, check the credentials' rights",
                                                  404: ": no STOW-RS service at this URL",
                                                  405: ": no STOW-RS service at this URL",
                                                  407: ": a proxy asks for credentials"}[http])
    try:
        document = json.loads(body) if body.strip() else {}
    except ValueError:
        document = {}
    if isinstance(document, list):  # some servers answer with the response dataset in an array
        document = document[0] if document and isinstance(document[0], dict) else {}
    if not isinstance(document, dict):
        document = {}
    for item in (document.get(FAILED_SOP_SEQUENCE, {}).get("Value") or []):
        if isinstance(item, dict) and _tag(item, REFERENCED_SOP_INSTANCE_UID) in (sop_instance_uid, None):
            reason = _tag(item, FAILURE_REASON)
            return StowAnswer(http, int(reason) if isinstance(reason, int) else None)
    for item in (document.get(REFERENCED_SOP_SEQUENCE, {}).get("Value") or []):
        if isinstance(item, dict) and _tag(item, REFERENCED_SOP_INSTANCE_UID) == sop_instance_uid:
            return StowAnswer(http, None, warning=_tag(item, WARNING_REASON) is not None)
    return StowAnswer(http)


class StowChannel:
    """An HTTP session with one DICOMweb destination for a batch of objects."""

    def __init__(self, destination: WebDestination, connect_s: float, read_s: float) -> None:
        self.destination = destination
        self.timeout = (connect_s, read_s)
        self.session: Any = None

    def __enter__(self) -> StowChannel:
        import requests

        self.session = requests.Session()
        self.session.verify = str(self.destination.ca_bundle) if self.destination.ca_bundle else True
        self.session.trust_env = False  # no proxy or .netrc credentials picked up behind the config's back
        authorization = self.destination.authorization()  # read now: a rotated token is used from here on
        if authorization:
            self.session.headers["Authorization"] = authorization
        self.session.headers["Accept"] = "application/dicom+json"
        return self

    def __exit__(self, *exc: object) -> None:
        self.session.close()

    def post(self, path: Path, sop_instance_uid: str) -> StowAnswer:
        """POST one file; raises ConnectionError (no answer) or DestinationRefused."""
        import requests

        boundary = uuid.uuid4().hex
        body = b"".join((f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode(), path.read_bytes(),
                         f"\r\n--{boundary}--\r\n".encode()))
        content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
        try:
            response = self.session.post(f"{self.destination.url}/studies", data=body, timeout=self.timeout,
                                         headers={"Content-Type": content_type})
        except requests.RequestException as error:
            raise ConnectionError(f"no answer from {self.destination.name}: {type(error).__name__}") from None
        return read_answer(response.status_code, response.content, sop_instance_uid)
