"""`mnist-edge train`: train a zoo model by its seed's recipe (or its fast one) and write a checkpoint."""

from __future__ import annotations

import sys
from pathlib import Path

from mnist_edge import artifacts as A
from mnist_edge.cli import add_command
from mnist_edge.zoo.training import RECIPE_NAMES


def register(sub) -> None:
    p = add_command(sub, "train", "train a zoo model by its documented recipe",
                    "Trains on the MNIST training set with the optimizer, schedule, epochs and augmentation its "
                    "seed document gives (options override them), then writes a weights-only checkpoint and a "
                    "PNG of the training curves beside it. --recipe fast trains to the documented accuracy in a "
                    "fraction of the time (see docs/fast-training.md). CPU runs are deterministic for a seed.",
                    ["mnist-edge train --model cnn_small",
                     "mnist-edge train --model bn_cnn --recipe fast --device cuda",
                     "mnist-edge train --net my_model.py:MyNet --name mynet --recipe fast --out runs/mynet/checkpoint.pt"])
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--model", help="registry name (see `mnist-edge list`)")
    what.add_argument("--net", metavar="FILE.py:CLASS",
                      help="your own network class (FILE.py:CLASS or MODULE.PATH:CLASS), trained by a general seed "
                           "(Adam 1e-3, batch 64, 5 epochs) or fast recipe; this RUNS your file in this process")
    u = p.add_argument_group("your own network (with --net)")
    u.add_argument("--name", help="its name, written into the checkpoint (letters, digits, . _ -)")
    u.add_argument("--net-args", metavar="JSON", help="constructor arguments, e.g. '{\"width\": 32}'")
    u.add_argument("--labels", metavar="A,B,...", help="class names, one per output (default 0,1,...,9)")
    u.add_argument("--input-size", type=int, default=28, metavar="S", help="the network's input size (default 28)")
    u.add_argument("--channels", type=int, default=1, metavar="C",
                   help="input channels the network takes: the grey digit goes into each (default 1)")
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
    p.add_argument("--data", type=Path, help="MNIST folder (default: $MNIST_EDGE_DATA, then the user cache); with --net "
                                             "also an MNIST-format IDX folder, an .npz (x, y) or train/ and test/ "
                                             "class folders")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.net:
        return run_user(args)
    from mnist_edge.errors import UsageError

    own = [f for f in ("name", "net_args", "labels") if getattr(args, f)]
    if own:
        raise UsageError(f"--{own[0].replace('_', '-')} describes your own network: use it with --net")
    return run_zoo(args)


def run_user(args) -> int:
    """`train --net`: the class built from the user's file, trained by a general recipe (mnist_edge.train)."""
    from mnist_edge.errors import UsageError
    from mnist_edge.system.extras import require

    if not args.name:
        raise UsageError("--net needs --name NAME: the model's name in its checkpoint")
    require("train", "training", ("torch",))
    from mnist_edge.exporter import user_net as U
    from mnist_edge.training.api import train_net

    net = U.build(U.load_class(args.net), args.net_args)
    out = args.out or A.RUNS / args.name / A.CHECKPOINT
    say = (lambda line: print(line, file=sys.stderr, flush=True))
    result = train_net(net, name=args.name, out=out, recipe=args.recipe, epochs=args.epochs, data=args.data,
                       labels=args.labels.split(",") if args.labels else None, input_size=args.input_size,
                       seed=args.seed, limit_train=args.limit_train, channels=args.channels,
                       architecture=(args.net, _json(args.net_args)),
                       progress=say)
    print(f"{args.name} ({args.recipe} recipe): test accuracy {result.test_accuracy:.2f}%, "
          f"{len(result.history)} epochs, {result.seconds:.0f} s")
    print(f"checkpoint: {result.checkpoint}")
    print(f"next: mnist-edge export --net {args.net} --weights {result.checkpoint} --name {args.name} --quantize")
    return 0


def _json(text):
    import json

    return json.loads(text) if text else {}


def run_zoo(args) -> int:
    import importlib.util

    from mnist_edge.data.mnist import require_splits
    from mnist_edge.system.extras import require
    from mnist_edge.training.options import TrainOptions
    from mnist_edge.zoo.registry import get_spec
    from mnist_edge.zoo.training import zoo_training

    def say(line: str) -> None:
        print(line, file=sys.stderr, flush=True)

    spec = get_spec(args.model)  # unknown names fail here, before torch is imported
    job = zoo_training(spec, args.recipe, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr)
    options = TrainOptions(seed=args.seed, device=args.device, out=args.out or A.RUNS / spec.name / A.CHECKPOINT,
                           limit_train=args.limit_train, threads=args.threads, test_each_epoch=job.test_each_epoch,
                           progress=say, bar=not args.no_progress, recipe_name=job.recipe_name)
    require_splits(args.data)  # before any other work: say how to get the data
    if importlib.util.find_spec("torch") is None:  # cheap: the one-line error comes before any status line
        require("train", "training", ("torch",))
    # what a user waits for first: this line must not wait for torch's ~3 s import
    say(f"{spec.name}: {job.recipe_label} recipe, {job.recipe.epochs} epochs of batch {job.recipe.batch_size} "
        f"on {args.device}; loading torch and MNIST ...")
    require("train", "training", ("torch",))
    from mnist_edge.data.dataset import load_digits
    from mnist_edge.training.loop import train

    data = load_digits(args.data)  # loaded once, here
    result = train(job.build_net, job.recipe, data, name=job.name, contract=job.contract, net_args=job.net_args,
                   options=options)
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
