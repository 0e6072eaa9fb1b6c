"""The DICOM node's settings: a TOML file (``chexplain serve --config node.toml``), then flags.

Every key is optional except that someone must be allowed to call: an allow-list of calling
AE titles (each optionally bound to IP addresses), or ``allow_any_caller = true`` said
explicitly. Unknown keys are errors, so a misspelt setting never goes unnoticed. Every key, as
an example (the defaults are NodeConfig's below, the one place they are written; ``serve
--help`` and docs/node.md show them from there)::

    [node]
    ae_title = "CHEXPLAIN"          # our AE title (the called AE title callers must use)
    host = "0.0.0.0"
    port = 11112
    spool = "/var/lib/chexplain/spool"
    max_queue = 32                  # received but not yet explained; beyond it: Out of Resources
    health_interval_s = 60

    [[callers]]
    ae_title = "XRAY_ROOM_1"
    addresses = ["10.0.0.12"]       # optional

    [model]
    path = "artifacts/densenet121-chexpert"   # a folder, graph or engine; default: the default model
    backend = "auto"
    methods = ["gradcam", "lrp:epsilon-plus-smooth-bn"]   # default: the graph's own
    classes = "topk:3"                        # default: what the graph explains

    [results]
    structured_report = true        # an SR with the findings, beside the Secondary Captures
    sr_template = "tid1500"         # a TID 1500 measurement report (coded findings); or "basic-text"
    compress = true                 # Secondary Captures in JPEG-LS lossless (sent decoded where refused)
    segmentation = true             # a DICOM SEG of where each map points (its top 5% of positive evidence)
    key_objects = true              # a Key Object Selection referencing each radiograph's DICOM results
    max_size = 1024                 # longest side of the Secondary Captures, in pixels
    opacity = 0.6

    [accept]                        # which DICOM images are explained (the model's scope by default)
    modalities = ["CR", "DX"]       # default: CR, DX, DR, RG, OT and none recorded
    body_parts = ["CHEST"]          # default: CHEST, THORAX, LUNG, LUNGS; none recorded always passes
    exclude_views = ["LL", "RL", "LATERAL"]   # default: the lateral views
    image_type = ["ORIGINAL"]       # values ImageType must hold; default: any

    [limits]                        # what one peer may cost the node
    max_associations = 16           # connections at once, all callers; beyond: closed at once
    max_associations_per_address = 4   # at once from one IP address; beyond: closed at once
    reserved_associations = 4       # of max_associations, kept for known callers (a [[callers]]
                                    # address, or one that has associated since the start)
    acse_timeout_s = 10             # the A-ASSOCIATE-RQ (and a TLS handshake) must arrive whole
                                    # within this of connecting
    dimse_timeout_s = 60            # waiting for a DIMSE message; a message must arrive whole within
                                    # this, extended while it flows at 64 KiB/s or faster
    network_timeout_s = 60          # an association silent this long is aborted; a PDU must arrive
                                    # whole within this of its first byte
    max_pdu_size = 262144           # the maximum PDU length we advertise; a longer PDU closes the connection
    max_dataset_mb = 256            # one received instance, as encoded
    max_decoded_mb = 128            # one image's decoded pixels (frames x rows x columns x samples x
                                    # bytes), checked from its header before decoding (DICOM, PNG, JPEG)

    [tls]                           # DICOM over TLS 1.2+ (PS3.15 annex B); with it the SCP listens with TLS
    certificate = "/etc/chexplain/node.crt"   # ours (PEM), also presented to TLS destinations
    key = "/etc/chexplain/node.key"
    ca_bundle = "/etc/chexplain/ca.pem"       # the CAs we trust: callers' and destinations' certificates
    require_client_certificate = true         # callers must present one signed by ca_bundle

    [[forward]]                     # optional, repeatable: send the DICOM results on (C-STORE),
    ae_title = "PACS"               # each destination with its own queue; a single [forward]
    host = "10.0.0.5"               # table is one destination
    port = 104
    retry_initial_s = 5
    retry_max_s = 300
    tls = false                     # true: TLS, the destination's certificate checked against ca_bundle

    [[forward]]                     # a DICOMweb destination: STOW-RS to the service's base URL,
    url = "https://pacs.example.org/dicom-web"   # same queue, retries and rejections as C-STORE
    token_file = "/etc/chexplain/pacs.token"     # bearer token from a file, or token_env = "NAME";
                                    # or basic: username = "...", password_file or password_env
    ca_bundle = "/etc/chexplain/pacs-ca.pem"     # CAs of the server's certificate (default: the system's)
"""

from __future__ import annotations

import base64
import ipaddress
import math
import os
import ssl
import sys
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from ...errors import ConfigError

SR_TEMPLATES = ("tid1500", "basic-text")  # the findings as coded measurements, or as text
MAX_TIMEOUT_S = 86400.0  # a day: longer is a mistake (and past what a socket timeout takes)
MIN_PDU_SIZE, MAX_PDU_SIZE = 4096, 1 << 26  # a PDU smaller than a page is a misconfiguration; 64 MiB at most


@dataclass(frozen=True)
class Caller:
    """A calling AE allowed to associate, optionally only from these IP addresses."""

    ae_title: str
    addresses: tuple[str, ...] = ()

    def allows(self, ae_title: str, address: str) -> bool:
        return ae_title == self.ae_title and (not self.addresses or address in self.addresses)

    @classmethod
    def parse(cls, text: str) -> Caller:
        """``AE`` or ``AE@IP[,IP...]``."""
        title, _, addresses = text.partition("@")
        return cls(check_ae_title(title.strip(), "caller"),
                   tuple(check_address(a.strip()) for a in addresses.split(",") if a.strip()))


@dataclass(frozen=True)
class Destination:
    """Where the DICOM results are sent (C-STORE SCU)."""

    ae_title: str
    host: str
    port: int
    retry_initial_s: float = 5.0
    retry_max_s: float = 300.0
    tls: bool = False

    @property
    def name(self) -> str:
        """``AE@HOST:PORT``, as logs and health lines name it."""
        return f"{self.ae_title}@{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Destination:
        """``AE@HOST:PORT``."""
        title, at, address = text.partition("@")
        host, colon, port = address.rpartition(":")
        if not (at and colon and host and port.isdigit()):
            raise ConfigError(f"--forward {text!r}: expected AE@HOST:PORT or an http(s):// URL")
        return cls(check_ae_title(title, "forward"), host, check_port(int(port), "forward"))


@dataclass(frozen=True)
class WebDestination:
    """Where the DICOM results are sent by DICOMweb STOW-RS (PS3.18 10.5): the service's base URL
    (``.../studies`` is appended). Credentials come from a file or an environment variable, never
    from the command line, and go only over https."""

    url: str
    retry_initial_s: float = 5.0
    retry_max_s: float = 300.0
    ca_bundle: Path | None = None  # CAs of an https server's certificate (None: the system's)
    token_file: Path | None = None  # a bearer token ...
    token_env: str | None = None
    username: str | None = None  # ... or basic authentication
    password_file: Path | None = None
    password_env: str | None = None

    @property
    def name(self) -> str:
        return self.url

    @classmethod
    def parse(cls, text: str) -> WebDestination:
        return cls(text.rstrip("/")).check_url()

    def check_url(self) -> WebDestination:
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(f"forward {self.url!r}: expected an http:// or https:// URL of a DICOMweb service")
        if parts.username or parts.password:
            raise ConfigError(f"forward {parts.hostname}: no credentials in the URL; use token_file / token_env or "
                              f"username with password_file / password_env in the config")
        if parts.query or parts.fragment:
            raise ConfigError(f"forward {self.url!r}: the base URL takes no query or fragment")
        return self

    def check(self) -> WebDestination:
        """The URL, the credentials' sources (readable now) and the CA file; ConfigError otherwise."""
        self.check_url()
        token = self.token_file is not None or self.token_env is not None
        basic = self.username is not None or self.password_file is not None or self.password_env is not None
        if token and basic:
            raise ConfigError(f"{self.url}: a bearer token or basic authentication, not both")
        if (self.token_file is not None and self.token_env) or (self.password_file is not None and self.password_env):
            raise ConfigError(f"{self.url}: a secret from a file or from the environment, not both")
        if basic and (self.username is None or (self.password_file is None and not self.password_env)):
            raise ConfigError(f"{self.url}: basic authentication needs username and password_file or password_env")
        https = urlsplit(self.url).scheme == "https"
        if (token or basic) and not https:
            raise ConfigError(f"{self.url}: credentials go only over https (they would cross the network in clear)")
        if self.ca_bundle is not None and (not https or not self.ca_bundle.is_file()):
            raise ConfigError(f"{self.url}: ca_bundle {self.ca_bundle} " + ("is not a file" if https else
                                                                              "needs an https URL"))
        check_seconds(self.retry_initial_s, f"{self.url}: retry_initial_s")
        check_seconds(self.retry_max_s, f"{self.url}: retry_max_s")
        self.authorization()
        return self

    def authorization(self) -> str | None:
        """The Authorization header's value, read from its file or variable now (a rotated token is
        picked up on the next connection); None without credentials."""
        if self.token_file is not None or self.token_env:
            return "Bearer " + self._secret(self.token_file, self.token_env, "token")
        if self.username is not None:
            password = self._secret(self.password_file, self.password_env, "password")
            return "Basic " + base64.b64encode(f"{self.username}:{password}".encode()).decode("ascii")
        return None

    def _secret(self, path: Path | None, variable: str | None, what: str) -> str:
        if path is not None:
            try:
                value = path.read_text().strip()
            except (OSError, UnicodeDecodeError) as error:
                raise ConfigError(f"{self.url}: cannot read the {what} file {path} ({error})") from None
        else:
            value = os.environ.get(variable or "", "").strip()
            if not value:
                raise ConfigError(f"{self.url}: the environment variable {variable} holding the {what} is not set")
        if not value or any(c in value for c in "\r\n"):
            raise ConfigError(f"{self.url}: the {what} is empty or spans lines")
        return value


def parse_destination(text: str) -> Destination | WebDestination:
    """``--forward``: ``AE@HOST:PORT`` (C-STORE) or an http(s) URL (STOW-RS, no credentials)."""
    if text.startswith(("http://", "https://")):
        return WebDestination.parse(text)
    return Destination.parse(text)


@dataclass(frozen=True)
class NodeConfig:
    ae_title: str = "CHEXPLAIN"
    host: str = "0.0.0.0"
    port: int = 11112
    spool: Path = Path("node-spool")
    max_queue: int = 32
    health_interval_s: float = 60.0
    callers: tuple[Caller, ...] = ()
    allow_any_caller: bool = False
    model: str | None = None
    backend: str = "auto"
    methods: tuple[str, ...] = ()
    classes: str | None = None
    threads: int | None = None
    allow_any_view: bool = False
    structured_report: bool = False
    sr_template: str = "tid1500"
    compress: bool = True
    segmentation: bool = False
    key_objects: bool = False
    max_size: int = 1024
    opacity: float = 0.6
    forward: tuple[Destination | WebDestination, ...] = ()
    max_associations: int = 16
    max_associations_per_address: int = 4
    reserved_associations: int = 4
    acse_timeout_s: float = 10.0
    dimse_timeout_s: float = 60.0
    network_timeout_s: float = 60.0
    max_pdu_size: int = 262144
    max_dataset_mb: int = 256
    max_decoded_mb: int = 128
    tls_certificate: Path | None = None
    tls_key: Path | None = None
    tls_ca_bundle: Path | None = None
    tls_require_client_certificate: bool = True
    accept_modalities: tuple[str, ...] = ()  # empty: the defaults of inputs.dicom.Selection
    accept_body_parts: tuple[str, ...] = ()
    exclude_views: tuple[str, ...] = ()
    require_image_type: tuple[str, ...] = ()

    def selection(self) -> Any:
        """Which DICOM images the node explains: the [accept] table over the model's own scope."""
        from ..inputs.dicom import Selection

        default = Selection()
        return Selection(modalities=self.accept_modalities or default.modalities,
                         body_parts=self.accept_body_parts or default.body_parts,
                         excluded_views=self.exclude_views or default.excluded_views,
                         image_types=self.require_image_type)

    def allows(self, ae_title: str, address: str) -> bool:
        return self.allow_any_caller or any(c.allows(ae_title, address) for c in self.callers)

    @property
    def listens_with_tls(self) -> bool:
        return self.tls_certificate is not None

    def server_tls(self) -> ssl.SSLContext | None:
        """The SCP's TLS context, None without [tls]; raises ConfigError naming an unusable file."""
        from .tls import server_context

        if not self.listens_with_tls:
            return None
        return server_context(self.tls_certificate, self.tls_key, self.tls_ca_bundle,
                              self.tls_require_client_certificate)

    @property
    def forwards_with_dicom_tls(self) -> bool:
        return any(isinstance(d, Destination) and d.tls for d in self.forward)

    def client_tls(self) -> ssl.SSLContext:
        """The forwarder's TLS context (for destinations with tls = true)."""
        from .tls import client_context

        return client_context(self.tls_certificate, self.tls_key, self.tls_ca_bundle)

    def check(self, listening: bool = True) -> NodeConfig:
        """Raise ConfigError for settings that cannot work together (``listening``: as a DICOM SCP)."""
        check_ae_title(self.ae_title, "ae_title")
        check_port(self.port, "port")
        if listening and not self.callers and not self.allow_any_caller:
            raise ConfigError("no calling AE title is allowed: add [[callers]] to the config or --allow-caller AE[@IP], "
                              "or accept anyone with --allow-any-caller")
        if self.max_queue < 1:
            raise ConfigError(f"max_queue must be at least 1, not {self.max_queue}")
        if self.sr_template not in SR_TEMPLATES:
            raise ConfigError(f"sr_template must be {' or '.join(SR_TEMPLATES)}, not {self.sr_template!r}")
        if self.max_size < 64:
            raise ConfigError(f"max_size must be at least 64 pixels, not {self.max_size}")
        for name in ("health_interval_s", "acse_timeout_s", "dimse_timeout_s", "network_timeout_s"):
            check_seconds(getattr(self, name), name)
        if not (math.isfinite(self.opacity) and 0 <= self.opacity <= 1):
            raise ConfigError(f"opacity must be 0-1, not {self.opacity}")
        for name in ("max_associations", "max_associations_per_address", "max_dataset_mb", "max_decoded_mb"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be positive, not {getattr(self, name)}")
        if not 0 <= self.reserved_associations < self.max_associations:
            raise ConfigError(f"reserved_associations must be 0-{self.max_associations - 1} (below max_associations), "
                              f"not {self.reserved_associations}")
        if not MIN_PDU_SIZE <= self.max_pdu_size <= MAX_PDU_SIZE:
            raise ConfigError(f"max_pdu_size must be {MIN_PDU_SIZE}-{MAX_PDU_SIZE} bytes, not {self.max_pdu_size}")
        if (self.tls_certificate is None) != (self.tls_key is None):
            raise ConfigError("TLS needs both a certificate and its key ([tls] certificate and key, --tls-cert and "
                              "--tls-key)")
        if listening:
            self.server_tls()
        if self.forwards_with_dicom_tls:
            self.client_tls()
        for destination in self.forward:
            if isinstance(destination, WebDestination):
                destination.check()
                continue
            check_seconds(destination.retry_initial_s, f"{destination.name}: retry_initial_s")
            check_seconds(destination.retry_max_s, f"{destination.name}: retry_max_s")
        named = [destination.name for destination in self.forward]
        if len(set(named)) < len(named):
            raise ConfigError(f"a destination is named twice in forward: {', '.join(sorted(named))}")
        return self


def check_ae_title(title: str, where: str) -> str:
    if not title or len(title) > 16 or not title.isascii() or "\\" in title or not title.strip():
        raise ConfigError(f"{where}: {title!r} is not an AE title (1-16 ASCII characters, no backslash)")
    return title


def check_seconds(value: float, where: str) -> float:
    """A duration: finite, positive, at most a day (NaN and infinity are not durations)."""
    if not (math.isfinite(value) and 0 < value <= MAX_TIMEOUT_S):
        raise ConfigError(f"{where} must be a number of seconds above 0 and at most {MAX_TIMEOUT_S:g}, not {value}")
    return value


def check_port(port: int, where: str) -> int:
    if not 1 <= port <= 65535:
        raise ConfigError(f"{where}: port {port} is outside 1-65535")
    return port


def check_address(address: str) -> str:
    try:
        return str(ipaddress.ip_address(address))
    except ValueError:
        raise ConfigError(f"caller address {address!r} is not an IP address") from None


# TOML table -> {key: NodeConfig field}
_TABLES: dict[str, dict[str, str]] = {
    "node": {"ae_title": "ae_title", "host": "host", "port": "port", "spool": "spool", "max_queue": "max_queue",
             "health_interval_s": "health_interval_s", "allow_any_caller": "allow_any_caller"},
    "model": {"path": "model", "backend": "backend", "methods": "methods", "classes": "classes", "threads": "threads",
              "allow_any_view": "allow_any_view"},
    "results": {"structured_report": "structured_report", "sr_template": "sr_template", "max_size": "max_size",
                "opacity": "opacity", "compress": "compress", "segmentation": "segmentation",
                "key_objects": "key_objects"},
    "accept": {"modalities": "accept_modalities", "body_parts": "accept_body_parts",
               "exclude_views": "exclude_views", "image_type": "require_image_type"},
    "tls": {"certificate": "tls_certificate", "key": "tls_key", "ca_bundle": "tls_ca_bundle",
            "require_client_certificate": "tls_require_client_certificate"},
    "limits": {name: name for name in ("max_associations", "max_associations_per_address", "reserved_associations",
                                       "acse_timeout_s",
                                       "dimse_timeout_s", "network_timeout_s", "max_pdu_size", "max_dataset_mb",
                                       "max_decoded_mb")},
}
_FIELD_TYPES = {f.name: f.type for f in fields(NodeConfig)}


def _convert(name: str, value: Any, source: str) -> Any:
    kind = _FIELD_TYPES[name]
    expected = {"int": int, "float": (int, float), "bool": bool, "str": str, "Path": str}
    base = kind.split(" | ")[0]
    if base == "tuple[str, ...]":
        if not (isinstance(value, list) and all(isinstance(v, str) for v in value)):
            raise ConfigError(f"{source}: {name} must be a list of strings")
        return tuple(v.strip().upper() for v in value) if name != "methods" else tuple(value)
    wanted = expected.get(base)
    if wanted is None or not isinstance(value, wanted) or (base in ("int", "float") and isinstance(value, bool)):
        raise ConfigError(f"{source}: {name} must be {base.replace('Path', 'a path')}, not {value!r}")
    return Path(value) if base == "Path" else float(value) if base == "float" else value


def load_config(path: str | Path) -> NodeConfig:
    """Read a node.toml; raises ConfigError naming the file and the problem."""
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # Python 3.10 (JetPack 6): the node extra installs tomli; the CLI loads without it
        import tomli as tomllib

    path = Path(path)
    try:
        document = tomllib.loads(path.read_text())
    except OSError as error:
        raise ConfigError(f"{path}: cannot read ({error.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    try:
        return _from_document(document)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None


def _from_document(document: dict[str, Any]) -> NodeConfig:
    values: dict[str, Any] = {}
    for table, content in document.items():
        if table == "callers":
            if not isinstance(content, list):
                raise ConfigError("callers must be an array of tables ([[callers]])")
            callers = []
            for entry in content:
                unknown = set(entry) - {"ae_title", "addresses"}
                if unknown or "ae_title" not in entry:
                    raise ConfigError(f"[[callers]] takes ae_title and addresses (got {', '.join(sorted(entry))})")
                addresses = entry.get("addresses", [])
                callers.append(Caller(check_ae_title(str(entry["ae_title"]), "caller"),
                                      tuple(check_address(str(a)) for a in addresses)))
            values["callers"] = tuple(callers)
        elif table == "forward":
            entries = content if isinstance(content, list) else [content]
            values["forward"] = tuple(_destination(entry) for entry in entries)
        elif table in _TABLES:
            for key, value in content.items():
                if key not in _TABLES[table]:
                    raise ConfigError(f"unknown key {key!r} in [{table}] (known: {', '.join(_TABLES[table])})")
                name = _TABLES[table][key]
                values[name] = _convert(name, value, f"[{table}]")
        else:
            raise ConfigError(f"unknown table [{table}] (known: node, callers, model, results, accept, limits, tls, forward)")
    return NodeConfig(**values)


_WEB_KEYS = {"url": str, "retry_initial_s": float, "retry_max_s": float, "ca_bundle": Path, "token_file": Path,
             "token_env": str, "username": str, "password_file": Path, "password_env": str}


def _web_destination(content: dict[str, Any]) -> WebDestination:
    """A [forward] table with a url: a DICOMweb destination."""
    unknown = set(content) - set(_WEB_KEYS)
    if unknown:
        raise ConfigError(f"[forward] with a url has unknown keys {', '.join(sorted(unknown))} "
                          f"(known: {', '.join(_WEB_KEYS)})")
    values: dict[str, Any] = {}
    for key, value in content.items():
        kind = _WEB_KEYS[key]
        if kind is float:
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ConfigError(f"[forward] {key} must be a number of seconds, not {value!r}")
            values[key] = float(value)
        elif not isinstance(value, str) or not value:
            raise ConfigError(f"[forward] {key} must be a non-empty string, not {value!r}")
        else:
            values[key] = Path(value) if kind is Path else value.rstrip("/") if key == "url" else value
    return WebDestination(**values).check_url()


def _destination(content: Any) -> Destination | WebDestination:
    """One [forward] / [[forward]] table."""
    if not isinstance(content, dict):
        raise ConfigError("forward must be a table ([forward]) or an array of tables ([[forward]])")
    if "url" in content:
        return _web_destination(content)
    allowed = {"ae_title", "host", "port", "retry_initial_s", "retry_max_s", "tls"}
    unknown = set(content) - allowed
    missing = {"ae_title", "host", "port"} - set(content)
    if unknown or missing:
        raise ConfigError("[forward] " + (f"has unknown keys {', '.join(sorted(unknown))}" if unknown
                                          else f"needs {', '.join(sorted(missing))}"))
    numbers = {key: content.get(key, default) for key, default in
               (("port", 0), ("retry_initial_s", 5.0), ("retry_max_s", 300.0))}
    wrong = [key for key, value in numbers.items() if isinstance(value, bool) or not isinstance(value, (int, float))
             or not math.isfinite(value) or not 0 < value <= MAX_TIMEOUT_S]
    if wrong or not isinstance(numbers["port"], int):
        raise ConfigError(f"[forward] {', '.join(wrong or ['port'])} must be positive numbers (port an integer)")
    if not isinstance(content.get("tls", False), bool):
        raise ConfigError("[forward] tls must be true or false")
    return Destination(check_ae_title(str(content["ae_title"]), "forward"), str(content["host"]),
                       check_port(numbers["port"], "forward"), float(numbers["retry_initial_s"]),
                       float(numbers["retry_max_s"]), bool(content.get("tls", False)))


def with_overrides(config: NodeConfig, **overrides: Any) -> NodeConfig:
    """The config with every override that is not None applied (the command-line flags)."""
    return replace(config, **{k: v for k, v in overrides.items() if v is not None})

