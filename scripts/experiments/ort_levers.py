"""The cheap ONNX Runtime levers, each timed against the file as exported, interleaved in one process, 1 thread.

- ``iobinding``: the logits bound as an output (``run_with_iobinding``) instead of ``session.run``;
- ``fold``: the input scaling (Cast -> Div 255 -> Sub mean -> Div std) folded into the first Conv/Gemm's
  weights and bias, where that layer has no zero padding (padding in the normalized space is not padding
  in the raw one); the folded file must give the same labels on all 10,000 test images.
Ratios are p50 / the exported file's p50 (mnist_edge.bench.race, 95% bootstrap interval); below 1 is faster.

    python scripts/experiments/ort_levers.py exported/bn_cnn exported/mlp exported/edge_cnn --json docs/ort_levers.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import onnx

from mnist_edge import artifacts as A
from mnist_edge.bench.race import rank, time_race
from mnist_edge.data.mnist import load_mnist
from mnist_edge.evaluate.ort_eval import make_session, ort_logits
from mnist_edge.files import write_text_atomic
from mnist_edge.system.machine import collect_environment


def fold_scaling(data: bytes) -> bytes | None:
    """``data`` with its input scaling folded (mnist_edge.exporter.fold), or None where it does not apply."""
    from mnist_edge.exporter.fold import fold_input_scaling

    model = onnx.load_from_string(data)
    return model.SerializeToString() if fold_input_scaling(model).startswith("folded") else None


def one(folder: Path, name: str, x, y, repeats: int) -> dict:
    data = (folder / name).read_bytes()
    base = make_session(data)
    variants = {"as exported": base}
    folded = fold_scaling(data)
    if folded is not None:
        variants["fold"] = make_session(folded)
        same = (ort_logits(variants["fold"], x, 100).argmax(1) == ort_logits(base, x, 100).argmax(1)).mean()
    out = {"file": f"{folder.name}/{name}", "fold": "not applicable" if folded is None else f"labels agree {same:.4%}"}
    for batch, calls in ((1, 100), (64, 5)):
        xb = np.ascontiguousarray(x[:batch])
        fns = {k: (lambda s=s: s.run(["logits"], {"image": xb})) for k, s in variants.items()}
        io = base.io_binding()

        def bound():
            io.bind_cpu_input("image", xb)
            io.bind_output("logits")
            base.run_with_iobinding(io)
            return io.copy_outputs_to_cpu()[0]

        fns["iobinding"] = bound
        rows = {r["file"]: r for r in rank(time_race(fns, repeats=repeats, calls=calls))}
        ref = rows["as exported"]
        out[str(batch)] = {k: {"ratio": round(r["p50_ms"] / ref["p50_ms"], 4), "p50_ms": r["p50_ms"]}
                           for k, r in rows.items()}
        print(f"{out['file']} batch {batch}: " + ", ".join(f"{k} {v['ratio']:.3f}x" for k, v in out[str(batch)].items()),
              file=sys.stderr)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("folders", type=Path, nargs="+")
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    x, y = load_mnist("test")
    x = np.ascontiguousarray(x[:, None])
    rows = [one(f, n, x, y, args.repeats) for f in args.folders for n in (A.ONNX, A.INT8) if (f / n).is_file()]
    env = collect_environment()
    record = {"cpu": env["cpu"]["model"], "threads": 1, "load_average": env["load_average"], "rows": rows}
    if args.json:
        write_text_atomic(args.json, json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
