"""The Segmentation of where each map points: the region on known maps, and the SEG read back by
highdicom and dcmtk with the same masks, codes, source reference and contributing equipment."""

from __future__ import annotations

import subprocess

import highdicom as hd
import numpy as np
import pydicom
import pytest

from chexplain.runtime.node.measurement_report import FINDING_CODES
from chexplain.runtime.node.regions import Region, relevance_region
from chexplain.runtime.node.secondary_capture import Algorithm, to_bytes
from chexplain.runtime.node.segmentation import SEGMENTATION_STORAGE, relevance_segmentation

from helpers import SIIM
from node_process import dcmtk


def test_the_region_is_the_top_share_of_positive_evidence():
    ramp = np.tile(np.arange(100, dtype=np.float32) - 49.5, (40, 1))  # columns -49.5 .. 49.5
    region = relevance_region(ramp, 0.05)
    assert region.sum() == 5 * 40 and region[:, 95:].all()  # the 5 highest columns
    assert not relevance_region(-np.abs(ramp), 0.05).any()  # no positive evidence: nothing marked
    sparse = np.zeros((40, 100), np.float32)
    sparse[3, 7] = 2.0
    assert relevance_region(sparse, 0.05).sum() == 1  # fewer positives than the share: only those
    plateau = np.zeros((40, 100), np.float32)
    plateau[:, :10] = 1.0  # 400 pixels tie at the top, more than 5% (200)
    assert relevance_region(plateau, 0.05).sum() == 400  # ties stay together


@pytest.fixture(scope="module")
def source() -> pydicom.Dataset:
    return pydicom.dcmread(SIIM, stop_before_pixels=True)


@pytest.fixture(scope="module")
def regions(source: pydicom.Dataset) -> list[Region]:
    rng = np.random.default_rng(3)
    shape = (int(source.Rows), int(source.Columns))
    heart, device = rng.normal(size=shape), rng.normal(size=shape)
    heart[400:700, 300:700] += 4.0
    return [Region("Cardiomegaly", "gradcam", relevance_region(heart)),
            Region("Support Devices", "lrp:epsilon-plus-flat-bn", relevance_region(device))]


def test_the_segmentation_reads_back_with_its_masks_codes_and_source(source, regions, tmp_path):
    seg = relevance_segmentation(source, regions, algorithm=Algorithm("densenet121-chexpert", "ab" * 32, ("gradcam",)),
                                 series_uid=pydicom.uid.generate_uid(), series_number=9004)
    path = tmp_path / "seg.dcm"
    path.write_bytes(to_bytes(seg))
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == SEGMENTATION_STORAGE and ds.StudyInstanceUID == source.StudyInstanceUID
    assert ds.PatientID == source.PatientID and "FrameOfReferenceUID" not in ds  # a projection: no frame of reference
    assert "NOT FOR DIAGNOSTIC USE" in ds.SeriesDescription
    referenced = ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0]
    assert referenced.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert ds.ContributingEquipmentSequence[-1].PurposeOfReferenceCodeSequence[0].CodeValue == "109102"
    read = hd.seg.Segmentation.from_dataset(ds)
    assert [s.SegmentLabel for s in ds.SegmentSequence] == ["Cardiomegaly (gradcam)",
                                                            "Support Devices (lrp:epsilon-plus-flat-bn)"]
    for number, region in enumerate(regions, 1):
        description = read.get_segment_description(number)
        assert description.segmented_property_type.value == FINDING_CODES[region.finding][0]
        parameters = description.algorithm_identification[0].AlgorithmParameters
        assert f"method={region.method}" in parameters
    masks = read.get_pixels_by_source_instance([source.SOPInstanceUID], combine_segments=False)
    assert masks.shape == (1, source.Rows, source.Columns, 2)
    for number, region in enumerate(regions):
        assert np.array_equal(masks[0, ..., number].astype(bool), region.mask)
        assert 0.049 < region.mask.mean() <= 0.0501
    assert regions[0].mask[400:700, 300:700].mean() > 0.3  # where the evidence was put
    dump = subprocess.run([dcmtk("dcmdump"), str(path)], capture_output=True, text=True, timeout=30)
    assert dump.returncode == 0 and "SegmentationStorage" in dump.stdout and "(0062,0005) LO [Cardiomegaly" in dump.stdout


def test_a_mask_off_the_image_grid_is_refused(source):
    wrong = Region("Edema", "gradcam", np.zeros((10, 10), bool))
    with pytest.raises(ValueError, match="is not the image's"):
        relevance_segmentation(source, [wrong], algorithm=Algorithm("m", "", ()), series_uid="1.2.3", series_number=1)
