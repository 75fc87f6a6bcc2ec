"""Paired timing of two callables (int8 against fp32) and the p50 ratio with a bootstrap interval.

On a shared, loaded machine the absolute times drift by more than the difference we look for, so the two
models are timed in alternating blocks (ABBA order: int8, fp32, fp32, int8, ...) and each repeat gives one
ratio of the blocks' medians. The estimate is the median of those per-repeat ratios; its 95% interval is
a percentile bootstrap over repeats (seeded, so the same samples give the same interval). A verdict says
"faster" or "slower" only when the interval excludes 1, else "undetermined". numpy only.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from mnist_edge.bench.timing import measure
from mnist_edge.errors import UsageError

BOOTSTRAP = 2000
CONFIDENCE = 0.95


def check_budget(repeats, calls, warmup) -> None:
    for name, v, lo in (("repeats", repeats, 2), ("calls", calls, 1), ("warmup", warmup, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < lo:
            raise UsageError(f"timing {name} {v!r} must be an integer >= {lo}")


def time_pair(a: Callable[[], object], b: Callable[[], object], *, repeats: int = 8, calls: int = 10,
              warmup: int = 3) -> tuple[list[list[int]], list[list[int]]]:
    """Samples (ns) of ``a`` and ``b``, one list per repeat, timed in alternating blocks of ``calls``."""
    check_budget(repeats, calls, warmup)
    for _ in range(warmup):
        a()
        b()
    sa, sb = [], []
    for r in range(repeats):
        first, second = (a, b) if r % 2 == 0 else (b, a)
        s1 = measure(first, warmup=1, runs=calls)
        s2 = measure(second, warmup=1, runs=calls)
        sa.append(s1 if r % 2 == 0 else s2)
        sb.append(s2 if r % 2 == 0 else s1)
    return sa, sb


def ratio_interval(samples_a, samples_b, *, seed: int = 0) -> dict:
    """p50(a) / p50(b) from paired repeats: estimate, 95% bootstrap interval and the verdict for ``a``."""
    if len(samples_a) != len(samples_b) or len(samples_a) < 2:
        raise UsageError("ratio_interval needs the same number (>= 2) of repeats for both")
    pa = np.array([np.median(s) for s in samples_a], dtype=np.float64)
    pb = np.array([np.median(s) for s in samples_b], dtype=np.float64)
    ratios = pa / pb
    rng = np.random.default_rng(seed)
    boot = np.median(ratios[rng.integers(0, len(ratios), size=(BOOTSTRAP, len(ratios)))], axis=1)
    tail = (1 - CONFIDENCE) / 2 * 100
    lo, hi = (float(v) for v in np.percentile(boot, [tail, 100 - tail]))
    all_a = np.concatenate([np.asarray(s, np.float64) for s in samples_a])
    all_b = np.concatenate([np.asarray(s, np.float64) for s in samples_b])
    return {"ratio": round(float(np.median(ratios)), 4), "low": round(lo, 4), "high": round(hi, 4),
            "verdict": verdict(lo, hi), "repeats": len(ratios), "calls": int(len(all_a) // len(ratios)),
            "p50_ms": round(float(np.median(all_a)) / 1e6, 5), "reference_p50_ms": round(float(np.median(all_b)) / 1e6, 5)}


def verdict(low: float, high: float) -> str:
    """ "faster" when the whole interval lies below 1, "slower" above, else "undetermined"."""
    if high < 1.0:
        return "faster"
    if low > 1.0:
        return "slower"
    return "undetermined"


# The one rule that names the file to ship, for the search's verdict (and so the manifest's ``recommended``)
# and for bench's advice alike: int8 pays when it is faster, the interval of int8/fp32 below 1, at every
# batch size timed; it does not pay when it is slower at any; else undetermined. Untimed: fp32.
SHIP = {"pays": "model.int8.onnx", "does not pay": "model.onnx", "undetermined": "model.onnx", None: "model.onnx"}


def int8_verdict(verdicts) -> str:
    """"pays", "does not pay" or "undetermined" from the per-batch :func:`verdict` of int8 against fp32."""
    verdicts = list(verdicts)
    if verdicts and all(v == "faster" for v in verdicts):
        return "pays"
    if "slower" in verdicts:
        return "does not pay"
    return "undetermined"


def format_ratio(r: dict) -> str:
    """``0.62x [0.58, 0.67]``"""
    return f"{r['ratio']:.2f}x [{r['low']:.2f}, {r['high']:.2f}]"
