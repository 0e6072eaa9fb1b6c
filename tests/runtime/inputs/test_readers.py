"""Readers on real radiographs: PNG/JPEG variants, DICOM LUTs, MONOCHROME1, bad files."""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
from pydicom.pixels import apply_voi_lut

from chexplain.runtime import InputError, expand_inputs, read_radiograph

from helpers import DICOMS, IMAGES, RG1_J2K_MONOCHROME1, RG2_HIP, SIIM, SIIM_FLIPPED

GRAY_PNG = IMAGES / "00001369_000.png"  # RGBA on disk
PLAIN_GRAY = IMAGES / "00013125_000.png"


def test_gray_png_is_scaled_to_unit_range():
    radiograph = read_radiograph(PLAIN_GRAY)
    raw = cv2.imread(str(PLAIN_GRAY), cv2.IMREAD_UNCHANGED)
    assert raw.ndim == 2 and raw.dtype == np.uint8
    np.testing.assert_allclose(radiograph.pixels, raw / 255.0, atol=1e-7)
    assert radiograph.info == {"format": "png", "width": 1024, "height": 1024, "bits": 8, "channels": 1}


def test_rgba_png_reads_as_its_gray_content():
    radiograph = read_radiograph(GRAY_PNG)
    raw = cv2.imread(str(GRAY_PNG), cv2.IMREAD_UNCHANGED)
    assert raw.shape[2] == 4 and radiograph.info["channels"] == 4
    np.testing.assert_allclose(radiograph.pixels, raw[..., 0] / 255.0, atol=1 / 255)


def test_16bit_rgb_and_jpeg_variants_agree_with_the_8bit_original(tmp_path: Path):
    gray = cv2.imread(str(PLAIN_GRAY), cv2.IMREAD_UNCHANGED)
    reference = read_radiograph(PLAIN_GRAY).pixels
    cv2.imwrite(str(tmp_path / "x16.png"), gray.astype(np.uint16) * 257)
    cv2.imwrite(str(tmp_path / "x12.png"), (gray.astype(np.uint32) * 4095 // 255).astype(np.uint16))
    cv2.imwrite(str(tmp_path / "rgb.png"), cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    cv2.imwrite(str(tmp_path / "x.jpg"), gray, [cv2.IMWRITE_JPEG_QUALITY, 100])
    sixteen = read_radiograph(tmp_path / "x16.png")
    assert sixteen.info["bits"] == 16
    np.testing.assert_allclose(sixteen.pixels, reference, atol=1e-6)
    np.testing.assert_allclose(read_radiograph(tmp_path / "x12.png").pixels, reference, atol=1e-3)
    np.testing.assert_allclose(read_radiograph(tmp_path / "rgb.png").pixels, reference, atol=1e-6)
    jpeg = read_radiograph(tmp_path / "x.jpg")
    assert jpeg.info["format"] == "jpeg"
    assert np.abs(jpeg.pixels - reference).mean() < 2 / 255


def test_genuine_monochrome1_jpeg2000_cr_is_windowed_and_inverted():
    radiograph = read_radiograph(RG1_J2K_MONOCHROME1)
    ds = pydicom.dcmread(RG1_J2K_MONOCHROME1)
    assert ds.PhotometricInterpretation == "MONOCHROME1"
    assert radiograph.info["transfer_syntax"] == "1.2.840.10008.1.2.4.91"
    assert radiograph.size == (1955, 1841)
    # pydicom's own windowing (to [0, 2**BitsStored - 1]), then MONOCHROME1 inversion
    expected = 1.0 - apply_voi_lut(ds.pixel_array, ds).astype(np.float64) / (2**ds.BitsStored - 1)
    np.testing.assert_allclose(radiograph.pixels, expected, atol=1e-3)
    # bright = dense: the mediastinum (centre) is brighter than the lung fields beside it
    h, w = radiograph.size
    centre = radiograph.pixels[h // 3:h // 2, w // 2 - 50:w // 2 + 50].mean()
    lung = radiograph.pixels[h // 3:h // 2, w // 4 - 50:w // 4 + 50].mean()
    assert centre > lung


def test_header_flipped_monochrome1_equals_the_inverted_original():
    original = read_radiograph(SIIM)
    flipped = read_radiograph(SIIM_FLIPPED)
    assert flipped.info["photometric_interpretation"] == "MONOCHROME1"
    np.testing.assert_allclose(flipped.pixels, 1.0 - original.pixels, atol=1e-6)


def test_dicom_keeps_pixel_spacing_and_identity_without_patient_data():
    info = read_radiograph(SIIM).info
    assert info["pixel_spacing_mm"] == pytest.approx([0.168, 0.168])
    assert info["modality"] == "CR" and info["body_part"] == "CHEST" and info["view_position"] == "PA"
    assert info["sop_instance_uid"].startswith("1.2.276.0.7230010")
    assert not any("patient" in key.lower() for key in info)


def test_jpeg_lossless_hip_is_refused_unless_any_view_is_allowed():
    with pytest.raises(InputError, match="BodyPartExamined is HIP, not CHEST"):
        read_radiograph(RG2_HIP)
    radiograph = read_radiograph(RG2_HIP, allow_any_view=True)
    assert radiograph.size == (2140, 1760)
    assert radiograph.info["pixel_spacing_mm"] == [0.2, 0.2]
    assert radiograph.pixels.min() >= 0.0 and radiograph.pixels.max() <= 1.0


def test_a_selection_narrows_or_widens_which_images_are_explained(tmp_path: Path):
    from chexplain.runtime.inputs.dicom import Selection

    hip_too = Selection(body_parts=("CHEST", "PELVIS", "HIP"))
    assert read_radiograph(RG2_HIP, selection=hip_too).size == (2140, 1760)
    with pytest.raises(InputError, match="modality CR is not a radiograph \\(DX expected\\)"):
        read_radiograph(RG2_HIP, selection=Selection(modalities=("DX",)), allow_any_view=True)
    ds = pydicom.dcmread(SIIM)
    ds.ImageType = ["DERIVED", "SECONDARY"]
    ds.save_as(tmp_path / "derived.dcm")
    with pytest.raises(InputError, match="ImageType DERIVED\\\\SECONDARY lacks ORIGINAL"):
        read_radiograph(tmp_path / "derived.dcm", selection=Selection(image_types=("ORIGINAL",)))
    assert read_radiograph(tmp_path / "derived.dcm").size == read_radiograph(SIIM).size  # any type by default


def test_lateral_view_is_refused(tmp_path: Path):
    ds = pydicom.dcmread(SIIM)
    ds.ViewPosition = "LL"
    ds.save_as(tmp_path / "lateral.dcm")
    with pytest.raises(InputError, match="lateral view"):
        read_radiograph(tmp_path / "lateral.dcm")


def _png_header_only(width: int, height: int, depth: int = 8, colour: int = 0) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b"")


@pytest.mark.parametrize(
    ("name", "content", "reason"),
    [
        ("empty.png", b"", "empty file"),
        ("notes.png", b"this is not an image\n" * 10, "not a PNG, JPEG or DICOM file"),
        ("tiny.png", _png_header_only(1, 1), "1x1 pixels"),
        ("huge.png", _png_header_only(50000, 50000), "50000x50000 pixels"),
        ("bomb.png", _png_header_only(16384, 16384, depth=16), "decodes to 512 MiB .*at most 128 MiB"),
        ("rgba.png", _png_header_only(8000, 6000, colour=6), r"decodes to 183.1 MiB \(8000x6000, 4 bytes per pixel\)"),
        ("truncated.png", (IMAGES / "00013125_000.png").read_bytes()[:50000], "truncated PNG"),
    ],
)
def test_bad_bitmaps_fail_with_a_reason(tmp_path: Path, name: str, content: bytes, reason: str):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(InputError, match=reason) as error:
        read_radiograph(path)
    assert str(path) in str(error.value)


def test_truncated_jpeg_and_missing_file(tmp_path: Path):
    gray = cv2.imread(str(PLAIN_GRAY), cv2.IMREAD_UNCHANGED)
    data = cv2.imencode(".jpg", gray)[1].tobytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(InputError, match="truncated JPEG"):
        read_radiograph(tmp_path / "cut.jpg")
    with pytest.raises(InputError, match="no such file"):
        read_radiograph(tmp_path / "absent.png")


def test_dicom_without_pixel_data(tmp_path: Path):
    ds = pydicom.dcmread(SIIM)
    del ds.PixelData
    ds.save_as(tmp_path / "nopixels.dcm")
    with pytest.raises(InputError, match="DICOM without pixel data"):
        read_radiograph(tmp_path / "nopixels.dcm")


@pytest.mark.parametrize("keyword, value", [("RescaleSlope", "NaN"), ("RescaleIntercept", "inf"),
                                            ("WindowCenter", "NaN"), ("WindowWidth", "-inf")])
def test_non_finite_rescale_or_window_is_refused(tmp_path: Path, keyword: str, value: str):
    """A NaN slope would explain a NaN image and write NaN into the results: refuse it, naming the attribute."""
    ds = pydicom.dcmread(SIIM)
    ds.RescaleSlope, ds.RescaleIntercept, ds.WindowCenter, ds.WindowWidth = "1", "0", "128", "256"
    setattr(ds, keyword, value)
    ds.save_as(tmp_path / "bad.dcm")
    with pytest.raises(InputError, match=f"{keyword} is .*, not a finite number") as caught:
        read_radiograph(tmp_path / "bad.dcm")
    assert str(tmp_path / "bad.dcm") in str(caught.value)


def test_a_dicom_decoding_past_the_budget_is_refused_from_its_header(tmp_path: Path):
    """An RLE "bomb": a few bytes that would decode to 16384 x 16384 x 16 bit; never decoded."""
    ds = pydicom.dcmread(SIIM)
    ds.Rows = ds.Columns = 16384
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
    ds.file_meta.TransferSyntaxUID = pydicom.uid.RLELossless
    ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
    ds.save_as(tmp_path / "bomb.dcm")
    with pytest.raises(InputError, match="decodes to 512 MiB .*at most 128 MiB"):
        read_radiograph(tmp_path / "bomb.dcm")
    siim = read_radiograph(SIIM)
    budget = siim.size[0] * siim.size[1] * (ds.SamplesPerPixel if "SamplesPerPixel" in ds else 1)
    with pytest.raises(InputError, match="at most 0.5 MiB is decoded"):
        read_radiograph(SIIM, max_decoded_bytes=budget // 2)
    assert np.array_equal(read_radiograph(SIIM, max_decoded_bytes=budget * 2).pixels, siim.pixels)


def test_non_radiograph_modality_is_refused(tmp_path: Path):
    ds = pydicom.dcmread(SIIM)
    ds.Modality = "CT"
    ds.save_as(tmp_path / "ct.dcm")
    with pytest.raises(InputError, match="modality CT is not a radiograph"):
        read_radiograph(tmp_path / "ct.dcm", allow_any_view=True)


def test_compressed_dicom_without_a_decoder_names_the_syntax():
    """With every JPEG 2000 decoder hidden, the error says what is missing."""
    script = (
        "import sys\n"
        "for name in ('openjpeg', 'libjpeg', 'pylibjpeg', 'PIL', 'gdcm'):\n"
        "    sys.modules[name] = None\n"
        "from chexplain.runtime import InputError, read_radiograph\n"
        "try:\n"
        f"    read_radiograph({str(RG1_J2K_MONOCHROME1)!r})\n"
        "except InputError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert "cannot decode JPEG 2000" in out.stdout, out.stdout + out.stderr
    assert "1.2.840.10008.1.2.4.91" in out.stdout
    assert "pip install" in out.stdout


def test_directories_expand_to_radiographs_only(tmp_path: Path):
    (tmp_path / "a.png").write_bytes((IMAGES / "00013125_000.png").read_bytes())
    (tmp_path / "IM0001").write_bytes(SIIM.read_bytes())  # DICOM without a suffix
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / ".hidden.png").write_bytes(b"x")
    found = expand_inputs([tmp_path, tmp_path / "explicit-missing.png"])
    assert [p.name for p in found] == ["IM0001", "a.png", "explicit-missing.png"]
    assert len(expand_inputs([DICOMS])) == 4
