"""The received radiograph's header as the node's results may copy it.

Modalities, anonymisers and test tools send headers that are not always valid: Type 2
attributes absent (no Patient's Birth Date, no Study ID), dates written ``1947-12-13``,
impossible dates, a Patient's Sex of ``HOSTILEDOE``. Every result object copies the patient
and study attributes, and highdicom reads and checks them, so one such value would cost the
whole result. ``result_source`` gives the builders a copy of the header in which

- every Type 2 attribute of the Patient and General Study modules is present (empty where
  the source lacks it), as PS3.3 asks of the objects derived from it;
- every other value is valid for its VR (PS3.5 6.2) and, where PS3.3 enumerates them, one
  of its values; dates and times in the ISO or ACR-NEMA form are rewritten as DA / TM;
  anything else invalid is written empty (Type 2) or left out.

What was repaired (a value, not an absence) is listed by keyword and reason, never by value,
for the result record and the log.
"""

from __future__ import annotations

import copy
import datetime
import re
from dataclasses import dataclass, field
from typing import Any

# Type 2 in the Patient and General Study modules: present, even when empty, in every result.
TYPE_2 = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
          "ReferringPhysicianName", "StudyID", "AccessionNumber")
# Enumerated values (PS3.3 C.7.1.1, C.7.3.1, C.7.6.1.1.2): anything else is not a value.
ENUMERATED = {"PatientSex": {"M", "F", "O"}, "Laterality": {"R", "L"}, "ImageLaterality": {"R", "L", "U", "B"}}
ORIENTATION = re.compile(r"^[APRLHF]{1,3}$")  # PS3.3 C.7.6.1.1.1: each value a direction's letters
_DATE_FORMS = ("%Y-%m-%d", "%Y.%m.%d")  # ISO 8601 and ACR-NEMA 2.0
TEXT_VRS = {"AE", "AS", "CS", "DA", "DS", "DT", "IS", "LO", "LT", "PN", "SH", "ST", "TM", "UC", "UI", "UR", "UT"}
_TIME_FORMS = re.compile(r"^(\d\d):(\d\d)(?::(\d\d)(\.\d{1,6})?)?$")


@dataclass
class Repairs:
    """What ``result_source`` changed: keyword -> reason."""

    changed: dict[str, str] = field(default_factory=dict)

    def note(self, keyword: str, reason: str) -> None:
        self.changed[keyword] = reason


def _valid(vr: str, value: Any) -> bool:
    from pydicom import config
    from pydicom.valuerep import validate_value

    values = list(value) if type(value).__name__ == "MultiValue" else [value]
    try:
        for one in values:
            validate_value(vr, str(one) if vr in ("IS", "DS") else one, config.RAISE)
    except (ValueError, TypeError):
        return False
    if vr == "DA":
        return all(_real_date(str(one)) for one in values if str(one))
    return True


def _real_date(text: str) -> bool:
    """Whether a DA string (YYYYMMDD) names a day of the calendar (pydicom checks its form only)."""
    try:
        datetime.datetime.strptime(text, "%Y%m%d")
    except ValueError:
        return False
    return True


def _rewritten(vr: str, text: str) -> str | None:
    """A date or time in a form the standard knew once (ISO, ACR-NEMA) as DA / TM; None otherwise."""
    if vr == "DA":
        for form in _DATE_FORMS:
            try:
                return datetime.datetime.strptime(text.strip(), form).strftime("%Y%m%d")
            except ValueError:
                continue
    if vr == "TM" and (match := _TIME_FORMS.match(text.strip())):
        hours, minutes, seconds, fraction = match.groups()
        if int(hours) < 24 and int(minutes) < 60 and int(seconds or 0) < 60:
            return f"{hours}{minutes}{seconds or ''}{fraction or ''}"
    return None


def _enumerated(keyword: str, value: Any) -> bool:
    values = [str(v) for v in value] if type(value).__name__ == "MultiValue" else [str(value)]
    if keyword == "PatientOrientation":
        return len(values) == 2 and all(ORIENTATION.match(v) for v in values)
    allowed = ENUMERATED.get(keyword)
    return allowed is None or all(v in allowed for v in values if v)


def result_source(source: Any) -> tuple[Any, Repairs]:
    """A copy of ``source`` (a DICOM header, pixel data not needed) that every result builder
    can copy from, and what was repaired in it."""
    from pydicom.datadict import dictionary_VR

    header = copy.deepcopy(source)
    repairs = Repairs()
    for element in list(header):
        if element.VR not in TEXT_VRS or element.tag.is_private or element.is_empty:
            continue
        keyword = element.keyword
        valid = _valid(element.VR, element.value)
        if valid and _enumerated(keyword, element.value):
            continue
        fixed = _rewritten(element.VR, str(element.value)) if element.VR in ("DA", "TM") else None
        what = f"not a valid {element.VR}" if not valid else "not one of its defined values"
        if fixed is not None:
            element.value = fixed
            repairs.note(keyword, f"{what}; rewritten as {element.VR}")
        elif keyword in TYPE_2:
            element.value = ""
            repairs.note(keyword, f"{what}; written empty")
        else:
            del header[element.tag]
            repairs.note(keyword or str(element.tag), f"{what}; left out")
    for keyword in TYPE_2:
        if keyword not in header:
            header.add_new(keyword, dictionary_VR(keyword), "")
    return header, repairs
