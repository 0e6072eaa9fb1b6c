#!/usr/bin/env bash
# GPU check for a machine with an NVIDIA GPU, a Jetson included (not part of `make test`; run it
# after `make export`, or as `make gpu-check`):
#   1. tests/gpu/check_engines.py (no torch): fp32 and mixed TensorRT engines (fp16 too where its plan differs) of the
#      exported graph against ONNX Runtime CPU, with latency; runs where TensorRT and cuda-python are;
#   2. tests/gpu/check_torch.py (optional): the PyTorch explainer on CUDA, where torch sees a GPU.
# Prints Markdown tables for docs/benchmarks.md; exit 0 when every check that ran passed and at least one ran.
#   3. with --architectures A,B (e.g. swin_t,vit_b_16,efficientnet_b0): each exported seeded
#      (needs torch) and its graph put through the engine check, for the operators those add.
# Usage: tests/gpu/check.sh [--iterations N] [--dla N] [--architectures A,B]   (--dla: the engine check only)
set -uo pipefail
cd "$(dirname "$0")/../.."
PYTHON=${PYTHON:-$(test -x .venv/bin/python && echo .venv/bin/python || echo python3)}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,clocks.sm,power.limit --format=csv
has() { "$PYTHON" -c "import importlib.util, sys; sys.exit(0 if all(importlib.util.find_spec(m) for m in sys.argv[1:]) else 1)" "$@"; }
architectures="" engine_args=()
while [ $# -gt 0 ]; do case "$1" in --architectures) architectures="$2"; shift 2 ;; *) engine_args+=("$1"); shift ;; esac; done
set -- "${engine_args[@]}"
ran=0 status=0
if has tensorrt cuda onnx onnxruntime; then
  ran=1; "$PYTHON" tests/gpu/check_engines.py "$@" || status=1
  for arch in ${architectures//,/ }; do
    echo "== $arch: exported with seeded weights, then the engine check"
    "$PYTHON" -c "from chexplain.cli import main; main()" export --model "$arch" --name "gpu-check-$arch" --out build/gpu-check \
      && "$PYTHON" tests/gpu/check_engines.py --onnx "build/gpu-check/gpu-check-$arch/model.onnx" "$@" || status=1
  done
else
  echo "engine check skipped: needs tensorrt, cuda-python, onnx and onnxruntime (docs/deployment.md, \"Jetson\")"
fi
torch_args=()
while [ $# -gt 0 ]; do case "$1" in --iterations) torch_args+=("$1" "$2"); shift 2 ;; *) shift ;; esac; done
if has torch torchvision && "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
  ran=1; "$PYTHON" tests/gpu/check_torch.py "${torch_args[@]}" || status=1
else
  echo "PyTorch-CUDA check skipped: torch (with torchvision) does not see a GPU here"
fi
[ "$ran" -eq 1 ] || { echo "nothing to check on this machine: no TensorRT and no CUDA-enabled torch" >&2; exit 1; }
exit "$status"
