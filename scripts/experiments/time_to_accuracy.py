"""Time to accuracy: train zoo models by the seed and the fast recipe, side by side, over several seeds.

Each run is a fresh `mnist-edge train` process (what a user waits for: torch's import and the data load
count), alternating recipes per seed so both see the same machine. Every run records the final test
accuracy (full 10,000 images), the wall time, and how many cores other processes kept busy meanwhile.

    python scripts/experiments/time_to_accuracy.py --models bn_cnn --recipes fast --seeds 0 1 2 --json runs/tta.json

Results are appended to the JSON file as they come (an interrupted sweep keeps its finished runs), and
``--table`` prints the markdown table of a JSON file without training.

``--epochs N`` cuts each run to its first N epochs and estimates the whole recipe's wall time as the run's
wall time plus the remaining epochs at the run's mean epoch time (the accuracy column is then that of the
short run, so the table shows none): how the seed recipes' times were estimated when running them in full
did not fit in the time we had.

    python scripts/experiments/time_to_accuracy.py --models cnn mlp --recipes seed --seeds 0 --epochs 1 --json runs/tta.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_one(model: str, recipe: str, seed: int, threads: int | None, epochs: int | None = None,
            sweep: str | None = None) -> dict:
    from mnist_edge.zoo.training import recipe_for
    from mnist_edge.zoo.registry import get_spec

    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "checkpoint.pt"
        cmd = [sys.executable, "-m", "mnist_edge", "train", "--model", model, "--recipe", recipe,
               "--seed", str(seed), "--out", str(ckpt), "--no-progress"]
        if threads:
            cmd += ["--threads", str(threads)]
        if epochs:
            cmd += ["--epochs", str(epochs)]
        t0 = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True)
        wall = time.perf_counter() - t0
        if p.returncode != 0:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stderr[-2000:]}")
        from mnist_edge.training.checkpoint import read_checkpoint

        ckpt_doc = read_checkpoint(ckpt)
    m, history = ckpt_doc["metrics"], ckpt_doc["history"]
    row = {"model": model, "recipe": recipe, "seed": seed, "accuracy": m["test_accuracy"],
           "selected": m["selected"], "wall_s": round(wall, 1), "train_s": m["train_seconds"],
           "threads": m["threads"], "other_load_cores": m.get("other_load_cores"),
           "device_name": m["device_name"], "precision": m.get("precision", "float32")}
    if sweep:
        row["sweep"] = sweep
    full = recipe_for(get_spec(model), recipe).epochs
    if epochs and epochs < full:
        epoch_s = statistics.mean(h["seconds"] for h in history)
        row.update(accuracy=None, epochs_run=len(history), recipe_epochs=full, epoch_s=round(epoch_s, 2),
                   wall_s=round(wall + (full - len(history)) * epoch_s, 1), measured_wall_s=round(wall, 1))
    return row


def table(rows: list[dict]) -> str:
    from mnist_edge.zoo.registry import get_spec

    out = ["| model | documented | recipe | seeds | accuracy: mean (min-max) | wall time: mean (min-max) | "
           "others' load (cores) |", "|---|---|---|---|---|---|---|"]

    def key(r):  # estimated and full runs, and runs of different sweeps, are separate rows, never averaged
        return r["model"], r["recipe"], "epochs_run" in r, r.get("sweep") or ""

    for model, recipe, est, sweep in sorted({key(r) for r in rows}, key=lambda k: (k[0], k[3], k[1] != "seed", k[2])):
        rs = [r for r in rows if key(r) == (model, recipe, est, sweep)]
        acc, wall = [r["accuracy"] for r in rs if r["accuracy"] is not None], [r["wall_s"] for r in rs]
        load = [r["other_load_cores"] for r in rs if r["other_load_cores"] is not None]
        doc = get_spec(model).documented_accuracy
        estimated = [r for r in rs if "epochs_run" in r]
        how = f" (estimated from {estimated[0]['epochs_run']} of {estimated[0]['recipe_epochs']} epochs)" if estimated else ""
        acc_cell = f"{statistics.mean(acc):.2f}% ({min(acc):.2f}-{max(acc):.2f})" if acc else "not run in full"
        name = f"{recipe} ({sweep})" if sweep else recipe
        out.append(f"| {model} | {f'{doc:.2f}%' if doc else '-'} | {name} | {len(rs)} | {acc_cell} | "
                   f"{statistics.mean(wall):.0f} s ({min(wall):.0f}-{max(wall):.0f}){how} | "
                   f"{max(load) if load else '-'} |")
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=[])
    ap.add_argument("--recipes", nargs="+", default=["seed", "fast"])
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--threads", type=int)
    ap.add_argument("--epochs", type=int, help="run only the first N epochs and estimate the whole recipe's time")
    ap.add_argument("--json", type=Path, required=True)
    ap.add_argument("--table", action="store_true", help="print the table of --json and exit")
    ap.add_argument("--sweep", help="a name for this sweep's rows: the table never averages them with others")
    args = ap.parse_args()
    rows = json.loads(args.json.read_text()) if args.json.exists() else []
    if not args.table:
        for seed in args.seeds:
            for model in args.models:
                for recipe in args.recipes:
                    row = run_one(model, recipe, seed, args.threads, args.epochs, args.sweep)
                    print(json.dumps(row), flush=True)
                    rows.append(row)
                    tmp = args.json.with_name(args.json.name + ".tmp")
                    tmp.write_text(json.dumps(rows, indent=1) + "\n")
                    os.replace(tmp, args.json)
    print(table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
