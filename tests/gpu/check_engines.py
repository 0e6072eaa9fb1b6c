"""TensorRT check, without torch: after `make export`, builds fp32, mixed and fp16 engines of the
exported default graph (fp16 only where its plan differs from mixed's; with ``--dla N`` also a
mixed engine for DLA core N), runs each on the
test radiographs against ONNX Runtime CPU in FP32 with the precision plan's criteria, and
times it: GPU compute by CUDA events and end to end with the transfers, medians.

Needs tensorrt, cuda-python, onnx and onnxruntime (what a Jetson has after the Jetson steps of
docs/deployment.md). Prints Markdown tables for docs/benchmarks.md; exit 0 when fp32 and mixed pass.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from report import ROOT, table, use_source_tree

use_source_tree()

from chexplain.export.precision import fp16_fragile_methods  # noqa: E402
from chexplain.export.tensorrt_build import BatchRange, build_engine  # noqa: E402
from chexplain.runtime import OnnxRuntimeBackend, preprocess, read_radiograph  # noqa: E402
from chexplain.runtime.backends.compatibility import gpu_stack, stack_problems  # noqa: E402
from chexplain.runtime.backends.tensorrt_runner import TensorRTBackend  # noqa: E402
from chexplain.runtime.evaluation.fidelity import (  # noqa: E402
    REDUCED_MIN_MAP_PEARSON,
    REDUCED_PROBABILITY_TOLERANCE,
    fidelity,
)

DEFAULT_GRAPH = ROOT / "artifacts" / "densenet121-chexpert" / "model.onnx"
FP32_ATOL, FP32_RTOL = 1e-4, 1e-3  # Polygraphy's defaults are 1e-5; GPU kernels reorder sums
COUNTED = ("fp32", "mixed", "fp16")  # each held to its criteria (docs/deployment.md, "Precision plan")


def radiographs(backend: OnnxRuntimeBackend, count: int) -> np.ndarray:
    """The test radiographs and samples, decoded and normalised as the runtime does."""
    paths = sorted((ROOT / "tests" / "data" / "images").glob("*.png")) + sorted((ROOT / "chexplain" / "samples").glob("*.png"))
    return np.stack([preprocess(read_radiograph(p, allow_any_view=True).pixels, backend.manifest.preprocessing)[0]
                     for p in paths[:count]])


def verdict(precision: str, outputs: dict[str, np.ndarray], reference: dict[str, np.ndarray],
            maps: list[str]) -> tuple[bool, dict[str, Any]]:
    """The precision plan's criteria; a map output with no class explained in both fails."""
    measured = fidelity(outputs, reference, maps)
    if precision == "fp32":
        ok = bool(np.allclose(outputs["probabilities"], reference["probabilities"], atol=FP32_ATOL, rtol=FP32_RTOL))
    else:
        ok = measured["probabilities_max_abs_diff"] <= REDUCED_PROBABILITY_TOLERANCE
    for name in maps:
        ok &= name in measured and measured[name]["min_pearson"] >= REDUCED_MIN_MAP_PEARSON
    return ok, measured


def timed(backend: TensorRTBackend, image: np.ndarray, feeds: dict[str, np.ndarray],
          iterations: int) -> tuple[float, float]:
    """Median GPU compute (CUDA events) and end-to-end milliseconds of ``iterations`` runs."""
    backend.time_gpu = True
    for _ in range(10):
        backend.run(image, **feeds)
    gpu, wall = [], []
    for _ in range(iterations):
        start = time.perf_counter()
        backend.run(image, **feeds)
        wall.append((time.perf_counter() - start) * 1e3)
        gpu.append(backend.last_gpu_ms)
    return statistics.median(gpu), statistics.median(wall)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--onnx", type=Path, default=DEFAULT_GRAPH, help="the exported graph (make export writes it)")
    parser.add_argument("--iterations", type=int, default=100)
    parser.add_argument("--images", type=int, default=4, help="radiographs compared")
    parser.add_argument("--dla", type=int, default=None, metavar="N", help="also build a mixed engine for DLA core N")
    args = parser.parse_args()
    if not args.onnx.is_file():
        print(f"{args.onnx}: no exported graph; run `make export` first", file=sys.stderr)
        return 2
    stack = gpu_stack()
    print("stack: " + ", ".join(f"{key} {value}" for key, value in stack.items() if value))
    for problem in stack_problems(stack):
        print(f"problem: {problem}")
    reference_backend = OnnxRuntimeBackend(args.onnx, providers=["CPUExecutionProvider"])
    x = radiographs(reference_backend, args.images)
    feeds = {}
    if "targets" in reference_backend.input_names:  # a graph exported with --classes input: the top 3
        probabilities = reference_backend.run(x, targets=np.zeros((len(x), 0), np.int64))["probabilities"]
        feeds["targets"] = np.argsort(-probabilities, axis=1)[:, :3].astype(np.int64)
    reference = reference_backend.run(x, **feeds)
    maps = [m.output for m in reference_backend.manifest.explanations.methods]
    precisions = ["fp32", "mixed"]
    if fp16_fragile_methods(reference_backend.manifest):
        precisions.append("fp16")
    else:
        print("fp16: the same plan as mixed for this graph's methods (docs/deployment.md, \"Precision plan\"); built once, as mixed")
    builds = [(p, None) for p in precisions] + ([("mixed", args.dla)] if args.dla is not None else [])
    rows, ok, gpu_name = [], True, "?"
    for precision, dla_core in builds:
        built = build_engine(args.onnx, precision, batch=BatchRange(1, 1, len(x)), dla_core=dla_core, log=print)
        label = precision + (f" DLA {dla_core}" if dla_core is not None else "")
        for cuda_graph in (False, True):
            with TensorRTBackend(built.path, cuda_graph=cuda_graph) as backend:
                gpu_name = backend.gpu.name
                fixed = dla_core is not None  # the DLA runs its one fixed shape: image by image
                runs = ([backend.run(x[i:i + 1], **{k: v[i:i + 1] for k, v in feeds.items()}) for i in range(len(x))]
                        if fixed else [backend.run(x, **feeds)])
                outputs = {k: np.concatenate([run[k] for run in runs]) for k in reference}
                passed, measured = verdict(precision, outputs, reference, maps)
                gpu_ms, wall_ms = timed(backend, x[:1], {k: v[:1] for k, v in feeds.items()}, args.iterations)
            if precision in COUNTED:
                ok &= passed
            cells = [f"{measured[m]['min_pearson']:.4f}" if m in measured else "none comparable" for m in maps]
            rows.append([label, "yes" if cuda_graph else "no", f"{measured.get('targets_agreement', 1.0):.0%}",
                         f"{measured['probabilities_max_abs_diff']:.2e}", *cells, f"{gpu_ms:.2f}", f"{wall_ms:.2f}",
                         "ok" if passed else ("below" if precision in COUNTED else "below (reported only)")])
    table(f"TensorRT engines on {gpu_name} vs ONNX Runtime CPU fp32 ({len(x)} radiographs; latency: batch 1, medians of "
          f"{args.iterations})",
          ["engine", "CUDA graph", "same targets", "max abs dprob", *[f"{m} min pearson" for m in maps],
           "GPU ms", "end-to-end ms", "criteria"], rows)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
