"""Several artifacts timed interleaved in one process, and the fastest with its margin: the cross-runtime race.

The pair timing of :mod:`mnist_edge.bench.ratio` generalised to any number of callables (ONNX Runtime fp32
and int8, LiteRT fp32 and int8): each repeat times every callable once, in a seeded shuffled order, as a
block of ``calls`` calls; the per-repeat medians are compared within the repeat, so load that changes
between repeats cancels. The winner is the callable with the lowest median over repeats; every other gets
``ratio`` = its p50 / the winner's, with a 95% percentile-bootstrap interval over repeats. The winner is
"clear" when the interval of the runner-up lies above 1. numpy only.
"""

from __future__ import annotations

import random
from typing import Callable

import numpy as np

from mnist_edge.bench.ratio import BOOTSTRAP, CONFIDENCE, check_budget
from mnist_edge.bench.timing import measure


def time_race(callables: dict[str, Callable[[], object]], *, repeats: int = 12, calls: int = 10,
              warmup: int = 3, seed: int = 0) -> dict[str, list[list[int]]]:
    """Samples (ns) of every callable, one list per repeat, the order shuffled (seeded) in each repeat."""
    check_budget(repeats, calls, warmup)
    for fn in callables.values():
        for _ in range(warmup):
            fn()
    rng = random.Random(seed)
    samples: dict[str, list[list[int]]] = {name: [] for name in callables}
    for _ in range(repeats):
        order = list(callables)
        rng.shuffle(order)
        for name in order:
            samples[name].append(measure(callables[name], warmup=1, runs=calls))
    return samples


def rank(samples: dict[str, list[list[int]]], *, seed: int = 0) -> list[dict]:
    """Rows by increasing p50: name, p50_ms, and for all but the first its ratio to the first (the winner)
    with the 95% bootstrap interval; the first row's ratio is 1."""
    medians = {n: np.array([np.median(s) for s in reps], np.float64) for n, reps in samples.items()}
    order = sorted(medians, key=lambda n: float(np.median(medians[n])))
    best = medians[order[0]]
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(best), size=(BOOTSTRAP, len(best)))
    tail = (1 - CONFIDENCE) / 2 * 100
    rows = []
    for name in order:
        ratios = medians[name] / best
        boot = np.median(ratios[picks], axis=1)
        lo, hi = (float(v) for v in np.percentile(boot, [tail, 100 - tail]))
        rows.append({"file": name, "p50_ms": round(float(np.median(np.concatenate(samples[name]))) / 1e6, 5),
                     "ratio": round(float(np.median(ratios)), 4), "low": round(lo, 4), "high": round(hi, 4)})
    return rows


def winner(rows: list[dict]) -> dict:
    """The race's result: the fastest file, and whether the runner-up is slower beyond the noise."""
    first = rows[0]
    second = rows[1] if len(rows) > 1 else None
    return {"file": first["file"], "p50_ms": first["p50_ms"], "runner_up": second and second["file"],
            "margin": second and [second["ratio"], second["low"], second["high"]],
            "clear": bool(second is None or second["low"] > 1.0)}


def race_files(sessions: dict, images: np.ndarray, batches=((1, 20), (64, 3)), *, repeats: int = 12) -> dict:
    """Sessions (file name -> a session with ``run(None, {"image": batch})``) raced on the first images at
    each (batch size, calls per block): the export's record of which file is fastest where."""
    from mnist_edge.system.machine import cpu_model

    by_batch = {}
    for batch, calls in batches:
        x = np.ascontiguousarray(images[:batch])
        fns = {n: (lambda s=s: s.run(None, {"image": x})) for n, s in sessions.items()}
        rows = rank(time_race(fns, repeats=repeats, calls=calls))
        by_batch[str(batch)] = {"rows": rows, "winner": winner(rows)}
    return {"threads": 1, "cpu": cpu_model(), "method": f"interleaved blocks in one process, seeded shuffled order, "
            f"{repeats} repeats; ratio of p50s to the fastest with a 95% bootstrap interval (mnist_edge.bench.race)",
            "by_batch": by_batch}
