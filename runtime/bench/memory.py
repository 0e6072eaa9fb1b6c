"""The host memory one graph or engine needs on its own, measured in a fresh process.

The benchmark's own process holds PyTorch, the fidelity references and every session of the
run, so its peak resident memory says little about one graph. Here a child process imports
the runtime, notes its resident memory, opens the graph (or engine) with the run's backend and
threads, runs the case's inputs a few times (an arena grows on the first calls) and reports
its peak: the difference is what a deployment of that graph adds. Linux only (/proc); None
elsewhere. No torch here or in the child.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

import numpy as np

RUNS = 3
PROBE_TIMEOUT_S = 600
_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_mb(field: str) -> float:
    """A memory line of /proc/self/status (VmRSS: now, VmHWM: the peak so far) in MiB."""
    for line in _STATUS.read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise OSError(f"{_STATUS} has no {field}")


def session_memory_mb(model: Path, backend: str, threads: int | None, image: np.ndarray,
                      feeds: Mapping[str, np.ndarray]) -> float:
    """Peak resident MiB a fresh process adds by opening ``model`` on ``backend`` and running
    ``image`` (with ``feeds``) RUNS times; raises OSError/RuntimeError where it cannot tell."""
    if not _STATUS.exists():
        raise OSError("session memory is measured from /proc/self/status (Linux only)")
    with tempfile.TemporaryDirectory(prefix="chexplain-memory-") as folder:
        inputs = Path(folder) / "inputs.npz"
        np.savez(inputs, image=image, **feeds)
        command = [sys.executable, "-m", __name__, str(model), backend, str(threads or 0), str(inputs)]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=PROBE_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise RuntimeError(f"the memory probe of {model} ran past {PROBE_TIMEOUT_S} s") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise RuntimeError(f"the memory probe of {model} failed: {last}")
    measured = json.loads(done.stdout.strip().splitlines()[-1])
    return round(measured["peak_mb"] - measured["baseline_mb"], 1)


def _probe(model: str, backend: str, threads: int, inputs: str) -> dict[str, float]:
    """In the child: baseline after the imports, then open, run and read the peak."""
    from ..backends import open_backend

    if backend == "onnxruntime":
        import onnxruntime  # noqa: F401 - its import is the library, not the session
    arrays = dict(np.load(inputs))
    image = arrays.pop("image")
    with contextlib.suppress(OSError):  # an older kernel: the imports' peak stays in, an upper bound
        _CLEAR_REFS.write_text("5")  # the peak so far (the imports') back to the present
    baseline = _status_mb("VmRSS")
    with open_backend(model, backend, threads=threads or None) as session:
        for _ in range(RUNS):
            session.run(image, **arrays)
        peak = _status_mb("VmHWM")  # not ru_maxrss: Linux carries the parent's over fork and exec
    return {"baseline_mb": baseline, "peak_mb": peak}


if __name__ == "__main__":
    print(json.dumps(_probe(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4])))
