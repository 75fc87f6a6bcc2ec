"""Train a registry model by its recipe with some settings changed: how docs/edge-model.md's tries ran.

    python scripts/experiments/train_variant.py edge_cnn runs/v20/checkpoint.pt --seed 0 --threads 1 augment_tail=20
    python scripts/experiments/train_variant.py edge_cnn runs/v80/checkpoint.pt epochs=80 augment_tail=13

Each KEY=VALUE replaces one field of the model's seed recipe (``mnist_edge.zoo.registry.Recipe``; a bad key is an
error listing the valid ones). The checkpoint records the recipe it was trained with, so its card names
every setting that differs from the registry's. Prints the per-epoch log as `mnist-edge train` does.
The registry is left as it is: the variant is a recipe object handed to ``train()``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from mnist_edge.zoo import registry as zoo


def parse_settings(recipe: zoo.Recipe, pairs: list[str]) -> dict:
    """``["epochs=80", "augment_tail_share=0.5"]`` -> typed {field: value}, checked against the recipe."""
    fields = {f.name: getattr(recipe, f.name) for f in dataclasses.fields(recipe) if f.name != "notes"}
    out = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or key not in fields:
            raise SystemExit(f"bad setting {pair!r}: expected KEY=VALUE with KEY one of {', '.join(fields)}")
        current = fields[key]
        if isinstance(current, bool):
            out[key] = text.lower() in ("1", "true", "yes")
        elif isinstance(current, (int, float)) and not isinstance(current, bool):
            out[key] = type(current)(float(text)) if isinstance(current, float) else int(text)
        elif current is None:  # optional fields (step_size, split_seed, augment): a number or a name
            out[key] = None if text == "none" else int(text) if text.lstrip("-").isdigit() else text
        else:
            out[key] = text
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model")
    ap.add_argument("out", help="checkpoint path to write")
    ap.add_argument("settings", nargs="*", metavar="KEY=VALUE")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--data", default=None, help="MNIST folder (default: $MNIST_EDGE_DATA or the cache)")
    args = ap.parse_intermixed_args()  # KEY=VALUE may come after the options, as in the examples above

    from mnist_edge.torchrun import bounded_openmp_spin

    bounded_openmp_spin()  # before torch loads, as the CLI does: idle OpenMP threads sleep on a busy machine
    from mnist_edge.data.dataset import load_digits
    from mnist_edge.training.loop import TrainOptions, train
    from mnist_edge.zoo.training import zoo_training

    job = zoo_training(zoo.get_spec(args.model))
    recipe = dataclasses.replace(job.recipe, **parse_settings(job.recipe, args.settings))
    print(f"recipe: {recipe}", flush=True)
    options = TrainOptions(seed=args.seed, threads=args.threads, out=args.out, recipe_name=job.recipe_name,
                           test_each_epoch=job.test_each_epoch,
                           progress=lambda m: print(m, file=sys.stderr, flush=True))
    r = train(job.build_net, recipe, load_digits(args.data), name=job.name, contract=job.contract,
              net_args=job.net_args, options=options)
    print(f"{job.name}: test {r.test_accuracy:.2f}% ({r.selected}), {r.seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
