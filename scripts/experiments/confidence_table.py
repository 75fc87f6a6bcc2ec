"""Print docs/confidence.md's tables from exported/*/manifest.json (markdown, or --json).

Each manifest's ``temperature`` record (written by `mnist-edge export`) holds T, the split it was fitted
on, ECE before/after and the rejection table on the test set. For other conditions (a robustness
transform), run :func:`mnist_edge.evaluate.confidence.rejection_table` on that condition's probabilities.

    python scripts/experiments/confidence_table.py            # markdown, one row per model
    python scripts/experiments/confidence_table.py --at-one   # the same at T = 1 (before calibration)
    python scripts/experiments/confidence_table.py --json     # the records themselves
    python scripts/experiments/confidence_table.py --robustness  # over the robustness suite (exported/*/robustness.json)
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mnist_edge.cards.reliability import confidence_table, robustness_rejection_table
from mnist_edge.manifest import read_manifest
from mnist_edge.zoo.registry import MODELS


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--exported", type=Path, default=Path("exported"))
    ap.add_argument("--json", action="store_true", help="print {model: temperature record} as JSON")
    ap.add_argument("--at-one", action="store_true",
                    help="the rejection shares of the uncalibrated probabilities (T = 1), for comparison")
    ap.add_argument("--robustness", action="store_true",
                    help="the rejection shares over the robustness suite's transformed conditions, pooled")
    args = ap.parse_args()
    if args.robustness:
        from mnist_edge.evaluate.robustness import read_report

        rows = [(name, read_report(args.exported / name / "robustness.json")) for name in MODELS
                if (args.exported / name / "robustness.json").is_file()]
        print("\n".join(robustness_rejection_table(rows)))
        return
    rows = [(name, read_manifest(args.exported / name)) for name in MODELS
            if (args.exported / name / "manifest.json").is_file()]
    if args.json:
        print(json.dumps({name: man.get("temperature") for name, man in rows}, indent=2))
    else:
        print("\n".join(confidence_table(rows, at_one=args.at_one)))


if __name__ == "__main__":
    main()
