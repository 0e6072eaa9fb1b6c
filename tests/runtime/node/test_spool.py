"""The node's durable spool: received data survives, results exist exactly once, whatever the crash."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
import time
from pathlib import Path

from chexplain.runtime.node.spool import INCOMING, PARTIAL_PREFIX, REASON_FILE, Spool, item_id


def test_accept_finish_and_quarantine(tmp_path: Path):
    spool = Spool(tmp_path)
    first = spool.accept(b"one", ".dcm", key="abc")
    second = spool.accept(b"two", ".png")
    assert first.read_bytes() == b"one" and first.suffix == ".dcm" and item_id(first).endswith("-abc")
    assert spool.pending() == [first, second]  # arrival order
    assert not any((tmp_path / "inbox" / INCOMING).iterdir())
    result = spool.finish(first, {"result.json": b"{}", "overlay.png": b"png"})
    assert sorted(p.name for p in result.iterdir()) == ["overlay.png", "result.json", "source.sha256"]
    assert (result / "source.sha256").read_text() == hashlib.sha256(b"one").hexdigest()
    assert not first.exists() and spool.pending() == [second]
    quarantined = spool.quarantine(second, "not a radiograph: MR")
    assert (quarantined / REASON_FILE).read_text() == "not a radiograph: MR\n"
    assert (quarantined / second.name).read_bytes() == b"two"
    assert spool.pending() == [] and not second.exists()


def test_restart_completes_what_a_crash_interrupted(tmp_path: Path):
    spool = Spool(tmp_path)
    (tmp_path / "inbox" / INCOMING / "half-received.dcm").write_bytes(b"never acknowledged")
    done = spool.accept(b"results written, inbox entry not yet removed")
    (tmp_path / "outbox" / item_id(done)).mkdir()
    half = spool.accept(b"results half written")
    (tmp_path / "outbox" / (PARTIAL_PREFIX + item_id(half))).mkdir()
    (tmp_path / "outbox" / (PARTIAL_PREFIX + item_id(half)) / "result.json").write_bytes(b"{")
    assert Spool(tmp_path).recover() == [half]
    assert not done.exists() and not any((tmp_path / "inbox" / INCOMING).iterdir())
    assert sorted(p.name for p in (tmp_path / "outbox").iterdir()) == [item_id(done)]


WORKER = """
import sys, time
from chexplain.runtime.node.spool import Spool
spool = Spool(sys.argv[1])
for item in spool.recover():
    data = item.read_bytes()
    time.sleep(0.02)
    spool.finish(item, {"result.txt": data.upper(), "copy.txt": data})
"""


def test_sigkill_mid_burst_loses_nothing_and_duplicates_nothing(tmp_path: Path):
    spool = Spool(tmp_path)
    sent = {item_id(spool.accept(f"image {n}".encode())): f"image {n}".encode() for n in range(60)}
    worker = subprocess.Popen([sys.executable, "-c", WORKER, str(tmp_path)])
    deadline = time.monotonic() + 60
    while len(list((tmp_path / "outbox").iterdir())) < 10 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    assert 0 < len(Spool(tmp_path).pending()) < 60  # killed mid-burst
    subprocess.run([sys.executable, "-c", WORKER, str(tmp_path)], check=True, timeout=120)
    results = {p.name: p for p in (tmp_path / "outbox").iterdir()}
    assert set(results) == set(sent)  # every item, once; no partial folders left
    for key, data in sent.items():
        assert (results[key] / "result.txt").read_bytes() == data.upper()
        assert (results[key] / "copy.txt").read_bytes() == data
    assert Spool(tmp_path).pending() == []


DIES_ON_POISON = """
import os, sys, time
from chexplain.runtime.node.events import EventLog
from chexplain.runtime.node.spool import Spool
from chexplain.runtime.node.worker import Node

class DiesOnPoison:
    def process(self, item, origin):
        data = item.read_bytes()
        if data.startswith(b"poison"):
            os._exit(137)  # as the kernel's OOM killer ends the process
        return {"result.json": b"{}", "copy.bin": data}, {"findings": []}

spool = Spool(sys.argv[1])
for data in sys.argv[2:]:
    spool.accept(data.encode(), ".bin")
node = Node(spool, DiesOnPoison(), EventLog(sys.stderr), max_queue=10)
node.start()
deadline = time.monotonic() + 30
while node.depth and time.monotonic() < deadline:
    time.sleep(0.05)
node.stop(5)
"""


def test_an_item_that_kills_the_process_is_quarantined_after_three_attempts(tmp_path):
    """The crash loop of an out-of-memory image: each restart recovers it first; the fourth
    start quarantines it and explains the images behind it."""
    run = [sys.executable, "-c", DIES_ON_POISON, str(tmp_path)]
    codes = [subprocess.run(run + (["poison", "good 1", "good 2"] if n == 0 else []), capture_output=True,
                            timeout=60).returncode for n in range(4)]
    assert codes == [137, 137, 137, 0]
    spool = Spool(tmp_path)
    assert sorted((p / "copy.bin").read_bytes() for p in spool.outbox.iterdir()) == [b"good 1", b"good 2"]
    [poison] = list(spool.quarantined.iterdir())
    assert "stopped 3 times while explaining this item" in (poison / "reason.txt").read_text()
    assert [p.read_bytes() for p in poison.glob("*.bin")] == [b"poison"]
    assert not spool.pending() and not list(spool.attempts.iterdir())  # nothing left to count
