"""One entry point for every radiograph format, and expansion of input paths."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from .bitmap import JPEG_SIGNATURE, MAX_DECODED_BYTES, PNG_SIGNATURE, read_bitmap

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".dcm", ".dicom"}


@dataclass
class Radiograph:
    """A decoded radiograph: gray pixels in [0, 1] (bright = dense) and what is known of it."""

    path: Path
    pixels: np.ndarray
    info: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    header: Any = None  # a DICOM input's dataset without its pixel data

    @property
    def size(self) -> tuple[int, int]:
        """(height, width) in pixels."""
        return self.pixels.shape[0], self.pixels.shape[1]


def _is_dicom(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def read_radiograph(path: str | Path, allow_any_view: bool = False, max_decoded_bytes: int = MAX_DECODED_BYTES,
                    selection: Any = None) -> Radiograph:
    """Read a PNG, JPEG or DICOM file, recognised by its content, not its name; one whose
    decoded frame would exceed ``max_decoded_bytes`` is refused before it is decoded, a DICOM
    outside ``selection`` (dicom.Selection; default: the model's scope) before its pixels are."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "no such file")
    if path.is_dir():
        raise InputError(path, "is a directory")
    try:
        data = path.read_bytes()
    except OSError as error:
        raise InputError(path, f"cannot read ({error.strerror})") from None
    if not data:
        raise InputError(path, "empty file (0 bytes)")
    header = None
    if data.startswith(PNG_SIGNATURE) or data.startswith(JPEG_SIGNATURE):
        pixels, info = read_bitmap(path, data, max_decoded_bytes)
    elif _is_dicom(data[:132]) or path.suffix.lower() in {".dcm", ".dicom"}:
        from .dicom import Selection, read_dicom

        pixels, info, header = read_dicom(path, allow_any_view=allow_any_view, max_decoded_bytes=max_decoded_bytes,
                                          selection=selection or Selection())
    else:
        raise InputError(path, "not a PNG, JPEG or DICOM file")
    warnings = [info.pop("warning")] if "warning" in info else []
    return Radiograph(path=path, pixels=pixels, info=info, warnings=warnings, header=header)


def _looks_like_image(path: Path) -> bool:
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return True
    if path.suffix:
        return False
    try:
        with open(path, "rb") as handle:
            return _is_dicom(handle.read(132))
    except OSError:
        return False


def expand_inputs(paths: Iterable[str | Path]) -> list[Path]:
    """Files as given, and directories as the radiographs found under them (sorted).

    Files named explicitly are kept even if they do not exist or are not images, so that
    each gets its own error; inside directories, hidden files and files that are neither
    image-suffixed nor DICOM (suffix-less files are sniffed) are skipped.
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found.extend(
                p for p in sorted(path.rglob("*"))
                if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
                and _looks_like_image(p)
            )
        else:
            found.append(path)
    return found
