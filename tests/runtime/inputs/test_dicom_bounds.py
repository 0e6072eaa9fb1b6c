"""Bombs the header does not show: a deflated dataset that inflates past the budget, compressed
frames whose own codestream declares more than the header; and a legal deflated radiograph
read as before. Memory is read from the process's high-water mark."""

from __future__ import annotations

import resource
import struct

import cv2
import numpy as np
import pytest
from dicom_bombs import deflated_file, header
from pydicom.encaps import encapsulate
from pydicom.uid import DeflatedExplicitVRLittleEndian, JPEG2000Lossless

from chexplain.errors import InputError
from chexplain.runtime.inputs.dicom import read_dicom
from chexplain.runtime.inputs.dicom_bounds import codestream_size


def peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_a_deflated_dataset_is_refused_once_it_inflates_past_the_budget(tmp_path):
    bomb = deflated_file(tmp_path / "bomb.dcm", 1024, 1024, 1 << 30)  # the header says 2 MiB, the stream holds 1 GiB
    assert bomb.stat().st_size < 8 << 20
    before = peak_mb()
    with pytest.raises(InputError, match="inflates to more than 80 MiB"):
        read_dicom(bomb, max_decoded_bytes=64 << 20)
    assert peak_mb() - before < 200  # the budget and its copies, not the gigabyte


def test_a_legal_deflated_radiograph_is_read_as_before(tmp_path):
    path = deflated_file(tmp_path / "legal.dcm", 256, 192, 256 * 192 * 2)
    unit, info, ds = read_dicom(path)
    expected = (np.arange(256 * 192, dtype=np.uint16) % 4096).reshape(256, 192).astype(np.float32)
    np.testing.assert_allclose(unit, (expected - expected.min()) / (expected.max() - expected.min()), atol=1e-6)
    assert info["transfer_syntax"] == DeflatedExplicitVRLittleEndian and "PixelData" not in ds


def j2k_codestream(columns: int, rows: int) -> bytes:
    """SOC and a SIZ marker segment (ISO 15444-1 A.5.1) declaring ``columns`` x ``rows``, one
    16-bit component, then bytes no decoder needs to reach."""
    siz = struct.pack(">HHHIIIIIIIIH", 0xFF51, 41, 0, columns, rows, 0, 0, columns, rows, 0, 0, 1) + bytes([15, 1, 1])
    return b"\xff\x4f" + siz + bytes(900)


@pytest.mark.parametrize(("declared", "message"), [
    ((20000, 20000), "at most 16384 pixels per side"),
    ((12000, 12000), "decodes to 274.7 MiB"),
    ((2048, 2048), "declares 2048x2048 pixels, the header 1024x1024"),
], ids=["past-the-largest-side", "past-the-budget", "not-the-header's-size"])
def test_a_codestream_that_declares_more_than_its_header_is_refused_before_decoding(tmp_path, declared, message):
    ds = header(1024, 1024, JPEG2000Lossless)
    ds.PixelData = encapsulate([j2k_codestream(*declared)])
    path = tmp_path / "j2k.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert path.stat().st_size < 2048
    with pytest.raises(InputError, match=message):
        read_dicom(path)


def test_the_codestream_sizes_of_real_jpeg_and_jpeg_2000_frames():
    image = (np.arange(40 * 56, dtype=np.uint16).reshape(40, 56) % 256).astype(np.uint8)
    ok, jpeg = cv2.imencode(".jpg", image)
    assert ok and codestream_size(jpeg.tobytes()) == (56, 40, 1)
    ok, j2k = cv2.imencode(".jp2", cv2.cvtColor(image, cv2.COLOR_GRAY2BGR))
    assert ok and codestream_size(j2k.tobytes()) == (56, 40, 3)  # a JP2 file: the codestream inside its box
    assert codestream_size(bytes(64)) is None  # uncompressed or RLE: the header is what counts


def test_a_broken_codestream_is_named_as_broken_not_as_a_missing_decoder(tmp_path):
    ds = header(1024, 1024, JPEG2000Lossless)
    ds.PixelData = encapsulate([j2k_codestream(1024, 1024)])  # the header's size, then nothing a decoder can use
    path = tmp_path / "broken.dcm"
    ds.save_as(path, enforce_file_format=True)
    with pytest.raises(InputError, match="cannot decode JPEG 2000") as caught:
        read_dicom(path)
    assert "install" not in str(caught.value)
