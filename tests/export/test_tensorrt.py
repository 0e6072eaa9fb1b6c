"""TensorRT logic that needs no GPU: build paths per version, profiles, engine sidecars,
backend choice and fallback, Triton configs. (tests/gpu/check.sh builds and runs real engines.)"""

from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import onnx
import pytest
from click.testing import CliRunner
from google.protobuf import text_format

from chexplain.cli import main
from chexplain.errors import ConfigError, EngineError
from chexplain.export.tensorrt_build import (
    BatchRange,
    EngineBuildError,
    check_dla_core,
    network_flags,
    plan_build,
    precision_caveat,
    profile_shapes,
)
from chexplain.export.triton import add_engine_model, add_onnx_model
from chexplain.grammar import DEFAULT_LRP_COMPOSITE, ClassSelection
from chexplain.runtime.backends import open_backend
from chexplain.runtime.backends.compatibility import jetpack_of, l4t_release, stack_problems
from chexplain.runtime.backends.cuda import CapturedGraphs
from chexplain.runtime.backends.onnxruntime_runner import preferred_providers
from chexplain.runtime.backends.sidecars import (
    EngineInfo,
    EngineMismatchError,
    engine_filename,
    engines_beside,
    pick_engine,
    sidecar_path,
    write_sidecar,
)
from chexplain.runtime.manifest import ExplanationSettings, Manifest, MethodEntry

from helpers import IMAGES, ROOT

H100 = ("NVIDIA H100 80GB HBM3", "9.0")
# Why an engine is passed over on this machine (on a GPU machine with TensorRT: another reason).
NO_TENSORRT = "TensorRT is not installed" if importlib.util.find_spec("tensorrt") is None else ""
ORIN = ("Orin", "8.7")


@pytest.mark.parametrize("version, precision, tf32", [
    ("10.3.0", "fp32", False), ("10.3.0", "fp16", True), ("10.3.0", "mixed", False),
    ("10.13.0", "mixed", False), ("11.0.0", "fp32", False), ("11.4.1", "mixed", False),
])
def test_gpu_builds_are_strongly_typed_from_the_graph_of_their_precision(version, precision, tf32):
    """TensorRT 10 and 11 build the same engine: the precision is in the graph (no FP16 flag, no
    per-layer constraints, deprecated since 10.12), TF32 off wherever FP32 is promised."""
    plan = plan_build(version, precision)
    assert plan.strongly_typed and plan.graph_precision == precision
    assert not plan.fp16_flag and not plan.pin_fp32_layers and plan.tf32 == tf32 and plan.dla_core is None
    assert "strongly typed" in plan.describe() and ("TF32 off" in plan.describe()) == (not tf32)


@pytest.mark.parametrize("precision, graph, pinned", [("mixed", "mixed", True), ("fp16", "fp32", False)])
def test_dla_builds_are_weakly_typed_with_fixed_shapes(precision, graph, pinned):
    plan = plan_build("10.3.0", precision, dla_core=1)
    assert (plan.graph_precision, plan.strongly_typed, plan.fp16_flag, plan.pin_fp32_layers) == (graph, False, True, pinned)
    assert plan.dla_core == 1 and not plan.tf32 and "DLA core 1" in plan.describe() and "fixed shapes" in plan.describe()


@pytest.mark.parametrize("version, precision, dla_core, message", [
    ("8.6.1", "mixed", None, "too old"),
    ("10.3.0", "fp32", 0, "DLA runs FP16"),
    ("11.0.0", "mixed", 0, "TensorRT 10"),
    ("10.3.0", "int8", None, "unknown precision"),
    ("ten", "mixed", None, "cannot read"),
])
def test_build_plans_that_cannot_work_are_refused(version, precision, dla_core, message):
    with pytest.raises(EngineBuildError, match=message):
        plan_build(version, precision, dla_core)


def test_network_flags_follow_the_plan_and_the_installed_enum():
    """TensorRT 10 and 11.x name STRONGLY_TYPED (bit 1 in 10.x); a release without it gets no flag."""
    with_flag = SimpleNamespace(NetworkDefinitionCreationFlag=SimpleNamespace(STRONGLY_TYPED=1))
    without = SimpleNamespace(NetworkDefinitionCreationFlag=SimpleNamespace())
    assert network_flags(with_flag, plan_build("10.3.0", "mixed")) == 2
    assert network_flags(with_flag, plan_build("10.3.0", "mixed", dla_core=0)) == 0
    assert network_flags(without, plan_build("11.4.1", "mixed")) == 0


def test_dla_cores_are_checked():
    check_dla_core(1, 2)
    with pytest.raises(EngineBuildError, match="has 2 DLA cores"):
        check_dla_core(2, 2)
    with pytest.raises(EngineBuildError, match="no DLA"):
        check_dla_core(0, 0)


def test_reduced_precision_warns_for_composites_that_do_not_keep():
    def manifest(*composites: str, cam: str = "gradcam") -> Manifest:
        methods = [MethodEntry(cam, "gradcam", variant=cam, layer="features.norm5")]
        methods += [MethodEntry(f"lrp_{c}", "lrp", composite=c) for c in composites]
        return Manifest(name="m", explanations=ExplanationSettings(tuple(methods), ClassSelection("topk", 3)))

    assert precision_caveat(manifest(DEFAULT_LRP_COMPOSITE), "mixed") is None
    assert precision_caveat(manifest("epsilon"), "fp32") is None
    assert "lrp:epsilon does not keep its maps under mixed" in precision_caveat(manifest("epsilon"), "mixed")
    assert precision_caveat(manifest(DEFAULT_LRP_COMPOSITE), "fp16") is None
    assert "lrp:epsilon does not keep its maps under fp16" in precision_caveat(manifest("epsilon"), "fp16")
    assert precision_caveat(manifest(DEFAULT_LRP_COMPOSITE, cam="gradcam++"), "fp16") is None  # every CAM keeps
    assert precision_caveat(Manifest(name="m"), "fp16") is None  # nothing to lose


def test_batch_ranges_and_profiles():
    assert BatchRange.parse("1:4:8") == BatchRange(1, 4, 8) and str(BatchRange.parse("4")) == "4:4:4"
    for bad in ("0:1:8", "8:4:1", "1:2", "a:b:c"):
        with pytest.raises(ConfigError, match="MIN"):
            BatchRange.parse(bad)
    batch = BatchRange(1, 2, 8)
    assert profile_shapes((-1, 3, 224, 224), batch, 14) == ((1, 3, 224, 224), (2, 3, 224, 224), (8, 3, 224, 224))
    assert profile_shapes((-1, -1), batch, 14) == ((1, 1), (2, 3), (8, 14))
    assert profile_shapes((-1, 3, 224, 224), batch, 14, fixed=True) == ((2, 3, 224, 224),) * 3  # the DLA
    assert profile_shapes((-1, -1), batch, 14, fixed=True) == ((2, 3),) * 3


def _fake_engine(folder: Path, gpu: tuple[str, str], tensorrt: str, precision: str, manifest: Manifest,
                 dla_core: int | None = None) -> Path:
    """An engine file with a sidecar, as build-engine writes them (the bytes are not an engine)."""
    path = folder / engine_filename("model", gpu[0], tensorrt, precision, dla_core)
    path.write_bytes(b"not an engine")
    write_sidecar(path, {
        "precision": precision,
        "dla_core": dla_core,
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
    dla = _fake_engine(tmp_path, ORIN, "10.3.0", "mixed", manifest, dla_core=0)
    assert dla.name == "model.orin.trt10.3.0.mixed.dla0.engine"  # beside the GPU's mixed engine, not over it
    assert EngineInfo.read(dla).rebuild_command().endswith("--precision mixed --dla 0")
    (tmp_path / "stray.engine").write_bytes(b"no sidecar")
    found = engines_beside(tmp_path)
    assert [info.path for info in found] == [mixed, orin, fp16, dla]  # GPU: mixed, fp32, fp16; then the DLA
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
    with pytest.raises(EngineError, match=NO_TENSORRT):
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


def test_captured_cuda_graphs_are_bounded_and_destroyed():
    destroyed: list[str] = []
    graphs = CapturedGraphs(2, destroyed.append)
    graphs.put((1,), "batch 1")
    graphs.put((2,), "batch 2")
    assert graphs.get((1,)) == "batch 1"  # now the most recently used
    graphs.put((4,), "batch 4")
    assert destroyed == ["batch 2"] and len(graphs) == 2 and graphs.get((2,)) is None
    graphs.clear()
    assert sorted(destroyed) == ["batch 1", "batch 2", "batch 4"] and len(graphs) == 0
    with pytest.raises(ValueError):
        CapturedGraphs(0, destroyed.append)


def test_onnxruntime_never_picks_its_unconfigured_tensorrt_provider():
    available = ["TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider"]
    assert preferred_providers(available) == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert preferred_providers(["AzureExecutionProvider", "CPUExecutionProvider"]) == ["CPUExecutionProvider"]


def test_tensorrt_extras_keep_cuda_python_below_13():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    for extra in ("tensorrt", "jetson"):
        (cuda_python,) = [r for r in extras[extra] if r.startswith("cuda-python")]
        assert "<13" in cuda_python, extra
    assert not any(r.startswith("tensorrt") for r in extras["jetson"])  # JetPack's own, never PyPI's


JETSON_ORIN = {"l4t": "36.4.3", "jetpack": "6.2", "python": "3.10", "driver_cuda": "12.6", "tensorrt": "10.3.0",
               "tensorrt_location": "/usr/lib/python3/dist-packages/tensorrt", "cuda_python": "12.6.2"}


@pytest.mark.parametrize("change, problem", [
    ({}, None),
    ({"cuda_python": "13.0.1"}, "cuda-python 13.0.1 is built for CUDA 13, but this driver runs CUDA 12.6"),
    ({"tensorrt_location": "/home/me/.venv/lib/python3.10/site-packages/tensorrt"}, "--system-site-packages"),
    ({"tensorrt": None, "tensorrt_location": None}, "TensorRT is not visible"),
    ({"python": "3.12"}, "bindings are for Python 3.10"),
    ({"l4t": None, "jetpack": None, "python": "3.12", "tensorrt_location": "/venv/tensorrt", "driver_cuda": "13.0",
      "cuda_python": "13.0.1"}, None),  # a workstation on CUDA 13
    ({"l4t": None, "jetpack": None, "tensorrt": "8.6.1"}, "too old"),
])
def test_doctor_judges_recorded_gpu_stacks(change, problem):
    problems = stack_problems({**JETSON_ORIN, **change})
    assert (problems == []) if problem is None else (len(problems) == 1 and problem in problems[0]), problems


def test_jetpack_is_read_from_the_l4t_release():
    assert l4t_release("# R36 (release), REVISION: 4.3, GCID: 38968081, BOARD: generic, EABI: aarch64") == "36.4.3"
    assert l4t_release("# R36 (release), REVISION: 3.0, GCID: 36191598") == "36.3"
    assert l4t_release("not a release file") is None
    assert (jetpack_of("36.4.3"), jetpack_of("36.4"), jetpack_of("36.3"), jetpack_of("35.5")) == ("6.2", "6.1", "6.0", None)
