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
              help="Exported model: a name under artifacts/ ($CHEXPLAIN_ARTIFACTS), a folder, or an .onnx file.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document (schema chexplain.predict/1).")
@click.option("--threshold", "thresholds", multiple=True, metavar="[CLASS=]T",
              help="Decision threshold for every class (0.4) or one (Cardiomegaly=0.3); repeatable.")
@click.option("--backend", type=click.Choice(["auto", "onnxruntime"]), default="auto", show_default=True,
              help="Inference backend.")
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
        engine = open_backend(model, backend, threads=threads)
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
def export(model, out_root, image_dir, opset, kind, source_classes, xrv_weights, name, trust_pickle) -> None:
    """Export a model to ONNX with its manifest, then check parity with PyTorch."""
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
    if model == DEFAULT_MODEL:
        options = {}
    try:
        report = export_model(model, out_root or artifacts_dir(), images, opset=opset,
                              checkpoint_options=options, log=click.echo)
    except (CheckpointError, ValueError) as error:
        _error(str(error))
        sys.exit(EXIT_SOME_FAILED)
    if not report["parity"]["passed"]:
        _error("the exported graph does not match PyTorch within tolerance; see the report")
        sys.exit(EXIT_SOME_FAILED)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the findings as JSON.")
def doctor(as_json) -> None:
    """Show what is installed (torch, ONNX Runtime providers, TensorRT, GPUs, DICOM decoders)."""
    from .doctor import collect, render

    report = collect()
    click.echo(json.dumps(report, indent=2) if as_json else "\n".join(render(report)))
