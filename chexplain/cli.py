"""The `chexplain` command. Stages are imported inside commands, so `predict` never imports torch."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from . import __version__, sample_images
from .models.manifest import DEFAULT_MODEL

EXIT_SOME_FAILED = 1


def _error(message: str) -> None:
    click.echo(f"chexplain: error: {message}", err=True)


def _warning(message: str) -> None:
    click.echo(f"chexplain: warning: {message}", err=True)


def _note(message: str) -> None:
    click.echo(f"chexplain: note: {message}", err=True)


BACKEND_HELP = ("Inference backend: a TensorRT engine built beside the graph for this GPU (auto takes it when it "
                "loads), or ONNX Runtime on its best provider.")


def parse_thresholds(values: tuple[str, ...], classes: tuple[str, ...]) -> dict[str, float]:
    """``0.4`` sets every class; ``Cardiomegaly=0.3`` sets one. Later values win."""
    thresholds: dict[str, float] = {}
    for value in values:
        name, _, number = value.rpartition("=")
        try:
            t = float(number)
        except ValueError:
            raise click.BadParameter(f"{value!r}: expected a number or CLASS=NUMBER", param_hint="--threshold") from None
        if not 0.0 <= t <= 1.0:
            raise click.BadParameter(f"{value!r}: a threshold lies in [0, 1]", param_hint="--threshold")
        if not name:
            thresholds.update(dict.fromkeys(classes, t))
        elif name in classes:
            thresholds[name] = t
        else:
            raise click.BadParameter(f"unknown class {name!r}; classes: {', '.join(classes)}", param_hint="--threshold")
    return thresholds


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="chexplain")
def main() -> None:
    """Explainable chest X-ray classification: DenseNet121 on the 14 CheXpert
    observations, exported with its explanations as one ONNX/TensorRT graph.

    Not for clinical use.
    """


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE_OR_DIR...")
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True,
              help="Exported model: a name under artifacts/ ($CHEXPLAIN_ARTIFACTS), a folder, an .onnx or an .engine file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (schema chexplain.predict/1).")
@click.option("--threshold", "thresholds", multiple=True, metavar="[CLASS=]T",
              help="Decision threshold for every class (0.4) or one (Cardiomegaly=0.3); repeatable.")
@click.option("--backend", type=click.Choice(["auto", "tensorrt", "onnxruntime"]), default="auto",
              show_default=True, help=BACKEND_HELP)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for ONNX Runtime.")
@click.option("--allow-any-view", is_flag=True,
              help="Also classify DICOMs whose BodyPartExamined is not CHEST, and lateral views.")
def predict(inputs, model, as_json, thresholds, backend, threads, allow_any_view) -> None:
    """Classify radiographs (PNG, JPEG, DICOM; directories are searched).

    Exit code 0 when every input was classified, 1 when some failed, 2 on usage errors.
    """
    from .predict_output import json_document, text_lines
    from .runtime.backends import open_backend
    from .runtime.errors import ModelNotFoundError
    from .runtime.predict import Predictor
    from .runtime.reader import expand_inputs

    try:
        engine = open_backend(model, backend, threads=threads, notify=_note)
    except (ModelNotFoundError, ImportError, ValueError) as error:
        raise click.UsageError(str(error)) from None
    manifest = engine.manifest
    overrides = parse_thresholds(thresholds, manifest.classes)
    predictor = Predictor(engine, overrides, allow_any_view=allow_any_view)
    paths = expand_inputs(inputs)
    if not paths:
        _error(f"no radiographs found in {', '.join(inputs)}")
        sys.exit(EXIT_SOME_FAILED)
    if not as_json:
        click.echo(manifest.banner())
        click.echo(f"backend: {engine.describe()}")
    predictions = []
    show_bar = as_json and len(paths) > 1
    with click.progressbar(paths, label="classifying", file=sys.stderr, hidden=not show_bar) as bar:
        for index, path in enumerate(bar, 1):
            prediction = predictor.predict(path)
            predictions.append(prediction)
            if not prediction.ok:
                _error(f"{prediction.input}: {prediction.error}")
            elif not as_json:
                counter = f"[{index}/{len(paths)}] " if len(paths) > 1 else ""
                lines = text_lines(prediction, predictor.thresholds)
                click.echo(counter + "\n".join(lines))
    if as_json:
        document = json_document(predictions, manifest, str(engine.path), engine.describe(), predictor.thresholds)
        click.echo(json.dumps(document, indent=2))
    failed = sum(not p.ok for p in predictions)
    if failed:
        _warning(f"{failed} of {len(predictions)} inputs failed")
        sys.exit(EXIT_SOME_FAILED)


@main.command()
@click.argument("inputs", nargs=-1, required=True, metavar="IMAGE_OR_DIR...")
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True,
              help="Exported model: a name under artifacts/ ($CHEXPLAIN_ARTIFACTS), a folder, an .onnx or an .engine file.")
@click.option("--method", "methods", multiple=True, metavar="METHOD",
              help="gradcam, gradcam++, hirescam, layercam, guided-gradcam or lrp:<composite>; repeatable; 'all' "
                   "adds the CAM variants computed from exposed gradients [default: every method in the graph].")
@click.option("--classes", default=None, metavar="topk:N|all|A,B",
              help="Classes to explain [default: the graph's own choice, e.g. topk:3]. With an in-graph top-k, "
                   "topk:N keeps the N most probable; a graph exported with --classes input takes all or names.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("explanations"),
              show_default=True, help="Output folder: <out>/<image>/ per radiograph and <out>/index.json.")
@click.option("--opacity", type=click.FloatRange(0, 1), default=0.6, show_default=True, help="Heatmap opacity.")
@click.option("--no-arrays", is_flag=True, help="Skip the .npy maps (they are float32 at the original resolution).")
@click.option("--json", "as_json", is_flag=True, help="Print index.json (schema chexplain.explain/1) to stdout.")
@click.option("--threshold", "thresholds", multiple=True, metavar="[CLASS=]T", help="As for predict; repeatable.")
@click.option("--backend", type=click.Choice(["auto", "tensorrt", "onnxruntime"]), default="auto",
              show_default=True, help=BACKEND_HELP)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for ONNX Runtime.")
@click.option("--allow-any-view", is_flag=True, help="Also explain non-chest and lateral DICOMs.")
@click.option("--report", "with_report", is_flag=True,
              help="Also write a self-contained HTML report per radiograph (report.html) and <out>/index.html.")
@click.option("--patient-name", is_flag=True, help="Show the DICOM patient name and ID in the reports (hidden by default).")
def explain(inputs, model, methods, classes, out_dir, opacity, no_arrays, as_json, thresholds, backend, threads,
            allow_any_view, with_report, patient_name) -> None:
    """Explain radiographs: probabilities and, per class and method, a heatmap on the original image.

    Writes overlays (PNG; sequential colours for CAMs, blue-white-red for signed LRP), the
    maps as .npy on the original pixel grid, a side-by-side sheet per image and index.json.
    Exit code 0 when every input was explained, 1 when some failed, 2 on usage errors.
    """
    from .predict_output import json_document
    from .runtime.backends import open_backend
    from .runtime.errors import ModelNotFoundError
    from .runtime.explain import (
        ExplanationWriter, explain_record, graph_methods, graph_top_k, input_targets, run_explain, select_methods,
    )
    from .runtime.predict import Predictor
    from .runtime.reader import expand_inputs

    try:
        engine = open_backend(model, backend, threads=threads, notify=_note)
        settings = engine.manifest.explanations
        chosen = select_methods(graph_methods(settings), methods)
        keep = graph_top_k(settings, classes)
        targets = input_targets(settings, classes, engine.manifest.classes)
    except (ModelNotFoundError, ImportError, ValueError) as error:
        raise click.UsageError(str(error)) from None
    if with_report and no_arrays:
        raise click.UsageError("--report draws the maps from the saved arrays: drop --no-arrays")
    manifest = engine.manifest
    predictor = Predictor(engine, parse_thresholds(thresholds, manifest.classes), allow_any_view=allow_any_view)
    paths = expand_inputs(inputs)
    if not paths:
        _error(f"no radiographs found in {', '.join(inputs)}")
        sys.exit(EXIT_SOME_FAILED)
    writer = ExplanationWriter(out_dir, chosen, opacity=opacity, arrays=not no_arrays)
    if not as_json:
        click.echo(manifest.banner())
        click.echo(f"backend: {engine.describe()}; methods: {', '.join(m.label for m in chosen)}")
    predictions, records = [], []
    for index, (prediction, explained, sheet_path) in enumerate(run_explain(predictor, paths, writer, keep, targets), 1):
        predictions.append(prediction)
        records.append(explain_record(prediction, explained, sheet_path))
        if not prediction.ok:
            _error(f"{prediction.input}: {prediction.error}")
        elif not as_json:
            listed = ", ".join(f"{e.name} {e.probability:.2f}" for e in explained)
            click.echo(f"[{index}/{len(paths)}] {prediction.input}: explained {listed} "
                       f"({prediction.timing_ms['total']:.0f} ms) -> {sheet_path}")
    document = json_document(predictions, manifest, str(engine.path), engine.describe(), predictor.thresholds)
    document.update(schema="chexplain.explain/1", results=records, banner=manifest.banner(),
                    methods=[m.label for m in chosen], explanations=settings)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "index.json").write_text(json.dumps(document, indent=2) + "\n")
    if with_report:
        _write_reports(out_dir, document, patient_name, quiet=as_json)
    click.echo(json.dumps(document, indent=2) if as_json else f"index: {out_dir / 'index.json'}")
    failed = sum(not p.ok for p in predictions)
    if failed:
        _warning(f"{failed} of {len(predictions)} inputs failed")
        sys.exit(EXIT_SOME_FAILED)


@main.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True,
              help="Model name or checkpoint file (chexplain, torchvision, TorchXRayVision or CheXNet style).")
@click.option("--out", "out_root", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Output root [default: artifacts/ or $CHEXPLAIN_ARTIFACTS]; writes <out>/<model>/model.onnx.")
@click.option("--images", "image_dir", type=click.Path(exists=True, path_type=Path), default=None,
              help="Radiographs for the parity check [default: the bundled samples].")
@click.option("--opset", type=click.IntRange(17, 20), default=20, show_default=True,
              help="ONNX opset (TensorRT 10.3 on JetPack 6 parses up to 20).")
@click.option("--kind", type=click.Choice(["auto", "chexplain", "torchvision", "torchxrayvision", "chexnet"]),
              default="auto", show_default=True, help="Checkpoint format.")
@click.option("--source-classes", default=None, metavar="A,B,...",
              help="Names of the checkpoint's outputs, in order, when they are not the 14 CheXpert classes.")
@click.option("--xrv-weights", default="all", show_default=True,
              help="Which TorchXRayVision weights a file holds (all, nih, pc, chex, mimic_nb, mimic_ch, rsna).")
@click.option("--name", default=None, help="Model name for the artifacts folder [default: from the checkpoint].")
@click.option("--trust-pickle", is_flag=True, help="Allow checkpoints that hold pickled objects (runs their code).")
@click.option("--explain", "explain", default="gradcam,lrp:epsilon", show_default=True, metavar="METHODS",
              help="Explanations in the graph: gradcam, gradcam++, hirescam, layercam, guided-gradcam, "
                   "lrp:<composite> (epsilon, z, alpha2beta1, alpha1beta0, epsilon-plus, epsilon-plus-flat, "
                   "epsilon-alpha2beta1, epsilon-gamma-box, deep-taylor); comma-separated; 'none' for the classifier alone.")
@click.option("--classes", "classes", default="topk:3", show_default=True, metavar="all|topk:N|input|A,B",
              help="Classes explained per image: every class, the N most probable (chosen in the graph), "
                   "a 'targets' input, or a fixed list of class names.")
@click.option("--layer", default="features.norm5", show_default=True, help="Grad-CAM target layer.")
@click.option("--epsilon", type=float, default=1.0, show_default=True, help="Epsilon of the LRP epsilon rules.")
@click.option("--expose-gradients", is_flag=True,
              help="Also output the Grad-CAM layer's activations and class gradients (any CAM variant can be computed from them).")
@click.option("--merge-batchnorm", is_flag=True,
              help="Canonizer: fold each BatchNorm into the convolution it directly follows before applying LRP rules.")
@click.option("--precision", type=click.Choice(["fp32", "fp16", "mixed"]), default="fp32", show_default=True,
              help="Precision written into the graph: fp32; mixed (classifier forward in FP16, explanations in FP32: "
                   "for TensorRT 11 and ONNX Runtime CUDA); fp16 everywhere (fast, but LRP maps do not survive it).")
@click.option("--triton", "triton_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also write a Triton model repository here (<model>-onnx with config.pbtxt, dynamic batching).")
def export(model, out_root, image_dir, opset, kind, source_classes, xrv_weights, name, trust_pickle,
           explain, classes, layer, epsilon, expose_gradients, merge_batchnorm, precision, triton_dir) -> None:
    """Export a model and its explanations to one ONNX graph, then check parity with PyTorch."""
    try:
        from .export.pipeline import export_model
        from .models.checkpoints import CheckpointError
        from .runtime.backends import artifacts_dir
        from .runtime.reader import expand_inputs
    except ImportError as error:
        raise click.UsageError(f"export needs torch and onnx ({error}): pip install 'chexplain[export,cpu]'") from None
    images = expand_inputs([image_dir]) if image_dir else sample_images()
    options = {"kind": kind, "xrv_weights": xrv_weights, "trust_pickle": trust_pickle, "name": name}
    if source_classes:
        options["source_classes"] = [c.strip() for c in source_classes.split(",")]
    if model == DEFAULT_MODEL:  # the bundled checkpoint: its format is known; only the name can change
        options = {"name": name}
    try:
        report = export_model(model, out_root or artifacts_dir(), images, opset=opset, checkpoint_options=options,
                              explain=explain, classes=classes, layer=layer, epsilon=epsilon,
                              expose_gradients=expose_gradients, merge_batchnorm=merge_batchnorm,
                              precision=precision, log=click.echo)
    except (CheckpointError, ValueError) as error:
        _error(str(error))
        sys.exit(EXIT_SOME_FAILED)
    if triton_dir:
        from .export.triton import add_onnx_model

        folder = add_onnx_model(triton_dir, Path(report["onnx"]["path"]), report["model"])
        click.echo(f"  Triton model {folder} (build the TensorRT model on the server: chexplain build-engine ... --triton {triton_dir})")
    if not report["parity"]["passed"]:
        failed = ", ".join(k for k, v in report["parity"]["outputs"].items() if not v["passed"])
        if precision == "fp32":
            overflowing = [k for k, v in report["parity"]["outputs"].items() if v["criterion"].endswith("is finite")]
            if overflowing:
                _error(f"PyTorch's own {', '.join(overflowing)} holds NaN or inf on these radiographs: the rules overflow on "
                       f"this model (e.g. lrp:z divides by pre-activations near zero); choose another composite, e.g. lrp:epsilon")
            _error(f"the exported graph does not match PyTorch within tolerance ({failed}); see the report")
        else:
            _error(f"the {precision} graph's {failed} fall below the precision plan's criteria (see the report); "
                   f"the graph was written, but --precision mixed keeps the heatmaps faithful")
        sys.exit(EXIT_SOME_FAILED)


@main.command("build-engine")
@click.argument("onnx_path", metavar="MODEL.onnx", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--precision", type=click.Choice(["fp32", "fp16", "mixed"]), default="mixed", show_default=True,
              help="mixed: forward in FP16, explanations in FP32 (faithful heatmaps); fp16 everywhere; fp32.")
@click.option("--batch", "batch_text", default="1:1:8", show_default=True, metavar="MIN:OPT:MAX",
              help="Batch sizes of the optimisation profile (N alone: a fixed batch).")
@click.option("--workspace", "workspace_gb", type=click.FloatRange(min=0.1), default=4.0, show_default=True,
              metavar="GB", help="Builder workspace limit in GiB.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Timing cache to reuse and update [default: timing.<gpu>.trt<version>.cache beside the graph].")
@click.option("--dla", "dla_core", type=click.IntRange(min=0), default=None, metavar="N",
              help="Build for DLA core N (Jetson Orin AGX/NX; TensorRT 10), layers the DLA lacks fall back to the GPU.")
@click.option("--triton", "triton_dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Also add the engine to this Triton model repository (<model>-tensorrt, tensorrt_plan).")
@click.option("--if-available", is_flag=True,
              help="Where TensorRT or an NVIDIA GPU is missing, say so and exit 0 (what `make export` does).")
def build_engine(onnx_path, precision, batch_text, workspace_gb, timing_cache, dla_core, triton_dir, if_available) -> None:
    """Build a TensorRT engine from an exported graph, on the GPU that will run it.

    Writes model.<gpu>.trt<version>.<precision>.engine and its .json sidecar beside the graph;
    predict and explain then use it (--backend auto). TensorRT 10 and 11 are supported.
    """
    try:
        from .export.tensorrt_build import (
            BatchRange, EngineBuildError, build_engine as build, tensorrt_available,
        )
    except ImportError as error:
        raise click.UsageError(f"build-engine needs onnx ({error}): pip install 'chexplain[tensorrt]'") from None
    try:
        batch = BatchRange.parse(batch_text)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="--batch") from None
    if if_available:
        ok, why = tensorrt_available()
        if not ok:
            _note(f"no TensorRT engine built: {why}. The ONNX graph {onnx_path} stays the model (ONNX Runtime runs it).")
            return
    try:
        result = build(onnx_path, precision, batch=batch, workspace_gb=workspace_gb, timing_cache=timing_cache,
                       dla_core=dla_core, log=click.echo)
    except (EngineBuildError, ValueError) as error:
        _error(str(error))
        sys.exit(EXIT_SOME_FAILED)
    if triton_dir:
        from .export.triton import add_engine_model
        from .models.manifest import Manifest

        name = Manifest.from_dict(json.loads(result.sidecar.read_text())["manifest"]).name
        click.echo(f"  Triton model {add_engine_model(triton_dir, result.path, name)}")


@main.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True,
              help="Model to time: its bench graphs (one per method, with a targets input) are exported once "
                   "under artifacts/bench/ (needs torch).")
@click.option("--onnx", "onnx_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Time this exported graph as it is instead (its methods and classes).")
@click.option("--engine", "engine_file", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Time this TensorRT engine.")
@click.option("--backend", "backends", default="auto", show_default=True, metavar="LIST",
              help="Backends side by side: auto, onnxruntime, tensorrt (comma-separated).")
@click.option("--precision", "precisions", default="fp32", show_default=True, metavar="LIST",
              help="Precisions side by side: fp32, fp16, mixed (comma-separated).")
@click.option("--batch", "batches", default="1", show_default=True, metavar="LIST", help="Batch sizes, e.g. 1,4,8.")
@click.option("--method", "methods", default="gradcam,lrp:epsilon", show_default=True, metavar="LIST",
              help="Methods (none, gradcam, gradcam++, ..., lrp:<composite>), each in its own graph; "
                   "forward only is always timed as the baseline.")
@click.option("--classes", "classes", default="1,3", show_default=True, metavar="LIST",
              help="Classes explained per image, e.g. 1,3,14.")
@click.option("--warmup-s", type=click.FloatRange(min=0), default=2.0, show_default=True, help="Warm-up seconds per case.")
@click.option("--iterations", type=click.IntRange(min=1), default=None, help="Timed iterations per case [default: 50].")
@click.option("--duration-s", type=click.FloatRange(min=0.1), default=None, help="Or time each case for this long.")
@click.option("--images", "image_dir", type=click.Path(exists=True, path_type=Path), default=None,
              help="Radiographs to run on [default: the bundled samples].")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads (ONNX Runtime and PyTorch).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the results (schema chexplain.bench/1) with the machine's description here.")
@click.option("--markdown", "markdown_out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write the tables as Markdown here.")
@click.option("--compare-reference", is_flag=True,
              help="Also time eager PyTorch, pytorch-grad-cam and Zennit (same classes, same composite), "
                   "interleaved in this process, and print the ratios.")
@click.option("--no-fidelity", is_flag=True, help="Skip comparing the outputs with the FP32 PyTorch explainer.")
def bench(model, onnx_file, engine_file, backends, precisions, batches, methods, classes, warmup_s, iterations,
          duration_s, image_dir, threads, json_out, markdown_out, compare_reference, no_fidelity) -> None:
    """Per-image latency: forward only, + Grad-CAM, + LRP; backends and precisions side by side.

    Reports min, mean, median, p90/p95/p99, max, throughput and the coefficient of variation
    of the inference call, the stages from file to overlay, memory, and how far the outputs
    are from the FP32 PyTorch explainer.
    """
    from .benchmark import Settings, parse_list, run_benchmark
    from .runtime.bench import (
        LATENCY_HEADER, REFERENCE_HEADER, STAGE_HEADER, latency_rows, markdown_report, stage_rows, text_table,
    )
    from .runtime.errors import ModelNotFoundError
    from .runtime.reader import expand_inputs

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
            threads=threads, fidelity=not no_fidelity, compare_reference=compare_reference,
        )
    except ValueError as error:
        raise click.UsageError(str(error)) from None
    unknown = [b for b in settings.backends if b not in ("auto", "onnxruntime", "tensorrt")]
    unknown += [p for p in settings.precisions if p not in ("fp32", "fp16", "mixed")]
    unknown += [str(n) for n in settings.batches + settings.classes if n < 1]
    if unknown:
        raise click.UsageError(f"not a backend, precision, batch or class count: {', '.join(unknown)}")
    if not settings.images:
        raise click.UsageError(f"no radiographs found in {image_dir}")
    try:
        document, results, reference_rows = run_benchmark(settings, lambda line: click.echo(line, err=True))
    except (ModelNotFoundError, ImportError, ValueError, RuntimeError) as error:
        _error(str(error))
        sys.exit(EXIT_SOME_FAILED)
    click.echo("latency of the inference call (ms)")
    click.echo("\n".join(text_table(LATENCY_HEADER, latency_rows(results))))
    click.echo("\nfrom file to overlay by stage (medians, ms), memory, fidelity against the FP32 PyTorch explainer")
    click.echo("\n".join(text_table(STAGE_HEADER, stage_rows(results))))
    if reference_rows:
        click.echo("")
        click.echo("\n".join(text_table(REFERENCE_HEADER, reference_rows)))
    for warning in document["warnings"]:
        _warning(warning)
    if json_out:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(document, indent=2) + "\n")
        click.echo(f"results: {json_out}", err=True)
    if markdown_out:
        markdown_out.parent.mkdir(parents=True, exist_ok=True)
        markdown_out.write_text(markdown_report(document, results, reference_rows))
        click.echo(f"tables: {markdown_out}", err=True)


@main.command()
@click.option("--model", "-m", default=DEFAULT_MODEL, show_default=True,
              help="Exported graph with a targets input (chexplain export --classes input): name, folder or .onnx.")
@click.option("--data", "data_root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A phantom dataset (CSV + masks/), e.g. from chexplain phantoms.")
@click.option("--csv", "csv_name", default="valid.csv", show_default=True, help="Which CSV of --data.")
@click.option("--boxes", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Or NIH-style bounding boxes (Image Index, Finding Label, x, y, w, h) for the images in --images.")
@click.option("--images", "image_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder of the radiographs --boxes names.")
@click.option("--method", "--methods", "methods", multiple=True, metavar="METHOD[,METHOD]",
              help="Methods to evaluate, repeatable or comma-separated; 'all' adds the CAM variants computed from "
                   "exposed gradients "
                   "[default: every method in the graph].")
@click.option("--classes", "class_choice", type=click.Choice(["positive", "all"]), default="positive", show_default=True,
              help="Explain each radiograph's findings (positive), or every class: those without ground truth there "
                   "get the metrics that need no region (granularity, sparseness, deletion/insertion).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Explain the first N radiographs with ground truth only (AUROC always covers the whole CSV).")
@click.option("--fraction", type=click.FloatRange(0, 1, min_open=True), default=0.05, show_default=True,
              help="Size of the top region (IoU, connected components) as a share of the pixels.")
@click.option("--steps", type=click.IntRange(min=2), default=10, show_default=True, help="Deletion/insertion steps.")
@click.option("--examples", type=click.IntRange(min=0), default=4, show_default=True,
              help="Example sheets (every method's map, ground truth outlined) for the first N radiographs.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path("evaluation"),
              show_default=True, help="Writes evaluation.json (chexplain.evaluate/1), evaluation.md and examples/.")
@click.option("--backend", type=click.Choice(["auto", "tensorrt", "onnxruntime"]), default="auto", show_default=True,
              help=BACKEND_HELP)
@click.option("--threads", type=click.IntRange(min=1), default=None, help="CPU threads for ONNX Runtime.")
def evaluate(model, data_root, csv_name, boxes, image_dir, methods, class_choice, limit, fraction, steps, examples, out_dir,
             backend, threads) -> None:
    """Measure the explanations against ground truth: pointing game, relevance mass and rank
    accuracy, top-region IoU, granularity, sparseness (Gini), deletion and insertion. With
    --data, also the classifier's AUROC per class on every radiograph of the CSV."""
    from .models.chexpert_csv import read_labels
    from .runtime.backends import open_backend
    from .runtime.errors import ModelNotFoundError
    from .runtime.evaluate import (
        box_cases, classification, classification_markdown, markdown, phantom_cases, require_targets, run_evaluation,
    )
    from .runtime.explain import graph_methods, select_methods

    if (data_root is None) == (boxes is None) or (boxes is not None and image_dir is None):
        raise click.UsageError("give --data (phantoms with masks) or --boxes with --images")
    try:
        engine = open_backend(model, backend, threads=threads, notify=_note)
        methods = [name.strip() for value in methods for name in value.split(",") if name.strip()]
        chosen = select_methods(graph_methods(engine.manifest.explanations), methods)
        cases = phantom_cases(data_root, csv_name) if data_root else box_cases(boxes, image_dir)
        labels = read_labels(data_root / csv_name, data_root, "u-ignore") if data_root else None
        require_targets(engine)
    except (ModelNotFoundError, ImportError, ValueError, OSError) as error:
        raise click.UsageError(str(error)) from None
    cases = cases[:limit] if limit else cases
    if not cases:
        raise click.UsageError("no radiographs with ground truth for the graph's classes")
    click.echo(f"backend: {engine.describe()}; methods: {', '.join(m.label for m in chosen)}; {len(cases)} radiographs",
               err=True)
    scores = None
    if labels is not None:
        with click.progressbar(length=len(labels), label="classifying", file=sys.stderr) as bar:
            scores = classification(engine, labels, progress=lambda index, _: bar.update(1))
    with click.progressbar(length=len(cases), label="explaining", file=sys.stderr) as bar:
        document = run_evaluation(engine, cases, chosen, fraction=fraction, steps=steps, examples=examples,
                                  sheets=out_dir / "examples", all_classes=class_choice == "all",
                                  progress=lambda index, _: bar.update(1))
    document["classification"] = scores
    table = markdown(document["summary"])
    if scores is not None:
        table = (f"Classification ({scores['images']} radiographs of {data_root / csv_name})\n\n"
                 f"{classification_markdown(scores)}\nExplanations\n\n{table}")
        reported = {f["image"] for f in document["failures"]}
        document["failures"] += [f for f in scores["failures"] if f["image"] not in reported]
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "evaluation.json").write_text(json.dumps(document, indent=2) + "\n")
    (out_dir / "evaluation.md").write_text(table)
    click.echo(table)
    for failure in document["failures"]:
        _error(f"{failure['image']}: {failure['error']}")
    click.echo(f"results: {out_dir / 'evaluation.json'}", err=True)
    if document["failures"]:
        sys.exit(EXIT_SOME_FAILED)


@main.command()
@click.option("--data", "data_root", type=click.Path(exists=True, file_okay=False, path_type=Path), required=True,
              help="Folder the CSVs' image paths start from (e.g. the one holding CheXpert-v1.0-small/).")
@click.option("--train-csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Training labels in CheXpert's layout [default: DATA/train.csv].")
@click.option("--valid-csv", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Validation labels [default: DATA/valid.csv]: AUROC per epoch, Youden thresholds.")
@click.option("--uncertainty", type=click.Choice(["u-ones", "u-zeros", "u-ignore"]), default="u-ones", show_default=True,
              help="Uncertain (-1) labels count as positive, as negative, or not at all.")
@click.option("--image-size", type=click.IntRange(min=32), default=224, show_default=True, help="Network input size.")
@click.option("--epochs", type=click.IntRange(min=1), default=3, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=16, show_default=True, help="Per process.")
@click.option("--lr", type=click.FloatRange(min=0, min_open=True), default=1e-4, show_default=True,
              help="AdamW learning rate (cosine schedule to zero).")
@click.option("--weight-decay", type=click.FloatRange(min=0), default=1e-5, show_default=True)
@click.option("--workers", type=click.IntRange(min=0), default=2, show_default=True, help="Data-loading processes.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True)
@click.option("--all-views", is_flag=True, help="Also train on lateral views (frontal only by default).")
@click.option("--no-augment", is_flag=True, help="No random rotation/scale/shift.")
@click.option("--init", "init_checkpoint", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Fine-tune from this checkpoint instead of a fresh seeded DenseNet121.")
@click.option("--name", default="densenet121-trained", show_default=True, help="Model name in the manifest.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Writes last.pt (after every epoch, for --resume) and model.pt (the trained model).")
@click.option("--resume", is_flag=True, help="Continue from OUT/last.pt.")
def train(data_root, train_csv, valid_csv, uncertainty, image_size, epochs, batch_size, lr, weight_decay, workers, seed,
          all_views, no_augment, init_checkpoint, name, out_dir, resume) -> None:
    """Train DenseNet121 on CheXpert-format data; runs under torchrun for several GPUs."""
    try:
        from .models.training import TrainConfig, eta_text, train as run_training
    except ImportError as error:
        raise click.UsageError(f"train needs torch ({error}): pip install 'chexplain[export]'") from None
    train_csv, valid_csv = train_csv or data_root / "train.csv", valid_csv or data_root / "valid.csv"
    for path in (train_csv, valid_csv):
        if not path.is_file():
            raise click.UsageError(f"no label CSV at {path}")
    if (out_dir / "last.pt").exists() and not resume:
        raise click.UsageError(f"{out_dir} holds a training run (last.pt): pass --resume to continue it, or another --out")
    config = TrainConfig(data=data_root, train_csv=train_csv, valid_csv=valid_csv, out=out_dir, uncertainty=uncertainty,
                         image_size=image_size, epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay,
                         workers=workers, seed=seed, frontal_only=not all_views, augment=not no_augment,
                         init=init_checkpoint, name=name, resume=resume)

    def show(step: int, steps: int, loss: float, eta: float) -> None:
        if step in (1, steps) or step % max(steps // 20, 1) == 0:  # about every 5%
            click.echo(f"  step {step}/{steps}  loss {loss:.4f}  eta {eta_text(eta)}", err=True)

    try:
        run_training(config, log=click.echo, progress=show)
    except (ValueError, OSError) as error:
        _error(str(error))
        sys.exit(EXIT_SOME_FAILED)


@main.command()
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), required=True,
              help="Dataset folder: train.csv, valid.csv, phantoms/ (PNGs) and masks/ (one PNG per finding).")
@click.option("--n", "count", type=click.IntRange(min=1), default=5000, show_default=True, help="Number of radiographs.")
@click.option("--seed", type=click.IntRange(min=0), default=0, show_default=True, help="Same seed, same dataset.")
@click.option("--size", type=click.IntRange(min=64), default=1024, show_default=True, help="Width and height in pixels.")
@click.option("--valid-fraction", type=click.FloatRange(0, 0.9), default=0.1, show_default=True,
              help="Share of the radiographs written to valid.csv (the last ones).")
@click.option("--overwrite", is_flag=True, help="Replace a dataset already in --out.")
def phantoms(out_dir, count, seed, size, valid_fraction, overwrite) -> None:
    """Write synthetic frontal chest radiographs with a ground-truth mask per finding, in
    CheXpert's CSV layout (for training the demo model and evaluating explanations)."""
    from .models.phantoms import write_dataset

    if (out_dir / "train.csv").exists() and not overwrite:
        raise click.UsageError(f"{out_dir} already holds a dataset (train.csv); pass --overwrite to replace it")
    with click.progressbar(length=count, label=f"drawing {count} phantoms", file=sys.stderr) as bar:
        last = [0]

        def advance(done: int) -> None:
            bar.update(done - last[0])
            last[0] = done

        train_csv, valid_csv = write_dataset(out_dir, count, seed=seed, size=size, valid_fraction=valid_fraction,
                                             progress=advance)
    click.echo(f"{count} phantoms ({size}x{size}, seed {seed}): {train_csv}, {valid_csv}")


def _write_reports(root: Path, document: dict | None, patient_name: bool, quiet: bool = False) -> None:
    from .runtime.errors import InputError
    from .runtime.reports import write_reports

    try:
        reports, index = write_reports(root, document, patient=patient_name, on_error=_error)
    except InputError as error:
        _error(str(error))
        sys.exit(EXIT_SOME_FAILED)
    if not quiet:
        click.echo(f"reports: {len(reports)}" + (f"; index: {index}" if index else ""), err=True)
    if index is None:
        _error(f"no report written in {root}")
        sys.exit(EXIT_SOME_FAILED)


@main.command()
@click.argument("results_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--patient-name", is_flag=True, help="Show the DICOM patient name and ID (hidden by default).")
def report(results_dir, patient_name) -> None:
    """Write HTML reports for a folder of `chexplain explain` results.

    One self-contained page per radiograph (report.html beside its sheet: the radiograph
    with zoom and pan, the findings against their thresholds, each explained class's maps
    side by side with an opacity slider, the model and the input) and RESULTS_DIR/index.html,
    sortable by each finding's probability. The pages make no network request. Needs the maps
    saved as arrays (explain without --no-arrays) and the inputs where they were explained.
    """
    _write_reports(results_dir, None, patient_name)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(as_json) -> None:
    """Show what is installed (torch, ONNX Runtime providers, TensorRT, GPUs, DICOM decoders)."""
    from .doctor import collect, render

    report = collect()
    click.echo(json.dumps(report, indent=2) if as_json else "\n".join(render(report)))


def _add_node_commands() -> None:
    from .node_commands import serve, watch

    main.add_command(serve)
    main.add_command(watch)


_add_node_commands()
