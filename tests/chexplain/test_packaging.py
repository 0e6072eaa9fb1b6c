"""A regular (non-editable) build installs the stage folders as chexplain sub-packages only."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from helpers import ROOT


def test_wheel_maps_stage_folders_under_chexplain(tmp_path: Path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        check=True, capture_output=True, timeout=600,
    )
    (wheel,) = tmp_path.glob("chexplain-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    stages = {"chexplain": "chexplain", "models": "chexplain/models", "explain": "chexplain/explain",
              "export": "chexplain/export", "runtime": "chexplain/runtime"}
    for folder, package in stages.items():  # every module and package-data file of every stage, subpackages too
        for source in (ROOT / folder).rglob("*"):
            if source.suffix in (".py", ".css", ".js", ".png", ".pt") and "__pycache__" not in source.parts:
                assert f"{package}/{source.relative_to(ROOT / folder).as_posix()}" in names, source
    top_level = {n.split("/")[0] for n in names if not n.startswith("chexplain-")}
    assert top_level == {"chexplain"}
    entry_points = next(n for n in names if n.endswith("entry_points.txt"))
    assert "chexplain = chexplain.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()
