"""Read, preprocess and classify radiographs one by one, with timings and findings."""

from __future__ import annotations

import math
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ...errors import InputError
from ..backends import Backend, probability_targets
from ..inputs.bitmap import MAX_DECODED_BYTES
from ..inputs.preprocess import Geometry, preprocess
from ..inputs.reader import Radiograph, read_radiograph
from ..manifest import Manifest


@dataclass
class Prediction:
    """One input's outcome: probabilities and findings, or the error that stopped it."""

    input: str
    probabilities: dict[str, float] = field(default_factory=dict)
    findings: list[str] = field(default_factory=list)
    image: dict[str, Any] = field(default_factory=dict)
    timing_ms: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    error: str | None = None
    outputs: dict[str, Any] = field(default_factory=dict, repr=False)
    geometry: Geometry | None = field(default=None, repr=False)
    radiograph: Radiograph | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return self.error is None

    def to_json(self) -> dict[str, Any]:
        """The per-input record of the ``--json`` schema."""
        record: dict[str, Any] = {"input": self.input, "status": "ok" if self.ok else "failed"}
        if self.ok:
            record.update(
                probabilities=self.probabilities,
                findings=self.findings,
                image=self.image,
                timing_ms=self.timing_ms,
                warnings=self.warnings,
            )
        else:
            record["error"] = self.error
        return record


def findings_of(probabilities: Mapping[str, float], thresholds: Mapping[str, float]) -> list[str]:
    """Classes at or above their threshold, most probable first."""
    positive = [c for c, p in probabilities.items() if p >= thresholds[c]]
    return sorted(positive, key=lambda c: -probabilities[c])


def model_record(manifest: Manifest, onnx_path: str) -> dict[str, Any]:
    """The model's identity in result documents: name, classes, weights and their hash."""
    return {
        "name": manifest.name,
        "architecture": manifest.architecture,
        "onnx": onnx_path,
        "classes": list(manifest.classes),
        "missing_classes": list(manifest.missing_classes),
        "status": manifest.status,
        "demo_weights": manifest.is_demo,
        "weights": {
            "source": manifest.weights.source,
            "file": manifest.weights.file,
            "sha256": manifest.weights.sha256,
            "training_data": manifest.weights.training_data,
        },
    }


class Predictor:
    """Classifies radiograph files with a backend, under the manifest's thresholds."""

    def __init__(
        self,
        backend: Backend,
        thresholds: Mapping[str, float] | None = None,
        allow_any_view: bool = False,
        max_decoded_bytes: int = MAX_DECODED_BYTES,
        selection: Any = None,
    ) -> None:
        self.backend = backend
        self.manifest = backend.manifest
        self.thresholds = {**self.manifest.thresholds, **(thresholds or {})}
        self.allow_any_view = allow_any_view
        self.max_decoded_bytes = max_decoded_bytes
        self.selection = selection  # which DICOM images are explained (inputs.dicom.Selection; None: the default)

    def predict(self, path: str | Path, **inputs: Any) -> Prediction:
        """One file; an unusable input becomes a failed Prediction, never an exception."""
        try:
            return self._predict(Path(path), inputs)
        except InputError as error:
            return Prediction(input=str(path), error=error.reason)

    def predict_all(self, paths: Sequence[str | Path], **inputs: Any) -> Iterator[Prediction]:
        for path in paths:
            yield self.predict(path, **inputs)

    def _predict(self, path: Path, inputs: Mapping[str, Any]) -> Prediction:
        if "targets" in self.backend.input_names and "targets" not in inputs:
            inputs = {**inputs, "targets": probability_targets(self.backend, 1, 0)}
        start = time.perf_counter()
        radiograph = read_radiograph(path, allow_any_view=self.allow_any_view, max_decoded_bytes=self.max_decoded_bytes,
                                     selection=self.selection)
        decoded = time.perf_counter()
        image, geometry = preprocess(radiograph.pixels, self.manifest.preprocessing)
        prepared = time.perf_counter()
        outputs = self.backend.run(image[None], **inputs)
        done = time.perf_counter()
        if "targets" in inputs:
            outputs.setdefault("targets", inputs["targets"])
        probabilities = {c: float(p) for c, p in zip(self.manifest.classes, outputs["probabilities"][0])}
        if not all(math.isfinite(p) for p in probabilities.values()):
            raise InputError(path, "the model gave non-finite probabilities (NaN or infinity) for this image")
        return Prediction(
            input=str(path),
            probabilities=probabilities,
            findings=findings_of(probabilities, self.thresholds),
            image=radiograph.info,
            timing_ms={
                "read": round((decoded - start) * 1e3, 3),
                "preprocess": round((prepared - decoded) * 1e3, 3),
                "inference": round((done - prepared) * 1e3, 3),
                "total": round((done - start) * 1e3, 3),
            },
            warnings=radiograph.warnings,
            outputs=outputs,
            geometry=geometry,
            radiograph=radiograph,
        )
