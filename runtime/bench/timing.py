"""Latency statistics in trtexec's conventions: warm-up, then per-iteration wall times
summarised as min, mean, median, p90, p95, p99, max, throughput and the coefficient of
variation. Percentiles are nearest-rank: the smallest sample that at least p% of the
samples do not exceed."""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

from ..percentiles import median, percentile

HIGH_VARIATION = 0.10  # a coefficient of variation above this makes the numbers suspect


@dataclass(frozen=True)
class Summary:
    """One timed quantity, in milliseconds, over ``count`` iterations of ``batch`` images."""

    count: int
    batch: int
    min: float
    mean: float
    median: float
    p90: float
    p95: float
    p99: float
    max: float
    std: float
    cv: float
    throughput: float  # images per second: batch x iterations / summed time

    @property
    def unstable(self) -> bool:
        return self.cv > HIGH_VARIATION

    def to_dict(self) -> dict[str, float]:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def summarize(samples_ms: Sequence[float], batch: int = 1) -> Summary:
    """Statistics of per-iteration times in ms."""
    if not samples_ms:
        raise ValueError("no samples")
    count = len(samples_ms)
    mean = sum(samples_ms) / count
    std = math.sqrt(sum((s - mean) ** 2 for s in samples_ms) / (count - 1)) if count > 1 else 0.0
    return Summary(
        count=count, batch=batch, min=min(samples_ms), mean=mean, median=median(samples_ms),
        p90=percentile(samples_ms, 90), p95=percentile(samples_ms, 95), p99=percentile(samples_ms, 99),
        max=max(samples_ms), std=std, cv=std / mean if mean > 0 else 0.0,
        throughput=1000.0 * batch * count / sum(samples_ms) if sum(samples_ms) > 0 else 0.0,
    )


def time_calls(function: Callable[[], object], *, warmup_s: float, iterations: int | None = None,
               duration_s: float | None = None) -> list[float]:
    """Call ``function`` for ``warmup_s`` seconds (at least once), then ``iterations`` times or
    for ``duration_s`` seconds; returns each timed call's wall time in ms."""
    if (iterations is None) == (duration_s is None):
        raise ValueError("give iterations or a duration")
    start = time.perf_counter()
    function()
    while time.perf_counter() - start < warmup_s:
        function()
    samples: list[float] = []
    began = time.perf_counter()
    while (len(samples) < iterations) if iterations is not None else (time.perf_counter() - began < duration_s or not samples):
        tick = time.perf_counter()
        function()
        samples.append((time.perf_counter() - tick) * 1e3)
    return samples
