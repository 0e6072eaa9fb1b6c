"""DICOM Secondary Capture of an explanation, for a PACS to store and show: the heatmap
burned in over the radiograph under a visible "not for diagnostic use" banner, in the source
image's study (a new series), referencing the source image, naming the algorithm that made
it in the Contributing Equipment Sequence, and compressed losslessly where an encoder is
installed: JPEG-LS, which DCMTK-based PACS (Orthanc among them) decode and render, else JPEG
2000.

pydicom is imported on first use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from io import BytesIO
from typing import Any

import cv2
import numpy as np

from ... import __version__
from ..inputs.dicom import import_pydicom

SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
JPEG_LS_LOSSLESS = "1.2.840.10008.1.2.4.80"
JPEG_2000_LOSSLESS = "1.2.840.10008.1.2.4.90"
LOSSLESS = (JPEG_LS_LOSSLESS, JPEG_2000_LOSSLESS)  # in order of preference
PROCESSING_EQUIPMENT = ("109102", "DCM", "Processing Equipment")  # CID 7005, purpose of the contribution
BANNER = "NOT FOR DIAGNOSTIC USE - research software (chexplain)"
# Patient and study attributes the new object shares with its source (Type 2: present even if empty).
SHARED_ATTRIBUTES = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate", "StudyTime",
    "ReferringPhysicianName", "StudyID", "AccessionNumber",
)
OPTIONAL_SHARED = ("SpecificCharacterSet", "StudyDescription", "IssuerOfPatientID")
# And, for an image of the same anatomy: Type 2C in General Image and General Series (PS3.3
# C.7.6.1, C.7.3.1), present for an image without a frame of reference, empty when unknown.
IMAGE_ORIENTATION = ("PatientOrientation", "Laterality")


def _strip(text: str, width: int, height: int) -> np.ndarray:
    """A black strip of ``height`` rows with ``text`` in white, scaled down to fit the width."""
    scale = height / 40
    thickness = max(1, height // 16)
    (text_width, _), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thickness)
    if text_width > width * 0.96:
        scale *= width * 0.96 / text_width
    strip = np.zeros((height, width, 3), np.uint8)
    cv2.putText(strip, text, (max(2, width // 100), int(height * 0.72)), cv2.FONT_HERSHEY_SIMPLEX, scale,
                (255, 255, 255), thickness, cv2.LINE_AA)
    return strip


def with_banner(bgr: np.ndarray, *lines: str) -> np.ndarray:
    """The image under black strips, one per line of text (default: the not-for-diagnostic-use banner)."""
    height, width = bgr.shape[:2]
    rows = max(24, height // 24)
    return np.vstack([_strip(text, width, rows) for text in (lines or (BANNER,))] + [bgr])


@dataclass(frozen=True)
class Algorithm:
    """What made a result, for its Contributing Equipment Sequence (PS3.3 C.12.1.1.5)."""

    model: str  # the model's name
    weights_sha256: str
    methods: tuple[str, ...] = ()

    def item(self, now: datetime) -> Any:
        """One item (highdicom's ContributingEquipment): chexplain as processing equipment, the
        model as its model name; the same item on every object the node writes."""
        from highdicom import ContributingEquipment
        from highdicom.sr import CodedConcept

        return ContributingEquipment(
            "chexplain", CodedConcept(*PROCESSING_EQUIPMENT), manufacturer_model_name=self.model[:64],
            software_versions=[__version__, f"weights sha256 {self.weights_sha256[:16]}"], contribution_datetime=now,
            contribution_description=(f"classification by {self.model}"
                                      + (f"; explanations: {', '.join(self.methods)}" if self.methods else "")
                                      + "; NOT FOR DIAGNOSTIC USE")[:1024])


def derived_dataset(source: Any, sop_class_uid: str, now: datetime, algorithm: Algorithm | None = None,
                    sop_instance_uid: str | None = None) -> Any:
    """A new instance of ``sop_class_uid`` made by chexplain from ``source``: file meta, SOP
    Instance UID (new unless given), the source's patient and study attributes (Type 2 ones present even when
    empty), equipment (with ``algorithm`` as contributing equipment), and creation and
    content date/time."""
    import_pydicom()
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class_uid
    ds.SOPInstanceUID = sop_instance_uid or generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    for keyword in SHARED_ATTRIBUTES:
        setattr(ds, keyword, source.get(keyword, ""))
    for keyword in OPTIONAL_SHARED:
        if keyword in source:
            setattr(ds, keyword, source.get(keyword))
    ds.Manufacturer = "chexplain"
    ds.SoftwareVersions = __version__
    ds.ContentDate = now.strftime("%Y%m%d")
    ds.ContentTime = now.strftime("%H%M%S")
    ds.InstanceCreationDate, ds.InstanceCreationTime = ds.ContentDate, ds.ContentTime
    if algorithm is not None:  # the source's contributors (the modality, ...), then this algorithm
        from copy import deepcopy

        earlier = [deepcopy(item) for item in source.get("ContributingEquipmentSequence", [])]
        ds.ContributingEquipmentSequence = import_pydicom().Sequence([*earlier, algorithm.item(now)])
    return ds


def lossless_syntax() -> str | None:
    """The first lossless transfer syntax whose encoder is installed (None: none is)."""
    from pydicom.pixels.encoders import JPEG2000LosslessEncoder, JPEGLSLosslessEncoder

    encoders = {JPEG_LS_LOSSLESS: JPEGLSLosslessEncoder, JPEG_2000_LOSSLESS: JPEG2000LosslessEncoder}
    return next((syntax for syntax in LOSSLESS if encoders[syntax].is_available), None)


def secondary_capture(source: Any, bgr: np.ndarray, *, series_uid: str, series_number: int, instance_number: int,
                      series_description: str, derivation: str, captions: tuple[str, ...] = (),
                      algorithm: Algorithm | None = None, compress: bool = True, now: datetime | None = None,
                      sop_instance_uid: str | None = None) -> Any:
    """A Secondary Capture dataset (8-bit RGB, banner and ``captions`` burned in on top) in
    ``source``'s study; compressed losslessly when ``compress`` and an encoder is installed."""
    pydicom = import_pydicom()
    from pydicom.dataset import Dataset

    rgb = cv2.cvtColor(with_banner(bgr, BANNER, *captions), cv2.COLOR_BGR2RGB)
    ds = derived_dataset(source, SECONDARY_CAPTURE_STORAGE, now or datetime.now(), algorithm, sop_instance_uid)
    for keyword in IMAGE_ORIENTATION:
        setattr(ds, keyword, source.get(keyword, ""))
    ds.Modality = "OT"
    ds.SeriesInstanceUID = series_uid
    ds.SeriesNumber = series_number
    ds.SeriesDescription = series_description
    ds.InstanceNumber = instance_number
    ds.ConversionType = "WSD"
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.DerivationDescription = derivation[:1024]
    ds.BurnedInAnnotation = "YES"
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    ds.SourceImageSequence = pydicom.Sequence([reference])
    ds.Rows, ds.Columns = int(rgb.shape[0]), int(rgb.shape[1])
    ds.SamplesPerPixel = 3
    ds.PhotometricInterpretation = "RGB"
    ds.PlanarConfiguration = 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.ascontiguousarray(rgb).tobytes()
    syntax = lossless_syntax() if compress else None
    if syntax is not None:
        ds.compress(syntax, generate_instance_uid=False)
    return ds


def to_bytes(ds: Any) -> bytes:
    """The dataset as a DICOM Part 10 file."""
    buffer = BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()
