"""Which maps a graph renders, and the one pipeline that puts them on the original grid."""

from __future__ import annotations

from dataclasses import replace

import cv2
import numpy as np
import pytest

from chexplain.errors import ConfigError
from chexplain.grammar import ClassSelection
from chexplain.runtime.inputs.preprocess import Geometry
from chexplain.runtime.manifest import CHEXPERT_CLASSES, ExplanationSettings, MethodEntry
from chexplain.runtime.maps.methods import GraphMethod, choose_classes, graph_methods, select_methods
from chexplain.runtime.maps.render import class_maps, explained_targets

METHODS = (MethodEntry("gradcam", "gradcam", variant="gradcam", layer="features.norm5"),
           MethodEntry("lrp", "lrp", composite="epsilon"))
TOPK = ExplanationSettings(METHODS, ClassSelection("topk", 3))
TARGETS = replace(TOPK, classes=ClassSelection("input"), exposed_layer="features.norm5")


def test_methods_of_a_graph_and_the_variants_its_gradients_allow():
    assert [m.label for m in graph_methods(TOPK)] == ["gradcam", "lrp:epsilon"]
    exposed = graph_methods(TARGETS)
    assert [m.label for m in exposed] == ["gradcam", "lrp:epsilon", "gradcam++", "hirescam", "layercam", "guided-gradcam"]
    assert [m.label for m in select_methods(exposed, [])] == ["gradcam", "lrp:epsilon"]
    assert len(select_methods(exposed, ["all"])) == 6
    assert select_methods(exposed, ["lrp"])[0].signed
    with pytest.raises(ConfigError, match="not in the exported graph"):
        select_methods(graph_methods(TOPK), ["lrp:alpha2beta1"])
    with pytest.raises(ConfigError, match="no explanations"):
        select_methods([], [])


def test_classes_against_a_top_k_graph_and_a_targets_graph():
    assert choose_classes(TOPK, None, CHEXPERT_CLASSES).keep is None
    assert choose_classes(TOPK, "topk:2", CHEXPERT_CLASSES).keep == 2
    for bad in ("topk:4", "all", "Edema"):
        with pytest.raises(ConfigError, match="re-export"):
            choose_classes(TOPK, bad, CHEXPERT_CLASSES)
    everything = choose_classes(TARGETS, None, CHEXPERT_CLASSES)
    assert everything.targets.tolist() == [list(range(14))] and everything.keep is None
    named = choose_classes(TARGETS, "Edema,Cardiomegaly", CHEXPERT_CLASSES)
    assert named.inputs["targets"].tolist() == [[5, 2]]
    for bad in ("topk:2", "Hernia"):
        with pytest.raises(ConfigError, match="takes all or class names"):
            choose_classes(TARGETS, bad, CHEXPERT_CLASSES)


def test_class_maps_go_class_by_class_onto_the_original_grid():
    rng = np.random.default_rng(0)
    outputs = {"gradcam": rng.random((2, 3, 7, 7), np.float32), "lrp": rng.standard_normal((2, 3, 32, 32), np.float32),
               "targets": np.array([[4, 1, 9], [0, 2, 3]])}
    methods = [GraphMethod("gradcam", "gradcam", False), GraphMethod("lrp", "lrp:epsilon", True)]
    geometry = Geometry((60, 40), (0, 10, 40, 50))  # a 40x40 crop of a 40-wide, 60-high radiograph
    maps = class_maps(outputs, geometry, methods, explained_targets(outputs, keep=2, index=1), index=1)
    assert [(m.rank, m.target, m.method.label) for m in maps] == [
        (1, 0, "gradcam"), (1, 0, "lrp:epsilon"), (2, 2, "gradcam"), (2, 2, "lrp:epsilon")]
    lrp = maps[3]
    np.testing.assert_array_equal(lrp.native, outputs["lrp"][1, 1])
    assert lrp.heat.shape == (60, 40) and not lrp.heat[:10].any() and not lrp.heat[50:].any()
    np.testing.assert_allclose(lrp.heat[10:50], cv2.resize(outputs["lrp"][1, 1], (40, 40), interpolation=cv2.INTER_LINEAR))
    blended = lrp.overlay(np.full((60, 40), 0.5, np.float32), 0.6)
    assert blended.shape == (60, 40, 3) and blended.dtype == np.uint8
    assert (blended[:10] == 128).all()  # outside the crop the radiograph shows through unchanged
