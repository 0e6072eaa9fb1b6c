"""The torch-free runtime: read radiographs, preprocess from the manifest, run the graph."""

from ..errors import InputError, ModelNotFoundError
from .backends import Backend, OnnxRuntimeBackend, open_backend, resolve_model
from .inputs.preprocess import Geometry, preprocess
from .inputs.reader import Radiograph, expand_inputs, read_radiograph
from .results.prediction import Prediction, Predictor

__all__ = [
    "Backend",
    "Geometry",
    "InputError",
    "ModelNotFoundError",
    "OnnxRuntimeBackend",
    "Prediction",
    "Predictor",
    "Radiograph",
    "expand_inputs",
    "open_backend",
    "preprocess",
    "read_radiograph",
    "resolve_model",
]
