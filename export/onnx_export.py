"""PyTorch -> one self-contained ONNX file with the manifest in its metadata."""

from __future__ import annotations

import logging
import time
import warnings
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import onnx
import torch
from torch import nn

from ..grammar import DEFAULT_OPSET
from ..runtime.manifest import Manifest
from .metadata import write_manifest

# TensorRT 10.3 (JetPack 6) parses opsets 9 to 20.
MAX_BATCH = 256


class Classifier(nn.Module):
    """The exported classifier: image in, probabilities and logits out."""

    output_names = ("probabilities", "logits")

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.model(image)
        return torch.sigmoid(logits), logits


@dataclass
class ExportedGraph:
    path: Path
    seconds: float


def operator_counts(model: onnx.ModelProto) -> dict[str, int]:
    """How often each operator occurs, local functions included."""
    nodes = list(model.graph.node) + [n for f in model.functions for n in f.node]
    return dict(sorted(Counter(n.op_type if not n.domain else f"{n.domain}.{n.op_type}" for n in nodes).items()))


def export_onnx(
    module: nn.Module,
    manifest: Manifest,
    path: str | Path,
    *,
    opset: int = DEFAULT_OPSET,
    with_targets: bool = False,
) -> ExportedGraph:
    """Export ``module`` (``forward(image[, targets])``, ``output_names``) with a dynamic batch axis.

    With ``with_targets`` the graph takes ``targets`` int64 [batch, K] with K dynamic too.
    The graph is constant-folded by the exporter's optimiser, carries its weights inside
    the one file, and holds the manifest under ``metadata_props``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    module = module.eval()
    channels, (height, width) = manifest.preprocessing.channels, manifest.preprocessing.size
    batch = torch.export.Dim("batch", min=1, max=MAX_BATCH)
    args: tuple[torch.Tensor, ...] = (torch.zeros(2, channels, height, width),)
    dynamic_shapes: dict[str, dict[int, object]] = {"image": {0: batch}}
    if with_targets:
        num_classes = len(manifest.classes)
        args += (torch.arange(3).remainder(num_classes).expand(2, -1).contiguous(),)
        dynamic_shapes["targets"] = {0: batch, 1: torch.export.Dim("classes", min=1, max=num_classes)}
    start = time.perf_counter()
    with warnings.catch_warnings(), QuietExporter():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module,
            args,
            dynamo=True,
            verbose=False,
            opset_version=opset,
            input_names=list(dynamic_shapes),
            output_names=list(module.output_names),
            dynamic_shapes=dynamic_shapes,
            optimize=True,
            external_data=False,
        )
    proto = program.model_proto
    seconds = time.perf_counter() - start
    del proto.metadata_props[:]
    write_manifest(proto, manifest)
    proto.producer_name = "chexplain"
    onnx.checker.check_model(proto)
    onnx.save_model(proto, path)
    return ExportedGraph(path=path, seconds=seconds)


class QuietExporter:
    """Silence the exporter's progress chatter; chexplain reports what matters."""

    def __enter__(self) -> None:
        self._levels = {}
        for name in ("torch.onnx", "torch.export", "onnxscript"):
            logger = logging.getLogger(name)
            self._levels[name] = logger.level
            logger.setLevel(logging.ERROR)

    def __exit__(self, *exc: object) -> None:
        for name, level in self._levels.items():
            logging.getLogger(name).setLevel(level)
