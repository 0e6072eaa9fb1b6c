"""Reports from a folder of `chexplain explain` results: one HTML page per radiograph (beside
its sheet) and ``index.html``, from ``index.json``, the maps saved as arrays and the inputs."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ..inputs.reader import read_radiograph
from ..results.documents import EXPLAIN_SCHEMA
from .html import ExplainedFinding, MethodMap, index_entry, render_index, render_report, write_report

REPORT_FILE = "report.html"
INDEX_FILE = "index.html"
IDENTITY_KEYS = ("format", "width", "height", "bits", "modality", "body_part", "view_position",
                 "photometric_interpretation", "transfer_syntax", "sop_class_uid", "sop_instance_uid",
                 "study_instance_uid", "series_instance_uid", "pixel_spacing_mm")


def banner_of(document: Mapping[str, Any]) -> str:
    """The model's banner as explain recorded it (older indexes: rebuilt from the model record)."""
    model = document["model"]
    return document.get("banner") or f"model {model['name']} | {str(model.get('status', '')).upper()}"


def patient_identity(path: Path) -> dict[str, str]:
    """Patient name and ID of a DICOM input (shown only when asked for)."""
    from ..inputs.dicom import import_pydicom

    ds = import_pydicom().dcmread(path, stop_before_pixels=True)
    return {"patient name": str(ds.get("PatientName", "")), "patient ID": str(ds.get("PatientID", ""))}


def report_for(record: Mapping[str, Any], document: Mapping[str, Any], root: Path, patient: bool = False) -> Path:
    """Write the report of one explained radiograph beside its sheet; InputError if its input
    or maps cannot be read."""
    source = Path(record["input"])
    radiograph = read_radiograph(source, allow_any_view=True)
    # Files are found by name in the radiograph's folder under root, so a moved results folder works.
    folder = root / Path(record["sheet"]).parent.name
    findings = []
    for entry in record["explained"]:
        maps = []
        for method, files in entry["files"].items():
            if "array" not in files:
                raise InputError(source, "its maps were not saved (explained with --no-arrays); explain it again")
            array = folder / Path(files["array"]).name
            try:
                heat = np.load(array)
            except OSError as error:
                raise InputError(array, f"cannot read the map ({error})") from None
            maps.append(MethodMap(method, heat, method.startswith("lrp:")))
        findings.append(ExplainedFinding(entry["class"], entry["probability"], maps))
    image = record.get("image", {})
    identity = {"file": source.name, **{k.replace("_", " "): image[k] for k in IDENTITY_KEYS if image.get(k)}}
    if patient and image.get("format") == "dicom":
        identity.update(patient_identity(source))
    if record.get("warnings"):
        identity["warnings"] = "; ".join(record["warnings"])
    model = document["model"]
    settings = {"methods": ", ".join(document.get("methods", [])), **{
        k: v for k, v in document.get("explanations", {}).items() if k in ("classes", "layer", "epsilon", "precision")}}
    html_text = render_report(
        title=source.name, radiograph=radiograph.pixels, probabilities=record["probabilities"],
        thresholds=document["thresholds"], explained=findings, banner=banner_of(document),
        model=model, backend=document.get("backend", ""), settings=settings, timing_ms=record.get("timing_ms", {}),
        identity=identity,
    )
    return write_report(folder / REPORT_FILE, html_text)


def write_reports(root: Path, document: Mapping[str, Any] | None = None, patient: bool = False,
                  on_error: Callable[[str], None] = print) -> tuple[list[Path], Path | None]:
    """A report per explained radiograph of ``root/index.json`` and the index page; errors are
    reported per radiograph and the rest go on."""
    if document is None:
        index = root / "index.json"
        try:
            document = json.loads(index.read_text())
        except (OSError, ValueError) as error:
            raise InputError(index, f"not a chexplain explain index ({error})") from None
    if document.get("schema") != EXPLAIN_SCHEMA:
        raise InputError(root / "index.json", f"schema {document.get('schema')!r}, not {EXPLAIN_SCHEMA}")
    reports, entries = [], []
    for record in document["results"]:
        if record.get("status") != "ok":
            continue
        try:
            report = report_for(record, document, root, patient)
        except InputError as error:
            on_error(str(error))
            continue
        reports.append(report)
        entries.append(index_entry(report, root, record))
    if not entries:
        return reports, None
    return reports, write_report(root / INDEX_FILE, render_index(entries, document["model"]["classes"], banner_of(document)))
