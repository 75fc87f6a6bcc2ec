"""Parity gates: each exported artifact against its reference, at several batch sizes; failures are collected.

A gate is a list of :class:`Check` rows (artifact, batch size, metric, measured value, limit). Nothing
is turned into a warning: :func:`raise_on_failure` raises one :class:`GateError` listing every failed
check with its number. An artifact that cannot run at a batch size (a batch dimension baked in by
mistake) yields a failed check carrying the error, not a crash, so the other checks are still reported.
numpy only.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from mnist_edge.errors import GateError

BATCH_SIZES = (1, 7, 64)  # 7: neither 1 nor a power of two, so a baked-in batch size fails

# The thresholds of the issue; recorded in every manifest.
THRESHOLDS = {
    "torchscript": {"max_abs_diff": 1e-5, "label_mismatches": 0},  # vs PyTorch eager
    "onnx": {"max_abs_diff": 1e-4, "label_mismatches": 1},  # fp32 vs PyTorch eager
    "int8": {"accuracy_drop_pp": 0.3, "agreement_pct": 99.5},  # vs the fp32 ONNX file
}


def check_thresholds(thresholds: dict | None) -> dict:
    """``thresholds`` (default :data:`THRESHOLDS`) after checking it has exactly THRESHOLDS' keys and numbers."""
    from mnist_edge.errors import UsageError

    if thresholds is None:
        return THRESHOLDS
    ok = isinstance(thresholds, dict) and thresholds.keys() == THRESHOLDS.keys() and all(
        isinstance(thresholds[k], dict) and thresholds[k].keys() == THRESHOLDS[k].keys()
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)
                for v in thresholds[k].values()) for k in THRESHOLDS)
    if not ok:
        raise UsageError(f"thresholds {thresholds!r} must have the shape of {THRESHOLDS!r} with finite numbers")
    return thresholds


@dataclass
class Check:
    artifact: str  # file name, e.g. "model.onnx"
    batch_size: int | None  # None: not a per-batch check (e.g. the contract)
    metric: str  # "max_abs_diff", "label_mismatches", "accuracy_drop_pp", "agreement_pct", "contract",
    # "probabilities_max_abs_diff"
    value: float | None  # None when the artifact could not be run
    op: str  # "<=" or ">="
    limit: float
    error: str | None = None

    def __post_init__(self):
        if self.value is not None:
            self.value = float(self.value)

    @property
    def passed(self) -> bool:
        if self.error is not None or self.value is None or not np.isfinite(self.value):
            return False
        return self.value <= self.limit if self.op == "<=" else self.value >= self.limit

    def describe(self) -> str:
        where = f"{self.artifact}" + (f" @ batch {self.batch_size}" if self.batch_size else "")
        if self.error is not None:
            return f"{where}: {self.metric} failed: {self.error}"
        return f"{where}: {self.metric} {_fmt(self.metric, self.value)} (limit {self.op} {_fmt(self.metric, self.limit)})"

    def brief(self) -> str:
        """``max_abs_diff 3.81e-06 <= 1.00e-04`` (no artifact or batch size)."""
        return f"{self.metric} {_fmt(self.metric, self.value)} {self.op} {_fmt(self.metric, self.limit)}"

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.value is None or not np.isfinite(self.value):
            d["value"] = None
        else:
            d["value"] = int(self.value) if self.metric in ("label_mismatches", "contract") else float(self.value)
        d["passed"] = self.passed
        return d


def _fmt(metric: str, v) -> str:
    if v is None:
        return "n/a"
    if metric.endswith("max_abs_diff"):
        return f"{v:.2e}"
    if metric == "label_mismatches":
        return f"{int(v)}"
    if metric.endswith("_pct"):
        return f"{v:.2f}%"
    if metric.endswith("_pp"):
        return f"{v:+.2f} pp"
    return f"{v:g}"


def _error(e: BaseException) -> str:
    from mnist_edge.errors import first_line

    return f"{type(e).__name__}: {first_line(e)}"


def parity_checks(artifact: str, reference: dict, outputs: dict, *, max_abs_diff: float,
                  label_mismatches: int) -> list[Check]:
    """Logits of ``artifact`` against reference logits, per batch size.

    ``reference`` and ``outputs`` map batch size -> logits [N, 10]; an output may instead be the
    exception raised while running at that batch size.
    """
    checks = []
    for bs, out in outputs.items():
        if isinstance(out, BaseException):
            err = _error(out)
            checks += [Check(artifact, bs, "max_abs_diff", None, "<=", max_abs_diff, err),
                       Check(artifact, bs, "label_mismatches", None, "<=", label_mismatches, err)]
            continue
        ref = reference[bs]
        diff = float(np.abs(out.astype(np.float64) - ref).max()) if len(ref) else 0.0
        if not np.isfinite(out).all():
            diff = float("nan")
        mismatches = int((out.argmax(1) != ref.argmax(1)).sum())
        checks += [Check(artifact, bs, "max_abs_diff", diff, "<=", max_abs_diff),
                   Check(artifact, bs, "label_mismatches", mismatches, "<=", label_mismatches)]
    return checks


def int8_checks(artifact: str, fp32: dict, int8: dict, labels: np.ndarray, *, accuracy_drop_pp: float,
                agreement_pct: float) -> list[Check]:
    """Accuracy drop (fp32 minus int8, percentage points) and top-1 agreement, per batch size."""
    checks = []
    for bs, out in int8.items():
        if isinstance(out, BaseException):
            err = _error(out)
            checks += [Check(artifact, bs, "accuracy_drop_pp", None, "<=", accuracy_drop_pp, err),
                       Check(artifact, bs, "agreement_pct", None, ">=", agreement_pct, err)]
            continue
        ref = fp32[bs]
        drop = float(((ref.argmax(1) == labels).mean() - (out.argmax(1) == labels).mean()) * 100.0)
        agree = float((out.argmax(1) == ref.argmax(1)).mean() * 100.0)
        checks += [Check(artifact, bs, "accuracy_drop_pp", drop, "<=", accuracy_drop_pp),
                   Check(artifact, bs, "agreement_pct", agree, ">=", agreement_pct)]
    return checks


# |probabilities - softmax(logits / T)| of one file's own two outputs: float32 rounding is ~1e-7.
PROBABILITIES_ATOL = 1e-5
PROBABILITY_IMAGES = 1000  # the first images of the evaluation set: the check is per file, not per image


def probabilities_check(artifact: str, batch_size: int, outputs, temperature: float) -> Check:
    """The file's ``probabilities`` output against softmax(its own ``logits`` / T): T really is in the graph.

    ``outputs``: (logits, probabilities) [N, 10] each, or the exception raised while running.
    """
    from mnist_edge.evaluate.confidence import softmax

    metric = "probabilities_max_abs_diff"
    if isinstance(outputs, BaseException):
        return Check(artifact, batch_size, metric, None, "<=", PROBABILITIES_ATOL, _error(outputs))
    logits, probs = outputs
    diff = float(np.abs(np.asarray(probs, np.float64) - softmax(logits, temperature)).max()) if len(logits) else 0.0
    return Check(artifact, batch_size, metric, diff if np.isfinite(diff) else float("nan"), "<=", PROBABILITIES_ATOL)


def contract_check(artifact: str, problems: list[str]) -> Check:
    """One check row for the input/output contract (value 0 when it matches)."""
    return Check(artifact, None, "contract", float(len(problems)), "<=", 0, "; ".join(problems) or None)


def raise_on_failure(checks: list[Check], model: str) -> None:
    """Raise one GateError listing every failed check with its measured number and limit."""
    failed = [c for c in checks if not c.passed]
    if failed:
        lines = "; ".join(f"[{i}] {c.describe()}" for i, c in enumerate(failed, 1))
        raise GateError(f"{len(failed)} of {len(checks)} parity checks failed for {model}: {lines}")


def summarize(checks: list[Check], artifact: str) -> dict:
    """Worst value of each metric over batch sizes, plus the per-batch values (for the manifest)."""
    mine = [c for c in checks if c.artifact == artifact and c.batch_size is not None]
    by_batch: dict = {}
    for c in mine:
        by_batch.setdefault(str(c.batch_size), {})[c.metric] = c.to_dict()["value"]
    worst: dict = {}
    for c in mine:
        v = c.to_dict()["value"]
        if v is None:
            worst[c.metric] = None
        elif c.metric not in worst:
            worst[c.metric] = v
        elif worst[c.metric] is not None:
            worst[c.metric] = max(worst[c.metric], v) if c.op == "<=" else min(worst[c.metric], v)
    return {"worst": worst, "by_batch": by_batch}
