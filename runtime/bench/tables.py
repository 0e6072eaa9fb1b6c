"""The benchmark's tables: latency, stages from file to overlay, references; as text and Markdown."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .cases import STAGE_ITERATIONS, STAGES, Case, CaseResult


def _ms(value: float) -> str:
    return f"{value:.1f}" if value >= 10 else f"{value:.2f}"


def forward_medians(results: Sequence[CaseResult]) -> dict[tuple[str, str, int], float]:
    """Forward-only median per (backend, precision, batch): the denominator of "vs forward"."""
    return {(r.case.backend, r.case.precision, r.case.batch): r.inference.median
            for r in results if r.case.method == "none"}


def _case_columns(c: Case) -> list[str]:
    return [f"{c.backend} {c.precision}", "forward only" if c.method == "none" else c.method,
            str(c.classes) if c.method != "none" else "-", str(c.batch)]


def latency_rows(results: Sequence[CaseResult]) -> list[list[str]]:
    """The inference call: latency statistics, throughput, variation, cost over forward only."""
    forward = forward_medians(results)
    rows = []
    for r in results:
        s = r.inference
        base = forward.get((r.case.backend, r.case.precision, r.case.batch))
        rows.append(_case_columns(r.case) + [
            _ms(s.median), _ms(s.mean), _ms(s.min), _ms(s.p90), _ms(s.p95), _ms(s.p99), _ms(s.max),
            f"{s.throughput:.1f}", f"{s.cv:.1%}", f"{s.median / base:.2f}x" if base else "n/a",
        ])
    return rows


def stage_rows(results: Sequence[CaseResult]) -> list[list[str]]:
    """File to overlay by stage (medians), GPU compute, memory, sizes and fidelity."""
    rows = []
    for r in results:
        fidelity = r.fidelity or {}
        maps = [v["min_pearson"] for v in fidelity.values() if isinstance(v, dict) and "min_pearson" in v]
        stages = [_ms(r.stages[name].median) for name in STAGES]
        rows.append(_case_columns(r.case) + stages + [
            _ms(r.gpu_compute.median) if r.gpu_compute else "-",
            f"{r.peak_rss_mb:.0f}", f"{r.session_mb:.0f}" if r.session_mb is not None else "-",
            f"{r.gpu_memory_mb:.0f}" if r.gpu_memory_mb is not None else "-",
            f"{r.model_bytes / 2**20:.1f}",
            f"{fidelity['probabilities_max_abs_diff']:.1e}" if "probabilities_max_abs_diff" in fidelity else "-",
            f"{min(maps):.4f}" if maps else "-",
        ])
    return rows


CASE_HEADER = ["backend", "method", "K", "batch"]
LATENCY_HEADER = CASE_HEADER + ["median ms", "mean", "min", "p90", "p95", "p99", "max", "img/s", "CV", "vs forward"]
STAGE_HEADER = CASE_HEADER + ["decode+prep ms", "inference ms", "post ms", "end-to-end ms", "GPU compute ms",
                              "peak RSS MB", "session MB", "GPU mem MB", "model MiB", "max abs dprob", "min map pearson"]
REFERENCE_HEADER = ["what", "reference", "reference median ms", "chexplain median ms", "chexplain faster"]


def text_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(str(row[i])) for row in [header, *rows]) for i in range(len(header))]
    line = "  ".join(h.rjust(w) if i >= 2 else h.ljust(w) for i, (h, w) in enumerate(zip(header, widths)))
    out = [line, "  ".join("-" * w for w in widths)]
    for row in rows:
        out.append("  ".join(str(c).rjust(w) if i >= 2 else str(c).ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    return out


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    out = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" if i < 2 else "---:" for i in range(len(header))) + " |"]
    out += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return out


def markdown_report(document: Mapping[str, Any], results: Sequence[CaseResult],
                    reference_rows: Sequence[Sequence[str]]) -> str:
    """The Markdown tables with where, when and how they were measured."""
    m, settings = document["machine"], document["settings"]
    lines = [
        f"Measured {m['measured_at']} on {m['cpu']} ({m['cpu_cores_usable']} usable cores"
        + (f"; GPU {m['gpu']}" if m.get("gpu") else "; no GPU") + f"), threads: {m['threads']}; "
        f"{', '.join(f'{k} {v}' for k, v in m['libraries'].items())}.",
        f"Warm-up {settings['warmup_s']} s, then {settings['timing']} per case on {len(settings['images'])} radiographs. "
        "Latency is the inference call (host-device transfers included on a GPU); times in ms.",
        "",
        *markdown_table(LATENCY_HEADER, latency_rows(results)),
        "",
        f"From file to overlay, medians over {STAGE_ITERATIONS} iterations (postprocess: every map onto the "
        "original grid and coloured, no file writing); fidelity against the FP32 PyTorch explainer:",
        "",
        *markdown_table(STAGE_HEADER, stage_rows(results)),
    ]
    if reference_rows:
        lines += ["", "Against the eager references, in the same process, interleaved block by block "
                  f"({document['references_settings']}):", "", *markdown_table(REFERENCE_HEADER, reference_rows)]
    if document.get("warnings"):
        lines += ["", *[f"- warning: {w}" for w in document["warnings"]]]
    return "\n".join(lines) + "\n"
