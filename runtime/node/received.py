"""What a received instance must be before the node keeps it: its identifying UIDs valid and
matching its C-STORE request.

A SOP Instance UID becomes a file name and, with the Study and Series Instance UIDs, is copied
into every result and forwarded to the PACS; a value such as ``../../../../tmp/x`` or 84
characters with letters is refused here, answered with a failure status and an error
comment, before anything is written. UIDs are checked as PS3.5 9.1 defines them: digits and
dots, no empty or zero-led component, at most 64 characters.

Only the header up to the Series Instance UID is read (a deflated dataset is inflated only
that far, within ``HEADER_BUDGET``): the pixel data are not touched here.
"""

from __future__ import annotations

from io import BytesIO
from typing import Any

from ..inputs.dicom_bounds import DEFLATED, inflate_start

CANNOT_UNDERSTAND = 0xC000  # PS3.4 C.4.2.1.5: Error, cannot understand (the modality does not retry)
MAX_UID = 64
HEADER_BUDGET = 1 << 20  # bytes of a deflated dataset inflated to read its identifying attributes
IDENTIFIERS = ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID")
_LAST_IDENTIFIER = 0x0020000E  # (0020,000E) Series Instance UID: the header is read up to it


def uid_problem(value: Any) -> str:
    """Why ``value`` is not a UID ('' when it is one); the value itself is never quoted."""
    from pydicom import config
    from pydicom.valuerep import validate_value

    text = str(value).rstrip("\0 ")
    if not text:
        return "is empty"
    if len(text) > MAX_UID:
        return f"has {len(text)} characters (at most {MAX_UID})"
    try:
        validate_value("UI", text, config.RAISE)
    except ValueError:
        return "is not a UID (digits and dots, no empty or zero-led component)"
    return ""


def _header(dataset: BytesIO, transfer_syntax: str) -> Any:
    """The dataset's attributes up to the Series Instance UID, read where they lie (no copy of
    the dataset; a deflated one inflated at most ``HEADER_BUDGET`` bytes)."""
    from pydicom.filereader import read_dataset
    from pydicom.uid import UID

    if transfer_syntax == DEFLATED:
        with dataset.getbuffer() as compressed:
            dataset = BytesIO(inflate_start(compressed, HEADER_BUDGET))
    syntax = UID(transfer_syntax)
    dataset.seek(0)
    return read_dataset(dataset, is_implicit_VR=syntax.is_implicit_VR, is_little_endian=syntax.is_little_endian,
                        stop_when=lambda tag, vr, length: tag > _LAST_IDENTIFIER)


def refusal(dataset: BytesIO, transfer_syntax: str, sop_class: str, sop_instance: str) -> str:
    """Why a C-STORE of ``dataset`` (as received, encoded in ``transfer_syntax``) for
    ``sop_class`` / ``sop_instance`` must be refused ('' when it may be kept)."""
    problem = uid_problem(sop_instance)
    if problem:
        return f"the request's Affected SOP Instance UID {problem}"
    try:
        header = _header(dataset, transfer_syntax)
    except Exception as error:  # a dataset pydicom cannot parse: nothing of it can be trusted
        return f"the dataset cannot be read ({type(error).__name__})"
    for keyword in IDENTIFIERS:
        problem = uid_problem(header.get(keyword, ""))
        if problem:
            return f"{keyword} {problem}"
    if str(header.SOPInstanceUID) != sop_instance.rstrip("\0 "):
        return "the dataset's SOP Instance UID is not the request's"
    if str(header.SOPClassUID) != sop_class.rstrip("\0 "):
        return "the dataset's SOP Class UID is not the request's"
    return ""
