"""What the tests share besides fixtures: the real radiographs and DICOM files in tests/data/
(sources and licences: data/MANIFEST.tsv) and the repository's root."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).parent / "data"
IMAGES = DATA / "images"
DICOMS = DATA / "dicom"
RG1_J2K_MONOCHROME1 = DICOMS / "RG1_J2KI.dcm"
RG2_HIP = DICOMS / "RG2_JPLL.dcm"
SIIM = DICOMS / "siim_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
SIIM_FLIPPED = DICOMS / "txv_Fake_MONOHR1.dcm"
