"""What one ``mnist-edge quantize`` run does: a search or a check of one recipe, its budgets, and what it
writes besides the result. The recipe itself is a :class:`~mnist_edge.int8.quantize.QuantizeOptions`."""

from __future__ import annotations

import os
from dataclasses import dataclass

from mnist_edge.errors import UsageError


@dataclass(frozen=True)
class SearchSettings:
    search: bool = True  # False: check the starting recipe only (with the accuracy fallback), no timing stages
    repeats: int = 8  # timing repeats per batch size (the confirm stage takes CONFIRM_FACTOR times as many)
    calls: int = 10  # timed calls per block
    eval_limit: int | None = None  # gate on the first N test images (None: all of them)
    keep_failed: str | os.PathLike | None = None  # folder: each candidate that failed the gate is kept there
    calibration_class: int | None = None  # calibrate on this class only: a deliberately bad set (a demonstration)
    report: bool = False  # diagnose the chosen recipe (int8_report.json)
    register: str | os.PathLike | None = None  # registry file to record this model's entry in

    def validate(self) -> "SearchSettings":
        from mnist_edge.bench.ratio import check_budget

        check_budget(self.repeats, self.calls, 0)
        n = self.eval_limit
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10_000):
            raise UsageError(f"--eval-limit {n!r} must be an integer from 1 to 10000")
        c = self.calibration_class
        if c is not None and (isinstance(c, bool) or not isinstance(c, int)):
            raise UsageError(f"--calibration-class {c!r} must be a class label (an integer such as 1)")
        if self.register is not None and c is not None:
            raise UsageError("--calibration-class is a demonstration of bad calibration; its result cannot be "
                             "registered (export calibrates on class-balanced images)")
        if not isinstance(self.search, bool) or not isinstance(self.report, bool):
            raise UsageError(f"search {self.search!r} and report {self.report!r} must be true or false")
        return self
