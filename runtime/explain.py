"""Explain radiographs with an explained graph: maps onto the original grid, files, index.

Per image, in ``OUT/<name>/``: for each explained class and method an overlay PNG and the
map as float32 ``.npy`` on the original pixel grid (Grad-CAM upsampled once, straight
from its native resolution; LRP likewise from the network input), and ``sheet.png``
(radiograph, then each method, one row per class). ``OUT/index.json`` lists everything.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..models.manifest import slug
from .cam import VARIANTS, cam
from .errors import InputError
from .heatmaps import overlay, sheet
from .predict import Prediction, Predictor


@dataclass(frozen=True)
class GraphMethod:
    """An explanation the graph outputs, or a CAM variant computed from its exposed gradients."""

    output: str | None  # ONNX output name; None: computed here from target_activations/gradients
    label: str  # gradcam | gradcam++ | ... | lrp:epsilon
    signed: bool

    def maps(self, outputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """[B, K, h, w] at the method's native resolution."""
        if self.output is not None:
            return outputs[self.output]
        return cam(self.label, outputs["target_activations"], outputs["target_gradients"])


def graph_methods(explanations: Mapping[str, Any]) -> list[GraphMethod]:
    """The graph's methods, plus every other CAM variant when it exposes its gradients."""
    methods = []
    for entry in explanations.get("methods", []):
        if entry["family"] == "lrp":
            methods.append(GraphMethod(entry["output"], f"lrp:{entry['composite']}", True))
        else:
            methods.append(GraphMethod(entry["output"], entry["variant"], False))
    if explanations.get("exposed_layer"):
        baked = {m.label for m in methods}
        methods += [GraphMethod(None, variant, False) for variant in VARIANTS if variant not in baked]
    return methods


def select_methods(available: Sequence[GraphMethod], requested: Sequence[str]) -> list[GraphMethod]:
    """The requested methods (``lrp`` means ``lrp:epsilon``); the graph's own outputs when none
    are requested; ``all`` adds the CAM variants computed from exposed gradients."""
    if not available:
        raise ValueError("this graph has no explanations; export it with --explain (e.g. gradcam,lrp:epsilon)")
    if not requested:
        return [m for m in available if m.output is not None]
    if list(requested) == ["all"]:
        return list(available)
    by_label = {m.label: m for m in available}
    chosen = []
    for name in requested:
        label = "lrp:epsilon" if name == "lrp" else name
        if label not in by_label:
            raise ValueError(
                f"method {name!r} is not in the exported graph (it has {', '.join(by_label)}); "
                f"export with --explain {','.join([*by_label, label])}"
            )
        chosen.append(by_label[label])
    return chosen


def input_targets(explanations: Mapping[str, Any], requested: str | None, classes: Sequence[str]) -> np.ndarray | None:
    """For a graph with a ``targets`` input: the class indices ``--classes`` names (``all`` by default)."""
    if not explanations.get("targets_input"):
        return None
    if requested in (None, "", "all"):
        return np.arange(len(classes), dtype=np.int64)[None]
    names = [n.strip() for n in requested.split(",") if n.strip()]
    unknown = [n for n in names if n not in classes]
    if unknown or not names:
        raise ValueError(f"--classes {requested!r}: this graph takes all or class names from: {', '.join(classes)}")
    return np.array([[classes.index(n) for n in names]], dtype=np.int64)


def graph_top_k(explanations: Mapping[str, Any], requested: str | None) -> int | None:
    """How many of the graph's (probability-sorted) targets to keep for ``--classes``."""
    spec = explanations.get("classes", "")
    if requested in (None, "", spec) or explanations.get("targets_input"):
        return None
    if spec.startswith("topk:") and requested.startswith("topk:"):
        k, wanted = int(spec[5:]), int(requested[5:]) if requested[5:].isdigit() else 0
        if 1 <= wanted <= k:
            return wanted
    raise ValueError(f"--classes {requested}: the graph explains {spec or 'no classes'}; "
                     f"re-export with `chexplain export --classes {requested}`")


@dataclass
class ExplainedClass:
    name: str
    probability: float
    files: dict[str, dict[str, str]] = field(default_factory=dict)


class ExplanationWriter:
    """Writes each radiograph's overlays, arrays and sheet under one output folder."""

    def __init__(self, out_dir: Path, methods: Sequence[GraphMethod], opacity: float = 0.6, arrays: bool = True) -> None:
        self.out_dir = out_dir
        self.methods = list(methods)
        self.opacity = opacity
        self.arrays = arrays
        self._used: set[str] = set()

    def folder_for(self, source: Path) -> Path:
        name = slug(source.stem) or "image"
        candidate, n = name, 2
        while candidate in self._used:
            candidate, n = f"{name}-{n}", n + 1
        self._used.add(candidate)
        return self.out_dir / candidate

    def write(self, prediction: Prediction, classes: Sequence[str], keep: int | None) -> tuple[list[ExplainedClass], Path]:
        radiograph, geometry = prediction.radiograph, prediction.geometry
        folder = self.folder_for(radiograph.path)
        folder.mkdir(parents=True, exist_ok=True)
        targets = prediction.outputs["targets"][0][:keep]
        explained, rows = [], []
        for rank, target in enumerate(targets, 1):
            name = classes[int(target)]
            entry = ExplainedClass(name, prediction.probabilities[name])
            overlays = []
            for method in self.methods:
                native = method.maps(prediction.outputs)[0, rank - 1]
                heat = geometry.to_original(native)
                stem = folder / f"{rank}_{slug(name)}_{slug(method.label)}"
                image = overlay(radiograph.pixels, heat, method.signed, self.opacity)
                if not cv2.imwrite(str(stem.with_suffix(".png")), image):
                    raise InputError(stem.with_suffix(".png"), "cannot write the overlay")
                files = {"overlay": str(stem.with_suffix(".png"))}
                if self.arrays:
                    np.save(stem.with_suffix(".npy"), heat)
                    files["array"] = str(stem.with_suffix(".npy"))
                entry.files[method.label] = files
                overlays.append((method.label, image))
            explained.append(entry)
            rows.append((f"{name} p={entry.probability:.2f}", overlays))
        sheet_path = folder / "sheet.png"
        cv2.imwrite(str(sheet_path), sheet(radiograph.pixels, rows))
        return explained, sheet_path


def explain_record(prediction: Prediction, explained: Sequence[ExplainedClass], sheet_path: Path | None) -> dict[str, Any]:
    """The per-input record of ``index.json`` (schema chexplain.explain/1)."""
    record = prediction.to_json()
    if prediction.ok:
        record["explained"] = [{"class": e.name, "probability": e.probability, "files": e.files} for e in explained]
        record["sheet"] = str(sheet_path) if sheet_path else None
    return record


def run_explain(predictor: Predictor, paths: Sequence[Path], writer: ExplanationWriter, keep: int | None,
                targets: np.ndarray | None = None):
    """Yield (prediction, explained classes, sheet path) per input; failures carry their error."""
    classes = predictor.manifest.classes
    inputs = {} if targets is None else {"targets": targets}
    for path in paths:
        prediction = predictor.predict(path, **inputs)
        if not prediction.ok:
            yield prediction, [], None
            continue
        try:
            explained, sheet_path = writer.write(prediction, classes, keep)
        except (InputError, OSError) as error:
            prediction.error = f"writing the explanation failed: {error}"
            yield prediction, [], None
            continue
        yield prediction, explained, sheet_path
