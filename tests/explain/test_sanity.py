"""The cascading model-parameter randomisation check on maps whose answers are known."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from chexplain.errors import ConfigError
from chexplain.explain import LRP, GradCAM
from chexplain.explain.sanity import (
    INSENSITIVE_AT,
    cascading_randomisation,
    explainer_maps,
    map_similarity,
    randomisation_check,
    randomisation_stages,
    reinitialise,
)
from chexplain.models.zoo import seeded_model


class TinyNet(nn.Module):
    """A DenseNet-shaped toy: ``features`` (a Sequential), then a classifier."""

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 16, 3, padding=1, stride=2), nn.BatchNorm2d(16), nn.ReLU())
        self.classifier = nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(F.adaptive_avg_pool2d(self.features(x), 1), 1))


@pytest.fixture()
def tiny() -> TinyNet:
    torch.manual_seed(0)
    model = TinyNet()
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):  # trained-looking statistics, unlike a fresh layer's
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    return model.eval()


@pytest.fixture()
def images() -> torch.Tensor:
    return torch.randn(2, 3, 24, 24, generator=torch.Generator().manual_seed(3))


def test_stages_go_from_the_logits_down():
    assert randomisation_stages(TinyNet()) == ["classifier", "features.4", "features.3", "features.1", "features.0"]
    stages = randomisation_stages(seeded_model()[0])
    assert stages[:3] == ["classifier", "features.norm5", "features.denseblock4"]
    assert stages[-2:] == ["features.norm0", "features.conv0"] and len(stages) == 11
    with pytest.raises(ConfigError, match="no parameterised blocks"):
        randomisation_stages(nn.Sequential(nn.ReLU()))


def test_reinitialise_is_seeded_and_touches_only_the_block(tiny: TinyNet):
    before = {name: p.clone() for name, p in tiny.state_dict().items()}
    reinitialise(tiny.features[3], seed=5)
    after = tiny.state_dict()
    changed = {name for name in before if not torch.equal(before[name], after[name])}
    assert changed == {"features.3.weight", "features.3.bias"}
    weight = tiny.features[3].weight.clone()
    reinitialise(tiny.features[3], seed=5)
    assert torch.equal(weight, tiny.features[3].weight)  # same seed, same draw


def test_the_cascade_is_cumulative(tiny: TinyNet):
    """After step k, the k blocks from the top differ from the trained model, the rest do not."""
    trained = {name: p.clone() for name, p in tiny.named_parameters()}
    seen: list[set[str]] = []

    def maps_of(model: nn.Module) -> dict[str, np.ndarray]:
        seen.append({name for name, p in model.named_parameters() if not torch.equal(p, trained[name])})
        return {"map": np.ones((1, 4, 4))}

    result = cascading_randomisation(tiny, maps_of)
    blocks = [{"classifier"}, {"features.4"}, {"features.3"}, {"features.1"}, {"features.0"}]
    assert seen[0] == set()  # the trained model first, untouched
    for step, changed in enumerate(seen[1:], 1):
        expected = set().union(*blocks[:step])
        assert {name.rsplit(".", 1)[0] for name in changed} == expected
    assert [s["randomised_down_to"] for s in result["steps"]] == randomisation_stages(tiny)
    assert all(torch.equal(p, trained[n]) for n, p in tiny.named_parameters())  # the caller's model is left alone


def test_a_map_that_ignores_the_parameters_fails(tiny: TinyNet, images: torch.Tensor):
    """An 'explanation' that is the input itself (an edge detector would do the same) never changes."""
    result = cascading_randomisation(tiny, lambda model: {"input": images.sum(1).numpy()})
    assert all(step["methods"]["input"]["spearman_abs"] == pytest.approx(1.0) for step in result["steps"])
    assert result["verdicts"]["input"]["passed"] is False and result["maps"] == 2


def test_explanations_of_the_model_change_with_it(tiny: TinyNet, images: torch.Tensor):
    methods = {"gradcam": GradCAM("features.4"), "lrp:epsilon": LRP("epsilon", epsilon=0.1)}
    maps_of = explainer_maps(methods, images, [[0, 1], [2, 3]])
    maps = maps_of(tiny)
    assert maps["gradcam"].shape == (4, 24, 24) and maps["lrp:epsilon"].shape == (4, 24, 24)
    same = map_similarity(maps["lrp:epsilon"], maps_of(tiny)["lrp:epsilon"])
    assert same == pytest.approx({"spearman_abs": 1.0, "spearman": 1.0, "ssim": 1.0})
    result = cascading_randomisation(tiny, maps_of)
    for label in methods:
        final = result["verdicts"][label]
        assert final["spearman_abs"] < INSENSITIVE_AT and final["passed"], (label, final)


def test_the_check_refuses_a_model_other_than_the_graphs(tiny: TinyNet, images: torch.Tensor):
    methods = {"gradcam": GradCAM("features.4")}
    with torch.no_grad():
        own = torch.sigmoid(tiny(images[:1])).numpy()
    result = randomisation_check(tiny, methods, images.numpy(), [[0], [1]], own)
    assert result["maps"] == 2 and len(result["steps"]) == len(randomisation_stages(tiny))
    with pytest.raises(ConfigError, match="not the model the graph was exported from"):
        randomisation_check(tiny, methods, images.numpy(), [[0], [1]], own + 0.01)
