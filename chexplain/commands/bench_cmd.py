"""`chexplain bench`: per-image latency, backends and precisions side by side."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import click

from ..grammar import BACKENDS, DEFAULT_EXPLAIN, PRECISIONS, parse_list
from . import console, options

if TYPE_CHECKING:
    from ..runtime.bench.session import BenchTools


@click.command()
@options.model("Model to time: its bench graphs (one per method, with a targets input) are exported once "
               "under artifacts/bench/ (needs torch).")
@click.option("--onnx", "onnx_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Time this exported graph as it is instead (its methods and classes).")
@click.option("--engine", "engine_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Time this TensorRT engine.")
@click.option("--backend", "backends", default="auto", show_default=True, metavar="LIST",
              help=f"Backends side by side: {', '.join(BACKENDS)} (comma-separated).")
@click.option("--precision", "precisions", default="fp32", show_default=True, metavar="LIST",
              help=f"Precisions side by side: {', '.join(PRECISIONS)} (comma-separated).")
@click.option("--batch", "batches", default="1", show_default=True, metavar="LIST", help="Batch sizes, e.g. 1,4,8.")
@click.option("--method", "methods", default=DEFAULT_EXPLAIN, show_default=True, metavar="LIST",
              help="Methods (none, gradcam, gradcam++, ..., lrp:<composite>), each in its own graph; "
                   "forward only is always timed as the baseline.")
@click.option("--classes", "classes", default="1,3", show_default=True, metavar="LIST",
              help="Classes explained per image, e.g. 1,3,14.")
@click.option("--warmup-s", type=click.FloatRange(min=0), default=2.0, show_default=True, help="Warm-up seconds per case.")
@click.option("--iterations", type=click.IntRange(min=1), default=None, help="Timed iterations per case [default: 50].")
@click.option("--duration-s", type=click.FloatRange(min=0.1), default=None, help="Or time each case for this long.")
@options.images("Radiographs to run on [default: the bundled samples].")
@options.threads("CPU threads (ONNX Runtime and PyTorch).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the results (schema chexplain.bench/1) with the machine's description here.")
@click.option("--markdown", "markdown_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the tables as Markdown here.")
@click.option("--compare-reference", is_flag=True,
              help="Also time eager PyTorch, pytorch-grad-cam and Zennit (same classes, same composite), "
                   "interleaved in this process, and print the ratios.")
@click.option("--no-fidelity", is_flag=True, help="Skip comparing the outputs with the FP32 PyTorch explainer.")
@options.verbosity
def bench(model, onnx_file, engine_file, backends, precisions, batches, methods, classes, warmup_s, iterations,
          duration_s, image_dir, threads, json_out, markdown_out, compare_reference, no_fidelity) -> None:
    """Per-image latency: forward only, + Grad-CAM, + LRP; backends and precisions side by side.

    Reports min, mean, median, p90/p95/p99, max, throughput and the coefficient of variation
    of the inference call, the stages from file to overlay, memory, and how far the outputs
    are from the FP32 PyTorch explainer.
    """
    from .. import sample_images
    from ..errors import ConfigError
    from ..runtime.bench.session import Settings, run_benchmark
    from ..runtime.bench.tables import (
        LATENCY_HEADER,
        REFERENCE_HEADER,
        STAGE_HEADER,
        latency_rows,
        markdown_report,
        stage_rows,
        text_table,
    )
    from ..runtime.inputs.reader import expand_inputs

    if iterations and duration_s:
        raise click.UsageError("give --iterations or --duration-s, not both")
    if onnx_file and engine_file:
        raise click.UsageError("give --onnx or --engine, not both")
    try:
        settings = Settings(
            model=model, onnx=onnx_file, engine=engine_file,
            backends=parse_list(backends), precisions=parse_list(precisions), batches=parse_list(batches, int),
            methods=parse_list(methods), classes=parse_list(classes, int),
            images=expand_inputs([image_dir]) if image_dir else sample_images(),
            warmup_s=warmup_s, iterations=iterations if iterations or duration_s else 50, duration_s=duration_s,
            threads=threads, fidelity=not no_fidelity, compare_reference=compare_reference, tools=_bench_tools(),
        )
    except ConfigError as error:
        raise click.UsageError(str(error)) from None
    unknown = [b for b in settings.backends if b not in BACKENDS]
    unknown += [p for p in settings.precisions if p not in PRECISIONS]
    unknown += [str(n) for n in settings.batches + settings.classes if n < 1]
    if unknown:
        raise click.UsageError(f"not a backend, precision, batch or class count: {', '.join(unknown)}")
    if not settings.images:
        raise click.UsageError(f"no radiographs found in {image_dir}")
    document, results, reference_rows = run_benchmark(settings, lambda line: console.info(line, err=True))
    click.echo("latency of the inference call (ms)")
    click.echo("\n".join(text_table(LATENCY_HEADER, latency_rows(results))))
    click.echo("\nfrom file to overlay by stage (medians, ms), memory, fidelity against the FP32 PyTorch explainer")
    click.echo("\n".join(text_table(STAGE_HEADER, stage_rows(results))))
    if reference_rows:
        click.echo("")
        click.echo("\n".join(text_table(REFERENCE_HEADER, reference_rows)))
    for warning in document["warnings"]:
        console.warning(warning)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(document, indent=2) + "\n")
        console.info(f"results: {json_out}", err=True)
    if markdown_out:
        markdown_out.parent.mkdir(parents=True, exist_ok=True)
        markdown_out.write_text(markdown_report(document, results, reference_rows))
        console.info(f"tables: {markdown_out}", err=True)


def _build_engine(graph: Path, precision: str, log: Callable[[str], None]) -> Path:
    from ..export.tensorrt_build import build_engine

    return build_engine(graph, precision, log=log).path


def _bench_tools() -> BenchTools:
    """What the bench borrows from the export side: its PyTorch graphs and references where torch
    is installed (export/bench_graphs.py), and the engine builder."""
    from ..runtime.bench.session import BenchTools

    try:
        from ..export.bench_graphs import bench_graph, reference_outputs, reference_timers
    except ImportError as error:  # no torch (or no onnx): the bench times exported graphs only
        return BenchTools(build_engine=_build_engine, unavailable=str(error))
    return BenchTools(bench_graph, reference_outputs, reference_timers, _build_engine)
