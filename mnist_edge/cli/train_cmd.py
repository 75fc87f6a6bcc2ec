"""`mnist-edge train`: train a zoo model by its seed's recipe (or its fast one) and write a checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

from mnist_edge import artifacts as A
from mnist_edge.cli import add_command
from mnist_edge.training_recipes import RECIPE_NAMES


def register(sub) -> None:
    p = add_command(sub, "train", "train a zoo model by its documented recipe",
                    "Trains on the MNIST training set with the optimizer, schedule, epochs and augmentation its "
                    "seed document gives (options override them), then writes a weights-only checkpoint and a "
                    "PNG of the training curves beside it. --recipe fast trains to the documented accuracy in a "
                    "fraction of the time (see docs/fast-training.md). CPU runs are deterministic for a seed.",
                    ["mnist-edge train --model cnn_small",
                     "mnist-edge train --model bn_cnn --recipe fast",
                     "mnist-edge train --model bn_cnn --device cuda"])
    p.add_argument("--model", required=True, help="registry name (see `mnist-edge list`)")
    p.add_argument("--recipe", default="seed", choices=RECIPE_NAMES,
                   help="seed: the seed document's recipe (default); fast: our time-to-accuracy recipe")
    p.add_argument("--epochs", type=int, help="override the recipe's epoch count")
    p.add_argument("--batch-size", type=int, help="override the recipe's batch size")
    p.add_argument("--lr", type=float, help="override the recipe's learning rate")
    p.add_argument("--seed", type=int, default=0, help="random seed (CPU runs are deterministic for a seed)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default: torch's choice; idle threads sleep, "
                   "so a busy machine does not stall them)")
    p.add_argument("--limit-train", type=int, help="train on only the first N (shuffled) training images")
    p.add_argument("--out", type=Path, help="checkpoint path (default: runs/MODEL/checkpoint.pt, relative to the working directory)")
    p.add_argument("--data", type=Path, help="MNIST folder (default: $MNIST_EDGE_DATA, then the user cache)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    from mnist_edge.train import RUNS_DIR, train
    from mnist_edge.zoo import get_spec

    spec = get_spec(args.model)  # unknown names fail here, before torch is imported
    out = args.out or RUNS_DIR / spec.name / A.CHECKPOINT
    result = train(spec.name, data_dir=args.data, recipe=args.recipe, epochs=args.epochs,
                   batch_size=args.batch_size, lr=args.lr, seed=args.seed, device=args.device, out=out, limit_train=args.limit_train,
                   progress=not args.no_progress, threads=args.threads,
                   log=lambda line: print(line, file=sys.stderr, flush=True))
    last = result.history[-1]
    per_epoch = sum(h["seconds"] for h in result.history) / len(result.history)
    doc = f" (documented {spec.documented_accuracy:.2f}%)" if spec.documented_accuracy else ""
    busy = ""
    if result.other_load_cores is not None:
        busy = f", other processes kept {result.other_load_cores:.1f} cores busy meanwhile"
    print(f"{spec.name} ({args.recipe} recipe): test accuracy {result.test_accuracy:.2f}%{doc}, "
          f"model chosen: {result.selected}, {len(result.history)} epochs, {per_epoch:.1f} s/epoch, {result.seconds:.0f} s in all "
          f"(final train loss {last['train_loss']:.4f}){busy}")
    print(f"checkpoint: {result.checkpoint}\ncurves:     {result.checkpoint.with_name('training_curves.png')}")
    print(f"next: mnist-edge export --model {spec.name} --checkpoint {result.checkpoint} --quantize")
    return 0
