"""Explain radiographs with an explained graph: maps onto the original grid, files, index.

Per image, in ``OUT/<name>/``: for each explained class and method an overlay PNG and the
map as float32 ``.npy`` on the original pixel grid (Grad-CAM upsampled once, straight
from its native resolution; LRP likewise from the network input), and ``sheet.png``
(radiograph, then each method, one row per class). ``OUT/index.json`` lists everything.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ...errors import InputError
from ...grammar import DEFAULT_OPACITY
from ..manifest import slug
from ..maps.colour import overlay
from ..maps.methods import ClassChoice, GraphMethod
from ..maps.render import class_maps, explained_targets
from ..maps.sheet import sheet
from .prediction import Prediction, Predictor


@dataclass
class ExplainedClass:
    name: str
    probability: float
    files: dict[str, dict[str, str]] = field(default_factory=dict)


class ExplanationWriter:
    """Writes each radiograph's overlays, arrays and sheet under one output folder."""

    def __init__(self, out_dir: Path, methods: Sequence[GraphMethod], opacity: float = DEFAULT_OPACITY, arrays: bool = True) -> None:
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

    def write(self, prediction: Prediction, keep: int | None) -> tuple[list[ExplainedClass], Path]:
        radiograph = prediction.radiograph
        folder = self.folder_for(radiograph.path)
        folder.mkdir(parents=True, exist_ok=True)
        classes = list(prediction.probabilities)  # the manifest's classes, in order
        explained: dict[int, ExplainedClass] = {}
        rows: dict[int, list[tuple[str, np.ndarray]]] = {}
        for item in class_maps(prediction.outputs, prediction.geometry, self.methods,
                               explained_targets(prediction.outputs, keep)):
            name = classes[item.target]
            entry = explained.setdefault(item.rank, ExplainedClass(name, prediction.probabilities[name]))
            stem = folder / f"{item.rank}_{slug(name)}_{slug(item.method.label)}"
            heat = item.heat  # on the radiograph's grid, made once for the overlay and the array
            image = overlay(radiograph.pixels, heat, item.method.signed, self.opacity)
            if not cv2.imwrite(str(stem.with_suffix(".png")), image):
                raise InputError(stem.with_suffix(".png"), "cannot write the overlay")
            files = {"overlay": str(stem.with_suffix(".png"))}
            if self.arrays:
                np.save(stem.with_suffix(".npy"), heat)
                files["array"] = str(stem.with_suffix(".npy"))
            entry.files[item.method.label] = files
            rows.setdefault(item.rank, []).append((item.method.label, image))
        sheet_path = folder / "sheet.png"
        cv2.imwrite(str(sheet_path), sheet(radiograph.pixels, [
            (f"{entry.name} p={entry.probability:.2f}", rows[rank]) for rank, entry in explained.items()]))
        return list(explained.values()), sheet_path


def explain_record(prediction: Prediction, explained: Sequence[ExplainedClass], sheet_path: Path | None) -> dict[str, Any]:
    """The per-input record of ``index.json`` (schema chexplain.explain/1)."""
    record = prediction.to_json()
    if prediction.ok:
        record["explained"] = [{"class": e.name, "probability": e.probability, "files": e.files} for e in explained]
        record["sheet"] = str(sheet_path) if sheet_path else None
    return record


def run_explain(predictor: Predictor, paths: Sequence[Path], writer: ExplanationWriter,
                choice: ClassChoice) -> Iterator[tuple[Prediction, list[ExplainedClass], Path | None]]:
    """Yield (prediction, explained classes, sheet path) per input; failures carry their error."""
    for path in paths:
        prediction = predictor.predict(path, **choice.inputs)
        if not prediction.ok:
            yield prediction, [], None
            continue
        try:
            explained, sheet_path = writer.write(prediction, choice.keep)
        except (InputError, OSError) as error:
            prediction.error = f"writing the explanation failed: {error}"
            yield prediction, [], None
            continue
        yield prediction, explained, sheet_path
