"""DICOM secure transport (PS3.15 annex B, the BCP 195 profile): TLS 1.2 or later with X.509
certificates, for the Storage SCP and for the forwarder's associations.

The SCP does each handshake in the connection's own thread, bounded by the ACSE timeout and
before the connection becomes an association (admission.py): pynetdicom's own TLS server
handshakes in the thread that accepts connections, where one silent client would stop
everyone else from connecting.
"""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

from ...errors import ConfigError

MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2
SECURE_PORT = 2762  # the registered port of DICOM over TLS ("dicom-tls")


def _load(load: Any, what: str, *paths: Path | None) -> None:
    try:
        load()
    except FileNotFoundError:
        raise ConfigError(f"{what}: {' / '.join(str(p) for p in paths if p)}: no such file") from None
    except (ssl.SSLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or str(error)
        raise ConfigError(f"{what}: {' / '.join(str(p) for p in paths if p)}: {reason}") from None


def server_context(certificate: Path, key: Path, ca_bundle: Path | None, require_client_certificate: bool) -> ssl.SSLContext:
    """The SCP's context: our certificate; callers' certificates verified against ``ca_bundle``,
    and required when ``require_client_certificate``."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    _load(lambda: context.load_cert_chain(certificate, key), "TLS certificate and key", certificate, key)
    if ca_bundle is not None:
        _load(lambda: context.load_verify_locations(cafile=ca_bundle), "TLS CA bundle", ca_bundle)
        context.verify_mode = ssl.CERT_REQUIRED if require_client_certificate else ssl.CERT_OPTIONAL
    elif require_client_certificate:
        raise ConfigError("TLS: require_client_certificate needs ca_bundle (the CAs that sign the callers' "
                             "certificates), or set it false")
    return context


def client_context(certificate: Path | None, key: Path | None, ca_bundle: Path | None) -> ssl.SSLContext:
    """The forwarder's context: the destination's certificate verified against ``ca_bundle`` (the
    system's CAs without one) and its host name checked; ours presented when configured."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    context.minimum_version = MINIMUM_VERSION
    if ca_bundle is not None:
        _load(lambda: context.load_verify_locations(cafile=ca_bundle), "TLS CA bundle", ca_bundle)
    if certificate is not None and key is not None:
        _load(lambda: context.load_cert_chain(certificate, key), "TLS certificate and key", certificate, key)
    return context


def handshake(raw: Any, context: ssl.SSLContext, timeout_s: float) -> ssl.SSLSocket:
    """The accepted socket ``raw`` as a TLS socket after a handshake of at most ``timeout_s``
    (its timeout restored after); raises ssl.SSLError or OSError when it fails."""
    previous = raw.gettimeout()
    raw.settimeout(timeout_s)
    secure = context.wrap_socket(raw, server_side=True, do_handshake_on_connect=False)
    secure.do_handshake()
    secure.settimeout(previous)
    return secure
