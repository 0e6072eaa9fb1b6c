"""DICOMweb destinations: the config that names them (credentials never on the command line,
never in clear), the reading of STOW-RS answers as data, and the forwarder against an HTTPS
server on loopback that answers what real ones do — 503 then success, a 409 refusal, 401 for
wrong credentials — with the bearer or basic credentials and the CA file checked on the wire.
Orthanc's own STOW-RS is in test_node_orthanc.py."""

from __future__ import annotations

import base64
import io
import json
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pydicom
import pytest

from chexplain.errors import ConfigError
from chexplain.runtime.node.config import Destination, WebDestination, load_config, parse_destination
from chexplain.runtime.node.events import EventLog
from chexplain.runtime.node.forwarder import Answer, Forwarder, Unreachable, destination_key
from chexplain.runtime.node.spool import Spool
from chexplain.runtime.node.stow import DestinationRefused, StowAnswer, read_answer

from certificates import Pki, make_pki
from outboxes import forwarding, outbox_with, uid_of

UID = "1.2.826.0.1.3680043.8.498.1"


def failed(uid: str, reason: int) -> bytes:
    return json.dumps({"00081198": {"vr": "SQ", "Value": [
        {"00081155": {"vr": "UI", "Value": [uid]}, "00081197": {"vr": "US", "Value": [reason]}}]}}).encode()


def referenced(uid: str, warning: int | None = None) -> bytes:
    item = {"00081155": {"vr": "UI", "Value": [uid]}}
    if warning is not None:
        item["00081196"] = {"vr": "US", "Value": [warning]}
    return json.dumps({"00081199": {"vr": "SQ", "Value": [item]}}).encode()


@pytest.mark.parametrize(("http", "body", "category", "transient"), [
    (200, b"", "Success", False),
    (200, referenced(UID), "Success", False),
    (202, referenced(UID, 0xB000), "Warning", False),
    (202, failed(UID, 0xA700), "Failure", True),  # out of resources: not now
    (409, failed(UID, 0xC000), "Failure", False),  # cannot understand: a refusal
    (409, failed(UID, 0x0110), "Failure", True),  # processing failure: not now, as for C-STORE
    (409, b"not json", "Failure", False),
    (400, b"", "Failure", False),
    (413, b"", "Failure", False),
    (503, b"", "Failure", True),
    (500, b"<html>", "Failure", True),
    (429, b"", "Failure", True),
    (408, b"", "Failure", True),
])
def test_stow_answers_read_as_cstore_statuses(http, body, category, transient):
    answer = Answer.of_web(read_answer(http, body, UID))
    assert (answer.category, answer.transient, answer.stored) == (category, transient, category != "Failure")
    assert answer.code().startswith(f"HTTP {http}")


def test_another_instances_failure_is_not_this_ones_and_destination_answers_raise():
    assert read_answer(202, failed("1.2.3", 0xC000), UID) == StowAnswer(202)
    assert read_answer(409, failed(UID, 0xC000), UID).reason == 0xC000
    for http in (401, 403, 404, 405, 407):
        with pytest.raises(DestinationRefused, match=f"HTTP {http}"):
            read_answer(http, b"", UID)


def test_a_url_is_a_dicomweb_destination_and_an_ae_a_dimse_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    assert parse_destination("https://pacs.example.org/dicom-web/") == WebDestination("https://pacs.example.org/dicom-web")
    assert isinstance(parse_destination("PACS@10.0.0.5:104"), Destination)
    assert destination_key(WebDestination("https://pacs.example.org:8443/dicom-web")) == "web_pacs.example.org_8443_dicom-web"
    with pytest.raises(ConfigError, match="no credentials in the URL"):
        parse_destination("https://user:secret@pacs.example.org/dicom-web")
    with pytest.raises(ConfigError, match="expected AE@HOST:PORT or an http"):
        parse_destination("ftp://pacs.example.org")
    token = tmp_path / "token"
    token.write_text("abc.def.ghi\n")
    config = tmp_path / "node.toml"
    config.write_text(f'[node]\nallow_any_caller = true\n[[forward]]\nurl = "https://pacs.example.org/dicom-web"\n'
                      f'token_file = "{token}"\nretry_initial_s = 1\n[[forward]]\nae_title = "PACS"\n'
                      f'host = "10.0.0.5"\nport = 104\n')
    web, dimse = load_config(config).check().forward
    assert web.authorization() == "Bearer abc.def.ghi" and web.retry_initial_s == 1.0 and dimse.ae_title == "PACS"
    monkeypatch.setenv("PACS_PASSWORD", "s3cret")
    basic = WebDestination("https://pacs.example.org/dicom-web", username="chexplain", password_env="PACS_PASSWORD")
    assert basic.check().authorization() == "Basic " + base64.b64encode(b"chexplain:s3cret").decode()


@pytest.mark.parametrize(("destination", "message"), [
    (WebDestination("http://pacs/dicom-web", token_env="PACS_TOKEN"), "only over https"),
    (WebDestination("https://pacs/dicom-web", token_env="NOT_SET_ANYWHERE"), "NOT_SET_ANYWHERE holding the token is not set"),
    (WebDestination("https://pacs/dicom-web", token_file=Path("/nonexistent/token")), "cannot read the token file"),
    (WebDestination("https://pacs/dicom-web", token_env="T", username="u", password_env="P"), "not both"),
    (WebDestination("https://pacs/dicom-web", username="u"), "needs username and password_file or password_env"),
    (WebDestination("https://pacs/dicom-web", ca_bundle=Path("/nonexistent/ca.pem")), "is not a file"),
    (WebDestination("http://pacs/dicom-web", ca_bundle=Path(__file__)), "needs an https URL"),
    (WebDestination("https://pacs/dicom-web", retry_max_s=float("nan")), "retry_max_s"),
])
def test_unusable_dicomweb_settings_are_refused_by_name(destination, message, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("PACS_TOKEN", "abc")
    with pytest.raises(ConfigError, match=message):
        destination.check()


def test_the_config_file_refuses_unknown_keys_of_a_dicomweb_destination(tmp_path: Path):
    config = tmp_path / "node.toml"
    config.write_text('[[forward]]\nurl = "https://pacs/dicom-web"\npassword = "in the file"\n')
    with pytest.raises(ConfigError, match="unknown keys password"):
        load_config(config)


@dataclass
class LoopbackStow:
    """An HTTPS STOW-RS endpoint on loopback whose answer per POST comes from ``answer(uid, attempt)``
    as (HTTP status, body); it records what each request carried."""

    pki: Pki
    answer: Callable[[str, int], tuple[int, bytes]]
    authorizations: list[str | None] = field(default_factory=list)
    content_types: list[str] = field(default_factory=list)
    attempts: dict[str, int] = field(default_factory=dict)
    stored: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                owner.authorizations.append(self.headers.get("Authorization"))
                owner.content_types.append(self.headers.get("Content-Type", ""))
                boundary = self.headers["Content-Type"].split("boundary=")[1].encode()
                part = body.split(b"--" + boundary)[1].split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
                uid = str(pydicom.dcmread(pydicom.filebase.DicomBytesIO(part)).SOPInstanceUID)
                owner.attempts[uid] = owner.attempts.get(uid, 0) + 1
                status, answer = owner.answer(uid, owner.attempts[uid])
                if status < 300 and b"00081198" not in answer:
                    owner.stored.append(uid)
                self.send_response(status)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.pki.node_cert, self.pki.node_key)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}/dicom-web"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
def servers() -> Iterator[list[LoopbackStow]]:
    started: list[LoopbackStow] = []
    yield started
    for server in started:
        server.close()


def test_a_503_is_retried_and_a_refusal_does_not_block_the_next(tmp_path, pki, servers, monkeypatch):
    """The first object: 503 twice, then stored; the second refused (409, cannot understand) and
    kept in rejected/; the others stored, all with the bearer token from the environment."""
    spool = Spool(tmp_path / "spool")
    folders = outbox_with(spool, 2)
    busy, refused = uid_of(folders[0] / "sc-1.dcm"), uid_of(folders[0] / "sr.dcm")

    def answer(uid: str, attempt: int) -> tuple[int, bytes]:
        if uid == busy and attempt <= 2:
            return 503, b""
        if uid == refused:
            return 409, failed(uid, 0xC000)
        return 200, referenced(uid)

    server = LoopbackStow(pki, answer)
    servers.append(server)
    monkeypatch.setenv("CHEXPLAIN_TEST_TOKEN", "t0ken")
    destination = WebDestination(server.url, retry_initial_s=0.2, retry_max_s=0.4, ca_bundle=pki.ca,
                                 token_env="CHEXPLAIN_TEST_TOKEN").check()
    forwarder, events, metrics = forwarding(spool, destination, lambda: len(server.stored) == 3)
    assert server.attempts[busy] == 3 and server.attempts[refused] == 1
    assert set(server.authorizations) == {"Bearer t0ken"}
    assert all(t.startswith('multipart/related; type="application/dicom"; boundary=') for t in server.content_types)
    deferred = [e for e in events if e["event"] == "forward_deferred"]
    assert [e["status"] for e in deferred] == ["HTTP 503", "HTTP 503"] and deferred[1]["retry_in_s"] == 0.4
    [rejected] = [e for e in events if e["event"] == "forward_rejected"]
    assert rejected["status"] == "HTTP 409 0xC000" and rejected["file"] == "sr.dcm"
    kept = spool.rejected / destination_key(destination) / folders[0].name / "sr.dcm"
    assert kept.exists() and "HTTP 409 0xC000" in kept.with_name("sr.dcm.status.txt").read_text()
    assert forwarder.queue.unsent() == []


def test_wrong_credentials_hold_the_destination_and_lose_nothing(tmp_path, pki, servers):
    """401 is about the destination: nothing is rejected, everything waits; with the right
    password (basic, from a file) it all goes."""
    spool = Spool(tmp_path / "spool")
    outbox_with(spool, 1)
    wanted = "Basic " + base64.b64encode(b"chexplain:right").decode()
    server = LoopbackStow(pki, lambda uid, attempt: (200, b"") if server.authorizations[-1] == wanted else (401, b""))
    servers.append(server)
    password = tmp_path / "password"
    password.write_text("wrong\n")
    destination = WebDestination(server.url, retry_initial_s=0.2, retry_max_s=0.4, ca_bundle=pki.ca,
                                 username="chexplain", password_file=password).check()
    _, events, _ = forwarding(spool, destination, lambda: len(server.authorizations) >= 2)
    failures = [e for e in events if e["event"] == "forward_failed"]
    assert failures and "HTTP 401" in failures[0]["error"] and failures[0]["unsent"] == 2
    assert not any(e["event"] == "forward_rejected" for e in events) and not list(spool.rejected.rglob("*.dcm"))
    password.write_text("right\n")  # read again at the next connection
    forwarder, _, _ = forwarding(spool, destination, lambda: len(server.stored) == 2)
    assert forwarder.queue.unsent() == []


def test_an_untrusted_certificate_is_no_answer(tmp_path, pki, servers):
    """Without the server's CA among the trusted ones, the destination is unreachable: nothing sent."""
    spool = Spool(tmp_path / "spool")
    outbox_with(spool, 1)
    server = LoopbackStow(pki, lambda uid, attempt: (200, b""))
    servers.append(server)
    destination = WebDestination(server.url, ca_bundle=pki.stranger_cert)
    forwarder = Forwarder(spool.outbox, spool.rejected, destination, "CHEXPLAIN", EventLog(io.StringIO()))
    with pytest.raises(Unreachable, match="SSLError"):
        forwarder.send(forwarder.due())
    assert server.attempts == {} and len(forwarder.queue.unsent()) == 2
