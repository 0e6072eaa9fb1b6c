"""Explain one received radiograph into the files the node keeps and sends.

Per instance: ``result.json`` (schema ``chexplain.node/1``: probabilities, findings by
threshold, model identity, methods, timings, the files), one PNG overlay per explained
class and method and, for a DICOM source, one Secondary Capture per class and method (one
new series per method) and optionally a Basic Text SR with the findings. Overlays and
captures are scaled so that their longest side is at most ``max_size``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .. import __version__
from ..models.manifest import slug
from .errors import InputError
from .explain import GraphMethod
from .heatmaps import overlay
from .predict import Prediction, Predictor, model_record

SCHEMA = "chexplain.node/1"
RESULT_FILE = "result.json"
FIRST_SERIES_NUMBER = 9001  # one series per method: 9001, 9002, ...; the SR follows them


def fit(image: np.ndarray, max_size: int) -> np.ndarray:
    """``image`` scaled down (area interpolation) so that its longest side is at most ``max_size``."""
    height, width = image.shape[:2]
    scale = max_size / max(height, width)
    if scale >= 1:
        return image
    return cv2.resize(image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_AREA)


def png_bytes(image: np.ndarray) -> bytes:
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise RuntimeError("PNG encoding failed")
    return encoded.tobytes()


@dataclass
class InstanceProcessor:
    """Runs the predictor and turns its outputs into the instance's result files."""

    predictor: Predictor
    methods: Sequence[GraphMethod]
    keep: int | None = None
    targets: np.ndarray | None = None
    opacity: float = 0.6
    max_size: int = 1024
    structured_report: bool = False

    def process(self, item: Path, origin: Mapping[str, Any] | None = None) -> tuple[dict[str, bytes], dict[str, Any]]:
        """The files (name -> bytes) and the result record; InputError for an input that cannot be explained."""
        inputs = {} if self.targets is None else {"targets": self.targets}
        prediction = self.predictor.predict(item, **inputs)
        if not prediction.ok:
            raise InputError(item, prediction.error or "failed")
        start = time.perf_counter()
        source = prediction.radiograph.header  # DICOM inputs only
        files: dict[str, bytes] = {}
        explained = self._explain(prediction, source, files)
        record = self._record(item, prediction, origin or {}, explained)
        if source is not None and self.structured_report:
            files["sr.dcm"] = self._report(source, prediction)
            record["structured_report"] = "sr.dcm"
        record["timing_ms"]["results"] = round((time.perf_counter() - start) * 1e3, 3)
        files[RESULT_FILE] = (json.dumps(record, indent=2) + "\n").encode()
        return files, record

    def _explain(self, prediction: Prediction, source: Any, files: dict[str, bytes]) -> list[dict[str, Any]]:
        classes = self.predictor.manifest.classes
        radiograph, geometry = prediction.radiograph, prediction.geometry
        series = {}
        if source is not None:
            from pydicom.uid import generate_uid

            series = {m.label: generate_uid() for m in self.methods}
        explained = []
        targets = prediction.outputs["targets"][0][: self.keep]
        for rank, target in enumerate(targets, 1):
            name = classes[int(target)]
            entry: dict[str, Any] = {"class": name, "probability": prediction.probabilities[name], "files": {}}
            for index, method in enumerate(self.methods):
                heat = geometry.to_original(method.maps(prediction.outputs)[0, rank - 1])
                image = fit(overlay(radiograph.pixels, heat, method.signed, self.opacity), self.max_size)
                stem = f"{rank}-{slug(name)}-{slug(method.label)}"
                files[f"overlay-{stem}.png"] = png_bytes(image)
                written = {"overlay": f"overlay-{stem}.png"}
                if source is not None:
                    written.update(self._capture(source, image, stem, name, entry["probability"], method.label,
                                                 series[method.label], FIRST_SERIES_NUMBER + index, rank, files))
                entry["files"][method.label] = written
            explained.append(entry)
        return explained

    def _capture(self, source: Any, image: np.ndarray, stem: str, name: str, probability: float, method: str,
                 series_uid: str, series_number: int, rank: int, files: dict[str, bytes]) -> dict[str, str]:
        from .secondary_capture import secondary_capture, to_bytes

        manifest = self.predictor.manifest
        captions = (f"{name}  p={probability:.2f}  {method}  (model {manifest.name})",)
        if manifest.is_demo:
            captions += (manifest.banner().split(" | ")[-1],)
        ds = secondary_capture(
            source, image, series_uid=series_uid, series_number=series_number, instance_number=rank,
            series_description=f"chexplain {method} - NOT FOR DIAGNOSTIC USE", captions=captions,
            derivation=f"{method} heatmap for {name} (p={probability:.3f}) by chexplain {__version__}, model {manifest.name}",
        )
        files[f"sc-{stem}.dcm"] = to_bytes(ds)
        return {"secondary_capture": f"sc-{stem}.dcm", "sop_instance_uid": str(ds.SOPInstanceUID)}

    def _report(self, source: Any, prediction: Prediction) -> bytes:
        from pydicom.uid import generate_uid

        from .secondary_capture import to_bytes
        from .structured_report import basic_text_sr

        manifest = self.predictor.manifest
        ds = basic_text_sr(source, prediction.probabilities, self.predictor.thresholds,
                           model_description=manifest.banner(), series_uid=generate_uid(),
                           series_number=FIRST_SERIES_NUMBER + len(self.methods))
        return to_bytes(ds)

    def _record(self, item: Path, prediction: Prediction, origin: Mapping[str, Any],
                explained: list[dict[str, Any]]) -> dict[str, Any]:
        backend = self.predictor.backend
        manifest = self.predictor.manifest
        return {
            "schema": SCHEMA,
            "chexplain_version": __version__,
            "item": item.name.split(".", 1)[0],
            "origin": dict(origin),
            "status": "ok",
            "banner": manifest.banner(),
            "model": model_record(manifest, str(backend.path)),
            "backend": backend.describe(),
            "thresholds": dict(self.predictor.thresholds),
            "probabilities": prediction.probabilities,
            "findings": prediction.findings,
            "image": prediction.image,
            "methods": [m.label for m in self.methods],
            "explained": explained,
            "structured_report": None,
            "timing_ms": dict(prediction.timing_ms),
            "warnings": prediction.warnings,
        }
