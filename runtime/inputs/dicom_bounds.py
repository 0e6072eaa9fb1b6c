"""What a DICOM file may cost before it is decoded: inflation and codestreams, bounded by what
they declare.

Two kinds of file expand far past their size on disk or on the wire, and past the header's
Rows x Columns that ``check_size`` trusts:

- Deflated Explicit VR Little Endian: pydicom inflates the whole dataset before reading a
  single attribute (a 1 MB file can hold 1 GiB of zeros). ``inflate`` stops at a budget.
- Compressed pixel data: a JPEG or JPEG 2000 decoder allocates what the codestream declares
  (its SOF or SIZ marker), whatever the DICOM header says. ``codestream_size`` reads that
  declaration from the first fragment, so the decoded-size budget can be checked against it.
"""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from pathlib import Path
from typing import Any

from ...errors import InputError

DEFLATED = "1.2.840.10008.1.2.1.99"
INFLATE_CHUNK = 1 << 20
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF, 0xF7}  # with JPEG-LS SOF55
_J2K_SOC, _J2K_SIZ = b"\xff\x4f", 0xFF51
_JP2_SIGNATURE = b"\x00\x00\x00\x0cjP  \r\n\x87\n"


def inflate(path: Path, compressed: bytes, limit: int) -> bytes:
    """The raw-deflate stream ``compressed`` inflated; InputError as soon as it passes ``limit`` bytes."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    out = bytearray()
    data = compressed
    try:
        while True:
            out += inflater.decompress(data, INFLATE_CHUNK)
            if len(out) > limit:
                raise InputError(path, f"the deflated dataset inflates to more than {limit >> 20} MiB (the limit)")
            data = inflater.unconsumed_tail
            if not data:
                break
        out += inflater.flush()
    except zlib.error as error:
        raise InputError(path, f"the deflated dataset cannot be inflated ({error})") from None
    if len(out) > limit:
        raise InputError(path, f"the deflated dataset inflates to more than {limit >> 20} MiB (the limit)")
    return bytes(out)


def _meta_syntax(data: bytes) -> tuple[str, int] | None:
    """The Transfer Syntax UID of a Part 10 file's meta group (explicit VR little endian, PS3.10
    7.1) and where its dataset begins; None when the bytes do not start as such a file."""
    if data[128:132] != b"DICM" or data[132:136] != b"\x02\x00\x00\x00" or data[136:138] != b"UL":
        return None
    end = 144 + struct.unpack("<L", data[140:144])[0]
    offset, syntax = 144, ""
    while offset + 8 <= min(end, len(data)):
        group, element = struct.unpack("<HH", data[offset:offset + 4])
        vr = data[offset + 4:offset + 6]
        if vr in (b"OB", b"OW", b"UN", b"SQ", b"UT", b"UC", b"UR"):
            length, value_at = struct.unpack("<L", data[offset + 8:offset + 12])[0], offset + 12
        else:
            length, value_at = struct.unpack("<H", data[offset + 6:offset + 8])[0], offset + 8
        if (group, element) == (0x0002, 0x0010):
            syntax = data[value_at:value_at + length].decode("ascii", "replace").rstrip("\0 ")
        offset = value_at + length
    return syntax, end


def deflated_body(data: bytes) -> bytes | None:
    """The deflate stream of a Deflated Explicit VR Little Endian Part 10 file's bytes; None for
    any other file."""
    meta = _meta_syntax(data)
    return data[meta[1]:] if meta is not None and meta[0] == DEFLATED else None


def deflate_complete(compressed: bytes, limit: int = 1 << 32) -> bool:
    """Whether a raw-deflate stream ends within ``compressed``, followed in chunks without keeping
    what it inflates to; past ``limit`` inflated bytes it is taken as whole (the reader refuses it)."""
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    data, inflated = compressed, 0
    try:
        while data and not inflater.eof and inflated <= limit:
            inflated += len(inflater.decompress(data, INFLATE_CHUNK))
            data = inflater.unconsumed_tail
    except zlib.error:
        return True  # corrupt rather than cut: the reader says so
    return inflater.eof or inflated > limit


def inflate_start(compressed: bytes, size: int) -> bytes:
    """At most the first ``size`` bytes of a raw-deflate stream (a header, not the whole)."""
    return zlib.decompressobj(-zlib.MAX_WBITS).decompress(compressed, size)


def read_deflated(path: Path, limit: int) -> Any:
    """A Deflated Explicit VR Little Endian file as its dataset, inflated within ``limit`` bytes
    (the file meta keeps the deflated syntax: its pixel data are native once inflated)."""
    import pydicom
    from pydicom.filereader import read_dataset, read_file_meta_info

    data = Path(path).read_bytes()
    meta = read_file_meta_info(path)
    body = deflated_body(data) or b""
    ds = read_dataset(BytesIO(inflate(path, body, limit)), is_implicit_VR=False, is_little_endian=True)
    return pydicom.FileDataset(str(path), ds, preamble=data[:128], file_meta=meta)


def is_deflated(path: Path) -> bool:
    with Path(path).open("rb") as file:
        meta = _meta_syntax(file.read(1 << 16))
    return meta is not None and meta[0] == DEFLATED


def codestream_size(fragment: bytes) -> tuple[int, int, int] | None:
    """(columns, rows, components) that a JPEG / JPEG-LS or JPEG 2000 codestream declares in its
    frame header; None when the fragment is neither (uncompressed, RLE) or the header is not
    found in it."""
    if fragment.startswith(_JP2_SIGNATURE):
        index = fragment.find(b"jp2c")
        fragment = fragment[index + 4:] if index >= 0 else b""
    if fragment.startswith(_J2K_SOC):
        return _j2k_size(fragment)
    if fragment.startswith(b"\xff\xd8"):
        return _jpeg_size(fragment)
    return None


def _j2k_size(data: bytes) -> tuple[int, int, int] | None:
    """SIZ (ISO 15444-1 A.5.1) follows SOC: image extent minus offset, and Csiz."""
    if len(data) < 4 + 38 or struct.unpack(">H", data[2:4])[0] != _J2K_SIZ:
        return None
    _, _, xsiz, ysiz, x0, y0, _, _, _, _, components = struct.unpack(">HHIIIIIIIIH", data[4:4 + 38])
    return max(xsiz - x0, 0), max(ysiz - y0, 0), components


def _jpeg_size(data: bytes) -> tuple[int, int, int] | None:
    """The first SOFn (ITU T.81 B.2.2; JPEG-LS's SOF55): lines, samples per line, components."""
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:
            offset += 1
            continue
        length = struct.unpack(">H", data[offset + 2:offset + 4])[0]
        if marker in _JPEG_SOF and offset + 10 <= len(data):
            _, lines, samples, components = struct.unpack(">BHHB", data[offset + 4:offset + 10])
            return samples, lines, components
        offset += 2 + length
    return None
