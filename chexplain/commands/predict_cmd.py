"""`chexplain predict`: classify radiographs."""

from __future__ import annotations

import json
import sys

import click

from . import console, options


@click.command()
@options.inputs
@options.model()
@options.as_json("Print one JSON document (schema chexplain.predict/1).")
@options.thresholds("Decision threshold for every class (0.4) or one (Cardiomegaly=0.3); repeatable.")
@options.backend()
@options.threads()
@options.allow_any_view("Also classify DICOMs whose BodyPartExamined is not CHEST, and lateral views.")
@options.verbosity
def predict(inputs, model, as_json, thresholds, backend, threads, allow_any_view) -> None:
    """Classify radiographs (PNG, JPEG, DICOM; directories are searched).

    Exit code 0 when every input was classified, 1 when some failed, 2 on usage errors.
    """
    from ..runtime.inputs.reader import expand_inputs
    from ..runtime.results.documents import failed_count, json_document, text_lines
    from ..runtime.results.prediction import Predictor

    with options.open_model(model, backend, threads) as engine:
        manifest = engine.manifest
        predictor = Predictor(engine, options.parse_thresholds(thresholds, manifest.classes),
                              allow_any_view=allow_any_view)
        paths = expand_inputs(inputs)
        if not paths:
            console.fail(f"no radiographs found in {', '.join(inputs)}")
        if not as_json:
            click.echo(manifest.banner())
            click.echo(f"backend: {engine.describe()}")
        predictions = []
        show_bar = as_json and len(paths) > 1 and console.verbosity() >= 0
        with click.progressbar(paths, label="classifying", file=sys.stderr, hidden=not show_bar) as bar:
            for index, path in enumerate(bar, 1):
                prediction = predictor.predict(path)
                predictions.append(prediction)
                if not prediction.ok:
                    console.error(f"{prediction.input}: {prediction.error}")
                elif not as_json:
                    counter = f"[{index}/{len(paths)}] " if len(paths) > 1 else ""
                    click.echo(counter + "\n".join(text_lines(prediction, predictor.thresholds)))
        if as_json:
            document = json_document(predictions, manifest, str(engine.path), engine.describe(), predictor.thresholds)
            click.echo(json.dumps(document, indent=2))
    console.exit_for_failures(failed_count(predictions), len(predictions))
