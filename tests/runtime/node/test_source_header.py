"""Results from imperfect headers: a DX with only its Type 1 attributes, one with every optional
attribute, and headers with invalid values each give a Secondary Capture, both SR templates (the
TID 1500 one with a planar ROI), a SEG and a KOS of them all, read back by pydicom and highdicom and passed by dciodvfy (dicom3tools), as are those of
the real CR test files; one object that cannot be built leaves the others."""

from __future__ import annotations

import copy
import shutil
import subprocess
from io import BytesIO

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from chexplain.runtime.node.basic_text_sr import basic_text_sr
from chexplain.runtime.node.key_objects import result_selection
from chexplain.runtime.node.measurement_report import measurement_report
from chexplain.runtime.node.processor import _built
from chexplain.runtime.node.regions import Region
from chexplain.runtime.node.secondary_capture import Algorithm, secondary_capture, to_bytes
from chexplain.runtime.node.segmentation import relevance_segmentation
from chexplain.runtime.node.source_header import TYPE_2, result_source

from dicom_builders import DX_FOR_PRESENTATION
from helpers import RG1_J2K_MONOCHROME1, RG2_HIP, SIIM, SIIM_FLIPPED

ALGORITHM = Algorithm("densenet121-chexpert", "0123456789abcdef" * 4, ("gradcam",))
PROBABILITIES, THRESHOLDS = {"Cardiomegaly": 0.7, "Edema": 0.2}, {"Cardiomegaly": 0.5, "Edema": 0.5}


def minimal_dx() -> Dataset:
    """A DX header with its Type 1 attributes alone (what an anonymiser may leave)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID, ds.SOPInstanceUID = DX_FOR_PRESENTATION, generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "DX"
    ds.Rows = ds.Columns = 48
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    ds.ImageType, ds.PresentationIntentType = ["ORIGINAL", "PRIMARY"], "FOR PRESENTATION"
    return ds


def complete_dx() -> Dataset:
    ds = minimal_dx()
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName, ds.PatientID, ds.IssuerOfPatientID = "Doe^Jane", "P-1", "HOSPITAL"
    ds.PatientBirthDate, ds.PatientSex = "19470101", "F"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = "20261204", "101500", "7", "ACC-9"
    ds.ReferringPhysicianName, ds.StudyDescription = "Who^Doctor", "CHEST PA"
    ds.SeriesNumber, ds.InstanceNumber, ds.Laterality, ds.PatientOrientation = 1, 1, "L", ["P", "F"]
    ds.BodyPartExamined, ds.ViewPosition = "CHEST", "PA"
    return ds


def hostile(**values: str) -> Dataset:
    ds = complete_dx()
    for keyword, value in values.items():
        setattr(ds, keyword, value)
    return ds


def centre_region(source: Dataset) -> Region:
    """A map of Edema peaking in the image's centre: a planar ROI in the report."""
    rows, columns = np.mgrid[:int(source.Rows), :int(source.Columns)]
    heat = -np.hypot(rows - source.Rows / 2, columns - source.Columns / 2) + source.Rows
    return Region.of("Edema", "gradcam", heat)


def every_object(source: Dataset) -> dict[str, Dataset]:
    """SC, TID 1500 SR, Basic Text SR, SEG and the KOS of them all of ``source``, each read back from its bytes."""
    made = {
        "sc": secondary_capture(source, np.zeros((48, 48, 3), np.uint8), series_uid=generate_uid(), series_number=9001,
                                instance_number=1, series_description="test", derivation="test", algorithm=ALGORITHM),
        "tid1500": measurement_report(source, PROBABILITIES, THRESHOLDS, algorithm=ALGORITHM,
                                      series_uid=generate_uid(), series_number=9002, regions=[centre_region(source)]),
        "basic-text": basic_text_sr(source, PROBABILITIES, THRESHOLDS, model_description="test", algorithm=ALGORITHM,
                                    series_uid=generate_uid(), series_number=9002),
        "seg": relevance_segmentation(source, [Region("Cardiomegaly", "gradcam", np.eye(int(source.Rows), int(source.Columns), dtype=bool))],
                                      algorithm=ALGORITHM, series_uid=generate_uid(), series_number=9003),
    }
    made["kos"] = result_selection(list(made.values()), algorithm=ALGORITHM, series_uid=generate_uid(),
                                   series_number=9004)
    return {kind: pydicom.dcmread(BytesIO(to_bytes(ds))) for kind, ds in made.items()}


@pytest.mark.parametrize("source", [minimal_dx(), complete_dx()], ids=["type-1-only", "every-optional"])
def test_every_object_is_built_with_the_type_2_attributes_present(source):
    header, repairs = result_source(source)
    assert repairs.changed == {}  # an absent attribute is no repair
    for kind, ds in every_object(header).items():
        for keyword in TYPE_2:
            assert keyword in ds, f"{kind} lacks {keyword}"
            assert str(ds[keyword].value) == str(source.get(keyword, "")), f"{kind}: {keyword} is not the source's"
        assert ds.StudyInstanceUID == source.StudyInstanceUID
    read_back = every_object(header)
    content = hd.sr.Comprehensive3DSR.from_dataset(read_back["tid1500"]).content
    assert sorted(group.tracking_identifier for group in content.get_image_measurement_groups()) == sorted(PROBABILITIES)
    assert [group.tracking_identifier for group in content.get_planar_roi_measurement_groups()] == ["Edema evidence (gradcam)"]
    assert len(hd.seg.Segmentation.from_dataset(read_back["seg"]).SegmentSequence) == 1
    kos = hd.ko.KeyObjectSelectionDocument.from_dataset(read_back["kos"])
    referenced = {str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for item in kos.ContentSequence
                  if "ReferencedSOPSequence" in item}
    assert referenced == {str(read_back[kind].SOPInstanceUID) for kind in ("sc", "tid1500", "basic-text", "seg")}
    assert kos.ConceptNameCodeSequence[0].CodeValue == "113000"  # "Of Interest"


def test_a_complete_header_keeps_its_optional_image_attributes():
    sc = every_object(result_source(complete_dx())[0])["sc"]
    assert sc.Laterality == "L" and list(sc.PatientOrientation) == ["P", "F"] and sc.PatientBirthDate == "19470101"


@pytest.mark.parametrize(("values", "expected", "reason"), [
    ({"PatientBirthDate": "19471313"}, {"PatientBirthDate": ""}, "not a valid DA; written empty"),
    ({"PatientBirthDate": "1947-12-13"}, {"PatientBirthDate": "19471213"}, "rewritten as DA"),
    ({"PatientBirthDate": "1947.12.13"}, {"PatientBirthDate": "19471213"}, "rewritten as DA"),
    ({"StudyTime": "10:15:00"}, {"StudyTime": "101500"}, "rewritten as TM"),
    ({"PatientSex": "HOSTILEDOE"}, {"PatientSex": ""}, "not one of its defined values; written empty"),
    ({"AccessionNumber": "A" * 40}, {"AccessionNumber": ""}, "not a valid SH; written empty"),
    ({"Laterality": "X"}, {"Laterality": ""}, "left out"),
], ids=["impossible-date", "iso-date", "acr-nema-date", "iso-time", "sex", "long-accession", "laterality"])
def test_invalid_values_are_repaired_and_named_without_their_value(values, expected, reason):
    source = hostile(**values)
    header, repairs = result_source(source)
    (keyword,) = values
    assert reason in repairs.changed[keyword] and values[keyword] not in repairs.changed[keyword]
    assert source[keyword].value == values[keyword]  # the received header itself is untouched
    for kind, ds in every_object(header).items():
        if expected[keyword] is None:
            assert keyword not in ds, kind
        elif keyword in ds:
            assert ds[keyword].value == expected[keyword], kind


def test_one_object_that_cannot_be_built_leaves_the_others():
    files: dict[str, bytes] = {}
    failed: list[dict[str, str]] = []
    header = result_source(minimal_dx())[0]
    assert _built("sr.dcm", lambda: to_bytes(basic_text_sr(header, PROBABILITIES, THRESHOLDS, model_description="t",
                                                           series_uid=generate_uid(), series_number=1)), files, failed)
    broken = copy.deepcopy(header)
    broken.Rows = 64  # the region no longer fits the image: highdicom's builder refuses
    assert _built("seg.dcm", lambda: to_bytes(relevance_segmentation(
        broken, [Region("Edema", "gradcam", np.ones((48, 48), bool))], algorithm=ALGORITHM, series_uid=generate_uid(),
        series_number=2)), files, failed) is None
    assert list(files) == ["sr.dcm"] and failed[0]["object"] == "seg.dcm" and "ValueError" in failed[0]["error"]


@pytest.mark.parametrize("source", [
    minimal_dx(), complete_dx(), hostile(PatientBirthDate="1947-12-13", PatientSex="HOSTILEDOE"),
    *(pydicom.dcmread(path, stop_before_pixels=True) for path in (RG1_J2K_MONOCHROME1, RG2_HIP, SIIM, SIIM_FLIPPED)),
], ids=["dx-type-1-only", "dx-every-optional", "dx-invalid-values", "cr-j2k-monochrome1", "cr-jpeg-lossless",
        "cr-siim", "monochrome1"])
def test_dciodvfy_finds_no_error_in_any_object(source, tmp_path):
    """dicom3tools' validator over each object the node writes, for each kind of input it takes."""
    for kind, ds in every_object(result_source(source)[0]).items():
        path = tmp_path / f"{kind}.dcm"
        ds.save_as(path, enforce_file_format=True)
        report = subprocess.run([dciodvfy(), str(path)], capture_output=True, text=True, timeout=60)
        errors = [line for line in (report.stdout + report.stderr).splitlines() if line.startswith("Error")]
        assert not errors, f"{kind}: {errors}"


def dciodvfy() -> str:
    path = shutil.which("dciodvfy")
    assert path, "dciodvfy not found: the tests need dicom3tools (apt-get install dicom3tools)"
    return path
