"""A DICOM Basic Text SR with the classifier's findings, in the source image's study.

One CONTAINER ("Diagnostic imaging report") holding a comment that the content is not for
diagnostic use and names the model, then one TEXT "Finding" per class with its probability
and threshold, findings above threshold first. The source image is referenced as evidence.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from ... import __version__
from ..inputs.dicom import import_pydicom
from .secondary_capture import Algorithm, derived_dataset

BASIC_TEXT_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.11"
REPORT = ("18748-4", "LN", "Diagnostic imaging report")
COMMENT = ("121106", "DCM", "Comment")
FINDING = ("121071", "DCM", "Finding")


def _code(code: tuple[str, str, str]) -> Any:
    from pydicom.dataset import Dataset

    item = Dataset()
    item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning = code
    return item


def _text(concept: tuple[str, str, str], text: str) -> Any:
    from pydicom.dataset import Dataset

    pydicom = import_pydicom()
    item = Dataset()
    item.RelationshipType = "CONTAINS"
    item.ValueType = "TEXT"
    item.ConceptNameCodeSequence = pydicom.Sequence([_code(concept)])
    item.TextValue = text[:1024]
    return item


def finding_lines(probabilities: Mapping[str, float], thresholds: Mapping[str, float]) -> list[str]:
    """One line per class, those at or above their threshold first (most probable first)."""
    order = sorted(probabilities, key=lambda c: (probabilities[c] < thresholds[c], -probabilities[c]))
    return [f"{c}: probability {probabilities[c]:.3f}, threshold {thresholds[c]:.3f}, "
            f"{'ABOVE' if probabilities[c] >= thresholds[c] else 'below'} threshold" for c in order]


def basic_text_sr(source: Any, probabilities: Mapping[str, float], thresholds: Mapping[str, float], *,
                  model_description: str, series_uid: str, series_number: int, algorithm: Algorithm | None = None,
                  now: datetime | None = None) -> Any:
    """The SR dataset for ``source`` (the received image's dataset, pixel data not needed)."""
    pydicom = import_pydicom()
    from pydicom.dataset import Dataset

    ds = derived_dataset(source, BASIC_TEXT_SR_STORAGE, now or datetime.now(), algorithm)
    ds.Modality = "SR"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = "chexplain findings - NOT FOR DIAGNOSTIC USE"
    ds.ReferencedPerformedProcedureStepSequence = pydicom.Sequence()
    ds.InstanceNumber = 1
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.PerformedProcedureCodeSequence = pydicom.Sequence()
    image = Dataset()
    image.ReferencedSOPClassUID = source.SOPClassUID
    image.ReferencedSOPInstanceUID = source.SOPInstanceUID
    series = Dataset()
    series.SeriesInstanceUID = source.get("SeriesInstanceUID", "")
    series.ReferencedSOPSequence = pydicom.Sequence([image])
    evidence = Dataset()
    evidence.StudyInstanceUID = source.get("StudyInstanceUID", "")
    evidence.ReferencedSeriesSequence = pydicom.Sequence([series])
    ds.CurrentRequestedProcedureEvidenceSequence = pydicom.Sequence([evidence])
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = pydicom.Sequence([_code(REPORT)])
    ds.ContinuityOfContent = "SEPARATE"
    comment = (f"NOT FOR DIAGNOSTIC USE. Computed by chexplain {__version__} ({model_description}); "
               "probabilities of the 14 CheXpert observations, not a diagnosis.")
    ds.ContentSequence = pydicom.Sequence(
        [_text(COMMENT, comment)] + [_text(FINDING, line) for line in finding_lines(probabilities, thresholds)])
    return ds
