"""`chexplain evaluate`: the explanations against ground truth, and the classifier's AUROC."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from ..errors import ChexplainError, ConfigError, MissingDependency
from ..grammar import parse_list, requested_methods
from . import console, options

if TYPE_CHECKING:
    from ..runtime.backends import Backend
    from ..runtime.evaluation.scoring import EvalCase


@click.command()
@options.model("Exported graph with a targets input (chexplain export --classes input): name, folder or .onnx.")
@click.option("--data", "data_root", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="A phantom dataset (CSV + masks/), e.g. from chexplain phantoms.")
@click.option("--csv", "csv_name", default="valid.csv", show_default=True, help="Which CSV of --data.")
@click.option("--boxes", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="Or NIH-style bounding boxes (Image Index, Finding Label, x, y, w, h) for the images in --images.")
@click.option("--images", "image_dir", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Folder of the radiographs --boxes names.")
@options.methods("Methods to evaluate, repeatable or comma-separated; 'all' adds the CAM variants computed from "
                 "exposed gradients [default: every method in the graph].", names=("--method", "--methods", "methods"))
@click.option("--classes", "class_choice", type=click.Choice(["positive", "all"]), default="positive", show_default=True,
              help="Explain each radiograph's findings (positive), or every class: those without ground truth there "
                   "get the metrics that need no region (granularity, sparseness, deletion/insertion).")
@click.option("--limit", type=click.IntRange(min=1), default=None,
              help="Explain the first N radiographs with ground truth only (AUROC always covers the whole CSV).")
@click.option("--auroc/--no-auroc", default=True, show_default=True,
              help="With --data, the classifier's AUROC over every radiograph of the CSV (the same for every graph "
                   "of one model, so a study of several graphs needs it once).")
@click.option("--fraction", type=click.FloatRange(0, 1, min_open=True), default=0.05, show_default=True,
              help="Size of the top region (IoU, connected components) as a share of the pixels.")
@click.option("--steps", type=click.IntRange(min=2), default=10, show_default=True, help="Deletion/insertion steps.")
@click.option("--examples", type=click.IntRange(min=0), default=4, show_default=True,
              help="Example sheets (every method's map, ground truth outlined) for the first N radiographs.")
@click.option("--noise", "noise_text", default="1e-4,1e-3,1e-2", show_default=True,
              help="Robustness: Gaussian noise levels as shares of the input's standard deviation, comma-separated, "
                   "or 'none'.")
@click.option("--draws", type=click.IntRange(min=1), default=3, show_default=True,
              help="Noisy copies per radiograph and level (the worst draw is reported).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the noise draws.")
@click.option("--randomisation", "randomisation_model", default=None, metavar="MODEL",
              help="Also the model-parameter randomisation check (Adebayo et al. 2018) with the PyTorch model the "
                   "graph was exported from: densenet121-chexpert or a checkpoint file. Needs PyTorch.")
@click.option("--randomisation-images", type=click.IntRange(min=1), default=4, show_default=True,
              help="Radiographs (their findings) the randomisation check explains.")
@options.out(Path("evaluation"), "Writes evaluation.json (chexplain.evaluate/1), evaluation.md and examples/.")
@options.backend()
@options.threads()
@options.verbosity
def evaluate(model, data_root, csv_name, boxes, image_dir, methods, class_choice, limit, auroc, fraction, steps, examples,
             noise_text, draws, seed, randomisation_model, randomisation_images, out_dir, backend, threads) -> None:
    """Measure the explanations against ground truth: pointing game, relevance mass and rank
    accuracy, top-region IoU, granularity, sparseness (Gini), deletion and insertion; and their
    robustness to imperceptible input noise (Pearson, SSIM, maximum sensitivity). With --data,
    also the classifier's AUROC per class on every radiograph of the CSV; with --randomisation,
    whether each method's maps change when the model's parameters are randomised."""
    from ..runtime.evaluation.chexpert_csv import read_labels
    from ..runtime.evaluation.scoring import box_cases, classification, phantom_cases, require_targets, run_evaluation
    from ..runtime.evaluation.session import evaluation_document, evaluation_markdown, write_evaluation
    from ..runtime.maps.methods import graph_methods, select_methods

    if (data_root is None) == (boxes is None) or (boxes is not None and image_dir is None):
        raise click.UsageError("give --data (phantoms with masks) or --boxes with --images")
    noise_levels = _noise_levels(noise_text)
    with options.open_model(model, backend, threads) as engine:
        try:
            chosen = select_methods(graph_methods(engine.manifest.explanations), requested_methods(methods))
            cases = phantom_cases(data_root, csv_name) if data_root else box_cases(boxes, image_dir)
            labels = read_labels(data_root / csv_name, data_root, "u-ignore") if data_root and auroc else None
            require_targets(engine)
        except (ChexplainError, OSError) as error:
            raise click.UsageError(str(error)) from None
        cases = cases[:limit] if limit else cases
        if not cases:
            raise click.UsageError("no radiographs with ground truth for the graph's classes")
        console.info(f"backend: {engine.describe()}; methods: {', '.join(m.label for m in chosen)}; "
                     f"{len(cases)} radiographs", err=True)
        scores = None
        if labels is not None:
            with _bar(len(labels), "classifying") as bar:
                scores = classification(engine, labels, progress=lambda index, _: bar.update(1))
        with _bar(len(cases), "explaining") as bar:
            evaluation = run_evaluation(engine, cases, chosen, fraction=fraction, steps=steps, examples=examples,
                                        sheets=out_dir / "examples", all_classes=class_choice == "all",
                                        noise_levels=noise_levels, draws=draws, seed=seed,
                                        progress=lambda index, _: bar.update(1))
        document = evaluation_document(evaluation, scores)
        if randomisation_model is not None:
            document["randomisation"] = _randomisation(engine, randomisation_model, cases[:randomisation_images],
                                                       [m.label for m in chosen], seed)
    table = evaluation_markdown(document, data_root / csv_name if data_root else None, draws)
    written = write_evaluation(out_dir, document, table)
    click.echo(table)
    for failure in document["failures"]:
        console.error(f"{failure['image']}: {failure['error']}")
    console.info(f"results: {written}", err=True)
    if document["failures"]:
        sys.exit(console.EXIT_SOME_FAILED)


def _bar(length: int, label: str) -> Any:
    """A progress bar on stderr (none under --quiet)."""
    return click.progressbar(length=length, label=label, file=sys.stderr, hidden=console.verbosity() < 0)


def _noise_levels(text: str) -> list[float]:
    """``1e-4,1e-3`` -> [1e-4, 1e-3]; ``none`` -> [] (robustness not measured)."""
    if text.strip().lower() == "none":
        return []
    try:
        levels = parse_list(text, float)
    except ConfigError:
        raise click.BadParameter(f"{text!r}: expected noise levels such as 1e-4,1e-3,1e-2, or none",
                                 param_hint="--noise") from None
    if any(not 0 < level < 1 for level in levels):
        raise click.BadParameter(f"{text!r}: each level is a share of the input's std, between 0 and 1",
                                 param_hint="--noise")
    return list(dict.fromkeys(levels))


def _randomisation(engine: Backend, model_spec: str, cases: list[EvalCase], labels: list[str],
                   seed: int) -> dict[str, Any]:
    """The cascading randomisation check in PyTorch, for the graph's methods as exported."""
    from ..optional import require

    try:
        require("torch", "the randomisation check (--randomisation)")
    except MissingDependency as error:
        raise click.UsageError(str(error)) from None
    from ..explain.sanity import randomisation_check, randomisation_stages
    from ..export.explained import methods_from_manifest
    from ..models.zoo import load_model
    from ..runtime.backends import probability_targets
    from ..runtime.evaluation.scoring import case_inputs

    try:
        model = load_model(model_spec)[0].eval()
        images, targets = case_inputs(engine, cases)
        graph = engine.run(images[:1], targets=probability_targets(engine, 1, 0))["probabilities"]
        methods = methods_from_manifest(engine.manifest.explanations, labels)
        stages = randomisation_stages(model)
        console.info(f"randomisation check: {len(stages)} blocks, {len(images)} radiographs", err=True)
        with click.progressbar(length=len(stages), label="randomising", file=sys.stderr,
                               hidden=console.verbosity() < 0) as bar:
            return randomisation_check(model, methods, images, targets, graph, seed=seed,
                                       progress=lambda index, _: bar.update(1))
    except (ChexplainError, OSError) as error:
        raise click.UsageError(f"--randomisation {model_spec}: {error}") from None
