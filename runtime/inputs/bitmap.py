"""Reading PNG and JPEG radiographs (8/16-bit, gray, RGB, RGBA) into gray [0, 1] pixels."""

from __future__ import annotations

import struct
from pathlib import Path

import cv2
import numpy as np

from ...errors import InputError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SIGNATURE = b"\xff\xd8\xff"
MIN_SIDE = 32
MAX_SIDE = 16384
MAX_DECODED_BYTES = 128 << 20  # one decoded frame; a 4300 x 4300 16-bit radiograph is 35 MiB
_PNG_CHANNELS = {0: 1, 2: 3, 3: 3, 4: 2, 6: 4}  # by colour type; a palette decodes to BGR
# JPEG start-of-frame markers (every SOFn except DHT, JPG and DAC).
_SOF_MARKERS = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}

cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)  # chexplain reports errors itself


def check_size(path: Path, width: int, height: int, bytes_per_pixel: int,
               max_decoded_bytes: int = MAX_DECODED_BYTES) -> None:
    """Refuse, from the header and before decoding, images too small to be a radiograph or too
    large to decode safely: a few kilobytes of compressed data can expand to gigabytes."""
    if min(width, height) < MIN_SIDE:
        raise InputError(path, f"image is {width}x{height} pixels; at least {MIN_SIDE}x{MIN_SIDE} is needed")
    if max(width, height) > MAX_SIDE:
        raise InputError(path, f"image is {width}x{height} pixels; at most {MAX_SIDE} pixels per side is accepted")
    decoded = width * height * bytes_per_pixel
    if decoded > max_decoded_bytes:
        raise InputError(path, f"image decodes to {_mib(decoded)} MiB ({width}x{height}, {bytes_per_pixel} bytes per "
                               f"pixel); at most {_mib(max_decoded_bytes)} MiB is decoded")


def _mib(size: int) -> str:
    return f"{size / (1 << 20):.1f}".removesuffix(".0")


def png_layout(data: bytes) -> tuple[int, int, int]:
    """(width, height, decoded bytes per pixel) from the IHDR chunk."""
    if len(data) < 26 or data[12:16] != b"IHDR":
        raise ValueError("no IHDR chunk")
    width, height, depth, colour = struct.unpack(">IIBB", data[16:26])
    if colour not in _PNG_CHANNELS:
        raise ValueError(f"colour type {colour} is not defined")
    return width, height, _PNG_CHANNELS[colour] * (2 if depth == 16 else 1)


def jpeg_layout(data: bytes) -> tuple[int, int, int]:
    """(width, height, decoded bytes per pixel) from the first start-of-frame segment."""
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise ValueError("broken marker sequence")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        length = struct.unpack(">H", data[pos + 2:pos + 4])[0]
        if marker in _SOF_MARKERS and pos + 10 <= len(data):
            precision, height, width, components = struct.unpack(">BHHB", data[pos + 4:pos + 10])
            return width, height, max(components, 1) * (2 if precision > 8 else 1)
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


def read_bitmap(path: Path, data: bytes, max_decoded_bytes: int = MAX_DECODED_BYTES) -> tuple[np.ndarray, dict]:
    """Decode a PNG or JPEG file's bytes into gray [0, 1] pixels and a description."""
    is_png = data.startswith(PNG_SIGNATURE)
    kind = "png" if is_png else "jpeg"
    try:
        width, height, bytes_per_pixel = png_layout(data) if is_png else jpeg_layout(data)
    except (ValueError, struct.error) as error:
        raise InputError(path, f"corrupt {kind.upper()} header ({error})") from None
    check_size(path, width, height, bytes_per_pixel, max_decoded_bytes)
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
