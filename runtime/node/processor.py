"""Explain one received radiograph into the files the node keeps and sends.

Per instance: ``result.json`` (schema ``chexplain.node/1``: probabilities, findings by
threshold, model identity, methods, timings, the files), one PNG overlay per explained
class and method and, for a DICOM source, one Secondary Capture per class and method (one
new series per method), optionally an SR with the findings (TID 1500, with the outline of
where each map points, or Basic Text), a Segmentation of where each map points, and a Key
Object Selection that references them all. Overlays and captures are scaled so that their
longest side is at most ``max_size``.

Every DICOM object is built from the source header as ``source_header.result_source`` repairs
it, and on its own: an object that cannot be built is listed in the record's ``failed``
(which object, why, pseudonymised) and the others are kept and sent.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ... import __version__
from ...errors import InputError
from ...grammar import DEFAULT_OPACITY
from ..manifest import slug
from ..maps.methods import ClassChoice, GraphMethod
from ..maps.render import class_maps, explained_targets
from ..results.prediction import Prediction, Predictor, model_record
from .events import pseudonymise

SCHEMA = "chexplain.node/1"
RESULT_FILE = "result.json"
FIRST_SERIES_NUMBER = 9001  # one series per method: 9001, 9002, ...; the SR follows them


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
    classes: ClassChoice = ClassChoice()
    opacity: float = DEFAULT_OPACITY
    max_size: int = 1024
    structured_report: bool = False
    sr_template: str = "tid1500"  # or "basic-text"
    compress: bool = True  # Secondary Captures compressed losslessly (JPEG-LS) where an encoder is installed
    segmentation: bool = False  # a SEG of each map's top-relevance region (DICOM inputs)
    key_objects: bool = False  # a KOS referencing the DICOM results of each radiograph

    def algorithm(self) -> Any:
        from .secondary_capture import Algorithm

        manifest = self.predictor.manifest
        return Algorithm(manifest.name, manifest.weights.sha256 or "", tuple(m.label for m in self.methods))

    def process(self, item: Path, origin: Mapping[str, Any] | None = None) -> tuple[dict[str, bytes], dict[str, Any]]:
        """The files (name -> bytes) and the result record; InputError for an input that cannot be explained."""
        prediction = self.predictor.predict(item, **self.classes.inputs)
        if not prediction.ok:
            raise InputError(item, prediction.error or "failed")
        start = time.perf_counter()
        failed: list[dict[str, str]] = []
        source, repairs = self._source(prediction.radiograph.header, failed)  # DICOM inputs only
        files: dict[str, bytes] = {}
        regions: list[Any] = []
        explained = self._explain(prediction, source, files, regions, failed)
        record = self._record(item, prediction, origin or {}, explained)
        record["header_repairs"] = repairs
        if source is not None and self.structured_report:
            record["structured_report"] = _built("sr.dcm", lambda: self._report(source, prediction, regions), files,
                                                 failed)
        if regions and self.segmentation:
            record["segmentation"] = _built("seg.dcm", lambda: self._segmentation(source, regions), files, failed)
        made = [name for name in files if name.endswith(".dcm")]
        if made and self.key_objects:
            record["key_objects"] = _built("kos.dcm", lambda: self._key_objects([files[n] for n in made]), files, failed)
        record["failed"] = failed
        record["timing_ms"]["results"] = round((time.perf_counter() - start) * 1e3, 3)
        files[RESULT_FILE] = (json.dumps(record, indent=2, allow_nan=False) + "\n").encode()  # strict JSON, always
        return files, record

    @staticmethod
    def _source(header: Any, failed: list[dict[str, str]]) -> tuple[Any, dict[str, str]]:
        """The header every result object copies from, and what had to be repaired in it; None
        (and why, in ``failed``) when its identifying UIDs cannot be copied into new objects
        (a file from the watched folder: the SCP refuses such instances)."""
        if header is None:
            return None, {}
        from .received import IDENTIFIERS, uid_problem
        from .source_header import result_source

        invalid = [f"{keyword} {problem}" for keyword in IDENTIFIERS if (problem := uid_problem(header.get(keyword, "")))]
        if invalid:
            failed.append({"object": "DICOM results", "error": "; ".join(invalid)})
            return None, {}

        repaired, repairs = result_source(header)
        return repaired, repairs.changed

    def _explain(self, prediction: Prediction, source: Any, files: dict[str, bytes], regions: list[Any],
                 failed: list[dict[str, str]]) -> list[dict[str, Any]]:
        """The overlays and captures of every explained class and method into ``files``; their
        top-relevance regions into ``regions`` when a segmentation or a TID 1500 report is wanted."""
        classes = self.predictor.manifest.classes
        radiograph = prediction.radiograph
        series = {}
        if source is not None:
            from pydicom.uid import generate_uid

            series = {m.label: generate_uid() for m in self.methods}
        explained: dict[int, dict[str, Any]] = {}
        for item in class_maps(prediction.outputs, prediction.geometry, self.methods,
                               explained_targets(prediction.outputs, self.classes.keep)):
            name = classes[item.target]
            entry = explained.setdefault(item.rank, {"class": name, "probability": prediction.probabilities[name],
                                                     "files": {}})
            label = item.method.label
            image = item.overlay(radiograph.pixels, self.opacity, self.max_size)
            stem = f"{item.rank}-{slug(name)}-{slug(label)}"
            files[f"overlay-{stem}.png"] = png_bytes(image)
            written = {"overlay": f"overlay-{stem}.png"}
            if source is not None:
                capture, uid = f"sc-{stem}.dcm", generate_uid()
                number = FIRST_SERIES_NUMBER + self.methods.index(item.method)
                if _built(capture, partial(self._capture, source, image, name, entry["probability"], label,
                                           series[label], number, item.rank, uid), files, failed):
                    written.update({"secondary_capture": capture, "sop_instance_uid": uid})
                if self.segmentation or self._regions_in_report:
                    from .regions import Region

                    regions.append(Region.of(name, label, item.heat))
            entry["files"][label] = written
        return list(explained.values())

    def _capture(self, source: Any, image: np.ndarray, name: str, probability: float, method: str,
                 series_uid: str, series_number: int, rank: int, sop_instance_uid: str) -> bytes:
        from .secondary_capture import secondary_capture, to_bytes

        manifest = self.predictor.manifest
        captions = (f"{name}  p={probability:.2f}  {method}  (model {manifest.name})",)
        if manifest.is_demo:
            captions += (manifest.banner().split(" | ")[-1],)
        ds = secondary_capture(
            source, image, series_uid=series_uid, series_number=series_number, instance_number=rank,
            series_description=f"chexplain {method} - NOT FOR DIAGNOSTIC USE", captions=captions,
            derivation=f"{method} heatmap for {name} (p={probability:.3f}) by chexplain {__version__}, model {manifest.name}",
            algorithm=self.algorithm(), compress=self.compress, sop_instance_uid=sop_instance_uid,
        )
        return to_bytes(ds)

    @property
    def _regions_in_report(self) -> bool:
        return self.structured_report and self.sr_template == "tid1500"

    def _report(self, source: Any, prediction: Prediction, regions: Sequence[Any]) -> bytes:
        from pydicom.uid import generate_uid

        from .secondary_capture import to_bytes

        manifest = self.predictor.manifest
        series = {"series_uid": generate_uid(), "series_number": FIRST_SERIES_NUMBER + len(self.methods),
                  "algorithm": self.algorithm()}
        if self.sr_template == "tid1500":
            from .measurement_report import measurement_report

            ds = measurement_report(source, prediction.probabilities, self.predictor.thresholds, regions=regions,
                                    **series)
        else:
            from .basic_text_sr import basic_text_sr

            ds = basic_text_sr(source, prediction.probabilities, self.predictor.thresholds,
                               model_description=manifest.banner(), **series)
        return to_bytes(ds)

    def _segmentation(self, source: Any, regions: list[Any]) -> bytes:
        from pydicom.uid import generate_uid

        from .secondary_capture import to_bytes
        from .segmentation import relevance_segmentation

        ds = relevance_segmentation(source, regions, algorithm=self.algorithm(), series_uid=generate_uid(),
                                    series_number=FIRST_SERIES_NUMBER + len(self.methods) + 1)
        return to_bytes(ds)

    def _key_objects(self, made: Sequence[bytes]) -> bytes:
        from io import BytesIO

        import pydicom
        from pydicom.uid import generate_uid

        from .key_objects import result_selection
        from .secondary_capture import to_bytes

        results = [pydicom.dcmread(BytesIO(data), stop_before_pixels=True) for data in made]
        ds = result_selection(results, algorithm=self.algorithm(), series_uid=generate_uid(),
                              series_number=FIRST_SERIES_NUMBER + len(self.methods) + 2)
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
            "segmentation": None,
            "key_objects": None,
            "header_repairs": {},
            "failed": [],
            "timing_ms": dict(prediction.timing_ms),
            "warnings": prediction.warnings,
        }


def _built(name: str, build: Callable[[], bytes], files: dict[str, bytes], failed: list[dict[str, str]]) -> str | None:
    """``files[name] = build()``; when it raises, the failure (object and pseudonymised reason)
    joins ``failed`` and the other objects go on. The name, or None."""
    try:
        files[name] = build()
    except Exception as error:  # one object's failure (a bug, a value a library refuses) is not the result's
        detail = str(error).splitlines()[0] if str(error) else ""
        failed.append({"object": name, "error": pseudonymise(f"{type(error).__name__}: {detail}")[:300]})
        return None
    return name
