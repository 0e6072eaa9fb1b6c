"""The one grammar: methods, classes and lists as users write them, and its agreement with the
explainer's own registries."""

from __future__ import annotations

import pytest

from chexplain.errors import ConfigError
from chexplain.grammar import (
    CAM_VARIANTS,
    LRP_COMPOSITES,
    ClassSelection,
    MethodSpec,
    parse_classes,
    parse_list,
    parse_methods,
    requested_methods,
)
from chexplain.runtime.manifest import CHEXPERT_CLASSES


def test_methods_parse_to_specs_in_order_without_repeats():
    specs = parse_methods("gradcam, lrp ,lrp:alpha2beta1,gradcam,none")
    assert specs == [MethodSpec("gradcam", "gradcam"), MethodSpec("lrp", "epsilon"), MethodSpec("lrp", "alpha2beta1")]
    assert [s.label for s in specs] == ["gradcam", "lrp:epsilon", "lrp:alpha2beta1"]
    assert [s.signed for s in specs] == [False, True, True]
    assert parse_methods("none") == []
    with pytest.raises(ConfigError, match="unknown method 'saliency'"):
        parse_methods("saliency")
    with pytest.raises(ConfigError, match="unknown LRP composite 'gamma'"):
        parse_methods("lrp:gamma")
    assert requested_methods(("gradcam,lrp", "hirescam")) == ["gradcam", "lrp", "hirescam"]


def test_classes_parse_in_one_place():
    assert parse_classes("topk:3", CHEXPERT_CLASSES) == ClassSelection("topk", 3)
    assert parse_classes("all", CHEXPERT_CLASSES) == ClassSelection("all", 14)
    assert parse_classes("input", CHEXPERT_CLASSES).spec == "input"
    assert parse_classes("Edema, Cardiomegaly", CHEXPERT_CLASSES).fixed == (5, 2)
    for bad in ("topk:0", "topk:15", "topk:x", "Hernia", ""):
        with pytest.raises(ConfigError, match="--classes"):
            parse_classes(bad, CHEXPERT_CLASSES)
    with pytest.raises(ConfigError, match="expected all, topk:N or class names"):
        parse_classes("input", CHEXPERT_CLASSES, allow_input=False)


def test_lists():
    assert parse_list("1, 4,8", int) == [1, 4, 8]
    with pytest.raises(ConfigError, match="comma-separated"):
        parse_list(" , ")


def test_the_grammar_names_exactly_what_the_explainer_builds():
    from chexplain.explain import COMPOSITES, VARIANTS

    assert tuple(COMPOSITES) == LRP_COMPOSITES
    assert tuple(VARIANTS) == CAM_VARIANTS
