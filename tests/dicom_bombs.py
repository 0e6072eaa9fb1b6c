"""DICOM files that cost more than their header says, built without holding what they expand to."""

from __future__ import annotations

import struct
import zlib
from io import BytesIO
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DeflatedExplicitVRLittleEndian, generate_uid

DX = "1.2.840.10008.5.1.4.1.1.1.1"


def header(rows: int, columns: int, syntax: str) -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.SOPClassUID, ds.SOPInstanceUID = DX, generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = DX, ds.SOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.Modality = generate_uid(), generate_uid(), "DX"
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    return ds


def deflated_file(path: Path, rows: int, columns: int, pixel_bytes: int) -> Path:
    """A Deflated Explicit VR Little Endian DX whose Pixel Data holds ``pixel_bytes`` bytes of a
    ramp, written through a streaming compressor (the test never holds them)."""
    ds = header(rows, columns, DeflatedExplicitVRLittleEndian)
    meta = BytesIO()
    pydicom.filewriter.write_file_meta_info(meta, ds.file_meta, enforce_standard=True)
    body = pydicom.filebase.DicomBytesIO()
    body.is_implicit_VR, body.is_little_endian = False, True  # the inflated form: explicit VR little endian
    pydicom.filewriter.write_dataset(body, ds)
    deflater = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    with path.open("wb") as out:
        out.write(bytes(128) + b"DICM" + meta.getvalue())
        out.write(deflater.compress(body.getvalue() + struct.pack("<HH2sHL", 0x7FE0, 0x0010, b"OW", 0, pixel_bytes)))
        chunk = (np.arange(1 << 19, dtype=np.uint16) % 4096).tobytes()  # 1 MiB
        for start in range(0, pixel_bytes, len(chunk)):
            out.write(deflater.compress(chunk[:pixel_bytes - start]))
        out.write(deflater.flush())
    return path
