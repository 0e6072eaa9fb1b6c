"""`chexplain serve` (DICOM Storage SCP) and `chexplain watch` (hot folder): the node's commands.

Settings come from ``--config node.toml`` (runtime/node/config.py documents every key), then
from flags, which win. Both log one JSON object per line on stderr.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from ..errors import ChexplainError, ConfigError
from ..grammar import DEFAULT_MODEL
from ..optional import hint, missing
from ..runtime.node.config import Destination, NodeConfig
from . import console, options

DEFAULTS = NodeConfig()  # the one place the node's defaults are written; help shows them from here
FORWARD_DEFAULTS = Destination("", "", 0)


def _shown(value: object) -> str:
    """A default as help shows it: 5.0 -> 5, True -> yes, a path as written."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _shared_options(command: Callable[..., Any]) -> Callable[..., Any]:
    shared = [
        click.option("--config", "config_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Node settings (TOML); flags override them."),
        click.option("--spool", type=click.Path(file_okay=False, path_type=Path), default=None,
                     help=f"Folder for the inbox, outbox (results) and quarantine [default: {_shown(DEFAULTS.spool)}]."),
        options.model(f"{options.EXPORTED_MODEL_HELP} [default: {DEFAULT_MODEL}]", default=None),
        options.backend(None, f"Inference backend [default: {DEFAULTS.backend}]."),
        options.threads(),
        options.methods("Methods to render, as for explain; repeatable [default: every method in the graph]."),
        options.classes("Classes to explain, as for explain [default: the graph's own choice]."),
        click.option("--max-queue", type=click.IntRange(min=1), default=None,
                     help=f"Items received but not yet explained before new ones are refused [default: {DEFAULTS.max_queue}]."),
        click.option("--sr/--no-sr", "structured_report", default=None,
                     help=f"Also write an SR with the findings for DICOM inputs [default: {_shown(DEFAULTS.structured_report)}]."),
        click.option("--sr-template", type=click.Choice(["tid1500", "basic-text"]), default=None,
                     help="tid1500: a measurement report with coded findings and probabilities (Comprehensive 3D "
                          f"SR), as TID-1500-aware viewers read; basic-text: a Basic Text SR [default: {DEFAULTS.sr_template}]."),
        click.option("--compress/--no-compress", "compress", default=None,
                     help="Secondary Captures in JPEG-LS lossless, sent decoded to a destination that refuses it "
                          f"[default: {'compress' if DEFAULTS.compress else 'no-compress'}]."),
        click.option("--seg/--no-seg", "segmentation", default=None,
                     help="Also write a DICOM Segmentation for DICOM inputs: one segment per explained class and "
                          f"method, the top 5% of the map's positive evidence [default: {_shown(DEFAULTS.segmentation)}]."),
        click.option("--kos/--no-kos", "key_objects", default=None,
                     help="Also write a Key Object Selection for DICOM inputs, referencing every DICOM result of "
                          f"the radiograph, for worklists that list key objects [default: {_shown(DEFAULTS.key_objects)}]."),
        click.option("--max-size", type=click.IntRange(min=64), default=None,
                     help=f"Longest side of overlays and Secondary Captures in pixels [default: {DEFAULTS.max_size}]."),
        click.option("--forward", "forward_to", multiple=True, metavar="AE@HOST:PORT|URL",
                     help="Send the DICOM results to this AE (C-STORE) or DICOMweb service (STOW-RS to URL/studies), "
                          "retrying with back-off; repeatable (each destination has its own queue); replaces the "
                          "config's [forward]. Credentials for a URL only from the config (token_file, token_env, "
                          "username with password_file or password_env)."),
        click.option("--forward-tls", is_flag=True, default=None,
                     help="Send to every destination over TLS (its certificate checked against --tls-ca, ours "
                          "presented when --tls-cert is given)."),
        click.option("--tls-cert", "tls_certificate", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="Our certificate (PEM): serve listens with TLS 1.2+; also presented to TLS destinations."),
        click.option("--tls-key", "tls_key", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="The private key of --tls-cert (PEM)."),
        click.option("--tls-ca", "tls_ca_bundle", type=click.Path(dir_okay=False, path_type=Path), default=None,
                     help="CA certificates (PEM) that sign the callers' and destinations' certificates."),
        click.option("--tls-client-cert/--tls-no-client-cert", "tls_require_client_certificate", default=None,
                     help=f"Require callers to present a certificate signed by --tls-ca [default: {'required' if DEFAULTS.tls_require_client_certificate else 'not required'}]."),
        click.option("--retry-initial", "retry_initial_s", type=click.FloatRange(min=0.1), default=None,
                     help=f"First delay in seconds before sending again after a failure [default: {_shown(FORWARD_DEFAULTS.retry_initial_s)}]; it doubles."),
        click.option("--retry-max", "retry_max_s", type=click.FloatRange(min=0.1), default=None,
                     help=f"Longest delay between tries in seconds [default: {_shown(FORWARD_DEFAULTS.retry_max_s)}]."),
        click.option("--opacity", type=click.FloatRange(0, 1), default=None, help=f"Heatmap opacity [default: {_shown(DEFAULTS.opacity)}]."),
        click.option("--health-interval", "health_interval_s", type=click.FloatRange(min=0.1), default=None,
                     help=f"Seconds between health lines [default: {_shown(DEFAULTS.health_interval_s)}]."),
        click.option("--allow-any-view", is_flag=True, default=None, help="Also explain non-chest and lateral DICOMs."),
        click.option("--max-decoded-mb", "max_decoded_mb", type=click.IntRange(min=1), default=None,
                     help="Largest decoded image (frames x rows x columns x samples x bytes), checked from the header "
                          f"before decoding; larger ones are quarantined [default: {DEFAULTS.max_decoded_mb}]."),
        options.verbosity,
    ]
    for option in reversed(shared):
        command = option(command)
    return command


def _require(modules: tuple[str, ...], command: str) -> None:
    """Exit with one line naming the extra to install when a module the command needs is missing."""
    if sys.version_info < (3, 11):
        modules += ("tomli",)
    absent = missing(modules)
    if absent:
        console.fail(f"{command} needs {', '.join(absent)}: {hint('pynetdicom')}", console.EXIT_USAGE)


def _require_result_libraries(config: Any) -> None:
    """highdicom for the results that need it (the TID 1500 report, the segmentation, the KOS),
    requests for DICOMweb destinations."""
    from ..runtime.node.config import WebDestination

    if any(isinstance(destination, WebDestination) for destination in config.forward):
        _require(("requests",), "a DICOMweb destination (STOW-RS)")
    if config.structured_report and config.sr_template == "tid1500":
        _require(("highdicom",), "the TID 1500 report (--sr)")
    if config.segmentation:
        _require(("highdicom",), "the segmentation (--seg)")
    if config.key_objects:
        _require(("highdicom",), "the key object selection (--kos)")


def _config(config_file: Path | None, listening: bool, allow_callers: tuple[str, ...] = (), **flags: Any) -> Any:
    """The config file's settings, overridden by the flags given, checked."""
    from dataclasses import replace

    from ..grammar import requested_methods
    from ..runtime.node.config import (
        Caller,
        Destination,
        NodeConfig,
        load_config,
        parse_destination,
        with_overrides,
    )

    try:
        config = load_config(config_file) if config_file else NodeConfig()
        forward_to = flags.pop("forward_to", ())
        per_destination = {k: v for k in ("retry_initial_s", "retry_max_s") if (v := flags.pop(k, None)) is not None}
        if flags.pop("forward_tls", None):
            per_destination["tls"] = True
        forward = tuple(parse_destination(text) for text in forward_to) or config.forward
        if per_destination and not forward:
            raise ConfigError("--retry-initial, --retry-max and --forward-tls need a destination (--forward or [forward])")
        flags["forward"] = tuple(replace(destination, **{key: value for key, value in per_destination.items()
                                                         if key != "tls" or isinstance(destination, Destination)})
                                 for destination in forward) or None  # a URL's own scheme says TLS
        flags["methods"] = tuple(requested_methods(flags["methods"])) or None
        flags["callers"] = config.callers + tuple(Caller.parse(text) for text in allow_callers) or None
        return with_overrides(config, **flags).check(listening)
    except ConfigError as error:
        console.fail(str(error), console.EXIT_USAGE)


def _run(config: Any, **service: Any) -> None:
    from ..runtime.node.events import EventLog
    from ..runtime.node.service import build_processor, run_service

    log = EventLog()
    try:
        processor = build_processor(config, lambda message: log("note", message=message))
    except ChexplainError as error:
        console.fail(str(error), console.EXIT_USAGE)
    try:
        run_service(config, processor, log, **service)
    except OSError as error:  # the port is taken, the spool cannot be written
        console.fail(str(error))


@click.command()
@_shared_options
@click.option("--ae-title", default=None, help=f"Our AE title, which callers must call [default: {DEFAULTS.ae_title}].")
@click.option("--host", default=None, help=f"Address to listen on [default: {DEFAULTS.host}].")
@click.option("--port", type=click.IntRange(1, 65535), default=None, help=f"Port to listen on [default: {DEFAULTS.port}].")
@click.option("--allow-caller", "allow_callers", multiple=True, metavar="AE[@IP,...]",
              help="A calling AE title allowed to send (optionally only from these addresses); repeatable, "
                   "added to the config's [[callers]].")
@click.option("--allow-any-caller", is_flag=True, default=None, help="Accept associations from any calling AE title.")
@click.option("--max-associations", type=click.IntRange(min=1), default=None,
              help=f"Connections at once, all callers; beyond, a new one is closed at once [default: {DEFAULTS.max_associations}].")
@click.option("--max-associations-per-address", type=click.IntRange(min=1), default=None,
              help=f"Connections at once from one IP address; beyond, a new one is closed at once [default: {DEFAULTS.max_associations_per_address}].")
@click.option("--reserved-associations", type=click.IntRange(min=0), default=None,
              help="Of --max-associations, kept for known callers: a configured AE@IP address or one that has "
                   f"associated since the start [default: {DEFAULTS.reserved_associations}].")
@click.option("--acse-timeout", "acse_timeout_s", type=click.FloatRange(min=0.1), default=None,
              help="Seconds a caller has to finish its TLS handshake and send its whole A-ASSOCIATE-RQ after "
                   f"connecting [default: {_shown(DEFAULTS.acse_timeout_s)}].")
@click.option("--dimse-timeout", "dimse_timeout_s", type=click.FloatRange(min=0.1), default=None,
              help="Seconds to wait for a DIMSE message, and for one to arrive whole (extended while it flows at "
                   f"64 KiB/s or more) [default: {_shown(DEFAULTS.dimse_timeout_s)}].")
@click.option("--network-timeout", "network_timeout_s", type=click.FloatRange(min=0.1), default=None,
              help="Seconds of silence before an association is aborted; also the time a PDU has to arrive whole "
                   f"[default: {_shown(DEFAULTS.network_timeout_s)}].")
@click.option("--max-pdu", "max_pdu_size", type=click.IntRange(4096, 1 << 26), default=None,
              help=f"Maximum PDU length we advertise, in bytes; a longer PDU closes the connection "
                   f"[default: {DEFAULTS.max_pdu_size}].")
@click.option("--max-dataset-mb", type=click.IntRange(min=1), default=None,
              help=f"Largest instance received, as encoded; a larger one closes the association "
                   f"[default: {DEFAULTS.max_dataset_mb}].")
def serve(config_file, allow_callers, **flags) -> None:
    """Receive radiographs over DICOM (C-STORE) and explain each one.

    A Storage SCP for CR and DX images that keeps each instance durably before answering,
    explains it with the exported model and writes, per instance, result.json, PNG overlays
    and a Secondary Capture per explained class and method (optionally a Basic Text SR) to
    the spool's outbox, forwarding the DICOM objects (C-STORE or STOW-RS) when --forward is given. Stops cleanly
    on SIGTERM; what was received and not yet explained is explained after the next start.
    """
    _require(("pydicom", "pynetdicom"), "serve")
    config = _config(config_file, True, allow_callers, **flags)
    _require_result_libraries(config)
    _run(config, listen=True)


@click.command()
@click.argument("folder", type=click.Path(exists=True, file_okay=False, path_type=Path))
@_shared_options
@click.option("--done", "done_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where taken files are moved once stored in the spool [default: FOLDER/done].")
@click.option("--settle", "settle_s", type=click.FloatRange(min=0), default=2.0, show_default=True,
              help="Seconds a file's size must stay unchanged before it is taken.")
def watch(folder, config_file, done_dir, settle_s, **flags) -> None:
    """Explain radiographs (PNG, JPEG, DICOM) dropped into FOLDER, as `serve` does received ones.

    Files are taken once their size has been stable for --settle seconds; names starting with
    '.' or ending in .part/.tmp/.partial are left alone until renamed. Results go to the
    spool's outbox (DICOM inputs also get Secondary Captures); taken files move to --done.
    """
    _require((), "watch")
    config = _config(config_file, False, **flags)
    if config.forward:
        _require(("pydicom", "pynetdicom"), "forwarding")
    _require_result_libraries(config)
    _run(config, listen=False, watch_folder=folder, done_dir=done_dir, settle_s=settle_s)
