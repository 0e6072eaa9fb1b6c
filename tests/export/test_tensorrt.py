"""TensorRT logic that needs no GPU: build paths per version, profiles, engine sidecars,
backend choice and fallback, Triton configs. (tests/gpu/check.sh builds and runs real engines.)"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import onnx
import pytest
from click.testing import CliRunner
from google.protobuf import text_format

from chexplain.cli import main
from chexplain.export.tensorrt_build import BatchRange, EngineBuildError, plan_build, profile_shapes
from chexplain.export.triton import add_engine_model, add_onnx_model
from chexplain.models.manifest import Manifest
from chexplain.runtime.backends import open_backend
from chexplain.runtime.backends.sidecars import (
    EngineInfo,
    EngineMismatchError,
    engine_filename,
    engines_beside,
    pick_engine,
    sidecar_path,
    write_sidecar,
)

from helpers import IMAGES

H100 = ("NVIDIA H100 80GB HBM3", "9.0")
# Why an engine is passed over on this machine (on a GPU machine with TensorRT: another reason).
NO_TENSORRT = "TensorRT is not installed" if importlib.util.find_spec("tensorrt") is None else ""
ORIN = ("Orin", "8.7")


@pytest.mark.parametrize("version, precision, graph, fp16, pinned", [
    ("10.3.0", "fp32", "fp32", False, False),
    ("10.3.0", "fp16", "fp32", True, False),
    ("10.3.0", "mixed", "mixed", True, True),
    ("11.0.0", "fp32", "fp32", False, False),
    ("11.0.0", "fp16", "fp16", False, False),
    ("11.4.1", "mixed", "mixed", False, False),
])
def test_build_path_follows_the_tensorrt_major_version(version, precision, graph, fp16, pinned):
    plan = plan_build(version, precision)
    assert (plan.graph_precision, plan.fp16_flag, plan.pin_fp32_layers) == (graph, fp16, pinned)
    assert ("strongly typed" in plan.describe()) == version.startswith("11")


@pytest.mark.parametrize("version, precision, dla, message", [
    ("8.6.1", "mixed", False, "too old"),
    ("10.3.0", "fp32", True, "DLA runs FP16"),
    ("11.0.0", "mixed", True, "TensorRT 10"),
    ("10.3.0", "int8", False, "unknown precision"),
    ("ten", "mixed", False, "cannot read"),
])
def test_build_plans_that_cannot_work_are_refused(version, precision, dla, message):
    with pytest.raises(EngineBuildError, match=message):
        plan_build(version, precision, dla=dla)


def test_batch_ranges_and_profiles():
    assert BatchRange.parse("1:4:8") == BatchRange(1, 4, 8) and str(BatchRange.parse("4")) == "4:4:4"
    for bad in ("0:1:8", "8:4:1", "1:2", "a:b:c"):
        with pytest.raises(ValueError, match="MIN"):
            BatchRange.parse(bad)
    batch = BatchRange(1, 2, 8)
    assert profile_shapes((-1, 3, 224, 224), batch, 14) == ((1, 3, 224, 224), (2, 3, 224, 224), (8, 3, 224, 224))
    assert profile_shapes((-1, -1), batch, 14) == ((1, 1), (2, 3), (8, 14))


def _fake_engine(folder: Path, gpu: tuple[str, str], tensorrt: str, precision: str, manifest: Manifest) -> Path:
    """An engine file with a sidecar, as build-engine writes them (the bytes are not an engine)."""
    path = folder / engine_filename("model", gpu[0], tensorrt, precision)
    path.write_bytes(b"not an engine")
    write_sidecar(path, {
        "precision": precision,
        "tensorrt": {"version": tensorrt, "major": int(tensorrt.split(".")[0])},
        "gpu": {"name": gpu[0], "compute_capability": gpu[1]},
        "onnx": {"source": str(folder / "model.onnx")},
        "profiles": {"image": [[1, 3, 224, 224], [1, 3, 224, 224], [8, 3, 224, 224]]},
        "inputs": [{"name": "image", "dtype": "FLOAT", "shape": [-1, 3, 224, 224]}],
        "outputs": [{"name": "probabilities", "dtype": "FLOAT", "shape": [-1, 14]},
                    {"name": "targets", "dtype": "INT64", "shape": [-1, 3]},
                    {"name": "lrp", "dtype": "FLOAT", "shape": [-1, 3, 224, 224]}],
        "manifest": manifest.to_dict(),
    })
    return path


def test_engine_names_sidecars_and_compatibility(tmp_path: Path):
    manifest = Manifest(name="m")
    name = engine_filename("model", H100[0], "10.3.0", "mixed")
    assert name == "model.nvidia-h100-80gb-hbm3.trt10.3.0.mixed.engine"
    mixed = _fake_engine(tmp_path, H100, "10.3.0", "mixed", manifest)
    fp16 = _fake_engine(tmp_path, H100, "10.3.0", "fp16", manifest)
    orin = _fake_engine(tmp_path, ORIN, "10.3.0", "fp32", manifest)
    (tmp_path / "stray.engine").write_bytes(b"no sidecar")
    found = engines_beside(tmp_path)
    assert [info.path for info in found] == [mixed, orin, fp16]  # mixed, then fp32, then fp16
    chosen, reasons = pick_engine(found, "10.3.0", *H100)
    assert chosen.path == mixed and reasons == []
    chosen, reasons = pick_engine(found, "10.3.0", *ORIN)
    assert chosen.path == orin and "built for NVIDIA H100" in reasons[0]
    with pytest.raises(EngineMismatchError) as caught:
        EngineInfo.read(mixed).check("10.8.0", *H100)
    message = str(caught.value)
    assert "TensorRT 10.3.0" in message and "TensorRT 10.8.0" in message
    assert f"chexplain build-engine {tmp_path / 'model.onnx'} --precision mixed" in message
    with pytest.raises(EngineMismatchError, match="no sidecar"):
        EngineInfo.read(tmp_path / "stray.engine")
    sidecar_path(fp16).write_text(json.dumps({"schema": "other"}))
    with pytest.raises(EngineMismatchError, match="not a chexplain engine sidecar"):
        EngineInfo.read(fp16)


@pytest.fixture()
def model_with_engine(classifier_onnx: Path, tmp_path: Path) -> Path:
    """A model folder holding the exported graph and an engine built elsewhere."""
    folder = tmp_path / "densenet121-chexpert"
    folder.mkdir()
    shutil.copyfile(classifier_onnx, folder / "model.onnx")
    _fake_engine(folder, H100, "10.3.0", "mixed", Manifest(name="densenet121-chexpert"))
    return folder


def test_auto_falls_back_to_onnxruntime_and_says_why(model_with_engine: Path):
    notes: list[str] = []
    backend = open_backend(str(model_with_engine), "auto", notify=notes.append)
    assert backend.name == "onnxruntime"
    assert len(notes) == 1 and "TensorRT engine not used" in notes[0] and NO_TENSORRT in notes[0]
    with pytest.raises(ValueError, match=NO_TENSORRT):
        open_backend(str(model_with_engine), "tensorrt")
    assert open_backend(str(model_with_engine), "onnxruntime", notify=notes.append).name == "onnxruntime"
    assert len(notes) == 1


def test_cli_backend_choice_is_printed(model_with_engine: Path, classifier_onnx: Path):
    runner = CliRunner()
    image = str(IMAGES / "00013125_000.png")
    result = runner.invoke(main, ["predict", "--model", str(model_with_engine), image])
    assert result.exit_code == 0, result.output
    assert "note: TensorRT engine not used" in result.stderr and "backend: onnxruntime" in result.stdout
    result = runner.invoke(main, ["predict", "--model", str(model_with_engine), "--backend", "tensorrt", image])
    assert result.exit_code == 2 and NO_TENSORRT in result.stderr
    result = runner.invoke(main, ["predict", "--model", str(classifier_onnx), "--backend", "tensorrt", image])
    assert result.exit_code == 2 and "no TensorRT engine beside" in result.stderr


def test_build_engine_without_tensorrt(classifier_onnx: Path):
    runner = CliRunner()
    result = runner.invoke(main, ["build-engine", str(classifier_onnx), "--precision", "mixed"])
    assert result.exit_code == 1 and "TensorRT is not installed" in result.stderr
    result = runner.invoke(main, ["build-engine", str(classifier_onnx), "--if-available"])
    assert result.exit_code == 0 and "no TensorRT engine built" in result.stderr and "ONNX Runtime runs it" in result.stderr
    result = runner.invoke(main, ["build-engine", str(classifier_onnx), "--batch", "8:1:1"])
    assert result.exit_code == 2 and "MIN <= OPT <= MAX" in result.stderr


def _model_config(path: Path):
    from tritonclient.grpc import model_config_pb2

    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_triton_repository_configs_parse_as_triton_model_configs(default_onnx: Path, tmp_path: Path):
    folder = add_onnx_model(tmp_path, default_onnx, "densenet121-chexpert")
    config = _model_config(folder / "config.pbtxt")
    assert config.platform == "onnxruntime_onnx" and config.max_batch_size == 8
    assert config.dynamic_batching.max_queue_delay_microseconds > 0
    assert (folder / "1" / "model.onnx").read_bytes() == default_onnx.read_bytes()
    graph = onnx.load(str(default_onnx), load_external_data=False)
    assert [i.name for i in config.input] == [i.name for i in graph.graph.input]
    assert [o.name for o in config.output] == [o.name for o in graph.graph.output]
    dims = {o.name: list(o.dims) for o in config.output}
    assert dims["probabilities"] == [14] and dims["lrp"] == [3, 224, 224] and dims["gradcam"] == [3, 7, 7]
    assert list(config.input[0].dims) == [3, 224, 224]
    manifest = Manifest.from_json(config.parameters["chexplain.manifest"].string_value)
    assert manifest.name == "densenet121-chexpert"

    engine = _fake_engine(tmp_path, H100, "10.3.0", "mixed", manifest)
    folder = add_engine_model(tmp_path / "repo", engine, manifest.name)
    config = _model_config(folder / "config.pbtxt")
    assert config.platform == "tensorrt_plan" and config.max_batch_size == 8
    assert {o.name: list(o.dims) for o in config.output}["lrp"] == [3, 224, 224]
    assert (folder / "1" / "model.plan").read_bytes() == engine.read_bytes()
