"""NVIDIA Triton model repository: the ONNX graph (``onnxruntime_onnx``) and, where one
was built, the TensorRT engine (``tensorrt_plan``), both with dynamic batching, so many
X-ray rooms can be served from one GPU server. Needs onnx only."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import onnx

from ..runtime.backends.sidecars import EngineInfo
from ..runtime.manifest import MANIFEST_KEY
from .metadata import manifest_of

DEFAULT_MAX_BATCH = 8
QUEUE_DELAY_US = 2000
ONNX_TYPES = {onnx.TensorProto.FLOAT: "TYPE_FP32", onnx.TensorProto.FLOAT16: "TYPE_FP16",
              onnx.TensorProto.INT64: "TYPE_INT64", onnx.TensorProto.INT32: "TYPE_INT32"}
TENSORRT_TYPES = {"FLOAT": "TYPE_FP32", "HALF": "TYPE_FP16", "INT64": "TYPE_INT64", "INT32": "TYPE_INT32"}


def _onnx_tensors(values: Any) -> list[dict[str, Any]]:
    """Name, Triton type and the dims after the batch axis (-1 where dynamic)."""
    tensors = []
    for value in values:
        kind = value.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else -1 for d in kind.shape.dim][1:]
        tensors.append({"name": value.name, "data_type": ONNX_TYPES[kind.elem_type], "dims": dims})
    return tensors


def _engine_tensors(entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"name": e["name"], "data_type": TENSORRT_TYPES[e["dtype"].upper()], "dims": list(e["shape"][1:])}
            for e in entries]


def _tensor_block(key: str, tensors: list[dict[str, Any]]) -> str:
    entries = ",\n".join(
        f'  {{\n    name: {json.dumps(t["name"])}\n    data_type: {t["data_type"]}\n    dims: [ {", ".join(map(str, t["dims"]))} ]\n  }}'
        for t in tensors
    )
    return f"{key} [\n{entries}\n]"


def config_text(name: str, platform: str, inputs: list[dict[str, Any]], outputs: list[dict[str, Any]],
                max_batch: int, manifest_json: str | None = None) -> str:
    """A ``config.pbtxt`` (Triton's ModelConfig in protobuf text format)."""
    preferred = sorted({b for b in (max(1, max_batch // 2), max_batch)})
    lines = [
        f"name: {json.dumps(name)}",
        f"platform: {json.dumps(platform)}",
        f"max_batch_size: {max_batch}",
        _tensor_block("input", inputs),
        _tensor_block("output", outputs),
        "dynamic_batching {",
        f"  preferred_batch_size: [ {', '.join(map(str, preferred))} ]",
        f"  max_queue_delay_microseconds: {QUEUE_DELAY_US}",
        "}",
        "instance_group [\n  {\n    count: 1\n    kind: KIND_GPU\n  }\n]",
    ]
    if manifest_json is not None:
        lines.append(f'parameters {{\n  key: "{MANIFEST_KEY}"\n  value: {{ string_value: {json.dumps(manifest_json)} }}\n}}')
    return "\n".join(lines) + "\n"


def add_onnx_model(repository: Path, onnx_path: Path, model_name: str, max_batch: int = DEFAULT_MAX_BATCH) -> Path:
    """``<repository>/<model>-onnx/{config.pbtxt,1/model.onnx}``; returns the model folder."""
    graph = onnx.load(str(onnx_path), load_external_data=False)
    manifest = manifest_of(graph)
    folder = repository / f"{model_name}-onnx"
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(onnx_path, folder / "1" / "model.onnx")
    text = config_text(folder.name, "onnxruntime_onnx", _onnx_tensors(graph.graph.input),
                       _onnx_tensors(graph.graph.output), max_batch, manifest.to_json() if manifest else None)
    (folder / "config.pbtxt").write_text(text)
    return folder


def add_engine_model(repository: Path, engine_path: Path, model_name: str) -> Path:
    """``<repository>/<model>-tensorrt/{config.pbtxt,1/model.plan}`` from an engine and its sidecar."""
    info = EngineInfo.read(engine_path)
    max_batch = max(shape[-1][0] for shape in info.data["profiles"].values())
    folder = repository / f"{model_name}-tensorrt"
    (folder / "1").mkdir(parents=True, exist_ok=True)
    shutil.copyfile(engine_path, folder / "1" / "model.plan")
    text = config_text(folder.name, "tensorrt_plan", _engine_tensors(info.data["inputs"]),
                       _engine_tensors(info.data["outputs"]), max_batch, json.dumps(info.data["manifest"], sort_keys=True))
    (folder / "config.pbtxt").write_text(text)
    return folder
