"""`chexplain explain`: heatmaps on the original radiographs, index.json, optional reports."""

from __future__ import annotations

import json
from pathlib import Path

import click

from ..errors import ConfigError
from ..grammar import DEFAULT_OPACITY, requested_methods
from . import console, options
from .report_cmd import write_reports


@click.command()
@options.inputs
@options.model()
@options.methods("gradcam, gradcam++, hirescam, layercam, guided-gradcam or lrp:<composite>; repeatable or "
                 "comma-separated; 'all' adds the CAM variants computed from exposed gradients "
                 "[default: every method in the graph].")
@options.classes("Classes to explain [default: the graph's own choice, e.g. topk:3]. With an in-graph top-k, "
                 "topk:N keeps the N most probable; a graph exported with --classes input takes all or names.")
@options.out(Path("explanations"), "Output folder: <out>/<image>/ per radiograph and <out>/index.json.")
@click.option("--opacity", type=click.FloatRange(0, 1), default=DEFAULT_OPACITY, show_default=True, help="Heatmap opacity.")
@click.option("--no-arrays", is_flag=True, help="Skip the .npy maps (they are float32 at the original resolution).")
@options.as_json("Print index.json (schema chexplain.explain/1) to stdout.")
@options.thresholds("As for predict; repeatable.")
@options.backend()
@options.threads()
@options.allow_any_view("Also explain non-chest and lateral DICOMs.")
@click.option("--report", "with_report", is_flag=True,
              help="Also write a self-contained HTML report per radiograph (report.html) and <out>/index.html.")
@click.option("--patient-name", is_flag=True, help="Show the DICOM patient name and ID in the reports (hidden by default).")
@options.verbosity
def explain(inputs, model, methods, classes, out_dir, opacity, no_arrays, as_json, thresholds, backend, threads,
            allow_any_view, with_report, patient_name) -> None:
    """Explain radiographs: probabilities and, per class and method, a heatmap on the original image.

    Writes overlays (PNG; sequential colours for CAMs, blue-white-red for signed LRP), the
    maps as .npy on the original pixel grid, a side-by-side sheet per image and index.json.
    Exit code 0 when every input was explained, 1 when some failed, 2 on usage errors.
    """
    from ..runtime.inputs.reader import expand_inputs
    from ..runtime.maps.methods import choose_classes, graph_methods, select_methods
    from ..runtime.results.documents import explain_document, failed_count
    from ..runtime.results.explanation_files import ExplanationWriter, explain_record, run_explain
    from ..runtime.results.prediction import Predictor

    if with_report and no_arrays:
        raise click.UsageError("--report draws the maps from the saved arrays: drop --no-arrays")
    with options.open_model(model, backend, threads) as engine:
        manifest = engine.manifest
        try:
            chosen = select_methods(graph_methods(manifest.explanations), requested_methods(methods))
            choice = choose_classes(manifest.explanations, classes, manifest.classes)
        except ConfigError as error:
            raise click.UsageError(str(error)) from None
        predictor = Predictor(engine, options.parse_thresholds(thresholds, manifest.classes),
                              allow_any_view=allow_any_view)
        paths = expand_inputs(inputs)
        if not paths:
            console.fail(f"no radiographs found in {', '.join(inputs)}")
        writer = ExplanationWriter(out_dir, chosen, opacity=opacity, arrays=not no_arrays)
        if not as_json:
            click.echo(manifest.banner())
            click.echo(f"backend: {engine.describe()}; methods: {', '.join(m.label for m in chosen)}")
        predictions, records = [], []
        for index, (prediction, explained, sheet_path) in enumerate(run_explain(predictor, paths, writer, choice), 1):
            predictions.append(prediction)
            records.append(explain_record(prediction, explained, sheet_path))
            if not prediction.ok:
                console.error(f"{prediction.input}: {prediction.error}")
            elif not as_json:
                listed = ", ".join(f"{e.name} {e.probability:.2f}" for e in explained)
                console.info(f"[{index}/{len(paths)}] {prediction.input}: explained {listed} "
                             f"({prediction.timing_ms['total']:.0f} ms) -> {sheet_path}")
        document = explain_document(predictions, records, manifest, str(engine.path), engine.describe(),
                                    predictor.thresholds, [m.label for m in chosen])
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "index.json").write_text(json.dumps(document, indent=2) + "\n")
    if with_report:
        write_reports(out_dir, document, patient_name, quiet=as_json)
    click.echo(json.dumps(document, indent=2) if as_json else f"index: {out_dir / 'index.json'}")
    console.exit_for_failures(failed_count(predictions), len(predictions))
