"""A small PKI for the TLS tests, made with the openssl command: a CA, the node's certificate
(for 127.0.0.1 and localhost), a caller's certificate from the same CA, and a stranger's from
another CA."""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Pki:
    ca: Path
    node_cert: Path
    node_key: Path
    caller_cert: Path
    caller_key: Path
    stranger_cert: Path
    stranger_key: Path


def _openssl(*args: str) -> None:
    openssl = shutil.which("openssl")
    assert openssl, "openssl not found: the TLS tests make their certificates with it (apt-get install openssl)"
    subprocess.run([openssl, *args], check=True, capture_output=True, timeout=60)


def _authority(folder: Path, name: str) -> tuple[Path, Path]:
    key, cert = folder / f"{name}.key", folder / f"{name}.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert), "-days", "2",
             "-subj", f"/CN={name}", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign")
    return cert, key


def _issue(folder: Path, name: str, authority: tuple[Path, Path], extensions: str) -> tuple[Path, Path]:
    key, request, cert, ext = (folder / f"{name}{suffix}" for suffix in (".key", ".csr", ".crt", ".ext"))
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(request), "-subj", f"/CN={name}")
    ext.write_text(extensions)
    _openssl("x509", "-req", "-in", str(request), "-CA", str(authority[0]), "-CAkey", str(authority[1]),
             "-CAcreateserial", "-out", str(cert), "-days", "2", "-extfile", str(ext))
    return cert, key


def make_pki(folder: Path) -> Pki:
    folder.mkdir(parents=True, exist_ok=True)
    ca = _authority(folder, "hospital-ca")
    node = _issue(folder, "node", ca, "subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth,clientAuth\n")
    caller = _issue(folder, "modality", ca, "extendedKeyUsage=clientAuth\n")
    stranger = _issue(folder, "stranger", _authority(folder, "other-ca"), "extendedKeyUsage=clientAuth\n")
    return Pki(ca[0], *node, *caller, *stranger)
