"""`chexplain build-engine`: a TensorRT engine from an exported graph, on the GPU that runs it."""

from __future__ import annotations

from pathlib import Path

import click

from ..errors import ConfigError, MissingDependency
from ..grammar import DEFAULT_ENGINE_BATCH, DEFAULT_ENGINE_PRECISION, DEFAULT_WORKSPACE_GB, PRECISIONS
from ..optional import require
from . import console, options


@click.command("build-engine")
@click.argument("onnx_path", metavar="MODEL.onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--precision", type=click.Choice(PRECISIONS), default=DEFAULT_ENGINE_PRECISION, show_default=True,
              help="mixed: the forward and each class's work of the methods that keep their maps there in FP16 (every "
                   "CAM, the -bn LRP composites), LRP's per-image factors and the other methods in FP32; fp16: each "
                   "class's work of every method in FP16; fp32.")
@click.option("--batch", "batch_text", default=DEFAULT_ENGINE_BATCH, show_default=True, metavar="MIN:OPT:MAX",
              help="Batch sizes of the optimisation profile (N alone: a fixed batch).")
@click.option("--workspace", "workspace_gb", type=click.FloatRange(min=0.1), default=DEFAULT_WORKSPACE_GB,
              show_default=True, metavar="GB", help="Builder workspace limit in GiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Timing cache to reuse and update [default: timing.<gpu>.trt<version>.cache beside the graph].")
@click.option("--dla", "dla_core", type=click.IntRange(min=0), default=None, metavar="N",
              help="Build for DLA core N (Jetson AGX Orin / Orin NX; TensorRT 10): fixed shapes at the optimum "
                   "batch, layers the DLA lacks on the GPU; the engine gets its own .dla<N> file name.")
@click.option("--triton", "triton_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also add the engine to this Triton model repository (<model>-tensorrt, tensorrt_plan).")
@click.option("--if-available", is_flag=True,
              help="Where TensorRT or an NVIDIA GPU is missing, say so and exit 0 (what `make export` does).")
@options.verbosity
def build_engine(onnx_path, precision, batch_text, workspace_gb, timing_cache, dla_core, triton_dir, if_available) -> None:
    """Build a TensorRT engine from an exported graph, on the GPU that will run it.

    Writes model.<gpu>.trt<version>.<precision>[.dla<N>].engine and its .json sidecar beside the
    graph; predict and explain then use it (--backend auto prefers GPU engines to DLA ones).
    TensorRT 10 and 11 are supported.
    """
    try:
        require("onnx", "build-engine")
        from ..export.tensorrt_build import BatchRange, tensorrt_available
        from ..export.tensorrt_build import build_engine as build
    except MissingDependency as error:
        raise click.UsageError(str(error)) from None
    try:
        batch = BatchRange.parse(batch_text)
    except ConfigError as error:
        raise click.BadParameter(str(error), param_hint="--batch") from None
    if if_available:
        ok, why = tensorrt_available()
        if not ok:
            console.note(f"no TensorRT engine built: {why}. The ONNX graph {onnx_path} stays the model "
                         f"(ONNX Runtime runs it).")
            return
    with console.heartbeat("building the engine"):
        result = build(onnx_path, precision, batch=batch, workspace_gb=workspace_gb, timing_cache=timing_cache,
                       dla_core=dla_core, log=console.info)
    if triton_dir:
        from ..export.triton import add_engine_model

        console.info(f"  Triton model {add_engine_model(triton_dir, result.path, result.manifest.name)}")
