"""TensorRT engine files and their JSON sidecars: names, compatibility, discovery.

An engine runs only on the GPU model and the TensorRT version it was built with, so every
engine is written next to its ONNX graph as ``model.<gpu>.trt<version>.<precision>.engine``
with ``<engine>.json`` beside it (schema ``chexplain.engine/1``: TensorRT, CUDA, GPU and
compute capability, precision, profiles, tensors, the ONNX graph's sha256, the manifest).
Nothing here imports TensorRT.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ...errors import EngineMismatchError
from ..manifest import slug

SIDECAR_SCHEMA = "chexplain.engine/1"
ENGINE_SUFFIX = ".engine"
# Which engine `--backend auto` takes when several fit: faithful heatmaps and FP16 speed first.
PRECISION_PREFERENCE = ("mixed", "fp32", "fp16")


def gpu_slug(gpu_name: str) -> str:
    """``NVIDIA H100 80GB HBM3`` -> ``nvidia-h100-80gb-hbm3`` (safe in a file name)."""
    return slug(gpu_name) or "gpu"


def engine_filename(stem: str, gpu_name: str, tensorrt_version: str, precision: str,
                    dla_core: int | None = None) -> str:
    """``model.<gpu>.trt<version>.<precision>[.dla<N>].engine``: a DLA engine never replaces the GPU's."""
    dla = f".dla{dla_core}" if dla_core is not None else ""
    return f"{stem}.{gpu_slug(gpu_name)}.trt{tensorrt_version}.{precision}{dla}{ENGINE_SUFFIX}"


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


@dataclass(frozen=True)
class EngineInfo:
    """What the sidecar says about one engine."""

    path: Path
    data: dict[str, Any]

    @classmethod
    def read(cls, engine: str | Path) -> EngineInfo:
        engine = Path(engine)
        sidecar = sidecar_path(engine)
        if not sidecar.is_file():
            raise EngineMismatchError(f"{engine}: no sidecar {sidecar.name}; rebuild the engine with `chexplain build-engine`")
        try:
            data = json.loads(sidecar.read_text())
        except (OSError, json.JSONDecodeError) as error:
            raise EngineMismatchError(f"{sidecar}: unreadable sidecar ({error})") from None
        if data.get("schema") != SIDECAR_SCHEMA:
            raise EngineMismatchError(f"{sidecar}: not a chexplain engine sidecar (schema {data.get('schema')!r})")
        return cls(engine, data)

    @property
    def precision(self) -> str:
        return self.data["precision"]

    @property
    def tensorrt(self) -> str:
        return self.data["tensorrt"]["version"]

    @property
    def gpu(self) -> dict[str, str]:
        return self.data["gpu"]

    @property
    def dla_core(self) -> int | None:
        """The DLA core the engine was built for (the runtime must select it before deserialising)."""
        return self.data.get("dla_core")

    def rebuild_command(self) -> str:
        source = self.data["onnx"]["source"]
        dla = f" --dla {self.dla_core}" if self.dla_core is not None else ""
        return f"chexplain build-engine {source} --precision {self.precision}{dla}"

    def mismatch(self, tensorrt_version: str, gpu_name: str, compute_capability: str) -> str | None:
        """Why this engine cannot run here, or None when it can."""
        built = f"{self.gpu['name']} (compute {self.gpu['compute_capability']}) with TensorRT {self.tensorrt}"
        here = f"{gpu_name} (compute {compute_capability}) with TensorRT {tensorrt_version}"
        if (self.tensorrt != tensorrt_version or self.gpu["compute_capability"] != compute_capability
                or self.gpu["name"] != gpu_name):
            return f"{self.path.name} was built for {built}; this machine has {here}"
        return None

    def check(self, tensorrt_version: str, gpu_name: str, compute_capability: str) -> None:
        """Raise, naming the fix, when the engine was built for another GPU or TensorRT."""
        reason = self.mismatch(tensorrt_version, gpu_name, compute_capability)
        if reason:
            raise EngineMismatchError(f"{reason}: rebuild it here with `{self.rebuild_command()}`")


def write_sidecar(engine: Path, data: dict[str, Any]) -> Path:
    path = sidecar_path(engine)
    path.write_text(json.dumps({"schema": SIDECAR_SCHEMA, **data}, indent=2) + "\n")
    return path


def engines_beside(model_dir: Path) -> list[EngineInfo]:
    """The engines (with sidecars) in a model folder: GPU engines before DLA ones (the DLA is an
    offload chosen by passing its engine), then by preferred precision."""
    found = []
    for engine in sorted(model_dir.glob(f"*{ENGINE_SUFFIX}")):
        try:
            found.append(EngineInfo.read(engine))
        except EngineMismatchError:
            continue
    rank = {p: i for i, p in enumerate(PRECISION_PREFERENCE)}
    return sorted(found, key=lambda info: (info.dla_core is not None, rank.get(info.precision, len(rank))))


def pick_engine(candidates: list[EngineInfo], tensorrt_version: str, gpu_name: str,
                compute_capability: str) -> tuple[EngineInfo | None, list[str]]:
    """The first engine that fits this machine, and why each one before it did not."""
    reasons = []
    for info in candidates:
        reason = info.mismatch(tensorrt_version, gpu_name, compute_capability)
        if reason is None:
            return info, reasons
        reasons.append(reason)
    return None, reasons
