"""The Predictor's own judgement of what a backend returns (a radiograph read for real)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from chexplain.runtime import Backend, Predictor
from chexplain.runtime.manifest import Manifest

from helpers import IMAGES


class ConstantBackend(Backend):
    """Returns fixed probabilities: a stand-in for a model whose output went non-finite."""

    name = "constant"

    def __init__(self, probabilities: np.ndarray) -> None:
        self.path = Path("constant.onnx")
        self.manifest = Manifest(name="constant")
        self.input_names, self.output_names = ["image"], ["probabilities"]
        self.probabilities = probabilities

    def describe(self) -> str:
        return "constant probabilities"

    def run(self, image: np.ndarray, **inputs: np.ndarray) -> dict[str, np.ndarray]:
        return {"probabilities": self.probabilities[None].repeat(len(image), 0)}


def test_non_finite_probabilities_fail_the_image_with_a_reason():
    image = IMAGES / "00013125_000.png"
    good = np.full(14, 0.25, np.float32)
    assert Predictor(ConstantBackend(good)).predict(image).ok
    bad = good.copy()
    bad[3] = np.nan
    prediction = Predictor(ConstantBackend(bad)).predict(image)
    assert not prediction.ok and "non-finite probabilities" in prediction.error
