"""Secondary Captures of explanations: what a PACS needs to file them with their source image."""

from __future__ import annotations

from datetime import datetime
from io import BytesIO

import numpy as np
import pydicom

from chexplain.runtime.node.secondary_capture import (
    JPEG_LS_LOSSLESS,
    SECONDARY_CAPTURE_STORAGE,
    SHARED_ATTRIBUTES,
    Algorithm,
    secondary_capture,
    to_bytes,
    with_banner,
)

from helpers import SIIM


def test_banner_is_on_top_and_the_image_kept_below():
    image = np.full((300, 400, 3), 90, np.uint8)
    bannered = with_banner(image)
    strip = bannered.shape[0] - 300
    assert bannered.shape[1:] == (400, 3) and strip >= 24
    assert (bannered[strip:] == image).all()
    assert bannered[:strip].max() == 255 and (bannered[:strip] == 0).mean() > 0.5  # white text on black


def test_secondary_capture_shares_the_study_and_references_the_source():
    source = pydicom.dcmread(SIIM, stop_before_pixels=True)
    overlay = np.zeros((256, 200, 3), np.uint8)
    overlay[..., 2] = 200  # red in BGR
    ds = secondary_capture(source, overlay, series_uid="1.2.3.4", series_number=901, instance_number=2,
                           series_description="chexplain Grad-CAM", derivation="Grad-CAM of Cardiomegaly",
                           now=datetime(2026, 11, 26, 15, 30))
    back = pydicom.dcmread(BytesIO(to_bytes(ds)))
    assert back.file_meta.MediaStorageSOPClassUID == SECONDARY_CAPTURE_STORAGE == back.SOPClassUID
    assert back.file_meta.MediaStorageSOPInstanceUID == back.SOPInstanceUID != source.SOPInstanceUID
    for keyword in SHARED_ATTRIBUTES:
        assert back.get(keyword) == source.get(keyword, ""), keyword
    assert back.StudyInstanceUID == source.StudyInstanceUID and back.SeriesInstanceUID == "1.2.3.4"
    assert back.SeriesInstanceUID != source.SeriesInstanceUID
    (reference,) = back.SourceImageSequence
    assert reference.ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert reference.ReferencedSOPClassUID == source.SOPClassUID
    assert back.ImageType == ["DERIVED", "SECONDARY"] and back.BurnedInAnnotation == "YES"
    assert back.ConversionType == "WSD" and back.Modality == "OT" and back.ContentDate == "20261126"
    pixels = back.pixel_array
    assert pixels.shape == (back.Rows, 200, 3) and back.Rows > 256  # the banner on top
    assert (pixels[-1, -1] == [200, 0, 0]).all()  # stored as RGB


def test_captures_name_the_algorithm_and_are_compressed_losslessly():
    source = pydicom.dcmread(SIIM, stop_before_pixels=True)
    heat = np.random.default_rng(0).integers(0, 256, (300, 240, 3), dtype=np.uint8)  # the hardest to compress
    algorithm = Algorithm("densenet121-chexpert", "0123456789abcdef" * 4, ("gradcam", "lrp:epsilon-plus-flat-bn"))
    made = [secondary_capture(source, heat, series_uid="1.2.3.4", series_number=901, instance_number=1,
                              series_description="chexplain", derivation="d", algorithm=algorithm, compress=compress)
            for compress in (True, False)]
    compressed, plain = (pydicom.dcmread(BytesIO(to_bytes(ds))) for ds in made)
    assert compressed.file_meta.TransferSyntaxUID == JPEG_LS_LOSSLESS  # what DCMTK-based PACS decode
    assert plain.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
    assert compressed.SOPInstanceUID == made[0].SOPInstanceUID  # compressing keeps the instance's identity
    assert np.array_equal(compressed.pixel_array, plain.pixel_array)  # lossless
    (equipment,) = compressed.ContributingEquipmentSequence
    assert equipment.PurposeOfReferenceCodeSequence[0].CodeValue == "109102"  # Processing Equipment, CID 7005
    assert (equipment.Manufacturer, equipment.ManufacturerModelName) == ("chexplain", "densenet121-chexpert")
    assert "lrp:epsilon-plus-flat-bn" in equipment.ContributionDescription
    assert equipment.SoftwareVersions[1] == "weights sha256 0123456789abcdef"


def test_the_sources_contributing_equipment_is_kept_before_ours():
    from pydicom.dataset import Dataset

    source = pydicom.dcmread(SIIM, stop_before_pixels=True)
    modality = Dataset()
    modality.Manufacturer = "Cassette Holder Inc."
    source.ContributingEquipmentSequence = [modality]
    ds = secondary_capture(source, np.zeros((64, 64, 3), np.uint8), series_uid="1.2.3", series_number=1,
                           instance_number=1, series_description="x", derivation="d",
                           algorithm=Algorithm("densenet121-chexpert", "0" * 64))
    assert [item.Manufacturer for item in ds.ContributingEquipmentSequence] == ["Cassette Holder Inc.", "chexplain"]
