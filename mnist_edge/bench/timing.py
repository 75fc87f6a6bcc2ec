"""The timing loop and its statistics: warm-up, then timed calls with ``time.perf_counter_ns``.

A benchmark case times one callable: ``warmup`` untimed calls, then either a fixed count of timed calls
(``runs``) or as many as fit in a time budget (``seconds``, with at least ``MIN_RUNS``). Garbage
collection is switched off while the clock runs (as ``timeit`` does) so a collection triggered by some
earlier allocation does not land in one sample. Each sample is one call, in nanoseconds; the statistics
are reported in milliseconds. numpy and the standard library only.
"""

from __future__ import annotations

import gc
import math
import time
from typing import Callable

import numpy as np

from mnist_edge.errors import UsageError

MIN_RUNS = 5  # a time budget still gives at least this many samples
PERCENTILES = (50, 90, 99)


def check_budget(runs: int | None, seconds: float | None, warmup: int) -> None:
    """UsageError unless exactly one of ``runs`` / ``seconds`` is given and all are in range."""
    if (runs is None) == (seconds is None):
        raise UsageError(f"give exactly one of runs or seconds (got runs={runs!r}, seconds={seconds!r})")
    if runs is not None and (isinstance(runs, bool) or not isinstance(runs, int) or runs < 1):
        raise UsageError(f"runs must be a positive integer, got {runs!r}")
    if seconds is not None and (not isinstance(seconds, (int, float)) or not math.isfinite(seconds)
                                or seconds <= 0):
        raise UsageError(f"seconds must be a positive number, got {seconds!r}")
    if isinstance(warmup, bool) or not isinstance(warmup, int) or warmup < 0:
        raise UsageError(f"warmup must be an integer >= 0, got {warmup!r}")


def measure(fn: Callable[[], object], *, warmup: int, runs: int | None = None,
            seconds: float | None = None) -> list[int]:
    """Call ``fn`` ``warmup`` times untimed, then time each call; returns the samples in nanoseconds."""
    check_budget(runs, seconds, warmup)
    for _ in range(warmup):
        fn()
    clock = time.perf_counter_ns
    samples: list[int] = []
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        if runs is not None:
            for _ in range(runs):
                t0 = clock()
                fn()
                samples.append(clock() - t0)
        else:
            deadline = clock() + int(seconds * 1e9)
            while len(samples) < MIN_RUNS or clock() < deadline:
                t0 = clock()
                fn()
                samples.append(clock() - t0)
    finally:
        if was_enabled:
            gc.enable()
    return samples


def time_once(fn: Callable[[], object]) -> tuple[float, object]:
    """(milliseconds, result) of one call: for cold starts and loads."""
    t0 = time.perf_counter_ns()
    result = fn()
    return _round_ms((time.perf_counter_ns() - t0) / 1e6), result


def _round_ms(x: float) -> float:
    return round(float(x), 5)  # 10 ns, below the cost of reading the clock; keeps the JSON short


def summarize(samples_ns, batch: int) -> dict:
    """Statistics of one case: p50/p90/p99 (linear interpolation), mean, std, min, max in ms; throughput
    in images/s as ``batch / mean`` (the sustained rate of back-to-back calls) and as ``batch / p50`` (the
    statistic the tables and the advice use); ``p50_ci_ms``, a distribution-free 95% confidence interval
    of the median (order statistics n/2 -+ 0.98 sqrt(n); the whole range when n < 6)."""
    if len(samples_ns) == 0:
        raise UsageError("no timing samples to summarize")
    ms = np.asarray(samples_ns, dtype=np.float64) / 1e6
    p50, p90, p99 = (float(v) for v in np.percentile(ms, PERCENTILES))
    mean = float(ms.mean())
    r = _round_ms
    return {
        "runs": int(ms.size),
        "p50_ms": r(p50),
        "p90_ms": r(p90),
        "p99_ms": r(p99),
        "mean_ms": r(mean),
        "std_ms": r(float(ms.std(ddof=1))) if ms.size > 1 else 0.0,
        "min_ms": r(float(ms.min())),
        "max_ms": r(float(ms.max())),
        "throughput_ips": round(batch * 1000.0 / mean, 1) if mean > 0 else None,
        "throughput_p50_ips": round(batch * 1000.0 / p50, 1) if p50 > 0 else None,
        "p50_ci_ms": [r(v) for v in median_interval(ms)],
    }


def median_interval(ms: np.ndarray) -> tuple[float, float]:
    """A 95% confidence interval of the median of ``ms``, from the order statistics (no normality assumed)."""
    s = np.sort(np.asarray(ms, np.float64))
    n = s.size
    half = 0.98 * np.sqrt(n)  # 1.96 * sqrt(n) / 2: the binomial(n, 1/2) spread of the median's rank
    lo, hi = int(np.floor(n / 2 - half)), int(np.ceil(n / 2 + half)) - 1
    return float(s[max(lo, 0)]), float(s[min(max(hi, 0), n - 1)])
