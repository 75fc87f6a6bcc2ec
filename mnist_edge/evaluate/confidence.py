"""Confidence you can act on: fit a softmax temperature, measure calibration, and what a threshold rejects.

numpy only (no torch, no onnxruntime), so the runtime, the exporter, the cards and the tests share it.

- :func:`fit_temperature`: the single T > 0 minimising the negative log-likelihood of softmax(logits / T)
  on a held-out split (golden-section search over log T: deterministic, no step size to tune; the NLL
  is convex in 1/T, so it has one minimum on the search interval).
- :func:`expected_calibration_error`: top-label ECE over 15 equal-width confidence bins.
- :func:`rejection_table`: for thresholds P, what share of the errors and of the correct answers fall
  below P (a ``min_confidence`` of P answers "unsure" for them). Takes (probabilities, labels) only, so
  it runs on any condition (the clean test set, a robustness transform).
"""

from __future__ import annotations

import math

import numpy as np

from mnist_edge.errors import UsageError
from mnist_edge.runtime.confidence import T_MAX, T_MIN, check_min_confidence, softmax, temperature_from_metadata  # noqa: F401 (re-exported)

ECE_BINS = 15
THRESHOLDS = (0.5, 0.7, 0.9, 0.95, 0.99)
_GOLDEN_STEPS = 80  # interval shrinks by 0.618 per step: 80 steps take log(400) to ~1e-16


def nll(logits, labels, temperature: float = 1.0) -> float:
    """Mean negative log-likelihood of ``labels`` under softmax(logits / temperature)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    labels = np.asarray(labels, dtype=np.int64)
    m = z.max(axis=1, keepdims=True)
    log_z = (m[:, 0] + np.log(np.exp(z - m).sum(axis=1)))
    return float((log_z - z[np.arange(len(z)), labels]).mean())


def _check_pair(logits_or_probs, labels, what: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(logits_or_probs, dtype=np.float64)
    y = np.asarray(labels)
    if x.ndim != 2 or x.shape[1] < 2 or y.shape != (len(x),) or len(x) == 0:
        raise UsageError(f"{what} must be [N, classes] with N >= 1 and labels [N]; got {x.shape} and {y.shape}")
    if not np.isfinite(x).all():
        raise UsageError(f"{what} hold NaN or Inf")
    if not np.issubdtype(y.dtype, np.integer) or y.min() < 0 or y.max() >= x.shape[1]:
        raise UsageError(f"labels must be integers from 0 to {x.shape[1] - 1}")
    return x, y.astype(np.int64)


def fit_temperature(logits, labels) -> float:
    """The T in [T_MIN, T_MAX] minimising :func:`nll` (golden-section search over log T, deterministic)."""
    z, y = _check_pair(logits, labels, "logits")
    inv_phi = (math.sqrt(5) - 1) / 2
    a, b = math.log(T_MIN), math.log(T_MAX)
    c, d = b - inv_phi * (b - a), a + inv_phi * (b - a)
    fc, fd = nll(z, y, math.exp(c)), nll(z, y, math.exp(d))
    for _ in range(_GOLDEN_STEPS):
        if fc <= fd:  # the minimum lies in [a, d]
            b, d, fd = d, c, fc
            c = b - inv_phi * (b - a)
            fc = nll(z, y, math.exp(c))
        else:  # in [c, b]
            a, c, fc = c, d, fd
            d = a + inv_phi * (b - a)
            fd = nll(z, y, math.exp(d))
    return float(math.exp((a + b) / 2))


def expected_calibration_error(probabilities, labels, bins: int = ECE_BINS) -> float:
    """Top-label ECE: sum over equal-width confidence bins of (bin share) * |accuracy - mean confidence|.

    Bin i holds confidences in (i/bins, (i+1)/bins] (the first also takes 0); a confidence is the largest
    probability of its row, the prediction its argmax.
    """
    p, y = _check_pair(probabilities, labels, "probabilities")
    conf = p.max(axis=1)
    correct = (p.argmax(axis=1) == y).astype(np.float64)
    idx = np.clip(np.ceil(conf * bins).astype(np.int64) - 1, 0, bins - 1)
    gap = np.abs(np.bincount(idx, correct, bins) - np.bincount(idx, conf, bins))  # |sum acc - sum conf| per bin
    return float(gap.sum() / len(p))


def rejection_table(probabilities, labels, thresholds=THRESHOLDS) -> list[dict]:
    """Per threshold P: the answers whose top probability is below P are rejected ("unsure").

    Each row: ``threshold``, ``errors`` and ``errors_rejected_pct`` (share of the wrong answers caught),
    ``correct`` and ``correct_rejected_pct`` (share of the right answers lost), ``rejected_pct`` (of all
    images) and ``accepted_accuracy_pct`` (accuracy on what is still answered; None if nothing is).
    """
    p, y = _check_pair(probabilities, labels, "probabilities")
    conf, wrong = p.max(axis=1), p.argmax(axis=1) != y
    n_wrong, n_right = int(wrong.sum()), int((~wrong).sum())
    rows = []
    for t in thresholds:
        t = check_min_confidence(t)
        rejected = conf < t
        kept = ~rejected
        rows.append({
            "threshold": t,
            "errors": n_wrong,
            "errors_rejected_pct": _pct((rejected & wrong).sum(), n_wrong),
            "correct": n_right,
            "correct_rejected_pct": _pct((rejected & ~wrong).sum(), n_right),
            "rejected_pct": _pct(rejected.sum(), len(p)),
            "accepted_accuracy_pct": _pct((kept & ~wrong).sum(), kept.sum()),
        })
    return rows


def _pct(part, whole) -> float | None:
    return round(100.0 * float(part) / float(whole), 2) if whole else None


def summary(logits, labels, temperature: float, thresholds=THRESHOLDS) -> dict:
    """ECE and NLL before (T = 1) and after (T = ``temperature``), and the rejection table of each."""
    z, y = _check_pair(logits, labels, "logits")
    before, after = softmax(z), softmax(z, temperature)
    return {"images": len(z), "accuracy_pct": _pct((z.argmax(1) == y).sum(), len(z)),
            "ece_before": round(expected_calibration_error(before, y), 5),
            "ece_after": round(expected_calibration_error(after, y), 5),
            "nll_before": round(nll(z, y), 5), "nll_after": round(nll(z, y, temperature), 5),
            "rejection": rejection_table(after, y, thresholds),
            "rejection_before": rejection_table(before, y, thresholds)}
