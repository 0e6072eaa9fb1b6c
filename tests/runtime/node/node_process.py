"""A running `chexplain serve` / `chexplain watch` for the node's tests: the child process and
its JSON log, free loopback ports, C-STORE with pynetdicom, dcmtk's tools."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pydicom
from pynetdicom import AE

CHEXPLAIN = str(Path(sys.executable).with_name("chexplain"))
DX = "1.2.840.10008.5.1.4.1.1.1.1"
EXPLICIT = "1.2.840.10008.1.2.1"


def dcmtk(tool: str) -> str:
    path = shutil.which(tool)
    assert path, f"{tool} not found: the node's tests need dcmtk (apt-get install dcmtk)"
    return path


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


class NodeProcess:
    """`chexplain serve` (or watch) as a child process, its JSON log collected from stderr."""

    def __init__(self, args: list[str], log: Path) -> None:
        self.args, self.log_path = args, log
        self.process: subprocess.Popen | None = None

    def start(self, wait_for: str = "listening") -> NodeProcess:
        before = len(self.events())  # a restart appends to the same log
        self.handle = open(self.log_path, "a")  # noqa: SIM115 - the node's stderr for as long as it runs
        self.process = subprocess.Popen([CHEXPLAIN, *self.args], stdout=subprocess.DEVNULL, stderr=self.handle)
        self.wait_for(lambda: any(e["event"] == wait_for for e in self.events()[before:]), 120,
                      f"no {wait_for!r} in the log")
        return self

    def events(self) -> list[dict]:
        lines = self.log_path.read_text().splitlines() if self.log_path.exists() else []
        return [json.loads(line) for line in lines if line.startswith("{")]

    def wait_for(self, condition, timeout: float, message: str) -> None:
        deadline = time.monotonic() + timeout
        while not condition():
            assert self.process.poll() is None, f"the node exited ({self.process.returncode}): {self.log_path.read_text()[-2000:]}"
            assert time.monotonic() < deadline, f"{message}; log: {self.log_path.read_text()[-2000:]}"
            time.sleep(0.1)

    def rss_mb(self, field: str = "VmRSS") -> float:
        """Resident memory now (``VmHWM``: the most it has held since it started), in MiB."""
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
        raise AssertionError(f"no {field}")

    def stop(self, sig: int = signal.SIGTERM) -> int:
        self.process.send_signal(sig)
        code = self.process.wait(150)
        self.handle.close()
        return code


def serve(model: Path, spool: Path, port: int, *extra: str) -> NodeProcess:
    args = ["serve", "--model", str(model), "--spool", str(spool), "--port", str(port), "--host", "127.0.0.1",
            "--allow-caller", "STORESCU", "--allow-caller", "MODALITY@127.0.0.1", "--health-interval", "1", *extra]
    return NodeProcess(args, spool.parent / f"node-{port}.log").start()


def results(spool: Path) -> list[dict]:
    return [json.loads((folder / "result.json").read_text()) for folder in sorted((spool / "outbox").iterdir())
            if not folder.name.startswith(".")]


def store(port: int, paths: list[Path], calling: str = "MODALITY", retry_refused: bool = False) -> list[int]:
    """C-STORE each file over one association (pynetdicom); with ``retry_refused`` a file
    answered Out of Resources is sent again after a pause, as a modality does."""
    ae = AE(ae_title=calling)
    ae.add_requested_context(DX, EXPLICIT)
    statuses = []
    assoc = ae.associate("127.0.0.1", port, ae_title="CHEXPLAIN")
    assert assoc.is_established
    try:
        for path in paths:
            ds = pydicom.dcmread(path)
            while True:
                status = assoc.send_c_store(ds).Status
                if not (retry_refused and status == 0xA700):
                    break
                time.sleep(0.3)
            statuses.append(status)
    finally:
        assoc.release()
    return statuses
