"""Radiographs in: PNG/JPEG/DICOM readers recognised by content, and preprocessing from the
manifest that remembers its geometry, so every map can be put back on the original grid."""

from .preprocess import Geometry, preprocess
from .reader import Radiograph, expand_inputs, read_radiograph

__all__ = ["Geometry", "Radiograph", "expand_inputs", "preprocess", "read_radiograph"]
