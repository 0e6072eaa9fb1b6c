"""Build DICOM test instances from the real radiographs in tests/data (pydicom)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

DX_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"


def dx_from_png(png: Path, out: Path, *, body_part: str = "CHEST", sop_class: str = DX_FOR_PRESENTATION,
                pixels: bool = True, study_uid: str | None = None, type_1_only: bool = False,
                **values: str) -> Path:
    """A 12-bit DX (For Presentation) instance holding the PNG's pixels, new UIDs each call;
    ``type_1_only``: without the Type 2 and 3 patient, study and series attributes (what an
    anonymiser may leave); ``values``: attributes set last, as given (invalid ones too)."""
    gray = cv2.imread(str(png), cv2.IMREAD_GRAYSCALE)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Patient", "TEST-0001", "", "O"
    ds.StudyInstanceUID = study_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "20261126", "120000", "1", "A1", ""
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = "DX" if sop_class == DX_FOR_PRESENTATION else "CT", body_part, "PA"
    ds.SeriesNumber, ds.InstanceNumber = 1, 1
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.PatientOrientation = ["L", "F"]
    if type_1_only:
        for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                        "StudyID", "AccessionNumber", "ReferringPhysicianName", "BodyPartExamined", "ViewPosition",
                        "SeriesNumber", "InstanceNumber", "PatientOrientation"):
            del ds[keyword]
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    if pixels:
        ds.Rows, ds.Columns = gray.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.WindowCenter, ds.WindowWidth = 2048, 4096
        ds.PixelData = (gray.astype(np.uint16) * 16).tobytes()
    ds.save_as(out, enforce_file_format=True)
    return out


def read(path: Path) -> Dataset:
    return pydicom.dcmread(path)
