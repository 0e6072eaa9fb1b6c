"""The node between a real PACS and itself: Debian's Orthanc, started on loopback ports with a
generated configuration, sends radiographs to the node (its modality store call); the node
forwards its results back; the tests read them through Orthanc's REST API: the TID 1500 SR in
the source study with coded findings equal to the node's result.json, the losslessly
compressed Secondary Captures with contributing equipment, rendered by Orthanc and shown in
headless Chromium, and the Segmentation of where each map points; dcmtk reads Orthanc's stored
copies as the node wrote them."""

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

from chexplain.runtime.node.measurement_report import COMPREHENSIVE_3D_SR_STORAGE, FINDING_CODES
from chexplain.runtime.node.secondary_capture import JPEG_LS_LOSSLESS, SECONDARY_CAPTURE_STORAGE
from chexplain.runtime.node.segmentation import SEGMENTATION_STORAGE

from helpers import RG1_J2K_MONOCHROME1, headless_chromium
from node_process import dcmtk, free_port, results, serve

pytestmark = pytest.mark.slow


class Orthanc:
    """Orthanc as a child process, with its REST API on ``http_port`` and DICOM on ``dicom_port``."""

    def __init__(self, root: Path, node_port: int) -> None:
        executable = shutil.which("Orthanc")
        assert executable, "Orthanc not found: the PACS tests need it (apt-get install orthanc)"
        self.http_port, self.dicom_port = free_port(), free_port()
        config = {
            "Name": "chexplain-test", "StorageDirectory": str(root / "db"), "IndexDirectory": str(root / "db"),
            "HttpPort": self.http_port, "DicomPort": self.dicom_port, "DicomAet": "ORTHANC",
            "RemoteAccessAllowed": False, "AuthenticationEnabled": False, "DicomCheckCalledAet": False,
            "DicomModalities": {"chexplain": ["CHEXPLAIN", "127.0.0.1", node_port]}, "Plugins": [],
            "StableAge": 1, "HttpTimeout": 60, "DicomScuTimeout": 30,
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

    def json(self, path: str, body: bytes | None = None) -> object:
        request = urllib.request.Request(self.url(path), data=body, method="POST" if body is not None else "GET")
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read())

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self.log.close()


@pytest.fixture(scope="module")
def pacs_and_node(node_model, dx_files, tmp_path_factory):
    """Orthanc and the node pointing at each other; two radiographs sent by Orthanc and explained."""
    root = tmp_path_factory.mktemp("orthanc")
    node_port = free_port()
    orthanc = Orthanc(root, node_port)
    spool = root / "spool"
    node = serve(node_model, spool, node_port, "--sr", "--seg", "--allow-caller", "ORTHANC@127.0.0.1",
                 "--forward", f"ORTHANC@127.0.0.1:{orthanc.dicom_port}")
    try:
        ids = [orthanc.json("/instances", path.read_bytes())["ID"] for path in (dx_files[0], RG1_J2K_MONOCHROME1)]
        orthanc.json("/modalities/chexplain/store", json.dumps({"Resources": ids, "Synchronous": True}).encode())
        # per radiograph: 2 classes x 1 method Secondary Captures, the SR and the SEG, back in Orthanc
        node.wait_for(lambda: len(orthanc.json("/instances")) == 2 + 2 * 4, 240, "the results stored in Orthanc")
        yield orthanc, node, spool, ids
    finally:
        node.stop()
        orthanc.stop()


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
    assert len(forwarded) == 8 and {e["transfer_syntax"] for e in forwarded if e["file"].startswith("sc-")} == {
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
        assert dump.stdout.count('"Probability")') == len(record["probabilities"])
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
