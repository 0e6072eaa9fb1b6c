"""Preprocessing follows the manifest and remembers where the input lies on the original."""

from __future__ import annotations

import numpy as np
import pytest

from chexplain.errors import ConfigError
from chexplain.runtime.inputs.preprocess import input_box, preprocess
from chexplain.runtime.manifest import Preprocessing


@pytest.mark.parametrize(
    ("crop", "box"),
    [("resize", (0, 0, 300, 200)), ("center", (50, 0, 250, 200)), ("pad", (0, -50, 300, 250))],
)
def test_crop_policies_choose_the_region_sent_to_the_network(crop: str, box: tuple):
    assert input_box(200, 300, Preprocessing(size=(64, 64), channels=1, mean=(0,), std=(1,), crop=crop)) == box


def test_normalisation_and_channels():
    prep = Preprocessing(size=(32, 48), channels=3, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    image, geometry = preprocess(np.full((100, 150), 0.5, np.float32), prep)
    assert image.shape == (3, 32, 48) and image.dtype == np.float32
    np.testing.assert_allclose(image[:, 0, 0], [0.0, 1.0, 0.25], atol=1e-6)
    assert geometry.original_size == (100, 150)


@pytest.mark.parametrize("crop", ["resize", "center", "pad"])
def test_a_map_of_the_input_lands_on_the_same_anatomy(crop: str):
    """A bright square in a non-square original maps back onto itself through the geometry."""
    original = np.zeros((600, 400), np.float32)
    original[250:350, 150:250] = 1.0
    prep = Preprocessing(size=(64, 64), channels=1, mean=(0.0,), std=(1.0,), crop=crop)
    image, geometry = preprocess(original, prep)
    back = geometry.to_original(image[0])
    assert back.shape == original.shape
    overlap = ((back > 0.5) & (original > 0.5)).sum() / ((back > 0.5) | (original > 0.5)).sum()
    assert overlap > 0.85


def test_pad_keeps_the_whole_image_and_fills_with_black():
    original = np.ones((100, 50), np.float32)
    prep = Preprocessing(size=(40, 40), channels=1, mean=(0.0,), std=(1.0,), crop="pad")
    image, geometry = preprocess(original, prep)
    assert geometry.box == (-25, 0, 75, 100)
    assert image[0, :, :8].max() == 0.0 and image[0, :, 12:28].min() == pytest.approx(1.0)


def test_manifest_rejects_bad_preprocessing():
    with pytest.raises(ConfigError, match="crop"):
        Preprocessing(crop="zoom")
    with pytest.raises(ConfigError, match="one value per input channel"):
        Preprocessing(channels=1)
