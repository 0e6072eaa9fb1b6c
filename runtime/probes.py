"""Probes of this machine that import nothing heavy: an installed distribution's version, a
tool's output, nvidia-smi's view of the GPUs (runtime/host.py, the benchmark's machine record,
the GPU stack's compatibility)."""

from __future__ import annotations

import shutil
import subprocess
from importlib.metadata import PackageNotFoundError, version


def package_version(distribution: str) -> str | None:
    """An installed distribution's version, or None."""
    try:
        return version(distribution)
    except PackageNotFoundError:
        return None


def run_tool(command: list[str]) -> str | None:
    """A tool's stripped output, or None when it is missing or fails."""
    if shutil.which(command[0]) is None:
        return None
    try:
        return subprocess.run(command, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def nvidia_smi(fields: tuple[str, ...]) -> list[str]:
    """One CSV line of ``fields`` per NVIDIA GPU, by nvidia-smi, without importing a framework."""
    out = run_tool(["nvidia-smi", f"--query-gpu={','.join(fields)}", "--format=csv,noheader"]) or ""
    return [line.strip() for line in out.splitlines() if line.strip()]
