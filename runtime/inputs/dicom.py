"""Reading CR/DX radiographs from DICOM: modality LUT, VOI LUT or window, MONOCHROME1.

pydicom is imported on first use, so PNG/JPEG users need not install it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ...errors import InputError
from ...optional import require
from .bitmap import MAX_DECODED_BYTES, check_size, to_unit_gray
from .dicom_bounds import codestream_size, is_deflated, read_deflated

HEADER_ALLOWANCE = 16 << 20  # what a dataset may hold beside its pixels, for the inflation budget

RADIOGRAPH_MODALITIES = ("CR", "DX", "DR", "RG", "OT", "")
CHEST_BODY_PARTS = ("CHEST", "THORAX", "LUNG", "LUNGS")
LATERAL_VIEWS = ("LL", "RL", "LAT", "LATERAL", "LLD", "RLD")


@dataclass(frozen=True)
class Selection:
    """Which DICOM images the chest model is given. The default is the model's own scope:
    radiograph modalities, a chest body part (or none recorded), any view but a lateral one,
    any image type; a node can narrow or widen it (``[accept]`` in its config)."""

    modalities: tuple[str, ...] = RADIOGRAPH_MODALITIES
    body_parts: tuple[str, ...] = CHEST_BODY_PARTS  # an empty BodyPartExamined always passes
    excluded_views: tuple[str, ...] = LATERAL_VIEWS
    image_types: tuple[str, ...] = ()  # values ImageType must all contain (e.g. ORIGINAL); none: any

    def check(self, path: Path, info: dict[str, Any], image_type: Sequence[str], allow_any_view: bool) -> None:
        """Refuse what is outside the selection, naming the attribute; ``allow_any_view`` lifts
        the body part and view rules (the modality and image type rules stay)."""
        modality = info["modality"].upper()
        if modality not in self.modalities:
            expected = " or ".join(m for m in self.modalities if m) or "none"
            raise InputError(path, f"modality {modality} is not a radiograph ({expected} expected)")
        missing = [value for value in self.image_types if value not in {v.upper() for v in image_type}]
        if missing:
            written = "\\".join(image_type) or "(empty)"
            raise InputError(path, f"ImageType {written} lacks {', '.join(missing)}")
        if allow_any_view:
            return
        body_part = info["body_part"].upper()
        if body_part and body_part not in self.body_parts:
            raise InputError(path, f"BodyPartExamined is {body_part}, not {' or '.join(self.body_parts)} "
                                   "(use --allow-any-view to explain it anyway)")
        if info["view_position"].upper() in self.excluded_views:
            raise InputError(path, f"lateral view ({info['view_position']}); the model reads frontal radiographs "
                                   "(use --allow-any-view)")


def import_pydicom() -> Any:
    return require("pydicom", "reading DICOM")


def _first(value: Any) -> float:
    """The first value of a possibly multi-valued numeric attribute."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def window(values: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM VOI windowing (PS3.3 C.11.2.1.2) to [0, 1], in place on float32 ``values`` (a
    radiograph of 8000 x 8000 pixels is 244 MiB in float32: no second copy is made)."""
    if function == "SIGMOID":
        values -= center
        values *= -4.0 / width
        np.exp(values, out=values)
        values += 1.0
        return np.reciprocal(values, out=values)
    if function == "LINEAR_EXACT":
        low, span = center - width / 2, width
    else:
        width = max(width, 1.0)
        low, span = center - 0.5 - (width - 1) / 2, width - 1
    values -= low
    values /= span
    return np.clip(values, 0.0, 1.0, out=values)


def _modality_values(ds: Any, pixels: np.ndarray) -> np.ndarray:
    """The modality LUT (PS3.3 C.11.1) applied, as float32: a rescale in place on one copy."""
    if "ModalityLUTSequence" in ds:
        from pydicom.pixels import apply_modality_lut

        return apply_modality_lut(pixels, ds).astype(np.float32)
    values = pixels.astype(np.float32)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope not in (None, "") and _first(slope) != 1:
        values *= _first(slope)
    if intercept not in (None, "") and _first(intercept) != 0:
        values += _first(intercept)
    return values


def _to_unit_range(path: Path, ds: Any, pixels: np.ndarray) -> np.ndarray:
    """Modality LUT, then VOI LUT or window (else the image's own range), to [0, 1] float32."""
    from pydicom.pixels import apply_voi_lut

    for keyword in ("RescaleSlope", "RescaleIntercept", "WindowCenter", "WindowWidth"):
        if keyword in ds and ds[keyword].value not in (None, "") and not np.isfinite(_first(ds[keyword].value)):
            raise InputError(path, f"{keyword} is {_first(ds[keyword].value)}, not a finite number")
    values = _modality_values(ds, pixels)
    del pixels
    if "VOILUTSequence" in ds:
        item = ds.VOILUTSequence[0]
        out_bits = int(item.LUTDescriptor[2])
        return np.clip(apply_voi_lut(values, ds, index=0, prefer_lut=True) / ((1 << out_bits) - 1), 0, 1).astype(np.float32)
    if "WindowCenter" in ds and "WindowWidth" in ds and _first(ds.WindowWidth) > 0:
        function = str(ds.get("VOILUTFunction", "LINEAR") or "LINEAR").upper()
        return window(values, _first(ds.WindowCenter), _first(ds.WindowWidth), function)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        raise InputError(path, "the image is blank (every pixel has the same value)")
    values -= low
    values /= high - low
    return values


def _values(value: Any) -> list[Any]:
    """A multi-valued element's values as a list (pydicom gives one value bare)."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        return list(value)
    return [value] if value not in (None, "") else []


def _pixel_spacing(ds: Any) -> list[float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(keyword)
        if value is not None and len(value) == 2 and all(float(v) > 0 for v in value):
            return [float(v) for v in value]
    return None


def describe(ds: Any) -> dict[str, Any]:
    """The identity and geometry of an instance, without patient data."""
    meta = getattr(ds, "file_meta", None)
    return {
        "format": "dicom",
        "width": int(ds.get("Columns", 0)),
        "height": int(ds.get("Rows", 0)),
        "bits": int(ds.get("BitsStored", 0)),
        "modality": str(ds.get("Modality", "")),
        "body_part": str(ds.get("BodyPartExamined", "")),
        "view_position": str(ds.get("ViewPosition", "")),
        "photometric_interpretation": str(ds.get("PhotometricInterpretation", "")),
        "transfer_syntax": str(meta.get("TransferSyntaxUID", "")) if meta is not None else "",
        "sop_class_uid": str(ds.get("SOPClassUID", "")),
        "sop_instance_uid": str(ds.get("SOPInstanceUID", "")),
        "study_instance_uid": str(ds.get("StudyInstanceUID", "")),
        "series_instance_uid": str(ds.get("SeriesInstanceUID", "")),
        "pixel_spacing_mm": _pixel_spacing(ds),
    }


def _decoder_installed(syntax: str) -> bool:
    """Whether a decoder for ``syntax`` is installed: if so, a failure is the data's, not a missing package."""
    from pydicom.pixels import get_decoder

    try:
        return bool(syntax) and get_decoder(syntax).is_available
    except (NotImplementedError, ValueError):
        return False


def _check_codestream(path: Path, ds: Any, info: dict[str, Any], frames: int, sample_bytes: int,
                      max_decoded_bytes: int) -> None:
    """Refuse compressed pixel data whose first frame declares, in its own codestream, another
    size than the header's or more than the budget: the decoder allocates what it declares."""
    if not ds["PixelData"].is_undefined_length:
        return
    from pydicom.encaps import generate_frames

    try:
        first = next(generate_frames(ds.PixelData, number_of_frames=frames))
    except Exception as error:
        raise InputError(path, f"the encapsulated pixel data cannot be read ({str(error).splitlines()[0]})") from None
    declared = codestream_size(first)
    if declared is None:
        return
    columns, rows, components = declared
    check_size(path, columns, rows, components * sample_bytes, max_decoded_bytes)
    if (columns, rows) != (info["width"], info["height"]):
        raise InputError(path, f"the compressed frame declares {columns}x{rows} pixels, the header "
                               f"{info['width']}x{info['height']}")


def read_dicom(path: Path, allow_any_view: bool = False, max_decoded_bytes: int = MAX_DECODED_BYTES,
               selection: Selection = Selection()) -> tuple[np.ndarray, dict[str, Any], Any]:
    """Decode a DICOM radiograph into gray [0, 1] pixels (bright = dense), a description, and
    its dataset without the pixel data (for objects derived from it). Only the first frame is
    decoded, once its size from the header is within ``max_decoded_bytes``."""
    pydicom = import_pydicom()
    try:
        ds = read_deflated(path, max_decoded_bytes + HEADER_ALLOWANCE) if is_deflated(path) else pydicom.dcmread(path)
    except InputError:
        raise
    except Exception as error:
        raise InputError(path, f"not a readable DICOM file ({error})") from None
    if "PixelData" not in ds:
        raise InputError(path, "DICOM without pixel data")
    info = describe(ds)
    samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 8) or 8)
    check_size(path, info["width"], info["height"], samples * -(-bits // 8), max_decoded_bytes)
    selection.check(path, info, [str(v) for v in _values(ds.get("ImageType", []))], allow_any_view)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    _check_codestream(path, ds, info, frames, -(-bits // 8), max_decoded_bytes)
    try:
        from pydicom.pixels import pixel_array

        pixels = pixel_array(ds, index=0)  # one frame decoded, not all; not cached on the dataset
    except Exception as error:
        syntax = info["transfer_syntax"]
        name = getattr(pydicom.uid.UID(syntax), "name", syntax) if syntax else "unknown"
        hint = "" if _decoder_installed(syntax) else " (install the decoders: pip install 'chexplain[dicom]')"
        raise InputError(path, f"cannot decode {name} ({syntax}): {str(error).splitlines()[0]}{hint}") from None
    del ds.PixelData  # the encoded bytes are not needed once decoded
    if frames > 1:
        info["warning"] = f"{frames} frames; the first was used"
    photometric = info["photometric_interpretation"].upper()
    if pixels.ndim == 3:  # colour: gray it out, then treat as an 8/16-bit bitmap
        if photometric.startswith("YBR"):
            from pydicom.pixels import convert_color_space

            pixels = convert_color_space(pixels, photometric, "RGB")
        unit = to_unit_gray(np.ascontiguousarray(pixels[..., ::-1]))
    else:
        unit = _to_unit_range(path, ds, pixels)
    if photometric == "MONOCHROME1":
        np.subtract(1.0, unit, out=unit)
    return unit, info, ds
