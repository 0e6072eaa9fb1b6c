"""The node's settings, its queue and bookkeeping, the watcher's completeness rule, the log."""

from __future__ import annotations

import io
import json
import shutil
import tempfile
import threading
from pathlib import Path

import cv2
import pytest

from chexplain.errors import ConfigError, InputError
from chexplain.runtime.node.config import Caller, Destination, NodeConfig, load_config, with_overrides
from chexplain.runtime.node.events import EventLog, Metrics, uid_hash
from chexplain.runtime.node.forwarder import Outbox
from chexplain.runtime.node.spool import Spool
from chexplain.runtime.node.watcher import FolderWatcher, is_partial
from chexplain.runtime.node.worker import Node
from chexplain.runtime.percentiles import percentile

from helpers import ROOT

EXAMPLE = """
[node]
ae_title = "EDGE1"
port = 4242
spool = "/srv/spool"
max_queue = 4

[[callers]]
ae_title = "XRAY_ROOM_1"
addresses = ["10.0.0.12", "10.0.0.13"]

[[callers]]
ae_title = "PACS"

[model]
path = "artifacts/m"
methods = ["gradcam", "lrp:epsilon"]
classes = "topk:2"

[results]
structured_report = true
segmentation = true
max_size = 512

[forward]
ae_title = "ARCHIVE"
host = "10.0.0.5"
port = 104
retry_initial_s = 1
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "node.toml"
    path.write_text(text)
    return path


def test_config_file_is_read_and_flags_override_it(tmp_path):
    config = load_config(write(tmp_path, EXAMPLE))
    assert (config.ae_title, config.port, config.spool, config.max_queue) == ("EDGE1", 4242, Path("/srv/spool"), 4)
    assert config.callers == (Caller("XRAY_ROOM_1", ("10.0.0.12", "10.0.0.13")), Caller("PACS"))
    assert (config.model, config.methods, config.classes) == ("artifacts/m", ("gradcam", "lrp:epsilon"), "topk:2")
    assert config.structured_report and config.segmentation and config.max_size == 512
    assert config.forward == (Destination("ARCHIVE", "10.0.0.5", 104, 1.0, 300.0),)
    assert config.allows("XRAY_ROOM_1", "10.0.0.13") and not config.allows("XRAY_ROOM_1", "10.0.0.99")
    assert config.allows("PACS", "192.168.1.1") and not config.allows("OTHER", "10.0.0.12")
    overridden = with_overrides(config, port=11112, model=None, max_queue=9)
    assert (overridden.port, overridden.model, overridden.max_queue) == (11112, "artifacts/m", 9)


@pytest.mark.parametrize("text, message", [
    ("[node]\nportt = 1\n", "unknown key 'portt' in [node]"),
    ("[nodes]\n", "unknown table [nodes]"),
    ("[node]\nport = 'x'\n", "port must be int"),
    ("[node\n", "not valid TOML"),
    ("[[callers]]\nae_title = 'A'\naddresses = ['not-an-ip']\n", "is not an IP address"),
    ("[[callers]]\nae_title = 'MUCH_TOO_LONG_AE_TITLE'\n", "is not an AE title"),
    ("[forward]\nae_title = 'A'\n", "[forward] needs host, port"),
    ("[forward]\nae_title = 'A'\nhost = 'h'\nport = '104'\n", "[forward] port must be positive numbers"),
    ("[forward]\nae_title = 'A'\nhost = 'h'\nport = 104\nretry_max_s = -1\n", "retry_max_s must be positive"),
    ("forward = 3\n", "forward must be a table"),
])
def test_config_errors_name_the_file_and_the_problem(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=None) as caught:
        load_config(path)
    assert message in str(caught.value) and str(path) in str(caught.value)


def test_several_destinations_each_a_forward_table(tmp_path):
    two = "[[forward]]\nae_title = 'PACS'\nhost = 'pacs'\nport = 104\n\n[[forward]]\nae_title = 'VNA'\nhost = 'vna'\nport = 11112\n"
    config = load_config(write(tmp_path, two)).check(listening=False)
    assert [d.name for d in config.forward] == ["PACS@pacs:104", "VNA@vna:11112"]
    with pytest.raises(ConfigError, match="named twice"):
        NodeConfig(forward=(Destination("PACS", "pacs", 104), Destination("PACS", "pacs", 104))).check(listening=False)


def test_someone_must_be_allowed_to_call():
    with pytest.raises(ConfigError, match="no calling AE title is allowed"):
        NodeConfig().check()
    assert NodeConfig(allow_any_caller=True).check().allows("ANYONE", "1.2.3.4")
    assert NodeConfig().check(listening=False)  # the folder watcher has no callers


def test_command_line_callers_and_destinations():
    assert Caller.parse("ROOM2@10.1.1.1,10.1.1.2") == Caller("ROOM2", ("10.1.1.1", "10.1.1.2"))
    assert Destination.parse("PACS@pacs.local:11112") == Destination("PACS", "pacs.local", 11112)
    with pytest.raises(ConfigError, match="AE@HOST:PORT"):
        Destination.parse("PACS@pacs.local")


class FakeProcessor:
    """Stands in for the model: 'bad' inputs fail, others give one file; can be held mid-item."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.release.set()
        self.in_hand = threading.Event()
        self.seen: list[bytes] = []

    def process(self, item: Path, origin):
        self.in_hand.set()
        self.release.wait(10)
        data = item.read_bytes()
        self.seen.append(data)
        if data.startswith(b"bad"):
            raise InputError(item, "not a radiograph")
        return {"result.json": b"{}", "copy.bin": data}, {"findings": []}


def wait_until(condition, timeout: float = 10.0) -> None:
    event = threading.Event()
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        event.wait(0.02)
    raise AssertionError("condition not reached")


def test_the_queue_is_bounded_duplicates_are_kept_once_and_failures_quarantined(tmp_path):
    lines = io.StringIO()
    processor = FakeProcessor()
    node = Node(Spool(tmp_path), processor, EventLog(lines), max_queue=2)
    node.start()
    processor.release.clear()  # the worker holds the first item
    assert node.submit(b"one", ".bin", key="aaa") == "accepted"
    assert node.submit(b"one", ".bin", key="aaa") == "duplicate"  # the same instance sent again
    assert node.submit(b"bad two", ".bin", key="bbb") == "accepted"
    assert node.submit(b"three", ".bin", key="ccc") == "refused"  # two waiting: full
    processor.release.set()
    wait_until(lambda: node.depth == 0)
    assert node.submit(b"three", ".bin", key="ccc") == "accepted"
    wait_until(lambda: node.depth == 0)
    node.stop(5)
    results = sorted((p / "copy.bin").read_bytes() for p in node.spool.outbox.iterdir())
    assert results == [b"one", b"three"]
    [quarantined] = list(node.spool.quarantined.iterdir())
    assert (quarantined / "reason.txt").read_text() == "not a radiograph\n"
    events = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert [e["event"] for e in events].count("refused") == 1
    assert node.health()["processed"] == 2 and node.health()["failed"] == 1 and node.health()["refused"] == 1


def test_stop_finishes_the_item_in_hand_and_leaves_the_rest_for_the_next_start(tmp_path):
    processor = FakeProcessor()
    node = Node(Spool(tmp_path), processor, EventLog(io.StringIO()), max_queue=10)
    node.start()
    processor.release.clear()
    for n in range(3):
        node.submit(f"item {n}".encode(), ".bin", key=f"k{n}")
    assert processor.in_hand.wait(10) and not processor.seen and node.depth == 3
    stopper = threading.Thread(target=node.stop, args=(10,))
    stopper.start()
    processor.release.set()
    stopper.join(10)
    assert node.submit(b"late", ".bin") == "refused"
    assert len(list(node.spool.outbox.iterdir())) == 1 and len(node.spool.pending()) == 2
    again = Node(Spool(tmp_path), FakeProcessor(), EventLog(io.StringIO()), max_queue=10)
    again.start()
    wait_until(lambda: again.depth == 0)
    again.stop(5)
    contents = sorted((p / "copy.bin").read_bytes() for p in again.spool.outbox.iterdir())
    assert contents == [b"item 0", b"item 1", b"item 2"]


def test_each_destination_has_its_own_queue_of_what_it_neither_took_nor_refused(tmp_path):
    spool = Spool(tmp_path)
    item = spool.accept(b"x", ".dcm")
    folder = spool.finish(item, {"result.json": b"{}", "sc-1.dcm": b"a", "sc-2.dcm": b"b", "sr.dcm": b"c"})
    pacs, viewer = (Outbox(spool.outbox, spool.rejected, Destination(ae, "10.0.0.5", 104)) for ae in ("PACS", "VIEW ER"))
    assert [p.name for p in pacs.unsent()] == ["sc-1.dcm", "sc-2.dcm", "sr.dcm"]
    pacs.mark_sent(folder / "sc-1.dcm")
    kept = pacs.reject(folder / "sr.dcm", "PACS@10.0.0.5:104: status 0xC000 (Failure: Cannot understand)")
    assert [p.name for p in pacs.unsent()] == ["sc-2.dcm"]
    assert [p.name for p in viewer.unsent()] == ["sc-1.dcm", "sc-2.dcm", "sr.dcm"]  # another destination's queue
    assert kept.read_bytes() == b"c" and viewer.key == "VIEW_ER_10.0.0.5_104"  # file-name safe
    assert kept == spool.rejected / "PACS_10.0.0.5_104" / folder.name / "sr.dcm"
    assert "0xC000" in kept.with_name("sr.dcm.status.txt").read_text()
    assert (folder / "sr.dcm").read_bytes() == b"c"  # the other destinations still have it


def test_the_watcher_takes_only_complete_files(tmp_path):
    watcher = FolderWatcher(tmp_path, node=None, log=EventLog(io.StringIO()), settle_s=2.0)
    growing, done, hidden, partial = (tmp_path / n for n in ("growing.dcm", "done.png", ".hidden.png", "x.png.part"))
    for path in (growing, done, hidden, partial):
        path.write_bytes(b"12")
    assert watcher.complete_files(now=100.0) == []  # first sight: not yet stable
    growing.write_bytes(b"1234")
    assert watcher.complete_files(now=101.0) == []
    assert watcher.complete_files(now=102.5) == [done]  # growing changed at 101: 1.5 s only
    assert set(watcher.complete_files(now=103.5)) == {done, growing}
    assert is_partial(hidden) and is_partial(partial) and not is_partial(done)


def test_the_log_is_json_lines_and_metrics_have_percentiles():
    stream = io.StringIO()
    log = EventLog(stream)
    log("received", sop=uid_hash("1.2.3"), queue=1)
    record = json.loads(stream.getvalue())
    assert record["event"] == "received" and record["sop"] == uid_hash("1.2.3") != "1.2.3" and len(record["sop"]) == 16
    metrics = Metrics()
    for ms in range(1, 101):
        metrics.done(float(ms))
    assert metrics.snapshot()["latency_ms"] == {"p50": 50.0, "p90": 90.0, "p99": 99.0}
    assert percentile([5.0], 99) == 5.0


def test_the_deployment_example_is_a_valid_config():
    config = load_config(ROOT / "deploy" / "node.toml").check()
    assert config.callers and config.forward and config.structured_report


def test_the_commands_refuse_settings_that_cannot_work(tmp_path):
    from click.testing import CliRunner

    from chexplain.cli import main

    runner = CliRunner()
    nobody = runner.invoke(main, ["serve", "--spool", str(tmp_path / "spool")])
    assert nobody.exit_code == 2 and "no calling AE title is allowed" in nobody.output
    retry = runner.invoke(main, ["watch", str(tmp_path), "--retry-max", "3"])
    assert retry.exit_code == 2 and "need a destination" in retry.output
    bad = runner.invoke(main, ["serve", "--config", str(write(tmp_path, "[node]\nport = 0\n")), "--allow-any-caller"])
    assert bad.exit_code == 2 and "port 0 is outside 1-65535" in bad.output
    assert not (tmp_path / "spool").exists()  # nothing was created for a node that did not start


def test_a_full_disk_stops_intake_says_so_once_and_resumes_by_itself(tmp_path, monkeypatch):
    import errno

    from chexplain.runtime.node import spool as spool_module
    from chexplain.runtime.node import worker as worker_module

    full = threading.Event()
    really_write = spool_module.write_durably

    def write(path: Path, data: bytes) -> None:
        if full.is_set():  # the filesystem's answer when the disk is full, after part of the data
            path.write_bytes(data[: len(data) // 2])
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        really_write(path, data)

    monkeypatch.setattr(spool_module, "write_durably", write)
    monkeypatch.setattr(worker_module, "WRITE_RETRY_S", (0.05, 0.2))
    lines = io.StringIO()
    node = Node(Spool(tmp_path), FakeProcessor(), EventLog(lines), max_queue=10)
    node.start()
    assert node.submit(b"first", ".bin", key="k1") == "accepted"
    wait_until(lambda: node.depth == 0)
    full.set()
    with pytest.raises(OSError, match="No space left"):
        node.submit(b"while full", ".bin", key="k2")  # the SCP answers Out of Resources
    assert not list((tmp_path / "inbox" / ".incoming").iterdir())  # no partial file left behind
    full.clear()
    assert node.submit(b"second", ".bin", key="k3") == "accepted"
    full.set()  # the disk fills while the worker writes its results
    wait_until(lambda: "cannot_write" in node.health())
    assert node.submit(b"third", ".bin", key="k4") == "refused"
    full.clear()  # space again
    wait_until(lambda: node.depth == 0 and "cannot_write" not in node.health())
    assert node.submit(b"third", ".bin", key="k4") == "accepted"
    wait_until(lambda: node.depth == 0)
    node.stop(5)
    assert sorted((p / "copy.bin").read_bytes() for p in node.spool.outbox.iterdir()) == [b"first", b"second", b"third"]
    events = [json.loads(line) for line in lines.getvalue().splitlines()]
    names = [e["event"] for e in events]
    assert names.count("write_failed") == 1 and names.count("write_resumed") == 1  # said once, not per retry
    refused = next(e for e in events if e["event"] == "refused")
    assert refused["reason"].startswith("cannot write results: No space left on device")


def test_a_reused_sop_instance_uid_with_other_content_is_quarantined_not_dropped(tmp_path):
    node = Node(Spool(tmp_path), FakeProcessor(), EventLog(io.StringIO()), max_queue=10)
    node.start()
    assert node.submit(b"image A", ".dcm", key="uid1") == "accepted"
    wait_until(lambda: node.depth == 0)
    assert node.submit(b"image A", ".dcm", key="uid1") == "duplicate"  # sent again: acknowledged, once
    assert node.submit(b"image B", ".dcm", key="uid1") == "conflict"
    node.stop(5)
    again = Node(Spool(tmp_path), FakeProcessor(), EventLog(io.StringIO()), max_queue=10)
    again.start()  # what was received is known after a restart too, with its digest
    assert again.submit(b"image A", ".dcm", key="uid1") == "duplicate"
    assert again.submit(b"image C", ".dcm", key="uid1") == "conflict"
    again.stop(5)
    quarantined = sorted(again.spool.quarantined.iterdir())
    assert [next(q.glob("*.dcm")).read_bytes() for q in quarantined] == [b"image B", b"image C"]
    assert all("received before with different content" in (q / "reason.txt").read_text() for q in quarantined)
    assert [(p / "copy.bin").read_bytes() for p in again.spool.outbox.iterdir()] == [b"image A"]


def test_whole_files_by_their_format_and_cut_ones(tmp_path):
    from chexplain.runtime.node.watcher import looks_complete

    from dicom_builders import dx_from_png
    from helpers import IMAGES, RG1_J2K_MONOCHROME1

    png = (IMAGES / "00013125_000.png").read_bytes()
    jpeg = cv2.imencode(".jpg", cv2.imread(str(IMAGES / "00013125_000.png")))[1].tobytes()
    native = dx_from_png(IMAGES / "00013125_000.png", tmp_path / "dx.dcm").read_bytes()
    encapsulated = RG1_J2K_MONOCHROME1.read_bytes()
    for whole in (png, jpeg, native, encapsulated):
        assert looks_complete(whole)
        assert not any(looks_complete(whole[: int(len(whole) * share)]) for share in (0.01, 0.5, 0.99))
    assert looks_complete(b"neither PNG, JPEG nor DICOM, but long enough to say so" * 4)  # the reader says what
    assert not looks_complete(b"") and not looks_complete(b"\0" * 100)


def test_a_writer_that_pauses_past_settle_is_waited_for_and_the_file_taken_whole(tmp_path):
    from helpers import IMAGES

    lines = io.StringIO()
    processor = FakeProcessor()
    node = Node(Spool(tmp_path / "spool"), processor, EventLog(lines), max_queue=10)
    node.start()
    drop = tmp_path / "drop"
    drop.mkdir()
    watcher = FolderWatcher(drop, node, EventLog(lines), settle_s=2.0)
    png = (IMAGES / "00013125_000.png").read_bytes()
    (drop / "Doe^John.png").write_bytes(png[: len(png) // 2])  # the writer pauses here for 3.5 s
    assert watcher.complete_files(100.0) == []
    [path] = watcher.complete_files(103.5)
    assert watcher.take(path, 103.5) == "waiting" and watcher.take(path, 104.0) == "waiting"
    (drop / "Doe^John.png").write_bytes(png)  # the writer finishes
    assert watcher.complete_files(105.0) == []  # changed: stable again from now
    [path] = watcher.complete_files(107.5)
    assert watcher.take(path, 107.5) == "accepted"
    wait_until(lambda: node.depth == 0)
    node.stop(5)
    assert processor.seen == [png]  # taken once, whole
    events = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert [e["event"] for e in events].count("watch_waiting") == 1  # said once, not at every poll
    assert "Doe" not in lines.getvalue()  # file names only hashed


def test_an_unreadable_file_is_reported_once_and_a_cut_one_taken_after_the_grace(tmp_path, monkeypatch):
    lines = io.StringIO()
    node = Node(Spool(tmp_path / "spool"), FakeProcessor(), EventLog(lines), max_queue=10)
    node.start()
    drop = tmp_path / "drop"
    drop.mkdir()
    (drop / "Doe^Jane.dcm").write_bytes(b"x" * 500)
    (drop / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 100)  # stays cut: the writer died
    real_read = Path.read_bytes

    def read_bytes(path: Path) -> bytes:
        if path.name == "Doe^Jane.dcm":
            raise PermissionError(13, "Permission denied")
        return real_read(path)

    monkeypatch.setattr(Path, "read_bytes", read_bytes)
    watcher = FolderWatcher(drop, node, EventLog(lines), settle_s=0.5)
    watcher.complete_files(0.0)
    outcomes = [{p.name: watcher.take(p, now) for p in watcher.complete_files(now)} for now in (1.0, 2.0, 3.0, 6.0)]
    assert outcomes[0] == outcomes[2] == {"cut.png": "waiting", "Doe^Jane.dcm": "unreadable"}
    assert outcomes[3] == {"cut.png": "accepted", "Doe^Jane.dcm": "unreadable"}  # cut for 10 x settle: taken
    wait_until(lambda: node.depth == 0)
    node.stop(5)
    events = [json.loads(line) for line in lines.getvalue().splitlines()]
    unreadable = [e for e in events if e["event"] == "watch_unreadable"]
    assert len(unreadable) == 1 and unreadable[0]["file"] == uid_hash("Doe^Jane.dcm") and "Doe" not in lines.getvalue()


def test_done_on_another_filesystem_is_a_durable_copy_and_nothing_is_explained_twice(tmp_path):
    shm = Path("/dev/shm")
    assert shm.is_dir() and shm.stat().st_dev != tmp_path.stat().st_dev, "needs /dev/shm on its own filesystem"
    done = Path(tempfile.mkdtemp(dir=shm))
    try:
        node = Node(Spool(tmp_path / "spool"), FakeProcessor(), EventLog(io.StringIO()), max_queue=10)
        node.start()
        drop = tmp_path / "drop"
        drop.mkdir()
        watcher = FolderWatcher(drop, node, EventLog(io.StringIO()), done_dir=done, settle_s=0.1)
        for name in ("a.bin", "b.bin"):  # a PNG's signature and end, whatever is between (the processor is fake)
            (drop / name).write_bytes(b"\x89PNG\r\n\x1a\n" + name.encode() * 50 + b"IEND\xaeB`\x82")
        watcher.complete_files(0.0)
        assert [watcher.take(p, 1.0) for p in watcher.complete_files(1.0)] == ["accepted", "accepted"]
        assert not list(drop.iterdir()) and sorted(p.name for p in done.iterdir()) == ["a.bin", "b.bin"]
        (drop / "a.bin").write_bytes((done / "a.bin").read_bytes())  # dropped again
        watcher.complete_files(2.0)
        assert [watcher.take(p, 3.0) for p in watcher.complete_files(3.0)] == ["duplicate"]
        wait_until(lambda: node.depth == 0)
        node.stop(5)
        assert len(list(node.spool.outbox.iterdir())) == 2
    finally:
        shutil.rmtree(done)


def test_a_service_thread_that_fails_is_reported_and_started_again():
    from chexplain.runtime.node.service import supervised

    lines, stop, runs = io.StringIO(), threading.Event(), []

    def flaky() -> None:
        runs.append(1)
        if len(runs) < 3:
            raise OSError(18, "Invalid cross-device link")
        stop.wait(10)

    thread = supervised("chexplain-watch", flaky, EventLog(lines), stop, pause_s=0.05)
    thread.start()
    wait_until(lambda: len(runs) == 3)
    stop.set()
    thread.join(5)
    failed = [json.loads(line) for line in lines.getvalue().splitlines()]
    assert [e["event"] for e in failed] == ["thread_failed", "thread_failed"] and not thread.is_alive()
    assert failed[0]["thread"] == "chexplain-watch" and "cross-device" in failed[0]["error"]


def test_which_images_the_node_takes_is_configurable(tmp_path):
    config = load_config(write(tmp_path, "[accept]\nmodalities = ['dx']\nimage_type = ['original']\n")).check(False)
    selection = config.selection()
    assert selection.modalities == ("DX",) and selection.image_types == ("ORIGINAL",)
    assert selection.body_parts == NodeConfig().selection().body_parts  # unset keys keep the model's scope
    with pytest.raises(ConfigError, match="accept_body_parts must be a list of strings"):
        load_config(write(tmp_path, "[accept]\nbody_parts = 'CHEST'\n"))


def test_the_sr_template_is_checked():
    assert NodeConfig(allow_any_caller=True, structured_report=True).check().sr_template == "tid1500"
    with pytest.raises(ConfigError, match="sr_template must be tid1500 or basic-text"):
        NodeConfig(allow_any_caller=True, sr_template="tid1501").check()


@pytest.mark.parametrize("text, message", [
    ("[node]\nhealth_interval_s = nan\n", "health_interval_s must be a number of seconds above 0"),
    ("[limits]\nnetwork_timeout_s = inf\n", "network_timeout_s must be a number of seconds above 0"),
    ("[limits]\nacse_timeout_s = nan\n", "acse_timeout_s must be a number of seconds above 0"),
    ("[limits]\ndimse_timeout_s = 1e12\n", "at most 86400"),
    ("[results]\nopacity = 7.5\n", "opacity must be 0-1, not 7.5"),
    ("[limits]\nreserved_associations = 16\n", "reserved_associations must be 0-15"),
])
def test_settings_that_are_not_finite_or_in_range_are_refused_in_one_line(tmp_path, text, message):
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, text)).check(listening=False)
    assert message in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("value", ["inf", "nan", "-1"])
def test_a_destination_retry_that_is_not_a_finite_duration_is_refused(tmp_path, value):
    with pytest.raises(ConfigError, match="retry_initial_s must be positive numbers"):
        load_config(write(tmp_path, f"[forward]\nae_title = 'A'\nhost = 'h'\nport = 104\nretry_initial_s = {value}\n"))


def test_links_and_files_that_are_not_images_are_left_in_place_and_reported_once(tmp_path):
    lines = io.StringIO()
    node = Node(Spool(tmp_path / "spool"), FakeProcessor(), EventLog(lines), max_queue=10)
    node.start()
    drop, elsewhere = tmp_path / "drop", tmp_path / "elsewhere.png"
    drop.mkdir()
    shutil.copy(ROOT / "tests" / "data" / "images" / "00013125_000.png", elsewhere)
    (drop / "link.png").symlink_to(elsewhere)
    (drop / "notes.txt").write_text("the modality's export log, dropped here by mistake\n" * 5)
    watcher = FolderWatcher(drop, node, EventLog(lines), settle_s=0.5)
    for now in (0.0, 1.0, 2.0, 10.0):
        assert {p.name: watcher.take(p, now) for p in watcher.complete_files(now)} in ({}, {"notes.txt": "skipped"})
    node.stop(5)
    events = [json.loads(line) for line in lines.getvalue().splitlines()]
    skipped = [e for e in events if e["event"] == "watch_skipped"]
    assert len(skipped) == 2 and {e["file"] for e in skipped} == {uid_hash("link.png"), uid_hash("notes.txt")}
    assert any("symbolic link" in e["reason"] for e in skipped) and any("not a PNG" in e["reason"] for e in skipped)
    assert (drop / "notes.txt").exists() and (drop / "link.png").is_symlink()
    assert not (tmp_path / "spool" / "quarantine").exists() or not any((tmp_path / "spool" / "quarantine").iterdir())


def test_a_deflated_bomb_in_the_folder_is_judged_whole_without_being_kept_inflated(tmp_path):
    import resource

    from dicom_bombs import deflated_file

    from chexplain.runtime.node.watcher import looks_complete

    bomb = deflated_file(tmp_path / "bomb.dcm", 1024, 1024, 1 << 30).read_bytes()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    assert looks_complete(bomb) and not looks_complete(bomb[: len(bomb) // 2])
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - before < 64


def test_a_full_done_folder_leaves_no_partial_copy_and_the_file_where_it_was(tmp_path, monkeypatch):
    import errno

    from chexplain.runtime.node import watcher as watcher_module

    shm = Path("/dev/shm")
    assert shm.is_dir() and shm.stat().st_dev != tmp_path.stat().st_dev, "needs /dev/shm on its own filesystem"
    done = Path(tempfile.mkdtemp(dir=shm))

    def write_half(path: Path, data: bytes) -> None:  # the done folder's disk fills up mid-copy
        path.write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device", str(path))

    monkeypatch.setattr(watcher_module, "write_durably", write_half)
    try:
        node = Node(Spool(tmp_path / "spool"), FakeProcessor(), EventLog(io.StringIO()), max_queue=10)
        node.start()
        drop = tmp_path / "drop"
        drop.mkdir()
        (drop / "a.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"a" * 500 + b"IEND\xaeB`\x82")
        lines = io.StringIO()
        watcher = FolderWatcher(drop, node, EventLog(lines), done_dir=done, settle_s=0.1)
        watcher.complete_files(0.0)
        assert [watcher.take(p, 1.0) for p in watcher.complete_files(1.0)] == ["accepted"]
        node.stop(5)
        assert list(done.iterdir()) == [] and (drop / "a.png").exists()
        assert '"watch_stuck"' in lines.getvalue() and "No space left" in lines.getvalue()
    finally:
        shutil.rmtree(done)


def test_the_defaults_are_written_once_and_shown_from_there():
    """docs/node.md's table and `serve --help` show NodeConfig's defaults, key by key."""
    import re

    from click.testing import CliRunner

    from chexplain.cli import main
    from chexplain.runtime.node.config import _TABLES

    def shown(value: object) -> str:
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return f"{value:g}"
        if value is None or value == ():
            return "(unset)"
        return f'"{value}"' if isinstance(value, str) else str(value)

    documented = {(table, key): value for table, key, value in
                  re.findall(r"(?m)^\| `\[(\w+)\]` \| `(\w+)` \| `([^`]*)` \|$", (ROOT / "docs" / "node.md").read_text())}
    defaults = NodeConfig()
    assert documented == {(table, key): shown(getattr(defaults, field))
                          for table, keys in _TABLES.items() for key, field in keys.items()}
    help_text = " ".join(CliRunner().invoke(main, ["serve", "--help"], terminal_width=1000).output.split())
    for option, field in (("--max-queue", "max_queue"), ("--port", "port"), ("--max-pdu", "max_pdu_size"),
                          ("--acse-timeout", "acse_timeout_s"), ("--opacity", "opacity"), ("--max-size", "max_size")):
        assert re.search(rf"{option} .*?\[default: {shown(getattr(defaults, field))}\]", help_text), option
