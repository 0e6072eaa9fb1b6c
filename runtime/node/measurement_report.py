"""The classifier's findings as a TID 1500 Measurement Report (Comprehensive 3D SR), the form
TID-1500-aware viewers and the IHE AI Results profile read, built with highdicom.

One measurement group (TID 1501) per class of the model: the class as a coded finding type,
its probability as a numeric measurement (DCM 122157 "Probability", no units), present or
absent by the model's threshold as a qualitative evaluation, the algorithm identified (TID
4019: name, version, the weights' hash and the methods as parameters), and the source image
as the group's source. Then one planar-ROI group (TID 1410) per explained class and method:
the outline of the map's strongest evidence on the source image as a closed polygon (SCOORD
POLYLINE; the SEG's region, ``regions.py``), the finding, the method as the measurement
method, and the class's probability as its measurement; viewers that draw only spatial
coordinates (OHIF) show these. The device (chexplain) is the observer; the source image is the
evidence; the Contributing Equipment Sequence names the algorithm; the report is complete,
unverified and, in its series description, not for diagnostic use.

Codes: SNOMED CT and DICOM codes of PS3.16 where one exists, a private scheme (``99CHEXPLAIN``)
only where none does (docs/node.md, the table of codes).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from ... import __version__
from .regions import TOP_REGION_FRACTION, Region
from .secondary_capture import Algorithm

COMPREHENSIVE_3D_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.34"
PRIVATE_SCHEME = "99CHEXPLAIN"
# CheXpert observation -> (code value, coding scheme designator, code meaning)
FINDING_CODES: dict[str, tuple[str, str, str]] = {
    "No Finding": ("111286", "DCM", "No abnormality"),
    "Enlarged Cardiomediastinum": ("CXP01", PRIVATE_SCHEME, "Enlarged cardiomediastinum"),
    "Cardiomegaly": ("287272002", "SCT", "Cardiomegaly"),
    "Lung Opacity": ("112001", "DCM", "Opacity"),
    "Lung Lesion": ("CXP02", PRIVATE_SCHEME, "Lung lesion"),
    "Edema": ("19242006", "SCT", "Pulmonary edema"),
    "Consolidation": ("95436008", "SCT", "Lung consolidation"),
    "Pneumonia": ("233604007", "SCT", "Pneumonia"),
    "Atelectasis": ("46621007", "SCT", "Atelectasis"),
    "Pneumothorax": ("36118008", "SCT", "Pneumothorax"),
    "Pleural Effusion": ("60046008", "SCT", "Pleural effusion"),
    "Pleural Other": ("CXP03", PRIVATE_SCHEME, "Pleural abnormality other than effusion"),
    "Fracture": ("125605004", "SCT", "Fracture of bone"),
    "Support Devices": ("CXP04", PRIVATE_SCHEME, "Support devices"),
}
SERIES_DESCRIPTION = "chexplain findings (TID 1500) - NOT FOR DIAGNOSTIC USE"


def finding_code(name: str) -> Any:
    """The coded concept of a class; a class outside CheXpert's 14 gets a private code of its name."""
    from highdicom.sr import CodedConcept

    value, scheme, meaning = FINDING_CODES.get(name, (name.upper().replace(" ", "_")[:16], PRIVATE_SCHEME, name))
    return CodedConcept(value, scheme, meaning)


def finding_category(name: str) -> Any:
    """The finding's category (CID 7150): a device, no abnormality, or an abnormal structure."""
    from pydicom.sr.codedict import codes

    if name == "Support Devices":
        return codes.cid7150.PhysicalObject
    if name == "No Finding":
        return codes.cid7150.SpatialAndRelationalConcept
    return codes.cid7150.MorphologicallyAbnormalStructure


def method_code(label: str) -> Any:
    """An explanation method as a coded concept (private scheme; long labels as Long Code Value)."""
    from highdicom.sr import CodedConcept

    return CodedConcept(label, PRIVATE_SCHEME, f"{label} heatmap, top {TOP_REGION_FRACTION:.0%} of positive evidence")


def observer_device(algorithm: Algorithm) -> Any:
    """chexplain as the observing device (TID 1004) of the report and the KOS: one UID per model."""
    from highdicom.sr import DeviceObserverIdentifyingAttributes, ObserverContext
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    device = DeviceObserverIdentifyingAttributes(
        uid=generate_uid(entropy_srcs=["chexplain", algorithm.model, algorithm.weights_sha256]),
        name="chexplain", manufacturer_name="chexplain", model_name=algorithm.model[:64])
    return ObserverContext(codes.DCM.Device, device)


def measurement_report(source: Any, probabilities: Mapping[str, float], thresholds: Mapping[str, float], *,
                       algorithm: Algorithm, series_uid: str, series_number: int, regions: Sequence[Region] = (),
                       now: datetime | None = None) -> Any:
    """The report for ``source`` (the received image's dataset, pixel data not needed), with a
    planar-ROI group for each of ``regions`` that has an outline."""
    from highdicom.sr import (
        AlgorithmIdentification,
        Comprehensive3DSR,
        GraphicTypeValues,
        ImageRegion,
        Measurement,
        MeasurementReport,
        MeasurementsAndQualitativeEvaluations,
        ObservationContext,
        PlanarROIMeasurementsAndQualitativeEvaluations,
        QualitativeEvaluation,
        SourceImageForMeasurementGroup,
        SourceImageForRegion,
        TrackingIdentifier,
    )
    from pydicom.sr.codedict import codes
    from pydicom.uid import generate_uid

    now = now or datetime.now()
    weights = f"weights sha256 {algorithm.weights_sha256[:16]}"
    algorithm_name = f"chexplain {algorithm.model}"[:64]
    identification = AlgorithmIdentification(name=algorithm_name, version=__version__,
                                             parameters=[weights, *algorithm.methods], manufacturer="chexplain")
    context = ObservationContext(observer_device_context=observer_device(algorithm))
    groups = []
    for name, probability in probabilities.items():
        concept = finding_code(name)
        present = probability >= thresholds.get(name, 0.5)
        groups.append(MeasurementsAndQualitativeEvaluations(
            tracking_identifier=TrackingIdentifier(uid=generate_uid(), identifier=name),
            finding_type=concept,
            algorithm_id=identification,
            measurements=[Measurement(name=codes.DCM.Probability, value=round(float(probability), 6),
                                      unit=codes.UCUM.NoUnits, algorithm_id=identification)],
            qualitative_evaluations=[QualitativeEvaluation(concept, codes.SCT.Present if present else codes.SCT.Absent)],
            source_images=[SourceImageForMeasurementGroup.from_source_image(source)],
        ))
    for region in regions:
        outline = region.outline()
        if outline is None or region.finding not in probabilities:
            continue
        region_algorithm = AlgorithmIdentification(name=algorithm_name, version=__version__,
                                                   parameters=[weights, region.method], manufacturer="chexplain")
        groups.append(PlanarROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=TrackingIdentifier(uid=generate_uid(),
                                                   identifier=f"{region.finding} evidence ({region.method})"[:64]),
            referenced_region=ImageRegion(GraphicTypeValues.POLYLINE, outline,
                                          SourceImageForRegion.from_source_image(source)),
            finding_type=finding_code(region.finding),
            finding_category=finding_category(region.finding),
            method=method_code(region.method),
            algorithm_id=region_algorithm,
            measurements=[Measurement(name=codes.DCM.Probability, value=round(float(probabilities[region.finding]), 6),
                                      unit=codes.UCUM.NoUnits, algorithm_id=region_algorithm)],
        ))
    content = MeasurementReport(observation_context=context, procedure_reported=codes.LN.XRUnspecifiedBodyRegion,
                                imaging_measurements=groups, title=codes.DCM.ImagingMeasurementReport)
    report = Comprehensive3DSR(
        evidence=[source], content=content, series_instance_uid=series_uid, series_number=series_number,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="chexplain", is_complete=True,
        is_final=False, is_verified=False, contributing_equipment=[algorithm.item(now)],
        series_description=SERIES_DESCRIPTION,
    )
    report.SoftwareVersions = __version__
    return report
