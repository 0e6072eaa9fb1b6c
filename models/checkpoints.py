"""Load classifier checkpoints in the formats people have, and save chexplain's own.

Supported: chexplain checkpoints (state dict + manifest), torchvision-style state dicts of
every architecture in models/architectures.py (``arch``; DenseNets are recognised without
it), with an ImageNet head (replaced by a seeded head for the CheXpert classes) or a head
for named classes, TorchXRayVision weights (DenseNet121 at 224 and ResNet50 at 512 pixels,
1 input channel, 18 output slots) and CheXNet-style checkpoints (``module.`` /
``densenet121.`` prefixes, pre-0.4 torchvision key names). Output classes are matched to the
CheXpert observations by name; classes a checkpoint was not trained on are reported as
missing, never invented.
"""

from __future__ import annotations

import pickle
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch

from ..errors import CheckpointError, MissingDependency, ModelNotFoundError
from ..grammar import CHECKPOINT_KINDS
from ..runtime.manifest import CHEXPERT_CLASSES, Manifest, Preprocessing, Weights, sha256_of
from .architectures import ARCHITECTURES, build, draw_zeroed_head, family_of, head_parameters, in_channels_of
from .densenet import DENSENET_CONFIGS

CHECKPOINT_FORMAT = "chexplain-checkpoint"

# TorchXRayVision's 18 output slots, in its order.
XRV_SLOTS: tuple[str, ...] = (
    "Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema",
    "Fibrosis", "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule",
    "Mass", "Hernia", "Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum",
)
# Which slots each published TorchXRayVision DenseNet121 was trained on.
_XRV_CHEX_SLOTS = (0, 1, 3, 4, 7, 8, 10, 14, 15, 16, 17)
XRV_TRAINED_SLOTS: dict[str, tuple[int, ...]] = {
    "all": tuple(range(18)),
    "nih": tuple(range(14)),
    "pc": tuple(range(14)) + (15,),
    "chex": _XRV_CHEX_SLOTS,
    "mimic_nb": _XRV_CHEX_SLOTS,
    "mimic_ch": _XRV_CHEX_SLOTS,
    "rsna": (8, 16),
    # resnet50-res512-all was trained on PadChest, NIH, RSNA, SIIM and VinDr: no lung lesion, no
    # enlarged cardiomediastinum (its operating points are NaN there)
    "resnet50-res512-all": tuple(i for i in range(18) if i not in (14, 17)),
}
XRV_RESNET_WEIGHTS = "resnet50-res512-all"
# TorchXRayVision scales 8-bit pixels to [-1024, 1024]: (x01 - 0.5) * 2048, at 224 (DenseNet) or 512 (ResNet) pixels.
XRV_PREPROCESSING = Preprocessing(size=(224, 224), channels=1, mean=(0.5,), std=(1 / 2048,), crop="center")
XRV_RESNET_PREPROCESSING = Preprocessing(size=(512, 512), channels=1, mean=(0.5,), std=(1 / 2048,), crop="center")

# NIH ChestX-ray14 / TorchXRayVision names that mean a CheXpert observation.
_ALIASES = {"effusion": "pleural effusion"}

_OLD_DENSELAYER_KEY = re.compile(r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$")


def _normalise_name(name: str) -> str:
    key = name.replace("_", " ").strip().lower()
    return _ALIASES.get(key, key)


def match_chexpert_classes(source_names: Sequence[str]) -> tuple[list[int], list[str], list[str]]:
    """Map a checkpoint's output names onto the CheXpert observations by name.

    Returns (source rows, their CheXpert names, CheXpert classes with no source), in
    CheXpert order. Empty source names (untrained slots) never match.
    """
    lookup = {_normalise_name(n): i for i, n in enumerate(source_names) if n}
    rows, names, missing = [], [], []
    for cls in CHEXPERT_CLASSES:
        row = lookup.get(_normalise_name(cls))
        if row is None:
            missing.append(cls)
        else:
            rows.append(row)
            names.append(cls)
    return rows, names, missing


def _read(path: Path, trust_pickle: bool) -> object:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such file")
    with open(path, "rb") as handle:
        magic = handle.read(4)
    if not (magic.startswith(b"PK\x03\x04") or magic.startswith(b"\x80")):  # zip, or legacy pickle
        raise CheckpointError(f"{path}: not a PyTorch checkpoint (neither a zip archive nor a pickle)")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        if not trust_pickle:
            raise CheckpointError(
                f"{path}: holds pickled Python objects, not only tensors; loading it runs code from the "
                "file. Pass --trust-pickle (trust_pickle=True) only if you trust its source"
            ) from error
    except Exception as error:  # corrupt zip, not a torch file, ...
        raise CheckpointError(f"{path}: not a PyTorch checkpoint ({type(error).__name__}: {error})") from error
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as error:
        raise CheckpointError(f"{path}: cannot unpickle ({type(error).__name__}: {error})") from error


def _state_dict_of(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """Find the state dict inside what a training script saved."""
    if isinstance(obj, torch.nn.Module):
        return obj.state_dict()
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model_state_dict", "model"):
            if key in obj:
                return _state_dict_of(obj[key], path)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
    raise CheckpointError(f"{path}: no state dict found (a mapping of parameter names to tensors)")


def canonical_keys(state: Mapping[str, torch.Tensor], densenet: bool = True) -> dict[str, torch.Tensor]:
    """Strip DataParallel/wrapper prefixes; for a DenseNet also rename pre-0.4 torchvision keys and
    Sequential(Linear, Sigmoid) heads."""
    out = {}
    for key, value in state.items():
        for prefix in ("module.", "densenet121.", "model."):
            if key.startswith(prefix):
                key = key[len(prefix):]
        if densenet:
            key = key.replace("classifier.0.", "classifier.")
            match = _OLD_DENSELAYER_KEY.match(key)
            if match:
                key = match.group(1) + match.group(2)
        out[key] = value
    return out


def _densenet_of(state: Mapping[str, torch.Tensor], path: Path) -> str:
    blocks = []
    for b in range(1, 5):
        layers = {k.split(".")[2] for k in state if k.startswith(f"features.denseblock{b}.")}
        blocks.append(len(layers))
    for name, config in DENSENET_CONFIGS.items():
        if tuple(blocks) == tuple(config["block_config"]):  # type: ignore[arg-type]
            return name
    raise CheckpointError(f"{path}: not a DenseNet121/169/201 state dict (dense layers per block: {blocks}); "
                          f"name its architecture (--arch, one of {', '.join(ARCHITECTURES)})")


def _architecture_of(state: Mapping[str, torch.Tensor], path: Path, arch: str | None) -> str:
    if arch is None:
        return _densenet_of(state, path)
    try:
        family = family_of(arch)
    except (ModelNotFoundError, MissingDependency) as error:
        raise CheckpointError(f"{path}: {error}") from None
    if family.name == "densenet" and _densenet_of(state, path) != arch:
        raise CheckpointError(f"{path}: a {_densenet_of(state, path)} state dict, not {arch}")
    return arch


def _detect_kind(raw: object, state: Mapping[str, torch.Tensor], arch: str | None, wrapped: bool) -> str:
    """``state`` with canonical keys; ``wrapped``: its keys had DataParallel / CheXNet prefixes."""
    if isinstance(raw, Mapping) and raw.get("format") == CHECKPOINT_FORMAT:
        return "chexplain"
    if wrapped:
        return "chexnet"
    first = state.get(f"{family_of(arch or 'densenet121').first_conv}.weight")
    head = state.get(head_parameters(arch or "densenet121")[0])
    if first is not None and first.shape[1] == 1 and head is not None and head.shape[0] == len(XRV_SLOTS):
        return "torchxrayvision"
    return "torchvision"


def _build(state: dict[str, torch.Tensor], path: Path, num_classes: int, architecture: str) -> torch.nn.Module:
    model = build(architecture, num_classes=num_classes, in_channels=in_channels_of(architecture, state))
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"{path}: parameters do not fit {architecture}: missing {result.missing_keys[:3]}, "
            f"unexpected {result.unexpected_keys[:3]}"
        )
    return model.eval()


def _select_head(state: dict[str, torch.Tensor], rows: list[int], architecture: str) -> dict[str, torch.Tensor]:
    state = dict(state)
    for key in head_parameters(architecture):
        state[key] = state[key][rows].clone()
    return state


def _xrv_weights(name: str, architecture: str) -> str:
    """The TorchXRayVision weights' short name: ``all`` means the architecture's ``all`` weights."""
    if family_of(architecture).name == "resnet":
        return XRV_RESNET_WEIGHTS if name in ("all", XRV_RESNET_WEIGHTS) else name
    return name.removeprefix("densenet121-res224-")


def load_checkpoint(
    path: str | Path,
    *,
    kind: str = "auto",
    arch: str | None = None,
    source_classes: Sequence[str] | None = None,
    xrv_weights: str = "all",
    trust_pickle: bool = False,
    name: str | None = None,
) -> tuple[torch.nn.Module, Manifest]:
    """Load a checkpoint and describe it with a manifest.

    ``arch`` names the architecture (``resnet50``, ``efficientnet_b0``, ...; DenseNets are
    recognised from their keys). ``source_classes`` names the checkpoint's output rows when
    they are not the 14 CheXpert observations in CheXpert order. ``xrv_weights`` names the
    TorchXRayVision weights (``all``, ``nih``, ``pc``, ``chex``, ``mimic_nb``, ``mimic_ch``,
    ``rsna`` for DenseNet121, with or without the ``densenet121-res224-`` prefix;
    ``resnet50-res512-all`` for ResNet50) so only its trained slots are used.
    """
    path = Path(path)
    if kind not in CHECKPOINT_KINDS:
        raise CheckpointError(f"unknown checkpoint kind {kind!r}; known: {', '.join(CHECKPOINT_KINDS)}")
    raw = _read(path, trust_pickle)
    state = _state_dict_of(raw, path)
    if isinstance(raw, Mapping) and raw.get("format") == CHECKPOINT_FORMAT:
        arch = raw["manifest"].get("architecture", arch)  # type: ignore[index]
    if arch is not None:
        try:
            family_of(arch)
        except (ModelNotFoundError, MissingDependency) as error:
            raise CheckpointError(f"{path}: {error}") from None
    wrapped = any(k.startswith(("module.", "densenet121.")) for k in state)
    state = canonical_keys(state, densenet=arch is None or family_of(arch).name == "densenet")
    kind = _detect_kind(raw, state, arch, wrapped) if kind == "auto" else kind
    state.pop("op_threshs", None)
    architecture = _architecture_of(state, path, arch)
    head_weight = head_parameters(architecture)[0]
    if head_weight not in state:
        raise CheckpointError(f"{path}: no {head_weight} in the state dict (is it a {architecture}?)")
    weights = Weights(source=kind, file=path.name, sha256=sha256_of(path), training_data="unknown")
    name = name or path.stem

    if kind == "chexplain":
        manifest = Manifest.from_dict(raw["manifest"])  # type: ignore[index]
        manifest.weights.sha256 = weights.sha256
        model = _build(state, path, len(manifest.classes), architecture)
        return model, manifest

    if kind == "torchxrayvision":
        short = _xrv_weights(xrv_weights, architecture)
        if short not in XRV_TRAINED_SLOTS:
            raise CheckpointError(f"unknown TorchXRayVision weights {xrv_weights!r}; known: {', '.join(XRV_TRAINED_SLOTS)}")
        trained = set(XRV_TRAINED_SLOTS[short])
        source_classes = [n if i in trained else "" for i, n in enumerate(XRV_SLOTS)]
        resnet = short == XRV_RESNET_WEIGHTS
        preprocessing = XRV_RESNET_PREPROCESSING if resnet else XRV_PREPROCESSING
        weights.training_data = f"TorchXRayVision {short if resnet else 'densenet121-res224-' + short}"
    else:
        preprocessing = Preprocessing()
        if kind == "chexnet":
            weights.training_data = "CheXNet-style checkpoint"

    outputs = int(state[head_weight].shape[0])
    if source_classes is None:
        if outputs == len(CHEXPERT_CLASSES):
            source_classes = CHEXPERT_CLASSES
        elif kind == "torchvision" and outputs == 1000:
            return _with_new_head(state, path, name, weights, architecture)
        else:
            raise CheckpointError(
                f"{path}: the classifier has {outputs} outputs; name them with source_classes "
                f"(--source-classes) so they can be matched to the CheXpert observations"
            )
    if len(source_classes) != outputs:
        raise CheckpointError(f"{path}: {len(source_classes)} class names given for {outputs} classifier outputs")
    rows, classes, missing = match_chexpert_classes(source_classes)
    if not rows:
        raise CheckpointError(f"{path}: none of the checkpoint's classes is a CheXpert observation")
    model = _build(_select_head(state, rows, architecture), path, len(rows), architecture)
    manifest = Manifest(
        name=name,
        architecture=architecture,
        classes=tuple(classes),
        missing_classes=tuple(missing),
        preprocessing=preprocessing,
        weights=weights,
    )
    return model, manifest


def _with_new_head(state: dict[str, torch.Tensor], path: Path, name: str, weights: Weights,
                   architecture: str) -> tuple[torch.nn.Module, Manifest]:
    """An ImageNet backbone with a fresh (seeded) head for the CheXpert classes."""
    head = head_parameters(architecture)
    backbone = {k: v for k, v in state.items() if k not in head}
    torch.manual_seed(0)
    model = build(architecture, num_classes=len(CHEXPERT_CLASSES), in_channels=in_channels_of(architecture, state))
    model.load_state_dict(backbone, strict=False)
    draw_zeroed_head(model, architecture)
    weights.training_data = "ImageNet backbone; CheXpert head untrained (seed 0)"
    return model.eval(), Manifest(name=name, architecture=architecture, weights=weights)


def save_checkpoint(model: torch.nn.Module, manifest: Manifest, path: str | Path, half: bool = False) -> Path:
    """Write a chexplain checkpoint: the state dict (optionally FP16) and the manifest."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {k: (v.half() if half and v.is_floating_point() else v) for k, v in model.state_dict().items()}
    torch.save({"format": CHECKPOINT_FORMAT, "manifest": manifest.to_dict(), "state_dict": state}, path)
    return path
