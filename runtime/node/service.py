"""Run the node as a service: the worker, the SCP or the folder watcher, forwarding, the health
line, and a graceful stop on SIGTERM/SIGINT (the item in hand is finished; the rest waits
in the inbox for the next start)."""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..backends import open_backend
from ..maps.methods import choose_classes, graph_methods, select_methods
from ..results.prediction import Predictor
from .config import NodeConfig
from .events import EventLog, route_library_logs
from .forwarder import Forwarder, Timeouts
from .processor import InstanceProcessor
from .spool import Spool
from .worker import Node

STOP_TIMEOUT_S = 120.0  # the item in hand gets this long to finish
RESTART_PAUSE_S = 5.0  # before a service thread that failed is started again


def supervised(name: str, target: Callable[[], None], log: EventLog, stop: threading.Event,
               pause_s: float = RESTART_PAUSE_S) -> threading.Thread:
    """A thread running ``target`` that, should it fail, is reported (``thread_failed``) and run
    again after ``pause_s``, until ``stop``: a watcher or forwarder never silently disappears."""
    def run() -> None:
        while not stop.is_set():
            try:
                target()
                return
            except Exception as error:
                log("thread_failed", thread=name, error=f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}",
                    restart_in_s=pause_s)
                stop.wait(pause_s)

    return threading.Thread(target=run, name=name, daemon=True)


def build_processor(config: NodeConfig, notify: Callable[[str], None]) -> InstanceProcessor:
    """Open the model on its backend and choose methods and classes as ``explain`` does."""
    backend = open_backend(config.model, config.backend, threads=config.threads, notify=notify)
    settings = backend.manifest.explanations
    try:
        return InstanceProcessor(
            Predictor(backend, allow_any_view=config.allow_any_view, max_decoded_bytes=config.max_decoded_mb << 20,
                      selection=config.selection()),
            select_methods(graph_methods(settings), list(config.methods)),
            classes=choose_classes(settings, config.classes, backend.manifest.classes),
            opacity=config.opacity, max_size=config.max_size, structured_report=config.structured_report,
            compress=config.compress, sr_template=config.sr_template, segmentation=config.segmentation,
            key_objects=config.key_objects,
        )
    except BaseException:  # a refusal (methods, classes) or anything else: the backend is not kept open
        backend.close()
        raise


def _import_pydicom_once() -> None:
    """Import pydicom here, before the threads start: its modules import each other, and two
    threads importing it at once can see a partly initialised module."""
    with contextlib.suppress(ImportError):  # a watcher for PNG/JPEG needs no pydicom
        import pydicom.pixels  # noqa: F401


def run_service(config: NodeConfig, processor: InstanceProcessor, log: EventLog, *, listen: bool = True,
                watch_folder: Path | None = None, done_dir: Path | None = None, settle_s: float = 2.0) -> None:
    """Serve until SIGTERM or SIGINT."""
    route_library_logs(log)
    stop = threading.Event()
    wakes = [threading.Event() for _ in config.forward]  # one per destination: a new result wakes each
    spool = Spool(config.spool)
    node = Node(spool, processor, log, config.max_queue, on_result=lambda: [wake.set() for wake in wakes])
    log("starting", spool=str(spool.root), backend=processor.predictor.backend.describe(),
        model=processor.predictor.manifest.name, methods=[m.label for m in processor.methods],
        banner=processor.predictor.manifest.banner(), max_queue=config.max_queue)
    scp = None
    if listen:
        from .scp import StorageSCP

        scp = StorageSCP(config, node, log)
    _import_pydicom_once()
    node.start()
    tls = config.client_tls() if config.forwards_with_dicom_tls else None
    timeouts = Timeouts(connect=config.acse_timeout_s, acse=config.acse_timeout_s, dimse=config.dimse_timeout_s,
                        network=config.network_timeout_s)
    forwarders = [Forwarder(spool.outbox, spool.rejected, destination, config.ae_title, log, node.metrics, tls=tls,
                            timeouts=timeouts) for destination in config.forward]

    def unsent() -> dict[str, Any]:
        return {"unsent": {forwarder.name: len(forwarder.queue.unsent()) for forwarder in forwarders}}

    threads = [supervised("chexplain-health", lambda: node.report_health(config.health_interval_s,
                                                                          unsent if forwarders else None), log, stop)]
    threads += [supervised(f"chexplain-forward-{index}", lambda f=forwarder, w=wake: f.run(stop, w), log, stop)
                for index, (forwarder, wake) in enumerate(zip(forwarders, wakes, strict=True))]
    if watch_folder is not None:
        from .watcher import FolderWatcher

        watcher = FolderWatcher(watch_folder, node, log, done_dir=done_dir, settle_s=settle_s)
        threads.append(supervised("chexplain-watch", lambda: watcher.run(stop), log, stop))
    if scp is not None:
        scp.start()
    for thread in threads:
        thread.start()

    def request_stop(signum: int, _frame: object) -> None:
        log("stopping", signal=signal.Signals(signum).name)
        stop.set()

    previous = {s: signal.signal(s, request_stop) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        while not stop.wait(0.5):
            pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if scp is not None:
            scp.stop()
        for wake in wakes:
            wake.set()
        node.stop(STOP_TIMEOUT_S)
        processor.predictor.backend.close()
        log("stopped", **node.health())
