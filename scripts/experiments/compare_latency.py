"""Two ONNX models timed against each other in one process: the p50 ratio A/B with its 95% interval.

The same paired, interleaved timing as the int8 search (mnist_edge.bench.ratio), through the torch-free
runtime's loader, 1 thread, on the first test digits. Used for "edge_cnn's int8 is no slower than
bn_cnn's int8 in the same benchmark run":

    python scripts/experiments/compare_latency.py exported/edge_cnn/model.int8.onnx exported/bn_cnn/model.int8.onnx \
        --json exported/edge_cnn/latency_vs_bn_cnn.json
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from mnist_edge.data.mnist import load_mnist
from mnist_edge.bench.ratio import format_ratio, ratio_interval, time_pair
from mnist_edge.system.machine import collect_environment
from mnist_edge.runtime.classifier import load


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a", type=Path)
    ap.add_argument("b", type=Path)
    ap.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    ap.add_argument("--repeats", type=int, default=24)
    ap.add_argument("--calls", type=int, default=10)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    a, b = load(args.a, threads=1), load(args.b, threads=1)
    x, _ = load_mnist("test")
    rows = []
    for n in args.batches:
        batch = np.ascontiguousarray(x[:n, None])
        sa, sb = time_pair(lambda: a.session.run(None, {"image": batch}),
                           lambda: b.session.run(None, {"image": batch}), repeats=args.repeats, calls=args.calls)
        r = ratio_interval(sa, sb)
        rows.append({"batch": n, **r})
        print(f"batch {n}: {args.a} / {args.b} p50 = {format_ratio(r)}")
    env = collect_environment()
    def short(p: Path) -> str:  # folder/file: no machine path in a committed record
        return f"{p.resolve().parent.name}/{p.name}"

    record = {"a": short(args.a), "b": short(args.b), "a_sha256": a.sha256, "b_sha256": b.sha256, "threads": 1,
              "method": "paired interleaved blocks (mnist_edge.bench.ratio), ratio of p50s, 95% bootstrap",
              "cpu": env["cpu"]["model"], "load_average": env["load_average"], "rows": rows}
    if args.json:
        tmp = args.json.with_name(args.json.name + ".tmp")
        tmp.write_text(json.dumps(record, indent=1) + "\n")
        os.replace(tmp, args.json)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
