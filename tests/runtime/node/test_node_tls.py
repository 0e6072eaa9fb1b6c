"""The node over DICOM TLS (PS3.15 annex B), certificates made in the test: dcmtk's storescu
(built with OpenSSL) and pynetdicom with the caller's certificate are served; no certificate,
a certificate from another CA and plain TCP to the TLS port are refused, and the AE allow-list
still applies."""

from __future__ import annotations

import contextlib
import io
import ssl
import subprocess

import pydicom
import pytest
from pynetdicom import AE

from chexplain.runtime.node.config import NodeConfig
from chexplain.runtime.node.events import EventLog
from chexplain.runtime.node.scp import StorageSCP

from certificates import Pki, make_pki
from node_process import DX, EXPLICIT, dcmtk, free_port, results, serve

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    return make_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def tls_node(node_model, pki, tmp_path_factory):
    spool = tmp_path_factory.mktemp("tls") / "spool"
    port = free_port()
    node = serve(node_model, spool, port, "--tls-cert", str(pki.node_cert), "--tls-key", str(pki.node_key),
                 "--tls-ca", str(pki.ca))
    yield node, port, spool
    assert node.stop() == 0


def tls_store(port: int, path, context: ssl.SSLContext | None, calling: str = "MODALITY") -> int | None:
    """C-STORE over TLS with ``context`` (plain TCP without one); None when no association."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(DX, EXPLICIT)
    assoc = ae.associate("127.0.0.1", port, ae_title="CHEXPLAIN",
                         tls_args=(context, "127.0.0.1") if context is not None else None)
    if not assoc.is_established:
        return None
    try:
        return int(assoc.send_c_store(pydicom.dcmread(path)).Status)
    finally:
        assoc.release()


def caller_context(pki: Pki, cert=None, key=None) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=pki.ca)
    if cert is not None:
        context.load_cert_chain(cert, key)
    return context


def test_storescu_and_pynetdicom_with_a_certificate_are_served(tls_node, pki, dx_files):
    node, port, spool = tls_node
    sent = subprocess.run([dcmtk("storescu"), "+tls", str(pki.caller_key), str(pki.caller_cert), "+cf", str(pki.ca),
                           "-aet", "STORESCU", "-aec", "CHEXPLAIN", "127.0.0.1", str(port), str(dx_files[0])],
                          capture_output=True, text=True, timeout=60)
    assert sent.returncode == 0, sent.stderr
    assert tls_store(port, dx_files[1], caller_context(pki, pki.caller_cert, pki.caller_key)) == 0x0000
    node.wait_for(lambda: len(results(spool)) == 2, 120, "both instances explained")
    listening = next(e for e in node.events() if e["event"] == "listening")
    assert listening["tls"] == {"client_certificate": "required"}
    assert not any(e["event"] == "warning" for e in node.events())  # loopback: no warning either way


def test_no_certificate_a_strangers_certificate_and_plain_tcp_are_refused(tls_node, pki, dx_files):
    node, port, spool = tls_node
    before = len(results(spool))
    assert tls_store(port, dx_files[2], caller_context(pki)) is None
    assert tls_store(port, dx_files[2], caller_context(pki, pki.stranger_cert, pki.stranger_key)) is None
    assert tls_store(port, dx_files[2], None) is None
    refused = [e for e in node.events() if e["event"] == "tls_refused"]
    assert len(refused) >= 3 and all(e["address"] == "127.0.0.1" for e in refused)
    # a good certificate does not bypass the AE allow-list
    assert tls_store(port, dx_files[2], caller_context(pki, pki.caller_cert, pki.caller_key), calling="STRANGER") is None
    assert any(e["event"] == "association_rejected" and e["calling_ae"] == "STRANGER" for e in node.events())
    assert len(results(spool)) == before


def test_failed_handshakes_from_the_modalitys_own_address_hold_no_slot(tls_node, pki, dx_files):
    """Each failed handshake ends before an association exists: at once, the modality is served."""
    import socket
    import time

    node, port, _ = tls_node
    for _ in range(5):  # a modality misconfigured for a moment: plain TCP to the TLS port, then closed
        with socket.create_connection(("127.0.0.1", port)) as peer:
            peer.sendall(b"\x01\x00" + bytes(200))
            peer.settimeout(5)
            with contextlib.suppress(OSError):
                peer.recv(64)  # a TLS alert, or the close
    for _ in range(5):  # and with a certificate from another CA
        assert tls_store(port, dx_files[3], caller_context(pki, pki.stranger_cert, pki.stranger_key)) is None
    started = time.monotonic()
    assert tls_store(port, dx_files[3], caller_context(pki, pki.caller_cert, pki.caller_key)) == 0x0000
    assert time.monotonic() - started < 1.0
    assert len([e for e in node.events() if e["event"] == "tls_refused"]) >= 10


def test_listening_without_tls_beyond_loopback_is_warned_about():
    stream = io.StringIO()
    scp = StorageSCP(NodeConfig(host="0.0.0.0", port=free_port(), allow_any_caller=True), node=None,
                     log=EventLog(stream))
    scp.start()
    scp.stop()
    assert '"event":"warning"' in stream.getvalue() and "listening without TLS on 0.0.0.0" in stream.getvalue()
