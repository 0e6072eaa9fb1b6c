"""The manifest's explanation settings: one typed reader for what the export wrote."""

from __future__ import annotations

import json

import pytest

from chexplain.errors import ConfigError
from chexplain.grammar import ClassSelection
from chexplain.runtime.manifest import CHEXPERT_CLASSES, ExplanationSettings, Manifest, MethodEntry

# The explanations of a manifest as chexplain 0.1.0 wrote them (the default export, 2026-12-05).
WRITTEN = {
    "methods": [
        {"output": "gradcam", "family": "gradcam", "layer": "features.norm5", "variant": "gradcam"},
        {"output": "lrp", "family": "lrp", "composite": "epsilon-plus-smooth-bn", "epsilon": 1.0,
         "stabilizer": 1e-6, "gamma": 0.25, "bounds": [[-2.1, -2.0, -1.8], [2.2, 2.4, 2.6]]},
    ],
    "classes": "topk:3",
    "fixed_classes": [],
    "targets_input": False,
    "exposed_layer": None,
    "merged_batchnorms": 0,
    "relevance_seed": "target logit",
    "cam": "raw map at the layer's resolution, after ReLU, not normalised",
    "lrp": "relevance at the input, summed over channels, signed, not normalised",
}


def test_settings_read_what_the_export_wrote_and_write_it_back_unchanged():
    manifest = Manifest.from_json(json.dumps({"name": "m", "explanations": WRITTEN}))
    settings = manifest.explanations
    assert settings.classes == ClassSelection("topk", 3) and settings.class_count() == 3 and not settings.targets_input
    assert [m.label for m in settings.methods] == ["gradcam", "lrp:epsilon-plus-smooth-bn"]
    assert settings.methods[1].bounds == ((-2.1, -2.0, -1.8), (2.2, 2.4, 2.6))
    assert settings.to_dict() == WRITTEN
    assert Manifest.from_json(manifest.to_json()) == manifest


def test_fixed_classes_and_a_targets_input():
    fixed = ExplanationSettings.from_dict({**WRITTEN, "classes": "fixed", "fixed_classes": ["Edema", "Cardiomegaly"]},
                                          CHEXPERT_CLASSES)
    assert fixed.classes.fixed == (5, 2) and fixed.class_count() == 2
    assert fixed.to_dict()["fixed_classes"] == ["Edema", "Cardiomegaly"] and fixed.to_dict()["classes"] == "fixed"
    given = ExplanationSettings.from_dict({**WRITTEN, "classes": "input", "targets_input": True}, CHEXPERT_CLASSES)
    assert given.targets_input and given.to_dict()["targets_input"] is True


def test_a_graph_without_explanations():
    manifest = Manifest.from_json(json.dumps({"name": "m", "explanations": {}}))
    assert manifest.explanations == ExplanationSettings() and manifest.explanations.class_count() == 0
    assert manifest.to_dict()["explanations"] == {}


@pytest.mark.parametrize("broken", [
    {**WRITTEN, "methods": [{"output": "lrp", "family": "lrp"}]},  # an entry without its composite
    {**WRITTEN, "classes": "fixed", "fixed_classes": ["Hernia"]},  # a class the model does not have
    {key: value for key, value in WRITTEN.items() if key != "classes"},
])
def test_settings_that_cannot_be_read_say_how_to_re_export(broken: dict):
    with pytest.raises(ConfigError, match="re-export the graph with `chexplain export`"):
        ExplanationSettings.from_dict(broken, CHEXPERT_CLASSES)


def test_the_method_label_is_made_in_one_place():
    assert MethodEntry("out", "gradcam", variant="gradcam++", layer="layer4").label == "gradcam++"
    assert MethodEntry("out", "lrp", composite="epsilon").label == "lrp:epsilon"
