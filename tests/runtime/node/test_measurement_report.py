"""The TID 1500 measurement report read back by highdicom and dcmtk's dsrdump: each class a coded
finding with its probability, present or absent by the threshold, the algorithm named; each
explained map a planar ROI whose polygon lies on the image and encloses the map's peak."""

from __future__ import annotations

import subprocess
from io import BytesIO

import highdicom as hd
import numpy as np
import pydicom
import pytest

from chexplain.runtime.manifest import CHEXPERT_CLASSES
from chexplain.runtime.node.measurement_report import (
    COMPREHENSIVE_3D_SR_STORAGE,
    FINDING_CODES,
    PRIVATE_SCHEME,
    measurement_report,
)
from chexplain.runtime.node.regions import Region
from chexplain.runtime.node.secondary_capture import Algorithm, to_bytes

from helpers import SIIM, inside
from node_process import dcmtk

PROBABILITIES = {name: round(index / 14, 4) for index, name in enumerate(CHEXPERT_CLASSES)}
THRESHOLDS = dict.fromkeys(CHEXPERT_CLASSES, 0.5)


METHODS = ("gradcam", "lrp:epsilon-plus-smooth-bn")


def heat_with_peak(shape: tuple[int, int], centre: tuple[int, int], seed: int) -> np.ndarray:
    """Noise with a smooth bump: the map's peak near ``centre``."""
    rows, columns = np.mgrid[:shape[0], :shape[1]]
    bump = 3.0 * np.exp(-((rows - centre[0]) ** 2 + (columns - centre[1]) ** 2) / (2 * (shape[0] / 12) ** 2))
    return (bump + 0.3 * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


@pytest.fixture(scope="module")
def source() -> pydicom.Dataset:
    return pydicom.dcmread(SIIM, stop_before_pixels=True)


@pytest.fixture(scope="module")
def heats(source) -> dict[tuple[str, str], np.ndarray]:
    shape = (int(source.Rows), int(source.Columns))
    return {("Cardiomegaly", METHODS[0]): heat_with_peak(shape, (shape[0] // 2, shape[1] // 2), 1),
            ("Edema", METHODS[1]): heat_with_peak(shape, (shape[0] // 4, shape[1] // 5), 2)}


@pytest.fixture(scope="module")
def report(source, heats) -> tuple[pydicom.Dataset, bytes]:
    sr = measurement_report(source, PROBABILITIES, THRESHOLDS,
                            algorithm=Algorithm("densenet121-chexpert", "0123456789abcdef" * 4, METHODS),
                            series_uid=pydicom.uid.generate_uid(), series_number=9002,
                            regions=[Region.of(finding, method, heat) for (finding, method), heat in heats.items()])
    return source, to_bytes(sr)


def test_highdicom_reads_back_the_same_findings(report):
    source, data = report
    ds = pydicom.dcmread(BytesIO(data))
    assert ds.SOPClassUID == COMPREHENSIVE_3D_SR_STORAGE and ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.CompletionFlag == "COMPLETE" and ds.VerificationFlag == "UNVERIFIED"
    assert "NOT FOR DIAGNOSTIC USE" in ds.SeriesDescription
    evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
    assert evidence.ReferencedSOPInstanceUID == source.SOPInstanceUID
    equipment = ds.ContributingEquipmentSequence[0]
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    assert equipment.ManufacturerModelName == "densenet121-chexpert"
    groups = hd.sr.Comprehensive3DSR.from_dataset(ds).content.get_image_measurement_groups()
    assert len(groups) == len(CHEXPERT_CLASSES)
    for group in groups:
        name = group.tracking_identifier
        value, scheme, meaning = FINDING_CODES[name]
        assert (group.finding_type.value, group.finding_type.scheme_designator) == (value, scheme)
        [measurement] = group.get_measurements()
        assert measurement.name.value == "122157" and measurement.value == pytest.approx(PROBABILITIES[name])
        [evaluation] = group.get_qualitative_evaluations()
        assert evaluation.value.meaning == ("Present" if PROBABILITIES[name] >= 0.5 else "Absent")
        assert group.source_images[0].referenced_sop_instance_uid == source.SOPInstanceUID


def test_each_map_is_a_planar_roi_around_its_peak_on_the_source_image(report, heats):
    source, data = report
    groups = hd.sr.Comprehensive3DSR.from_dataset(pydicom.dcmread(BytesIO(data))).content.get_planar_roi_measurement_groups()
    assert len(groups) == len(heats)
    for group, ((finding, method), heat) in zip(groups, heats.items()):
        assert group.tracking_identifier == f"{finding} evidence ({method})"
        assert group.finding_type.value == FINDING_CODES[finding][0] and group.method.value == method
        [measurement] = group.get_measurements()
        assert measurement.name.value == "122157" and measurement.value == pytest.approx(PROBABILITIES[finding])
        region = group.roi
        assert region.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
        assert region.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
        polygon = region.value  # (column, row) pairs in the source image's pixel grid
        assert np.array_equal(polygon[0], polygon[-1]) and len(polygon) >= 4  # closed
        assert (polygon >= 0).all() and (polygon[:, 0] <= source.Columns).all() and (polygon[:, 1] <= source.Rows).all()
        row, column = np.unravel_index(int(np.argmax(heat)), heat.shape)
        assert inside(polygon, column + 0.5, row + 0.5)


def test_dsrdump_reads_it_as_a_comprehensive_3d_sr(report, tmp_path):
    path = tmp_path / "sr.dcm"
    path.write_bytes(report[1])
    dump = subprocess.run([dcmtk("dsrdump"), str(path)], capture_output=True, text=True, timeout=30)
    assert dump.returncode == 0 and dump.stdout.startswith("Comprehensive 3D SR Document")
    assert dump.stdout.count('"Probability")') == 14 + 2 and "SCOORD" in dump.stdout and '(287272002,SCT,"Cardiomegaly")' in dump.stdout
    assert "NOT FOR DIAGNOSTIC USE" in dump.stdout


def test_codes_are_standard_where_a_standard_code_exists():
    """The private scheme only for the four observations without a SNOMED CT or DICOM code."""
    private = sorted(name for name, (_, scheme, _) in FINDING_CODES.items() if scheme == PRIVATE_SCHEME)
    assert private == ["Enlarged Cardiomediastinum", "Lung Lesion", "Pleural Other", "Support Devices"]
    assert set(FINDING_CODES) == set(CHEXPERT_CLASSES)
    from pydicom.sr.codedict import codes

    for keyword, name in (("Cardiomegaly", "Cardiomegaly"), ("Pneumothorax", "Pneumothorax"),
                          ("PleuralEffusion", "Pleural Effusion"), ("PulmonaryEdema", "Edema")):
        assert getattr(codes.SCT, keyword).value == FINDING_CODES[name][0]  # as PS3.16 has them


def test_the_basic_text_sr_stays_behind_its_template(tmp_path):
    from chexplain.runtime.node.basic_text_sr import BASIC_TEXT_SR_STORAGE, basic_text_sr

    source = pydicom.dcmread(SIIM, stop_before_pixels=True)
    ds = basic_text_sr(source, PROBABILITIES, THRESHOLDS, model_description="demo model", series_number=9002,
                       series_uid=pydicom.uid.generate_uid(), algorithm=Algorithm("m", "0" * 64))
    path = tmp_path / "sr.dcm"
    path.write_bytes(to_bytes(ds))
    dump = subprocess.run([dcmtk("dsrdump"), str(path)], capture_output=True, text=True, timeout=30)
    assert ds.SOPClassUID == BASIC_TEXT_SR_STORAGE and ds.ContributingEquipmentSequence[0].ManufacturerModelName == "m"
    assert dump.returncode == 0 and "Basic Text SR" in dump.stdout and dump.stdout.count('"Finding")') == 14
