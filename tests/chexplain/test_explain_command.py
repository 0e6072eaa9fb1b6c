"""`chexplain explain`: overlays and maps on the original pixel grid, sheet, index, errors."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from click.testing import CliRunner

from chexplain.cli import main
from chexplain.grammar import DEFAULT_LRP
from chexplain.runtime.maps.colour import diverging_lut, normalise, overlay

from helpers import IMAGES, RG1_J2K_MONOCHROME1, RG2_HIP


@pytest.fixture()
def cli(artifacts: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.setenv("CHEXPLAIN_ARTIFACTS", str(artifacts))
    return CliRunner()


def test_dicom_explained_on_its_own_pixel_grid(cli: CliRunner, tmp_path: Path):
    result = cli.invoke(main, ["explain", str(RG1_J2K_MONOCHROME1), "--out", str(tmp_path), "--json"])
    assert result.exit_code == 0, result.output
    index = json.loads((tmp_path / "index.json").read_text())
    assert index == json.loads(result.stdout)
    assert index["schema"] == "chexplain.explain/1" and index["methods"] == ["gradcam", DEFAULT_LRP]
    (record,) = index["results"]
    probabilities = record["probabilities"]
    explained = record["explained"]
    assert [e["class"] for e in explained] == sorted(probabilities, key=lambda c: -probabilities[c])[:3]
    rows, columns = (int(v) for v in (pydicom.dcmread(RG1_J2K_MONOCHROME1).Rows, pydicom.dcmread(RG1_J2K_MONOCHROME1).Columns))
    for entry in explained:
        for method, files in entry["files"].items():
            heat = np.load(files["array"])
            assert heat.shape == (rows, columns) and heat.dtype == np.float32 and np.isfinite(heat).all()
            picture = cv2.imread(files["overlay"])
            assert picture.shape == (rows, columns, 3)
            if method == "gradcam":
                assert heat.min() >= 0
    assert cv2.imread(record["sheet"]).shape[0] == 3 * (384 + 28)


def test_method_and_class_choices(cli: CliRunner, tmp_path: Path):
    image = str(IMAGES / "00013125_000.png")
    result = cli.invoke(main, ["explain", image, "--out", str(tmp_path), "--method", "lrp", "--classes", "topk:1", "--no-arrays"])
    assert result.exit_code == 0, result.output
    (record,) = json.loads((tmp_path / "index.json").read_text())["results"]
    assert len(record["explained"]) == 1 and list(record["explained"][0]["files"]) == [DEFAULT_LRP]
    assert not list(tmp_path.rglob("*.npy"))
    missing = cli.invoke(main, ["explain", image, "--out", str(tmp_path), "--method", "hirescam"])
    assert missing.exit_code == 2 and f"--explain gradcam,{DEFAULT_LRP},hirescam" in missing.stderr
    too_many = cli.invoke(main, ["explain", image, "--out", str(tmp_path), "--classes", "topk:5"])
    assert too_many.exit_code == 2 and "chexplain export --classes topk:5" in too_many.stderr


def test_bad_inputs_do_not_stop_the_others(cli: CliRunner, tmp_path: Path):
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    out = tmp_path / "out"
    result = cli.invoke(main, ["explain", str(tmp_path / "broken.png"), str(RG2_HIP), str(IMAGES / "00013125_000.png"),
                               "--out", str(out)])
    assert result.exit_code == 1
    statuses = [r["status"] for r in json.loads((out / "index.json").read_text())["results"]]
    assert statuses == ["failed", "failed", "ok"]
    assert result.stderr.count("chexplain: error:") == 2 and "Traceback" not in result.stderr
    assert (out / "00013125-000" / "sheet.png").is_file()


def test_colour_maps_and_overlay():
    lut = diverging_lut()
    assert tuple(lut[0]) == (255, 0, 0) and tuple(lut[-1]) == (0, 0, 255)  # BGR: blue for -1, red for +1
    assert abs(int(lut[128][0]) - 255) <= 2 and abs(int(lut[128][2]) - 255) <= 2  # white around 0
    signed = np.linspace(-3, 3, 1001, dtype=np.float32).reshape(1, -1)
    values = normalise(signed, signed=True)
    assert values.min() == -1 and values.max() == 1 and values[0, 500] == 0
    gray = np.full((4, 4), 0.5, np.float32)
    heat = np.zeros((4, 4), np.float32)
    heat[0, 0] = 1.0
    picture = overlay(gray, heat, signed=True, opacity=1.0)
    assert tuple(picture[0, 0]) == (0, 0, 255) and tuple(picture[3, 3]) == (128, 128, 128)
