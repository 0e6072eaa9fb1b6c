"""The documents `predict` and `explain` hand to people and programs: a terminal listing,
and the JSON documents of schemas ``chexplain.predict/1`` and ``chexplain.explain/1``.

``chexplain.predict/1`` (docs/usage.md): ``{"schema", "chexplain_version", "model", "backend",
"thresholds", "results", "summary"}``, one entry in ``results`` per input, in input order,
with ``status`` ``ok`` or ``failed``. ``chexplain.explain/1`` is that document with each
result's ``explained`` classes and ``sheet``, and ``banner``, ``methods`` and
``explanations`` (the graph's explanation settings).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ... import __version__
from ..manifest import Manifest
from .prediction import Prediction, model_record

PREDICT_SCHEMA = "chexplain.predict/1"
EXPLAIN_SCHEMA = "chexplain.explain/1"
BAR_WIDTH = 20


def json_document(
    predictions: Sequence[Prediction],
    manifest: Manifest,
    onnx_path: str,
    backend: str,
    thresholds: Mapping[str, float],
) -> dict[str, Any]:
    failed = failed_count(predictions)
    return {
        "schema": PREDICT_SCHEMA,
        "chexplain_version": __version__,
        "model": model_record(manifest, onnx_path),
        "backend": backend,
        "thresholds": dict(thresholds),
        "results": [p.to_json() for p in predictions],
        "summary": {"inputs": len(predictions), "ok": len(predictions) - failed, "failed": failed},
    }


def explain_document(
    predictions: Sequence[Prediction],
    records: Sequence[Mapping[str, Any]],
    manifest: Manifest,
    onnx_path: str,
    backend: str,
    thresholds: Mapping[str, float],
    methods: Sequence[str],
) -> dict[str, Any]:
    """``index.json`` of an explain run: the predict document with the explain records."""
    document = json_document(predictions, manifest, onnx_path, backend, thresholds)
    document.update(schema=EXPLAIN_SCHEMA, results=list(records), banner=manifest.banner(), methods=list(methods),
                    explanations=manifest.explanations.to_dict())
    return document


def failed_count(predictions: Sequence[Prediction]) -> int:
    return sum(not p.ok for p in predictions)


def text_lines(prediction: Prediction, thresholds: Mapping[str, float]) -> list[str]:
    """A radiograph's probabilities as aligned bars, positives marked against their threshold."""
    info = prediction.image
    source = f"{info.get('width')}x{info.get('height')} {info.get('format', '').upper()}"
    lines = [f"{prediction.input}  ({source}, {prediction.timing_ms['total']:.1f} ms)"]
    width = max(len(c) for c in prediction.probabilities)
    for cls, p in prediction.probabilities.items():
        mark = "POSITIVE" if cls in prediction.findings else ""
        bar = "#" * round(p * BAR_WIDTH)
        lines.append(f"  {cls:<{width}}  {p:6.3f}  {bar:<{BAR_WIDTH}}  t={thresholds[cls]:.2f}  {mark}".rstrip())
    lines.append(f"  findings: {', '.join(prediction.findings) or 'none above threshold'}")
    lines.extend(f"  warning: {w}" for w in prediction.warnings)
    return lines
