"""The model-parameter randomisation check (Adebayo et al., "Sanity checks for saliency maps",
NeurIPS 2018, section 3.1, cascading randomisation).

An explanation that explains the model must change when the model does. Starting from the
logits, each parameterised block is re-initialised in turn, cumulatively (the classifier,
then the last dense block as well, and so on down to the first convolution), and after each
step every method's maps for the same radiographs and classes are compared with the trained
model's: the Spearman rank correlation of the maps' absolute values (the paper's main
measure), the same without the absolute value, and SSIM. A method fails when its maps with
every block randomised still rank the pixels like the trained model's (Spearman of |map| >=
``INSENSITIVE_AT``): they then show the input, not what the network learned.

Re-initialising is each layer's own ``reset_parameters`` (PyTorch's initial distribution:
Kaiming-uniform convolutions and linear layers; BatchNorm back to identity with fresh
running statistics), seeded.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from ..errors import ConfigError
from ..runtime.evaluation.similarity import spearman, ssim
from ..runtime.maps.render import at_input_grid
from .explainer import LRP, Explainer, GradCAM

INSENSITIVE_AT = 0.5  # Spearman of |map| with every block randomised, at or above which a method fails
MEASURES = ("spearman_abs", "spearman", "ssim")

# model -> {method label: maps [M, H, W]}, the same M radiograph/class pairs for every model
MapFunction = Callable[[nn.Module], dict[str, np.ndarray]]


def _has_parameters(module: nn.Module) -> bool:
    return any(True for _ in module.parameters())


def randomisation_stages(model: nn.Module) -> list[str]:
    """The model's parameterised blocks from the output down: its top-level children, with a
    Sequential (torchvision's ``features``) opened one level."""
    blocks = []
    for name, child in model.named_children():
        if isinstance(child, nn.Sequential):
            blocks += [f"{name}.{inner}" for inner, grandchild in child.named_children() if _has_parameters(grandchild)]
        elif _has_parameters(child):
            blocks.append(name)
    if not blocks:
        raise ConfigError(f"{type(model).__name__} has no parameterised blocks to randomise")
    return blocks[::-1]


def reinitialise(module: nn.Module, seed: int) -> None:
    """Every layer of ``module`` with a ``reset_parameters`` back to its initial distribution."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for layer in module.modules():
            reset = getattr(layer, "reset_parameters", None)
            if callable(reset):
                reset()


def map_similarity(original: np.ndarray, randomised: np.ndarray) -> dict[str, float]:
    """Each measure's mean over the maps [M, H, W]; an overflowing map (inf, NaN) counts as zeros."""
    pairs = list(zip(original, np.nan_to_num(randomised, nan=0.0, posinf=0.0, neginf=0.0)))
    return {
        "spearman_abs": float(np.mean([spearman(np.abs(a), np.abs(b)) for a, b in pairs])),
        "spearman": float(np.mean([spearman(a, b) for a, b in pairs])),
        "ssim": float(np.mean([ssim(a, b) for a, b in pairs])),
    }


def cascading_randomisation(model: nn.Module, maps_of: MapFunction, seed: int = 0,
                            progress: Callable[[int, str], None] | None = None) -> dict[str, Any]:
    """The similarity of each method's maps to the trained model's after each cumulative
    randomisation step, and each method's verdict."""
    original = maps_of(model)
    randomised = copy.deepcopy(model).eval()
    steps = []
    for index, stage in enumerate(randomisation_stages(model), 1):
        reinitialise(randomised.get_submodule(stage), seed + index)
        maps = maps_of(randomised)
        steps.append({"randomised_down_to": stage,
                      "methods": {label: map_similarity(original[label], maps[label]) for label in original}})
        if progress:
            progress(index, stage)
    final = steps[-1]["methods"]
    verdicts = {label: {"passed": final[label]["spearman_abs"] < INSENSITIVE_AT, **final[label]} for label in original}
    return {"reference": "Adebayo et al., NeurIPS 2018, cascading randomisation", "insensitive_at": INSENSITIVE_AT,
            "seed": seed, "maps": int(len(next(iter(original.values())))), "steps": steps, "verdicts": verdicts}


def explainer_maps(methods: dict[str, GradCAM | LRP], images: torch.Tensor,
                   targets: Sequence[Sequence[int]]) -> MapFunction:
    """A MapFunction that explains each image for its own classes with chexplain's Explainer,
    every map at the network input's grid (a CAM upsampled bilinearly, as the runtime does)."""
    size = tuple(images.shape[-2:])

    def maps_of(model: nn.Module) -> dict[str, np.ndarray]:
        explainer = Explainer(model, list(methods.values())).eval()
        names = {label: explainer.output_keys[method.key] for label, method in methods.items()}
        collected: dict[str, list[np.ndarray]] = {label: [] for label in methods}
        with torch.no_grad():
            for image, chosen in zip(images, targets):
                out = explainer(image[None], torch.tensor([list(chosen)], dtype=torch.int64))
                for label, name in names.items():
                    for heat in out[name][0].double().numpy():
                        collected[label].append(at_input_grid(heat, size))
        return {label: np.stack(values) for label, values in collected.items()}

    return maps_of


SAME_MODEL_ATOL = 1e-3  # probabilities of the graph and the PyTorch model on one radiograph


def randomisation_check(model: nn.Module, methods: dict[str, GradCAM | LRP], images: np.ndarray,
                        targets: Sequence[Sequence[int]], graph_probabilities: np.ndarray, seed: int = 0,
                        progress: Callable[[int, str], None] | None = None) -> dict[str, Any]:
    """The cascading check of a graph's methods, run in PyTorch on ``model``: refused (ValueError)
    unless ``model`` gives the graph's probabilities on the first image, since randomising another
    model says nothing about the graph's maps."""
    batch = torch.from_numpy(images)
    with torch.no_grad():
        probabilities = torch.sigmoid(model.eval()(batch[:1])).numpy()
    if probabilities.shape != graph_probabilities.shape or np.abs(probabilities - graph_probabilities).max() > SAME_MODEL_ATOL:
        raise ConfigError("not the model the graph was exported from (its probabilities differ); give that model")
    return cascading_randomisation(model, explainer_maps(methods, batch, targets), seed=seed, progress=progress)
