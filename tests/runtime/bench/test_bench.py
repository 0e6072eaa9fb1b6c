"""`chexplain bench`: the statistics, the fidelity computation, the JSON document, and a short
run end to end on real radiographs. No test asserts a time."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from chexplain.cli import main
from chexplain.grammar import DEFAULT_EXPLAIN, DEFAULT_LRP_COMPOSITE, parse_list
from chexplain.runtime.bench.cases import Case, interleaved
from chexplain.runtime.bench.timing import HIGH_VARIATION, median, percentile, summarize, time_calls
from chexplain.runtime.evaluation.fidelity import fidelity


def test_percentiles_are_nearest_rank_on_known_samples():
    samples = list(range(1, 101))  # 1..100 ms
    assert [percentile(samples, p) for p in (50, 90, 95, 99, 100)] == [50, 90, 95, 99, 100]
    assert percentile([3.0], 99) == 3.0
    assert percentile([5, 1, 4, 2, 3], 90) == 5 and percentile([5, 1, 4, 2, 3], 20) == 1
    assert median([4, 1, 3, 2]) == 2.5 and median([3, 1, 2]) == 2
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 0)


def test_summary_statistics_and_throughput():
    summary = summarize([10.0, 10.0, 20.0, 40.0], batch=4)
    assert (summary.min, summary.max, summary.mean, summary.median) == (10.0, 40.0, 20.0, 15.0)
    assert summary.p99 == 40.0 and summary.p90 == 40.0
    assert summary.std == pytest.approx(np.std([10, 10, 20, 40], ddof=1))
    assert summary.cv == pytest.approx(summary.std / 20.0) and summary.unstable
    assert summary.throughput == pytest.approx(4 * 4 / 0.080)  # 16 images in 80 ms
    steady = summarize([10.0, 10.1, 9.9])
    assert steady.cv < HIGH_VARIATION and not steady.unstable
    assert set(steady.to_dict()) >= {"min", "mean", "median", "p90", "p95", "p99", "max", "cv", "throughput"}


def test_time_calls_warms_up_then_counts_iterations():
    calls = []
    samples = time_calls(lambda: calls.append(1), warmup_s=0.0, iterations=7)
    assert len(samples) == 7 and len(calls) == 8  # one warm-up call at least
    assert all(s >= 0 for s in samples)
    with pytest.raises(ValueError):
        time_calls(lambda: None, warmup_s=0.0)


def test_interleaved_runs_every_block_each_round():
    order = []
    samples = interleaved({"a": lambda: order.append("a"), "b": lambda: order.append("b")},
                          rounds=2, per_block={"a": 2, "b": 1}, warmup=1)
    assert order == ["a", "b", "a", "a", "b", "a", "a", "b"]
    assert len(samples["a"]) == 4 and len(samples["b"]) == 2


def test_fidelity_per_map_where_classes_agree():
    rng = np.random.default_rng(0)
    reference = {"probabilities": np.array([[0.2, 0.8]]), "targets": np.array([[1, 0]]),
                 "lrp": rng.standard_normal((1, 2, 8, 8))}
    same = {"probabilities": np.array([[0.2, 0.81]]), "targets": np.array([[1, 0]]), "lrp": reference["lrp"] * 2}
    result = fidelity(same, reference, ["lrp"])
    assert result["probabilities_max_abs_diff"] == pytest.approx(0.01)
    assert result["targets_agreement"] == 1.0
    assert result["lrp"]["maps"] == 2 and result["lrp"]["min_pearson"] == pytest.approx(1.0)
    swapped = {**same, "targets": np.array([[1, 5]]), "lrp": -reference["lrp"]}
    result = fidelity(swapped, reference, ["lrp"])
    assert result["targets_agreement"] == 0.5 and result["lrp"]["maps"] == 1
    assert result["lrp"]["min_pearson"] == pytest.approx(-1.0)


def test_cases_and_lists():
    assert parse_list("1, 4,8", int) == [1, 4, 8]
    with pytest.raises(ValueError):
        parse_list(" , ")
    assert Case("onnxruntime", "fp32", "none", 0, 1).label == "onnxruntime fp32 | forward only | batch 1"
    assert "lrp:epsilon, 3 classes | batch 4" in Case("tensorrt", "mixed", "lrp:epsilon", 3, 4).label


def test_bench_end_to_end_with_references(default_onnx: Path, radiographs: list[Path], tmp_path: Path):
    """A few iterations on real radiographs: tables, JSON with the machine, Markdown, reference ratios."""
    images = tmp_path / "images"
    images.mkdir()
    (images / radiographs[0].name).write_bytes(radiographs[0].read_bytes())
    result = CliRunner().invoke(main, [
        "bench", "--onnx", str(default_onnx), "--iterations", "3", "--warmup-s", "0", "--threads", "2",
        "--batch", "1,2", "--images", str(images), "--json", str(tmp_path / "bench.json"),
        "--markdown", str(tmp_path / "bench.md"), "--compare-reference",
    ])
    assert result.exit_code == 0, result.output
    assert "latency of the inference call" in result.stdout and "chexplain faster" in result.stdout
    document = json.loads((tmp_path / "bench.json").read_text())
    assert document["schema"] == "chexplain.bench/1"
    assert {"cpu", "cpu_cores", "threads", "libraries", "measured_at"} <= set(document["machine"])
    assert document["machine"]["threads"] == 2 and "onnxruntime" in document["machine"]["libraries"]
    cases = document["cases"]
    assert [c["case"]["batch"] for c in cases] == [1, 2]
    for case in cases:
        assert case["case"]["method"] == DEFAULT_EXPLAIN and case["case"]["classes"] == 3
        latency = case["inference_ms"]
        assert latency["count"] == 3 and latency["min"] <= latency["median"] <= latency["p99"] <= latency["max"]
        assert set(case["stages_ms"]) == {"decode+preprocess", "inference", "postprocess", "end-to-end"}
        assert case["model_bytes"] == default_onnx.stat().st_size and case["peak_rss_mb"] > 0
        fidelity_of = case["fidelity"]
        assert fidelity_of["probabilities_max_abs_diff"] <= 1e-5 and fidelity_of["targets_agreement"] == 1.0
        assert fidelity_of["gradcam"]["min_pearson"] >= 0.9999 and fidelity_of["lrp"]["min_pearson"] >= 0.999
    # the graph's own memory, from a fresh process: what a deployment adds, growing with the batch
    assert all(20 < case["session_mb"] < case["peak_rss_mb"] for case in cases)
    assert cases[1]["session_mb"] > cases[0]["session_mb"] + 50
    references = {r["reference"]: r for r in document["references"]}
    assert set(references) == {"pytorch-grad-cam gradcam, 3 classes (batched)", f"Zennit {DEFAULT_LRP_COMPOSITE}, 3 classes",
                               "eager PyTorch forward"}
    for reference in references.values():
        assert reference["speedup"] == pytest.approx(reference["reference_median_ms"] / reference["chexplain_median_ms"])
        assert len(reference["reference_samples_ms"]) >= 3
    markdown = (tmp_path / "bench.md").read_text()
    assert "| backend | method | K | batch | median ms |" in markdown and "session MB" in markdown and f"Zennit {DEFAULT_LRP_COMPOSITE}, 3 classes" in markdown
    assert document["machine"]["cpu"] in markdown


def test_bench_usage_errors(default_onnx: Path):
    runner = CliRunner()
    result = runner.invoke(main, ["bench", "--onnx", str(default_onnx), "--iterations", "2", "--duration-s", "1"])
    assert result.exit_code == 2 and "not both" in result.stderr
    result = runner.invoke(main, ["bench", "--onnx", str(default_onnx), "--backend", "cuda"])
    assert result.exit_code == 2 and "cuda" in result.stderr


@pytest.mark.slow  # exports full-size bench graphs
def test_bench_model_exports_graphs_once_and_sweeps_classes(tmp_path: Path, radiographs: list[Path],
                                                            monkeypatch: pytest.MonkeyPatch):
    """--model: one graph per method with a targets input (forward only added), K swept, reused later."""
    monkeypatch.setenv("CHEXPLAIN_ARTIFACTS", str(tmp_path / "artifacts"))
    args = ["bench", "--method", "gradcam", "--classes", "1,2", "--iterations", "2", "--warmup-s", "0",
            "--threads", "2", "--images", str(radiographs[0]), "--json", str(tmp_path / "bench.json")]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    assert first.stderr.count("exporting the bench graph") == 2  # forward only, gradcam
    document = json.loads((tmp_path / "bench.json").read_text())
    cases = [(c["case"]["method"], c["case"]["classes"]) for c in document["cases"]]
    assert cases == [("none", 0), ("gradcam", 1), ("gradcam", 2)]
    assert all(c["fidelity"]["probabilities_max_abs_diff"] <= 1e-5 for c in document["cases"])
    assert document["cases"][2]["fidelity"]["gradcam"]["maps"] == 2
    assert "x" in first.stdout.split("vs forward")[1]  # a ratio to forward only
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 0 and "exporting the bench graph" not in again.stderr
