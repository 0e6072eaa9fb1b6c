"""The results of one explained radiograph tied together: a Key Object Selection (KOS).

A reading worklist or PACS that lists key objects shows one entry per explained radiograph,
referencing every DICOM result the node made of it (the Secondary Captures, the SR, the SEG),
so the radiologist opens them as a set instead of finding loose series in the study. Built
with highdicom: document title (113000, DCM, "Of Interest") of CID 7010, the title Key Image
Note viewers list; the key object description says what the objects are and that they are not
for diagnostic use; the device (chexplain) is the observer. One KOS per received image: the
node explains images as they arrive and keeps no state across a study's images.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from ... import __version__
from .measurement_report import observer_device
from .secondary_capture import Algorithm

KEY_OBJECT_SELECTION_STORAGE = "1.2.840.10008.5.1.4.1.1.88.59"
SERIES_DESCRIPTION = "chexplain results (KOS) - NOT FOR DIAGNOSTIC USE"


def result_selection(results: Sequence[Any], *, algorithm: Algorithm, series_uid: str, series_number: int,
                     now: datetime | None = None) -> Any:
    """A KOS referencing ``results`` (the datasets made from one radiograph, pixel data not needed)."""
    from highdicom.ko import KeyObjectSelection, KeyObjectSelectionDocument
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    if not results:
        raise ValueError("a key object selection needs at least one result")
    methods = ", ".join(algorithm.methods) or "no heatmap"
    content = KeyObjectSelection(
        document_title=codes.cid7010.OfInterest,
        referenced_objects=list(results),
        observer_device_context=observer_device(algorithm),
        description=f"chexplain {__version__} results of model {algorithm.model} ({methods}): findings, "
                    f"heatmaps and regions - NOT FOR DIAGNOSTIC USE"[:1024],
    )
    selection = KeyObjectSelectionDocument(
        evidence=list(results), content=content, series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="chexplain",
        contributing_equipment=[algorithm.item(now or datetime.now())],
    )
    selection.SeriesDescription = SERIES_DESCRIPTION
    return selection
