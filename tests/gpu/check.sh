#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU (not part of `make test`): builds TensorRT
# engines (fp32, fp16, mixed) and compares and times them where TensorRT is installed, else
# checks the PyTorch explainer on CUDA (parity with the CPU, FP16 fidelity, latency).
# Prints one table per check; exit 0 when the criteria hold. Usage: tests/gpu/check.sh [--iterations N]
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-$(test -x .venv/bin/python && echo .venv/bin/python || echo python3)}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.limit --format=csv
exec "$PYTHON" tests/gpu/check.py "$@"
