"""bn_cnn's time to 99.0% and 99.4% test accuracy on a CUDA GPU, against its seed recipe on the same GPU.

    MNIST_EDGE_DATA=DIR python scripts/experiments/gpu_time_to_accuracy.py --seeds 0 1 2 --json gpu_tta.json
    MNIST_EDGE_DATA=DIR python scripts/experiments/gpu_time_to_accuracy.py --models all --seeds 0 --cut-epochs \
        --no-seed-recipe --json gpu_fast.json        # every model's fast recipe once: the CUDA check

Training is ``mnist_edge.training.loop.train`` with ``TrainOptions(device="cuda")``: the whole training set sits on
the GPU as uint8, batches are drawn by index from a permutation made on the GPU, and the augmentation runs there
too.

- **CUDA start-up is not counted.** Creating the context, loading cuDNN and the first kernels is paid by a
  warm-up run (one epoch of 1,024 images, then discarded) in the same process before anything is timed.
- **Time to X**, from the fast recipe with the test set scored after every epoch: the training seconds up
  to the first epoch whose test accuracy is at least X (evaluation passes not counted). This is a
  time-to-accuracy measurement as DAWNBench defines it, read off the test curve, not a way of choosing a
  model.
- **The shortest schedule** whose *final* epoch reaches X on every seed: the fast recipe with its one-cycle
  schedule set to E epochs, for each ``--cut-epochs`` E.
- **The seed recipe**, in full, the test set scored after every epoch as the seed's recipe does.

Each run records its final test accuracy (full 10,000 images), its training and wall seconds, and its
per-epoch curve. ``--device cpu --limit-train N`` is a smoke test of the script itself.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

TARGETS = (99.0, 99.4)


def run(model: str, recipe: str, seed: int, *, epochs=None, device: str, data, limit_train=None,
        test_each_epoch=True) -> dict:
    """One training run of ``model`` on ``data`` (a Digits, loaded once by main); its JSON row."""
    from mnist_edge.training.loop import TrainOptions, train
    from mnist_edge.zoo.registry import get_spec
    from mnist_edge.zoo.training import zoo_training

    job = zoo_training(get_spec(model), recipe, epochs=epochs)
    options = TrainOptions(seed=seed, device=device, plot=False, limit_train=limit_train,
                           test_each_epoch=test_each_epoch, recipe_name=recipe)
    t0 = time.perf_counter()
    r = train(job.build_net, job.recipe, data, name=job.name, contract=job.contract, net_args=job.net_args,
              options=options)
    wall = time.perf_counter() - t0
    curve, elapsed = [], 0.0
    for h in r.history:
        elapsed += h["seconds"]
        curve.append({"epoch": h["epoch"], "train_s": round(elapsed, 3), "test_acc": h.get("test_acc")})
    row = {"model": model, "recipe": recipe, "epochs": len(r.history), "seed": seed,
           "final_accuracy": r.test_accuracy, "train_s": round(elapsed, 3), "wall_s": round(wall, 3),
           "bf16_recipe": job.recipe.bf16, "curve": curve}
    documented = get_spec(model).documented_accuracy
    for x in TARGETS + ((documented,) if documented else ()):
        first = next((c for c in curve if c["test_acc"] is not None and c["test_acc"] >= x), None)
        row[f"time_to_{x}"] = first and {"epoch": first["epoch"], "train_s": first["train_s"]}
    print(json.dumps({k: v for k, v in row.items() if k != "curve"}), flush=True)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", default=["bn_cnn"], help="registry names, or 'all'")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--cut-epochs", type=int, nargs="*", default=[2, 3, 4])
    ap.add_argument("--no-seed-recipe", action="store_true")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--limit-train", type=int, default=None)
    ap.add_argument("--data", default=None)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args()

    import torch

    from mnist_edge.data.dataset import load_digits
    from mnist_edge.files import write_text_atomic
    from mnist_edge.system.machine import cpu_model
    from mnist_edge.torchrun import device_name
    from mnist_edge.zoo.registry import MODELS

    models = list(MODELS) if args.models == ["all"] else args.models
    data = load_digits(args.data)  # once, for every run
    run("bn_cnn", "fast", 0, epochs=1, device=args.device, data=data, limit_train=1024)  # warm-up, not kept
    dev = torch.device(args.device)
    doc = {"device": device_name(dev),
           "torch": torch.__version__, "cuda": torch.version.cuda, "host_cpu": cpu_model(),
           "limit_train": args.limit_train, "warm_up": "1 epoch of 1,024 images in this process, not counted",
           "runs": []}

    def keep(row):
        doc["runs"].append(row)
        write_text_atomic(args.json, json.dumps(doc, indent=1) + "\n")

    common = dict(device=args.device, data=data, limit_train=args.limit_train)
    for model in models:
        for seed in args.seeds:
            keep(run(model, "fast", seed, **common))
            for e in args.cut_epochs:
                keep(run(model, "fast", seed, epochs=e, test_each_epoch=False, **common))
            if not args.no_seed_recipe:
                keep(run(model, "seed", seed, **common))
    return 0


if __name__ == "__main__":
    sys.exit(main())
