"""Reading PNG and JPEG radiographs (8/16-bit, gray, RGB, RGBA) into gray [0, 1] pixels."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from ..errors import InputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
MIN_SIDE = 32
MAX_SIDE = 16384
# JPEG start-of-frame markers (every SOFn except DHT, JPG and DAC).
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # chexplain reports errors itself


def check_size(path: Path, width: int, height: int) -> None:
    """Refuse images too small to be a radiograph or too large to decode safely."""
    if min(width, height) < MIN_SIDE:
        raise InputError(path, f"image is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    if max(width, height) > MAX_SIDE:
        raise InputError(path, f"image is {width}x{height} pixels; at most {MAX_SIDE} pixels per side is accepted")


def png_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the IHDR chunk."""
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise ValueError("no IHDR chunk")
    return struct.unpack(">II", data[16:24])


def jpeg_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the first start-of-frame segment."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("broken marker sequence")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker in _SOF_MARKERS and pos + 9 <= len(data):
            height, width = struct.unpack(">HH", data[pos + 5:pos + 9])
            return width, height
        pos += 2 + length
    raise ValueError("no start-of-frame segment")


def to_unit_gray(pixels: np.ndarray) -> np.ndarray:
    """Gray float32 in [0, 1] from a decoded 8/16-bit gray, BGR or BGRA array.

    8-bit data is divided by 255. 16-bit data is divided by the full scale of the bits
    it uses (a 12-bit radiograph stored in 16 bits by 4095), so stored precision does
    not change the brightness.
    """
    if pixels.ndim == 3:
        code = cv2.COLOR_BGRA2GRAY if pixels.shape[2] == 4 else cv2.COLOR_BGR2GRAY
        pixels = cv2.cvtColor(pixels, code)
    if pixels.dtype == np.uint8:
        return pixels.astype(np.float32) / 255.0
    if pixels.dtype == np.uint16:
        bits = max(8, int(pixels.max()).bit_length())
        return pixels.astype(np.float32) / float((1 << bits) - 1)
    raise ValueError(f"unsupported pixel type {pixels.dtype}")


def read_bitmap(path: Path, data: bytes) -> tuple[np.ndarray, dict]:
    """Decode a PNG or JPEG file's bytes into gray [0, 1] pixels and a description."""
    is_png = data.startswith(PNG_SIGNATURE)
    kind = "png" if is_png else "jpeg"
    try:
        width, height = png_size(data) if is_png else jpeg_size(data)
    except (ValueError, struct.error) as error:
        raise InputError(path, f"corrupt {kind.upper()} header ({error})") from None
    check_size(path, width, height)
    if is_png and b"IEND" not in data[-12:]:
        raise InputError(path, "truncated PNG (the file ends before its IEND chunk)")
    if not is_png and not data.rstrip(b"\x00").endswith(b"\xff\xd9"):
        raise InputError(path, "truncated JPEG (no end-of-image marker)")
    decoded = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if decoded is None:
        raise InputError(path, f"corrupt {kind.upper()} data (the decoder failed)")
    bits = 16 if decoded.dtype == np.uint16 else 8
    channels = 1 if decoded.ndim == 2 else decoded.shape[2]
    info = {"format": kind, "width": width, "height": height, "bits": bits, "channels": channels}
    return to_unit_gray(decoded), info
