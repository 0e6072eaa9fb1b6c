"""The DICOM node end to end, on loopback: dcmtk's storescu/echoscu/storescp/dcmdump/dsrdump
and pynetdicom against a running `chexplain serve` (and `chexplain watch`), bad input,
SIGKILL in the middle of a burst, and a 50-image burst through a bounded queue."""

from __future__ import annotations

import shutil
import signal
import subprocess
import time

import cv2
import numpy as np
import pydicom
import pytest

from chexplain.runtime.node.measurement_report import COMPREHENSIVE_3D_SR_STORAGE
from chexplain.runtime.node.secondary_capture import SECONDARY_CAPTURE_STORAGE

from dicom_builders import CT_IMAGE_STORAGE, dx_from_png
from helpers import IMAGES, RG1_J2K_MONOCHROME1, RG2_HIP, SIIM
from node_process import NodeProcess, dcmtk, free_port, results, serve, store

PATIENT_NAME = "Test^Patient"
pytestmark = pytest.mark.slow


def test_serve_explains_storescu_images_and_forwards_secondary_captures(node_model, dx_files, tmp_path):
    received = tmp_path / "pacs"
    received.mkdir()
    pacs_port, port = free_port(), free_port()
    pacs = subprocess.Popen([dcmtk("storescp"), "-aet", "PACS", "--output-directory", str(received), str(pacs_port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    spool = tmp_path / "spool"
    node = serve(node_model, spool, port, "--sr", "--forward", f"PACS@127.0.0.1:{pacs_port}")
    try:
        echo = subprocess.run([dcmtk("echoscu"), "-aet", "STORESCU", "-aec", "CHEXPLAIN", "127.0.0.1", str(port)],
                              capture_output=True, text=True, timeout=60)
        assert echo.returncode == 0, echo.stderr
        sent = subprocess.run([dcmtk("storescu"), "-aet", "STORESCU", "-aec", "CHEXPLAIN", "127.0.0.1", str(port),
                               str(dx_files[0]), str(dx_files[1])], capture_output=True, text=True, timeout=120)
        assert sent.returncode == 0, sent.stderr
        j2k = subprocess.run([dcmtk("storescu"), "-xw", "-aet", "STORESCU", "-aec", "CHEXPLAIN", "127.0.0.1", str(port),
                              str(RG1_J2K_MONOCHROME1)], capture_output=True, text=True, timeout=120)
        assert j2k.returncode == 0, j2k.stderr
        stranger = subprocess.run([dcmtk("storescu"), "-aet", "STRANGER", "-aec", "CHEXPLAIN", "127.0.0.1", str(port),
                                   str(dx_files[2])], capture_output=True, text=True, timeout=60)
        assert stranger.returncode != 0 and "Calling AE Title Not Recognized" in stranger.stderr
        node.wait_for(lambda: len(results(spool)) == 3, 180, "three results")
        # Each of the 3 instances: 2 classes x 1 method Secondary Captures + 1 SR, all forwarded.
        node.wait_for(lambda: len(list(received.iterdir())) == 9 and len(list((spool / "outbox").glob("*/*.sent.*"))) == 9,
                      60, "nine objects at the receiving AE, their acceptance recorded")
    finally:
        code = node.stop()
        pacs.terminate()
        pacs.wait(10)
    assert code == 0
    sources = {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID): p
               for p in [dx_files[0], dx_files[1], RG1_J2K_MONOCHROME1]}
    for record in results(spool):
        source_path = sources[record["image"]["sop_instance_uid"]]
        source = pydicom.dcmread(source_path, stop_before_pixels=True)
        folder = next(f for f in (spool / "outbox").iterdir() if f.name == record["item"])
        assert record["schema"] == "chexplain.node/1" and record["status"] == "ok"
        assert record["origin"]["calling_ae"] == "STORESCU" and record["methods"] == ["gradcam"]
        assert set(record["probabilities"]) == set(record["thresholds"]) and len(record["explained"]) == 2
        assert record["model"]["name"] == "node-gradcam" and "inference" in record["timing_ms"]
        for entry in record["explained"]:
            files = entry["files"]["gradcam"]
            overlay = cv2.imread(str(folder / files["overlay"]))
            assert overlay is not None and max(overlay.shape[:2]) <= 1024
            sc = pydicom.dcmread(folder / files["secondary_capture"])
            assert sc.SOPClassUID == SECONDARY_CAPTURE_STORAGE and sc.SOPInstanceUID == files["sop_instance_uid"]
            assert sc.StudyInstanceUID == source.StudyInstanceUID and sc.SeriesInstanceUID != source.SeriesInstanceUID
            assert sc.PatientID == source.PatientID and sc.BurnedInAnnotation == "YES"
            reference = sc.SourceImageSequence[0]
            assert (reference.ReferencedSOPClassUID, reference.ReferencedSOPInstanceUID) == (
                source.SOPClassUID, source.SOPInstanceUID)
            pixels = sc.pixel_array
            assert pixels.shape[2] == 3 and pixels.shape[0] > overlay.shape[0]  # the banner strips on top
            assert pixels[: pixels.shape[0] - overlay.shape[0]].mean() < 60  # black strips with white text
            dump = subprocess.run([dcmtk("dcmdump"), str(folder / files["secondary_capture"])],
                                  capture_output=True, text=True, timeout=30).stdout
            assert "SecondaryCaptureImageStorage" in dump and "NOT FOR DIAGNOSTIC USE" in dump
            assert "SourceImageSequence" in dump and str(source.SOPInstanceUID) in dump
            assert "=JPEGLSLossless" in dump and "ContributingEquipmentSequence" in dump
            assert (folder / (files["secondary_capture"] + f".sent.PACS_127.0.0.1_{pacs_port}")).exists()
        sr = pydicom.dcmread(folder / "sr.dcm")
        assert any((item.Manufacturer, item.get("ManufacturerModelName")) == ("chexplain", record["model"]["name"])
                   for item in sr.ContributingEquipmentSequence)  # beside the source's and highdicom's own
        assert sr.SOPClassUID == COMPREHENSIVE_3D_SR_STORAGE and sr.StudyInstanceUID == source.StudyInstanceUID
        evidence = sr.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence[0].ReferencedSOPSequence[0]
        assert evidence.ReferencedSOPInstanceUID == source.SOPInstanceUID
        report = subprocess.run([dcmtk("dsrdump"), str(folder / "sr.dcm")], capture_output=True, text=True, timeout=30)
        assert report.returncode == 0 and "Comprehensive 3D SR" in report.stdout  # TID 1500, coded findings
        # 14 findings, then one planar ROI with its probability per explained class (2 classes, gradcam)
        assert report.stdout.count('"Probability")') == 14 + 2 and "NOT FOR DIAGNOSTIC USE" in report.stdout
        assert report.stdout.count('SCOORD:(,,"Image Region")=(POLYLINE') == 2
    forwarded = [pydicom.dcmread(p, stop_before_pixels=True) for p in received.iterdir()]
    assert sorted(str(ds.SOPClassUID) for ds in forwarded).count(SECONDARY_CAPTURE_STORAGE) == 6
    log = node.log_path.read_text()
    assert PATIENT_NAME not in log and "TEST-0001" not in log  # no patient data in the log
    events = [e["event"] for e in node.events()]
    assert events.count("explained") == 3 and events.count("forwarded") == 9
    assert "association_rejected" in events and "echo" in events and "health" in events and events[-1] == "stopped"


def test_bad_input_is_answered_or_quarantined_and_the_node_goes_on(node_model, dx_files, tmp_path):
    folder = tmp_path / "bad"
    folder.mkdir()
    no_pixels = dx_from_png(IMAGES / "00000100_000.png", folder / "no-pixels.dcm", pixels=False)
    ct = dx_from_png(IMAGES / "00000100_000.png", folder / "ct.dcm", sop_class=CT_IMAGE_STORAGE)
    truncated = pydicom.dcmread(dx_files[0])
    truncated.SOPInstanceUID = pydicom.uid.generate_uid()
    truncated.PixelData = truncated.PixelData[: len(truncated.PixelData) // 3]  # corrupt: a third of the pixels
    truncated.save_as(folder / "truncated.dcm", enforce_file_format=True)
    spool, port = tmp_path / "spool", free_port()
    node = serve(node_model, spool, port)
    try:
        rejected = subprocess.run([dcmtk("storescu"), "-xy", "-aet", "STORESCU", "-aec", "CHEXPLAIN", "127.0.0.1",
                                   str(port), str(ct), str(SIIM)], capture_output=True, text=True, timeout=60)
        assert rejected.returncode != 0  # no presentation context for CT Image or Secondary Capture Storage
        hip = subprocess.run([dcmtk("storescu"), "-xs", "-aet", "STORESCU", "-aec", "CHEXPLAIN", "127.0.0.1", str(port),
                              str(RG2_HIP)], capture_output=True, text=True, timeout=60)
        assert hip.returncode == 0, hip.stderr
        assert store(port, [no_pixels, folder / "truncated.dcm", dx_files[3]]) == [0, 0, 0]
        node.wait_for(lambda: len(results(spool)) == 1 and len(list((spool / "quarantine").iterdir())) == 3, 120,
                      "one result and three quarantined")
    finally:
        assert node.stop() == 0
    reasons = sorted((q / "reason.txt").read_text() for q in (spool / "quarantine").iterdir())
    assert any("BodyPartExamined is HIP" in r for r in reasons)
    assert any("DICOM without pixel data" in r for r in reasons)
    assert any("cannot decode" in r or "pixel" in r.lower() for r in reasons if "HIP" not in r and "without" not in r)
    for entry in (spool / "quarantine").iterdir():
        assert any(f.suffix == ".dcm" for f in entry.iterdir())  # the input is kept beside its reason
    [record] = results(spool)
    assert record["image"]["sop_instance_uid"] == str(pydicom.dcmread(dx_files[3], stop_before_pixels=True).SOPInstanceUID)
    assert [e["event"] for e in node.events()].count("quarantined") == 3


def test_watch_takes_complete_files_and_quarantines_bad_ones(node_model, dx_files, tmp_path):
    drop, spool = tmp_path / "drop", tmp_path / "spool"
    drop.mkdir()
    shutil.copy(IMAGES / "00001369_000.png", drop / "png-radiograph.png")
    shutil.copy(dx_files[1], drop / "dx.dcm")
    (drop / "empty.dcm").write_bytes(b"")
    (drop / "corrupt.dcm").write_bytes(b"\0" * 128 + b"DICM" + np.random.default_rng(0).bytes(2000))
    (drop / "arriving.png.part").write_bytes((IMAGES / "00004030_000.png").read_bytes())
    watcher = NodeProcess(["watch", str(drop), "--model", str(node_model), "--spool", str(spool), "--settle", "0.5",
                           "--health-interval", "1"], tmp_path / "watch.log").start(wait_for="watching")
    try:
        watcher.wait_for(lambda: len(results(spool)) == 2 and len(list((spool / "quarantine").iterdir())) == 2, 120,
                         "two results, two quarantined")
        assert (drop / "arriving.png.part").exists()  # never taken under its partial name
        (drop / "arriving.png.part").rename(drop / "arrived.png")
        watcher.wait_for(lambda: len(results(spool)) == 3, 60, "the renamed file explained")
    finally:
        assert watcher.stop() == 0
    by_format = {r["image"]["format"]: r for r in results(spool)}
    dicom_files = {f.name for f in (spool / "outbox" / by_format["dicom"]["item"]).iterdir()}
    png_files = {f.name for f in (spool / "outbox" / by_format["png"]["item"]).iterdir()}
    assert any(n.startswith("sc-") for n in dicom_files) and not any(n.startswith("sc-") for n in png_files)
    assert any(n.startswith("overlay-") for n in png_files)
    reasons = sorted((q / "reason.txt").read_text().strip() for q in (spool / "quarantine").iterdir())
    assert "empty file (0 bytes)" in reasons
    assert any("not a readable DICOM" in r or "without pixel data" in r for r in reasons)
    assert sorted(p.name for p in (drop / "done").iterdir()) == sorted(
        ["png-radiograph.png", "dx.dcm", "empty.dcm", "corrupt.dcm", "arrived.png"])


def test_a_watched_dicom_with_invalid_uids_gets_its_overlays_and_no_dicom_objects(node_model, tmp_path):
    drop, spool = tmp_path / "drop", tmp_path / "spool"
    drop.mkdir()
    dx_from_png(IMAGES / "00001369_000.png", drop / "bad-uid.dcm", StudyInstanceUID="../../../../tmp/x")
    watcher = NodeProcess(["watch", str(drop), "--model", str(node_model), "--spool", str(spool), "--settle", "0.3",
                           "--sr", "--health-interval", "1"], tmp_path / "watch.log").start(wait_for="watching")
    try:
        watcher.wait_for(lambda: len(results(spool)) == 1, 120, "one result")
    finally:
        assert watcher.stop() == 0
    [record] = results(spool)
    assert record["failed"] == [{"object": "DICOM results", "error": "StudyInstanceUID is not a UID (digits and dots, "
                                                                     "no empty or zero-led component)"}]
    files = {f.name for f in (spool / "outbox" / record["item"]).iterdir()}
    assert any(n.startswith("overlay-") for n in files) and not any(n.endswith(".dcm") for n in files)
    assert "../../../../tmp/x" not in (tmp_path / "watch.log").read_text()


def test_a_legal_radiograph_at_the_budget_costs_a_small_multiple_of_its_decoded_size(node_model, tmp_path):
    """8000 x 8000 x 16 bit (122 MiB decoded) under a 128 MiB budget: explained, with the node's
    peak memory growing by at most 4.5 times the decoded size."""
    drop, spool = tmp_path / "drop", tmp_path / "spool"
    drop.mkdir()
    dx_from_png(IMAGES / "00001369_000.png", tmp_path / "warm-up.dcm")
    big = pydicom.dcmread(tmp_path / "warm-up.dcm")
    big.SOPInstanceUID = pydicom.uid.generate_uid()
    ramp = np.arange(8000, dtype=np.uint16)
    big.Rows = big.Columns = 8000
    big.PixelData = ((ramp[:, None] + ramp[None, :]) % 4096).astype(np.uint16).tobytes()
    big.save_as(tmp_path / "big.dcm", enforce_file_format=True)
    del big
    watcher = NodeProcess(["watch", str(drop), "--model", str(node_model), "--spool", str(spool), "--settle", "0.3",
                           "--health-interval", "1"], tmp_path / "watch.log").start(wait_for="watching")
    try:
        shutil.copy(tmp_path / "warm-up.dcm", drop / "warm-up.dcm")  # the backend's own buffers, allocated once
        watcher.wait_for(lambda: len(results(spool)) == 1, 120, "the warm-up explained")
        before = watcher.rss_mb("VmHWM")
        shutil.copy(tmp_path / "big.dcm", drop / "big.dcm")
        watcher.wait_for(lambda: len(results(spool)) == 2, 180, "the large radiograph explained")
        growth = watcher.rss_mb("VmHWM") - before
    finally:
        assert watcher.stop() == 0
    assert growth <= 4.5 * 8000 * 8000 * 2 / (1 << 20), f"peak grew by {growth:.0f} MiB"


def test_sigkill_in_the_middle_of_a_burst_loses_and_duplicates_nothing(node_model, tmp_path):
    burst = tmp_path / "burst"
    burst.mkdir()
    pngs = sorted(IMAGES.glob("*.png"))
    files = [dx_from_png(pngs[n % len(pngs)], burst / f"{n:02d}.dcm") for n in range(12)]
    uids = {str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID) for f in files}
    spool, port = tmp_path / "spool", free_port()
    node = serve(node_model, spool, port)
    assert store(port, files) == [0] * len(files)  # every instance acknowledged, so each must be explained
    node.wait_for(lambda: len(results(spool)) >= 2, 120, "the first results")
    node.stop(signal.SIGKILL)
    done_before = len(results(spool))
    assert done_before < len(files), "the node finished the burst before it was killed; nothing was tested"
    node = serve(node_model, spool, port)
    try:
        assert store(port, files[:3]) == [0, 0, 0]  # a modality re-sending what it already sent
        node.wait_for(lambda: len(results(spool)) == len(files) and not list((spool / "inbox").glob("*.dcm")), 180,
                      "every result after the restart")
        time.sleep(1.0)
    finally:
        assert node.stop() == 0
    explained = [r["image"]["sop_instance_uid"] for r in results(spool)]
    assert sorted(explained) == sorted(uids)  # each exactly once
    assert not list((spool / "quarantine").iterdir())
    events = [e["event"] for e in node.events()]
    assert "recovered" in events and events.count("duplicate") == 3


def test_a_burst_of_50_goes_through_a_bounded_queue_with_flat_memory(node_model, tmp_path):
    burst = tmp_path / "burst"
    burst.mkdir()
    pngs = sorted(IMAGES.glob("*.png"))
    files = [dx_from_png(pngs[n % len(pngs)], burst / f"{n:02d}.dcm") for n in range(50)]
    spool, port = tmp_path / "spool", free_port()
    node = serve(node_model, spool, port, "--max-queue", "4")
    try:
        store(port, files[:5], retry_refused=True)
        node.wait_for(lambda: len(results(spool)) == 5, 120, "the first five")
        baseline = node.rss_mb()
        assert store(port, files[5:], retry_refused=True) == [0] * 45
        node.wait_for(lambda: len(results(spool)) == 50, 300, "all fifty")
        grown = node.rss_mb() - baseline
        health = [e for e in node.events() if e["event"] == "health"]
    finally:
        assert node.stop() == 0
    refused = sum(1 for e in node.events() if e["event"] == "refused")
    assert refused > 0  # the bound was reached and answered Out of Resources
    assert max(e["queue"] for e in health) <= 4
    assert grown < 100, f"resident memory grew by {grown:.0f} MB over 45 images"
    assert health[-1]["latency_ms"]["p50"] > 0
    assert np.unique([r["image"]["sop_instance_uid"] for r in results(spool)]).size == 50


def test_results_that_cannot_be_sent_stay_and_are_retried(node_model, dx_files, tmp_path):
    pacs_port, port = free_port(), free_port()
    config = tmp_path / "node.toml"
    config.write_text(f"""
[[callers]]
ae_title = "MODALITY"

[forward]
ae_title = "PACS"
host = "127.0.0.1"
port = {pacs_port}
retry_initial_s = 0.5
retry_max_s = 1
""")
    spool, received = tmp_path / "spool", tmp_path / "pacs"
    received.mkdir()
    node = NodeProcess(["serve", "--config", str(config), "--model", str(node_model), "--spool", str(spool),
                        "--port", str(port), "--host", "127.0.0.1"], tmp_path / "node.log").start()
    try:
        assert store(port, [dx_files[4]]) == [0]
        node.wait_for(lambda: sum(e["event"] == "forward_failed" for e in node.events()) >= 2, 60, "failed tries")
        assert len(list((spool / "outbox").glob("*/*.sent.*"))) == 0 and len(list((spool / "outbox").glob("*/sc-*.dcm"))) == 2
        pacs = subprocess.Popen([dcmtk("storescp"), "-aet", "PACS", "--output-directory", str(received), str(pacs_port)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            node.wait_for(lambda: len(list(received.iterdir())) == 2 and len(list((spool / "outbox").glob("*/*.sent.*"))) == 2,
                          60, "the captures delivered (and their acceptance recorded) once the PACS is up")
        finally:
            pacs.terminate()
            pacs.wait(10)
    finally:
        assert node.stop() == 0
    assert len(list((spool / "outbox").glob("*/*.sent.*"))) == 2
    failed = [e for e in node.events() if e["event"] == "forward_failed"]
    assert failed[0]["retry_in_s"] == 0.5 and failed[1]["retry_in_s"] == 1.0  # doubling, capped


def test_library_warnings_reach_the_json_log_pseudonymised(node_model, dx_files, tmp_path):
    """pydicom warns about an invalid UID quoting it; the node refuses the instance (Cannot
    Understand) and its log carries the warning, hashed."""
    import warnings

    ds = pydicom.dcmread(dx_files[0])
    leaky_uid = "1.2.826.0.1.3680043.Doe"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ds.SOPInstanceUID, ds.StudyInstanceUID = pydicom.uid.generate_uid(), leaky_uid
        ds.PatientName = "Doe^Jane"
    ds.save_as(tmp_path / "leaky.dcm", enforce_file_format=True)
    spool, port = tmp_path / "spool", free_port()
    node = serve(node_model, spool, port)
    try:
        assert store(port, [tmp_path / "leaky.dcm"]) == [0xC000]
        node.wait_for(lambda: any(e["event"] == "store_refused" for e in node.events()), 30, "the refusal logged")
    finally:
        assert node.stop() == 0
    text = node.log_path.read_text()
    assert all(line.startswith("{") for line in text.splitlines())  # nothing but JSON events on stderr
    assert leaky_uid not in text and "Doe" not in text
    library = [e for e in node.events() if e["event"] == "library"]
    assert library and any("Invalid value for VR UI" in e["message"] for e in library)
    [refused] = [e for e in node.events() if e["event"] == "store_refused"]
    assert refused["reason"].startswith("StudyInstanceUID is not a UID") and not list((spool / "inbox").glob("*.dcm"))
