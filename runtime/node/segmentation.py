"""Where each heatmap points, as a DICOM Segmentation a PACS viewer overlays on the radiograph.

One binary SEG per received image, one segment per explained class and method: the pixels
holding the top ``TOP_REGION_FRACTION`` of the map's positive evidence (``regions.py``), on
the source image's own pixel grid. A projection radiograph has no frame of reference, so the SEG has
none either and references its single source frame (highdicom builds that case since 0.19).
Segments carry the finding's code (the SR's codes), the method and the algorithm, and the
object names chexplain in its Contributing Equipment Sequence.

A Parametric Map of the heatmap itself is not made: its IOD requires the Frame of Reference
module (PS3.3 A.75), which a CR or DX image need not have and the ones seen here lack; an
invented frame would claim patient coordinates the radiograph does not define.

Written uncompressed (Explicit VR Little Endian), which every SCP takes: binary frames are
packed at one bit a pixel, so a segment of a 3000 x 2500 radiograph is about 0.9 MB.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

import numpy as np

from ... import __version__
from .measurement_report import finding_category, finding_code
from .regions import TOP_REGION_FRACTION, Region
from .secondary_capture import Algorithm

SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"
SERIES_DESCRIPTION = "chexplain relevance regions (SEG) - NOT FOR DIAGNOSTIC USE"


def relevance_segmentation(source: Any, regions: Sequence[Region], *, algorithm: Algorithm, series_uid: str,
                           series_number: int, now: datetime | None = None) -> Any:
    """A binary Segmentation of ``source`` (a single-frame image dataset) with one segment per region."""
    import highdicom as hd
    from pydicom.sr.codedict import codes
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    if not regions:
        raise ValueError("a segmentation needs at least one region")
    shape = (int(source.Rows), int(source.Columns))
    descriptions, masks = [], []
    for number, region in enumerate(regions, 1):
        if region.mask.shape != shape:
            raise ValueError(f"{region.finding} {region.method}: mask {region.mask.shape} is not the image's {shape}")
        identification = hd.AlgorithmIdentificationSequence(
            name=f"chexplain {algorithm.model}"[:64], family=codes.cid7162.ArtificialIntelligence, version=__version__,
            parameters={"method": region.method, "region": f"top {TOP_REGION_FRACTION:.0%} of positive evidence",
                        "weights sha256": algorithm.weights_sha256[:16]})
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=f"{region.finding} ({region.method})"[:64],
            segmented_property_category=finding_category(region.finding),
            segmented_property_type=finding_code(region.finding),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC, algorithm_identification=identification))
        masks.append(region.mask)
    seg = hd.seg.Segmentation(
        source_images=[source], pixel_array=np.stack(masks, axis=-1)[np.newaxis],
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY, segment_descriptions=descriptions,
        series_instance_uid=series_uid, series_number=series_number, sop_instance_uid=generate_uid(),
        instance_number=1, manufacturer="chexplain", manufacturer_model_name=algorithm.model[:64],
        software_versions=__version__, device_serial_number=algorithm.weights_sha256[:16] or "unknown",
        series_description=SERIES_DESCRIPTION, transfer_syntax_uid=ExplicitVRLittleEndian,
        contributing_equipment=[algorithm.item(now or datetime.now())],
        omit_empty_frames=False,
    )
    # highdicom copies the radiograph's Pixel Spacing into a Pixel Measures item without a slice
    # thickness, which its own reader (and a strict one) then refuses; the functional group is
    # needed only with a frame of reference (PS3.3 A.51.5.1), and the frame maps 1:1 onto its source.
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "FrameOfReferenceUID" not in seg and "PixelMeasuresSequence" in shared:
        del shared.PixelMeasuresSequence
    if "FrameOfReferenceUID" not in seg:  # Type 2C without one (PS3.3 C.7.6.1): the source's grid is the mask's
        seg.PatientOrientation = source.get("PatientOrientation", "")
    return seg
