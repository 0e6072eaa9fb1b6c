"""The node between a real PACS and itself: Debian's Orthanc, started on loopback ports with a
generated configuration, sends radiographs to the node (its modality store call); the node
forwards its results back; the tests read them through Orthanc's REST API: the TID 1500 SR in
the source study with coded findings equal to the node's result.json, the losslessly
compressed Secondary Captures with contributing equipment, rendered by Orthanc and shown in
headless Chromium, the Segmentation of where each map points with the report's outlines inside
its segments, and one Key Object Selection per radiograph referencing its stored results; dcmtk
reads Orthanc's stored copies as the node wrote them. Beside the C-STORE destination, a second
Orthanc with its DICOMweb plugin receives every result by STOW-RS, read back by QIDO-RS and
WADO-RS."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.request
from io import BytesIO
from pathlib import Path

import cv2
import highdicom as hd
import numpy as np
import pydicom
import pytest

from chexplain.runtime.node.key_objects import KEY_OBJECT_SELECTION_STORAGE
from chexplain.runtime.node.measurement_report import COMPREHENSIVE_3D_SR_STORAGE, FINDING_CODES
from chexplain.runtime.node.secondary_capture import JPEG_LS_LOSSLESS, SECONDARY_CAPTURE_STORAGE
from chexplain.runtime.node.segmentation import SEGMENTATION_STORAGE

from helpers import RG1_J2K_MONOCHROME1, headless_chromium
from node_process import dcmtk, free_port, results, serve

pytestmark = pytest.mark.slow
DICOMWEB_PLUGIN = "/usr/share/orthanc/plugins/libOrthancDicomWeb.so"  # Debian's orthanc-dicomweb


class Orthanc:
    """Orthanc as a child process, with its REST API on ``http_port`` and DICOM on ``dicom_port``."""

    def __init__(self, root: Path, node_port: int, dicomweb: bool = False) -> None:
        executable = shutil.which("Orthanc")
        assert executable, "Orthanc not found: the PACS tests need it (apt-get install orthanc)"
        root.mkdir(parents=True, exist_ok=True)
        self.http_port, self.dicom_port = free_port(), free_port()
        plugins = [DICOMWEB_PLUGIN] if dicomweb else []
        assert all(Path(p).exists() for p in plugins), "the DICOMweb test needs apt-get install orthanc-dicomweb"
        config = {
            "Name": "chexplain-test", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
            "DicomModalities": {"chexplain": ["CHEXPLAIN", "127.0.0.1", node_port]}, "Plugins": plugins,
            "StableAge": 1, "HttpTimeout": 60, "DicomScuTimeout": 30,
            "DicomWeb": {"Enable": dicomweb, "Root": "/dicom-web/"},
        }
        (root / "orthanc.json").write_text(json.dumps(config))
        self.log = open(root / "orthanc.log", "w")  # noqa: SIM115 - Orthanc's log for as long as it runs
        self.process = subprocess.Popen([executable, str(root / "orthanc.json")], stdout=self.log, stderr=self.log,
                                        cwd=root)
        deadline = time.monotonic() + 60
        while True:
            try:
                self.get("/system")
                break
            except OSError:
                assert self.process.poll() is None and time.monotonic() < deadline, "Orthanc did not start"
                time.sleep(0.2)

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def get(self, path: str) -> bytes:
        with urllib.request.urlopen(self.url(path), timeout=60) as response:
            return response.read()

    def get_as(self, path: str, accept: str) -> tuple[str, bytes]:
        """GET with an Accept header (DICOMweb); the response's Content-Type and body."""
        request = urllib.request.Request(self.url(path), headers={"Accept": accept})
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.headers["Content-Type"], response.read()

    def json(self, path: str, body: bytes | None = None) -> object:
        request = urllib.request.Request(self.url(path), data=body, method="POST" if body is not None else "GET")
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


@pytest.fixture(scope="module")
def pacs_and_node(pacs_web_and_node):
    orthanc, _, node, spool, ids = pacs_web_and_node
    return orthanc, node, spool, ids


@pytest.fixture(scope="module")
def pacs_web_and_node(node_model, dx_files, tmp_path_factory):
    """Orthanc and the node pointing at each other; two radiographs sent by Orthanc and explained,
    the results forwarded back by C-STORE and, side by side, to a second Orthanc by STOW-RS."""
    root = tmp_path_factory.mktemp("orthanc")
    node_port = free_port()
    orthanc = Orthanc(root / "pacs", node_port)
    web = Orthanc(root / "web", node_port, dicomweb=True)
    spool = root / "spool"
    node = serve(node_model, spool, node_port, "--sr", "--seg", "--kos", "--allow-caller", "ORTHANC@127.0.0.1",
                 "--forward", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}",
                 "--forward", f"http://127.0.0.1:{web.http_port}/dicom-web")
    try:
        ids = [orthanc.json("/instances", path.read_bytes())["ID"] for path in (dx_files[0], RG1_J2K_MONOCHROME1)]
        orthanc.json("/modalities/chexplain/store", json.dumps({"Resources": ids, "Synchronous": True}).encode())
        # per radiograph: 2 classes x 1 method Secondary Captures, the SR, the SEG and the KOS, back in Orthanc
        node.wait_for(lambda: len(orthanc.json("/instances")) == 2 + 2 * 5, 240, "the results stored in Orthanc")
        node.wait_for(lambda: len(web.json("/instances")) == 2 * 5, 120, "the results stored by STOW-RS")
        yield orthanc, web, node, spool, ids
    finally:
        node.stop()
        orthanc.stop()
        web.stop()


def stored(orthanc: Orthanc, sop_class: str) -> list[tuple[str, pydicom.Dataset]]:
    found = []
    for instance in orthanc.json("/instances"):
        ds = pydicom.dcmread(BytesIO(orthanc.get(f"/instances/{instance}/file")))
        if ds.SOPClassUID == sop_class:
            found.append((instance, ds))
    return found


def test_the_tid1500_report_lands_in_the_source_study_with_the_nodes_findings(pacs_and_node):
    orthanc, node, spool, ids = pacs_and_node
    sources = {orthanc.json(f"/instances/{i}/study")["ID"] for i in ids}
    by_source = {record["image"]["sop_instance_uid"]: record for record in results(spool)}
    reports = stored(orthanc, COMPREHENSIVE_3D_SR_STORAGE)
    assert len(reports) == 2
    for instance, ds in reports:
        assert orthanc.json(f"/instances/{instance}/study")["ID"] in sources  # filed with its radiograph
        evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        record = by_source[str(evidence.ReferencedSOPInstanceUID)]
        groups = hd.sr.Comprehensive3DSR.from_dataset(ds).content.get_image_measurement_groups()
        assert {g.tracking_identifier for g in groups} == set(record["probabilities"])
        for group in groups:
            name = group.tracking_identifier
            assert group.finding_type.value == FINDING_CODES[name][0]
            assert group.get_measurements()[0].value == pytest.approx(record["probabilities"][name], abs=1e-6)
            present = group.get_qualitative_evaluations()[0].value.meaning == "Present"
            assert present == (name in record["findings"])
        assert any(item.Manufacturer == "chexplain" for item in ds.ContributingEquipmentSequence)


def test_the_captures_arrive_compressed_named_and_rendered(pacs_and_node, browser_page):
    orthanc, node, spool, ids = pacs_and_node
    captures = stored(orthanc, SECONDARY_CAPTURE_STORAGE)
    assert len(captures) == 4
    for instance, ds in captures:
        assert orthanc.json(f"/instances/{instance}/metadata?expand")["TransferSyntax"] == JPEG_LS_LOSSLESS
        equipment = ds.ContributingEquipmentSequence[-1]
        assert (equipment.Manufacturer, equipment.PurposeOfReferenceCodeSequence[0].CodeValue) == ("chexplain", "109102")
        preview = cv2.imdecode(np.frombuffer(orthanc.get(f"/instances/{instance}/preview"), np.uint8), cv2.IMREAD_COLOR)
        assert preview.shape[:2] == (ds.Rows, ds.Columns) and np.abs(preview[..., ::-1].astype(int)
                                                                     - ds.pixel_array.astype(int)).mean() < 1.0
    browser_page.goto(orthanc.url(f"/instances/{captures[0][0]}/preview"))
    shot = cv2.imdecode(np.frombuffer(browser_page.screenshot(), np.uint8), cv2.IMREAD_COLOR)
    assert shot.std() > 20 and (shot[..., 2].astype(int) - shot[..., 0]).max() > 100  # the heatmap's red, not blank
    forwarded = [e for e in node.events() if e["event"] == "forwarded"]
    forwarded = [e for e in forwarded if e["destination"].startswith("ORTHANC@")]
    assert len(forwarded) == 10 and {e["transfer_syntax"] for e in forwarded if e["file"].startswith("sc-")} == {
        JPEG_LS_LOSSLESS}


def test_the_segmentation_lands_beside_its_radiograph_with_one_segment_per_map(pacs_and_node):
    orthanc, node, spool, ids = pacs_and_node
    by_source = {record["image"]["sop_instance_uid"]: record for record in results(spool)}
    sources = {orthanc.json(f"/instances/{i}/study")["ID"] for i in ids}
    segmentations = stored(orthanc, SEGMENTATION_STORAGE)
    assert len(segmentations) == 2
    for instance, ds in segmentations:
        source_uid = str(ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID)
        record = by_source[source_uid]
        assert orthanc.json(f"/instances/{instance}/study")["ID"] in sources  # filed with its radiograph
        wanted = [f"{entry['class']} ({method})" for entry in record["explained"] for method in entry["files"]]
        assert [s.SegmentLabel for s in ds.SegmentSequence] == wanted
        read = hd.seg.Segmentation.from_dataset(ds)
        masks = read.get_pixels_by_source_instance([source_uid], combine_segments=False)
        assert masks.shape[1:] == (ds.Rows, ds.Columns, len(wanted))
        coverage = masks.astype(bool).mean(axis=(0, 1, 2))
        assert ((coverage > 0) & (coverage <= 0.06)).all()  # the top 5% of each map's positive evidence
        written = pydicom.dcmread(spool / "outbox" / record["item"] / record["segmentation"])
        assert written.SOPInstanceUID == ds.SOPInstanceUID and written.PixelData == ds.PixelData  # stored as sent


def test_the_reports_regions_outline_the_segments_on_the_radiograph(pacs_and_node):
    """Each explained map is a TID 1410 planar ROI: a closed polygon on the source image, inside
    the SEG's segment of the same finding and method (the region viewers such as OHIF draw)."""
    orthanc, node, spool, ids = pacs_and_node
    segments = {}
    for _, ds in stored(orthanc, SEGMENTATION_STORAGE):
        source_uid = str(ds.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID)
        masks = hd.seg.Segmentation.from_dataset(ds).get_pixels_by_source_instance([source_uid], combine_segments=False)
        for number, segment in enumerate(ds.SegmentSequence):
            segments[(source_uid, segment.SegmentLabel)] = masks[0, :, :, number].astype(bool)
    for _, ds in stored(orthanc, COMPREHENSIVE_3D_SR_STORAGE):
        source_uid = str(ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0]
                         .ReferencedSOPSequence[0].ReferencedSOPInstanceUID)
        rois = hd.sr.Comprehensive3DSR.from_dataset(ds).content.get_planar_roi_measurement_groups()
        labels = [g.tracking_identifier.replace(" evidence (", " (", 1) for g in rois]  # "Edema (gradcam)", the SEG's
        assert sorted(labels) == sorted(label for (uid, label) in segments if uid == source_uid)
        for group, label in zip(rois, labels):
            polygon = group.roi.value
            mask = segments[(source_uid, label)]
            assert np.array_equal(polygon[0], polygon[-1]) and (polygon >= 0).all()
            assert (polygon[:, 0] <= mask.shape[1]).all() and (polygon[:, 1] <= mask.shape[0]).all()
            filled = np.zeros(mask.shape, np.uint8)
            cv2.fillPoly(filled, [np.round(polygon - 0.5).astype(np.int32)], 1)
            assert filled.sum() > 0 and (filled.astype(bool) & mask).sum() >= 0.8 * filled.sum()


def test_one_key_object_selection_per_radiograph_references_its_stored_results(pacs_and_node):
    orthanc, node, spool, ids = pacs_and_node
    by_source = {record["image"]["sop_instance_uid"]: record for record in results(spool)}
    kept = {str(ds.SOPInstanceUID): (instance, ds) for instance, ds in
            (pair for sop_class in (SECONDARY_CAPTURE_STORAGE, COMPREHENSIVE_3D_SR_STORAGE, SEGMENTATION_STORAGE)
             for pair in stored(orthanc, sop_class))}
    selections = stored(orthanc, KEY_OBJECT_SELECTION_STORAGE)
    assert len(selections) == 2
    seen: set[str] = set()
    for instance, ds in selections:
        document = hd.ko.KeyObjectSelectionDocument.from_dataset(ds)
        assert document.ConceptNameCodeSequence[0].CodeValue == "113000" and "NOT FOR DIAGNOSTIC USE" in ds.SeriesDescription
        referenced = {str(item.ReferencedSOPSequence[0].ReferencedSOPInstanceUID) for item in ds.ContentSequence
                      if "ReferencedSOPSequence" in item}
        assert len(referenced) == 4 and referenced <= set(kept)  # 2 captures, the SR, the SEG: all stored
        study = orthanc.json(f"/instances/{instance}/study")["ID"]
        assert {orthanc.json(f"/instances/{kept[uid][0]}/study")["ID"] for uid in referenced} == {study}
        record = next(r for r in by_source.values() if r["key_objects"] and
                      pydicom.dcmread(spool / "outbox" / r["item"] / r["key_objects"]).SOPInstanceUID == ds.SOPInstanceUID)
        assert record["failed"] == []
        seen |= referenced
    assert seen == set(kept)  # every result of both radiographs in one selection or the other


def test_every_result_arrives_by_stow_rs_and_reads_back_by_qido_and_wado(pacs_web_and_node):
    """The DICOMweb destination beside the C-STORE one: the same objects, found by QIDO-RS in the
    source studies and fetched by WADO-RS as the node wrote them."""
    orthanc, web, node, spool, ids = pacs_web_and_node
    written = {str(ds.SOPInstanceUID): ds for ds in (pydicom.dcmread(path) for path in (spool / "outbox").glob("*/*.dcm"))}
    by_cstore = {str(ds.SOPInstanceUID) for sop_class in (SECONDARY_CAPTURE_STORAGE, COMPREHENSIVE_3D_SR_STORAGE,
                                                           SEGMENTATION_STORAGE, KEY_OBJECT_SELECTION_STORAGE)
                 for _, ds in stored(orthanc, sop_class)}
    _, found = web.get_as("/dicom-web/instances", "application/dicom+json")
    instances = json.loads(found)
    by_stow = {item["00080018"]["Value"][0]: item for item in instances}
    assert set(by_stow) == set(written) == by_cstore and len(written) == 10
    studies = {str(ds.StudyInstanceUID) for ds in written.values()}
    assert {item["0020000D"]["Value"][0] for item in instances} == studies and len(studies) == 2
    for uid, item in by_stow.items():
        study, series = item["0020000D"]["Value"][0], item["0020000E"]["Value"][0]
        content_type, body = web.get_as(f"/dicom-web/studies/{study}/series/{series}/instances/{uid}",
                                        'multipart/related; type="application/dicom"; transfer-syntax=*')
        boundary = content_type.split("boundary=")[1].split(";")[0].strip('"').encode()
        part = body.split(b"--" + boundary)[1].split(b"\r\n\r\n", 1)[1].rsplit(b"\r\n", 1)[0]
        fetched = pydicom.dcmread(BytesIO(part))
        assert fetched.SOPClassUID == written[uid].SOPClassUID
        assert fetched.file_meta.TransferSyntaxUID == written[uid].file_meta.TransferSyntaxUID  # JPEG-LS kept
        assert fetched.get("PixelData") == written[uid].get("PixelData")  # the pixels as sent
    forwarded = [e for e in node.events() if e["event"] == "forwarded" and e["destination"].startswith("http://")]
    assert len(forwarded) == 10 and {e["status"] for e in forwarded} == {"HTTP 200"}


def test_dcmtk_reads_the_stored_copies(pacs_and_node, tmp_path):
    """dsrdump and dcmdump on what Orthanc keeps: the same findings and probabilities as result.json."""
    orthanc, node, spool, ids = pacs_and_node
    by_source = {record["image"]["sop_instance_uid"]: record for record in results(spool)}
    for instance, ds in stored(orthanc, COMPREHENSIVE_3D_SR_STORAGE):
        path = tmp_path / f"{instance}.dcm"
        path.write_bytes(orthanc.get(f"/instances/{instance}/file"))
        dump = subprocess.run([dcmtk("dsrdump"), str(path)], capture_output=True, text=True, timeout=30, check=True)
        evidence = ds.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        record = by_source[str(evidence.ReferencedSOPInstanceUID)]
        assert dump.stdout.startswith("Comprehensive 3D SR Document")
        maps = sum(len(entry["files"]) for entry in record["explained"])  # one planar ROI each, with its probability
        assert dump.stdout.count('"Probability")') == len(record["probabilities"]) + maps
        assert dump.stdout.count('(52101004,SCT,"Present")') == len(record["findings"])
    for sop_class, name in ((SECONDARY_CAPTURE_STORAGE, "SecondaryCaptureImageStorage"),
                            (SEGMENTATION_STORAGE, "SegmentationStorage")):
        instance = stored(orthanc, sop_class)[0][0]
        path = tmp_path / f"{instance}.dcm"
        path.write_bytes(orthanc.get(f"/instances/{instance}/file"))
        dump = subprocess.run([dcmtk("dcmdump"), str(path)], capture_output=True, text=True, timeout=30, check=True)
        assert f"={name}" in dump.stdout and "NOT FOR DIAGNOSTIC USE" in dump.stdout


@pytest.fixture(scope="module")
def browser_page():
    with headless_chromium("the Orthanc browser test") as browser:
        yield browser.new_page(viewport={"width": 900, "height": 900})
