"""A regular (non-editable) build installs the stage folders as chexplain sub-packages only."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_wheel_maps_stage_folders_under_chexplain(tmp_path: Path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )
    (wheel,) = tmp_path.glob("chexplain-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for module in ("chexplain/cli.py", "chexplain/models/densenet.py", "chexplain/export/onnx_export.py",
                   "chexplain/runtime/reader.py", "chexplain/explain/__init__.py", "chexplain/samples/00000001_000.png"):
        assert module in names
    top_level = {n.split("/")[0] for n in names if not n.startswith("chexplain-")}
    assert top_level == {"chexplain"}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "chexplain = chexplain.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
