"""`chexplain evaluate`: how well each exported explanation localises, how granular and
sparse it is, and how faithful to the classifier, over radiographs with ground truth.

Ground truth is a mask per finding (phantoms: ``masks/<image path>/<finding>.png``) or an
NIH-style bounding box (``Image Index, Finding Label, x, y, w, h``). The graph must take a
``targets`` input (``chexplain export --classes input``) so that each image is explained for
its own findings. Localisation is measured on the radiograph's own pixel grid; deletion and
insertion perturb the network input (most relevant pixels first, towards a blurred copy)
and read the class probability from the same graph; robustness compares each map with the
maps of noisy copies of the input (robustness.py). No torch.
"""

from __future__ import annotations

import csv
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ...errors import ConfigError, InputError
from ..backends import Backend, probability_targets
from ..inputs.preprocess import preprocess
from ..inputs.reader import read_radiograph
from ..manifest import CHEXPERT_CLASSES, slug
from ..maps.colour import overlay
from ..maps.methods import GraphMethod
from ..maps.render import at_input_grid, class_maps
from ..maps.sheet import sheet
from .chexpert_csv import LabelTable
from .map_metrics import (
    curve_auc,
    gini,
    high_frequency_energy,
    perturbation_curve,
    pointing_game,
    region_components,
    relevance_mass_accuracy,
    relevance_rank_accuracy,
    top_region_iou,
)
from .metrics import auroc
from .robustness import NOISE_DRAWS, NOISE_LEVELS, level_name, map_robustness, noisy_copies, summarize_robustness

EVALUATE_SCHEMA = "chexplain.evaluate/1"
NIH_TO_CHEXPERT = {
    "Atelectasis": "Atelectasis", "Cardiomegaly": "Cardiomegaly", "Effusion": "Pleural Effusion",
    "Infiltrate": "Lung Opacity", "Infiltration": "Lung Opacity", "Mass": "Lung Lesion", "Nodule": "Lung Lesion",
    "Pneumonia": "Pneumonia", "Pneumothorax": "Pneumothorax",
}
LOCALISATION = ("pointing_game", "mass_accuracy", "rank_accuracy", "top_iou")  # need the finding's region
METRICS = (*LOCALISATION, "gini", "high_frequency", "components", "component_size", "deletion_auc", "insertion_auc")
ABSENT = "classes without ground truth"  # summary row of the classes explained with --classes all


@dataclass
class EvalCase:
    """A radiograph and the ground-truth region of each of its findings (a mask file or a box)."""

    path: Path
    regions: dict[str, Path | tuple[float, float, float, float]] = field(default_factory=dict)

    def mask(self, finding: str, shape: tuple[int, int]) -> np.ndarray:
        region = self.regions[finding]
        if isinstance(region, Path):
            mask = cv2.imread(str(region), cv2.IMREAD_GRAYSCALE)
            if mask is None:
                raise InputError(region, "not a readable mask")
            if mask.shape != shape:
                mask = cv2.resize(mask, shape[::-1], interpolation=cv2.INTER_NEAREST)
            return mask > 127
        x, y, w, h = region
        mask = np.zeros(shape, bool)
        mask[int(round(y)):int(round(y + h)), int(round(x)):int(round(x + w))] = True
        return mask


def phantom_cases(data: Path, csv_name: str = "valid.csv") -> list[EvalCase]:
    """The images of a phantom dataset's CSV with a mask for each positive finding."""
    cases = []
    with (data / csv_name).open(newline="") as handle:
        for row in csv.DictReader(handle):
            relative = Path(row["Path"])
            regions: dict[str, Path | tuple[float, float, float, float]] = {}
            for name in CHEXPERT_CLASSES[1:]:
                mask = data / "masks" / relative.with_suffix("") / f"{slug(name)}.png"
                if row.get(name, "").strip() in ("1", "1.0") and mask.is_file():
                    regions[name] = mask
            if regions:
                cases.append(EvalCase(data / relative, regions))
    return cases


def box_cases(boxes_csv: Path, images: Path) -> list[EvalCase]:
    """NIH ChestX-ray14 boxes (``BBox_List_2017.csv`` layout) for the images found in ``images``."""
    by_image: dict[str, EvalCase] = {}
    with boxes_csv.open(newline="") as handle:
        reader = csv.reader(handle)
        next(reader, None)
        for row in reader:
            if len(row) < 6 or row[1] not in NIH_TO_CHEXPERT or not (images / row[0]).is_file():
                continue
            case = by_image.setdefault(row[0], EvalCase(images / row[0]))
            case.regions[NIH_TO_CHEXPERT[row[1]]] = tuple(float(v) for v in row[2:6])
    return list(by_image.values())


def require_targets(backend: Backend) -> None:
    """Evaluation explains each image for its own findings: the graph needs a targets input."""
    if "targets" not in backend.input_names:
        raise ConfigError(f"{backend.path}: evaluation explains each image's own findings and needs a graph with a "
                         f"targets input: chexplain export --classes input")


def case_inputs(backend: Backend, cases: Sequence[EvalCase]) -> tuple[np.ndarray, list[list[int]]]:
    """The network inputs [N, C, H, W] of the cases and each one's findings as class indices
    (what the randomisation check explains); unreadable radiographs are left out."""
    classes = backend.manifest.classes
    images, targets = [], []
    for case in cases:
        findings = [classes.index(f) for f in case.regions if f in classes]
        try:
            radiograph = read_radiograph(case.path, allow_any_view=True)
        except (InputError, ValueError, OSError):
            continue  # already reported by the evaluation
        if findings:
            images.append(preprocess(radiograph.pixels, backend.manifest.preprocessing)[0])
            targets.append(findings)
    if not images:
        raise ConfigError("no readable radiograph with findings of the graph's classes")
    return np.stack(images), targets


def classification(backend: Backend, table: LabelTable,
                   progress: Callable[[int, str], None] | None = None) -> dict[str, Any]:
    """AUROC per class of the graph's probabilities against a CSV's labels (those ``table``
    does not know, e.g. uncertain ones under u-ignore, left out); unreadable radiographs are
    reported and left out."""
    classes = backend.manifest.classes
    scores = np.zeros((len(table), len(classes)), np.float64)
    readable = np.ones(len(table), bool)
    failures = []
    for row, path in enumerate(table.paths):
        try:
            radiograph = read_radiograph(path, allow_any_view=True)
            image, _ = preprocess(radiograph.pixels, backend.manifest.preprocessing)
            scores[row] = backend.run(image[None], targets=probability_targets(backend, 1, 0))["probabilities"][0]
        except (InputError, ValueError, OSError) as error:
            readable[row] = False
            failures.append({"image": str(path), "error": str(error)})
        if progress:
            progress(row + 1, str(path))
    per_class = {}
    for index, name in enumerate(classes):
        if name not in table.classes:
            continue
        column = table.classes.index(name)
        keep = readable & (table.known[:, column] > 0)
        labels = table.labels[keep, column] > 0
        per_class[name] = {"auroc": auroc(labels, scores[keep, index]), "positives": int(labels.sum()),
                           "negatives": int((~labels).sum())}
    defined = [v["auroc"] for v in per_class.values() if v["auroc"] is not None]
    return {"images": int(readable.sum()), "per_class": per_class,
            "mean_auroc": float(np.mean(defined)) if defined else None, "failures": failures}


def classification_markdown(result: dict[str, Any]) -> str:
    """One row per class: AUROC and the label counts behind it."""
    lines = ["| class | AUROC | positives | negatives |", "| --- | ---: | ---: | ---: |"]
    for name, entry in result["per_class"].items():
        value = "n/a" if entry["auroc"] is None else f"{entry['auroc']:.3f}"
        lines.append(f"| {name} | {value} | {entry['positives']} | {entry['negatives']} |")
    mean = "n/a" if result["mean_auroc"] is None else f"{result['mean_auroc']:.3f}"
    lines.append(f"| mean over defined classes | {mean} | | |")
    return "\n".join(lines) + "\n"


def _blurred(image: np.ndarray) -> np.ndarray:
    """The deletion/insertion baseline: the input with its detail blurred away."""
    sigma = image.shape[-1] / 20
    return np.stack([cv2.GaussianBlur(channel, (0, 0), sigma) for channel in image])


SheetRow = tuple[str, np.ndarray, Sequence[tuple[GraphMethod, np.ndarray]]]  # finding, mask, (method, map)


def example_sheet(gray01: np.ndarray, rows: Sequence[SheetRow]) -> np.ndarray:
    """One row per finding: each method's map on the radiograph with the ground truth outlined in green."""
    lines = []
    for finding, mask, maps in rows:
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        thickness = max(1, round(mask.shape[0] / 256))
        tiles = []
        for method, heat in maps:
            tile = overlay(gray01, heat, method.signed)
            cv2.drawContours(tile, contours, -1, (0, 255, 0), thickness, cv2.LINE_AA)
            tiles.append((method.label, tile))
        lines.append((finding, tiles))
    return sheet(gray01, lines)


def _noisy_maps(backend: Backend, image: np.ndarray, targets: np.ndarray, methods: Sequence[GraphMethod],
                noise_levels: Sequence[float], draws: int, rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    """Per noise level, each method's maps [draws, K, h, w] of noisy copies of the input."""
    noisy = {}
    for level in noise_levels:
        outputs = backend.run(noisy_copies(image, level, draws, rng), targets=np.repeat(targets, draws, axis=0))
        noisy[level_name(level)] = [method.maps(outputs) for method in methods]
    return noisy


def evaluate_case(backend: Backend, case: EvalCase, methods: Sequence[GraphMethod], *, fraction: float,
                  steps: int, sheet_path: Path | None = None, all_classes: bool = False,
                  noise_levels: Sequence[float] = NOISE_LEVELS, draws: int = NOISE_DRAWS,
                  rng: np.random.Generator | None = None) -> list[dict[str, Any]]:
    """Every metric for each finding of one radiograph and each method; with ``all_classes``,
    also the classes without ground truth there (the metrics that need no mask); robustness
    at each of ``noise_levels`` (none: not measured). With ``sheet_path``, also an example
    sheet of the findings' maps and their ground truth."""
    classes = backend.manifest.classes
    findings = [f for f in case.regions if f in classes]
    if not findings:
        return []
    explained = findings + ([c for c in classes if c not in findings] if all_classes else [])
    radiograph = read_radiograph(case.path, allow_any_view=True)
    image, geometry = preprocess(radiograph.pixels, backend.manifest.preprocessing)
    targets = np.array([[classes.index(f) for f in explained]], np.int64)
    outputs = backend.run(image[None], targets=targets)
    noisy = _noisy_maps(backend, image, targets, methods, noise_levels, draws,
                        rng if rng is not None else np.random.default_rng(0))
    baseline = _blurred(image)
    records = []
    shown: dict[str, list[tuple[GraphMethod, np.ndarray]]] = {finding: [] for finding in findings}
    rendered = class_maps(outputs, geometry, methods, targets[0])  # class by class; records go method by method
    for item in sorted(rendered, key=lambda m: methods.index(m.method)):
        method, heat, finding = item.method, item.heat, classes[item.target]
        mask = case.mask(finding, heat.shape) if finding in case.regions else None
        if mask is not None:
            shown[finding].append((method, heat))
        at_input = at_input_grid(item.native, image.shape[1:])
        which, rank = methods.index(method), item.rank - 1
        robustness = {level: map_robustness(at_input, [at_input_grid(maps[which][d, rank], image.shape[1:]) for d in range(draws)])
                      for level, maps in noisy.items()}

        def score(batch: np.ndarray, index: int = classes.index(finding)) -> np.ndarray:
            result = backend.run(batch.astype(np.float32), targets=probability_targets(backend, len(batch), index))
            return result["probabilities"][:, index]

        count, size = region_components(heat, fraction)
        located = {"mask_fraction": float(mask.mean()), "pointing_game": float(pointing_game(heat, mask)),
                   "mass_accuracy": relevance_mass_accuracy(heat, mask),
                   "rank_accuracy": relevance_rank_accuracy(heat, mask),
                   "top_iou": top_region_iou(heat, mask, fraction)} if mask is not None else dict.fromkeys(
                       ("mask_fraction", *LOCALISATION))
        records.append({
            "image": str(case.path), "finding": finding, "method": method.label, "present": mask is not None,
            "probability": float(outputs["probabilities"][0, classes.index(finding)]),
            **located,
            "gini": gini(heat),
            "high_frequency": high_frequency_energy(at_input),
            "components": float(count),
            "component_size": size,
            "deletion_auc": curve_auc(perturbation_curve(score, image, at_input, baseline, steps)),
            "insertion_auc": curve_auc(perturbation_curve(score, image, at_input, baseline, steps, insertion=True)),
            "robustness": robustness,
        })
    if sheet_path is not None:
        rows = [(finding, case.mask(finding, radiograph.size), maps) for finding, maps in shown.items()]
        sheet_path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(sheet_path), example_sheet(radiograph.pixels, rows))
    return records


def _mean(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else None


def summarize(records: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean of each metric per method and finding, per method over all findings, and (with
    --classes all) per method over the classes explained where they have no ground truth."""
    rows = []
    methods = list(dict.fromkeys(r["method"] for r in records))
    for method in methods:
        mine = [r for r in records if r["method"] == method and r.get("present", True)]
        absent = [r for r in records if r["method"] == method and not r.get("present", True)]
        groups = [("all findings", mine)] + [(f, [r for r in mine if r["finding"] == f])
                                             for f in dict.fromkeys(r["finding"] for r in mine)]
        groups += [(ABSENT, absent)] if absent else []
        for finding, group in groups:
            rows.append({"method": method, "finding": finding, "n": len(group),
                         **{m: _mean([r[m] for r in group]) for m in METRICS},
                         "robustness": summarize_robustness(group)})
    return rows


def markdown(rows: Sequence[dict[str, Any]]) -> str:
    header = ["method", "finding", "n", "pointing game", "mass acc.", "rank acc.", "top-5% IoU", "Gini",
              "high-freq. energy", "components", "component px", "deletion AUC (lower better)", "insertion AUC"]
    lines = ["| " + " | ".join(header) + " |", "| --- | --- |" + " ---: |" * (len(header) - 2)]
    for r in rows:
        values = [r["pointing_game"], r["mass_accuracy"], r["rank_accuracy"], r["top_iou"], r["gini"], r["high_frequency"]]
        lines.append(f"| {r['method']} | {r['finding']} | {r['n']} | "
                     + " | ".join("-" if v is None else f"{v:.3f}" for v in values)
                     + f" | {r['components']:.1f} | {r['component_size']:.0f} | {r['deletion_auc']:.3f} | {r['insertion_auc']:.3f} |")
    return "\n".join(lines) + "\n"


def run_evaluation(backend: Backend, cases: Sequence[EvalCase], methods: Sequence[GraphMethod], *, fraction: float = 0.05,
                   steps: int = 10, examples: int = 0, sheets: Path | None = None, all_classes: bool = False,
                   noise_levels: Sequence[float] = NOISE_LEVELS, draws: int = NOISE_DRAWS, seed: int = 0,
                   progress: Callable[[int, str], None] | None = None) -> dict[str, Any]:
    """Evaluate every case (its findings; with ``all_classes`` every class); a radiograph that
    cannot be read is reported and skipped. The first ``examples`` cases also get an example
    sheet in ``sheets``. Case i's noise draws come from seed (``seed``, i): reproducible, and
    independent of which other cases are evaluated."""
    require_targets(backend)
    records, failures = [], []
    for index, case in enumerate(cases, 1):
        sheet_path = None
        if sheets is not None and index <= examples:
            sheet_path = sheets / f"{index:03d}-{slug('-'.join(case.path.with_suffix('').parts[-3:]))}.png"
        try:
            records += evaluate_case(backend, case, methods, fraction=fraction, steps=steps, sheet_path=sheet_path,
                                     all_classes=all_classes, noise_levels=noise_levels, draws=draws,
                                     rng=np.random.default_rng([seed, index]))
        except (InputError, ValueError, OSError) as error:
            failures.append({"image": str(case.path), "error": str(error)})
        if progress:
            progress(index, str(case.path))
    return {"schema": EVALUATE_SCHEMA, "model": backend.manifest.name, "graph": str(backend.path),
            "settings": {"top_fraction": fraction, "perturbation_steps": steps, "baseline": "Gaussian blur (sigma = width / 20)",
                         "classes": "all" if all_classes else "positive",
                         "noise_levels": [level_name(level) for level in noise_levels], "noise_draws": draws,
                         "noise_seed": seed},
            "summary": summarize(records), "records": records, "failures": failures}
