"""Train a registry model by its recipe with some settings changed: how docs/edge-model.md's tries ran.

    python scripts/train_variant.py edge_cnn runs/v20/checkpoint.pt --seed 0 --threads 1 augment_tail=20
    python scripts/train_variant.py edge_cnn runs/v80/checkpoint.pt epochs=80 augment_tail=13

Each KEY=VALUE replaces one field of the model's seed recipe (``mnist_edge.zoo.Recipe``; a bad key is an
error listing the valid ones). The checkpoint records the recipe it was trained with, so its card names
every setting that differs from the registry's. Prints the per-epoch log as `mnist-edge train` does.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys

from mnist_edge import zoo
from mnist_edge.train import train


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
    spec = zoo.get_spec(args.model)
    recipe = dataclasses.replace(spec.recipe, **parse_settings(spec.recipe, args.settings))
    zoo.MODELS[spec.name] = dataclasses.replace(spec, recipe=recipe)
    print(f"recipe: {recipe}", flush=True)
    r = train(spec.name, data_dir=args.data, seed=args.seed, threads=args.threads, out=args.out,
              log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"{spec.name}: test {r.test_accuracy:.2f}% ({r.selected}), {r.seconds:.0f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
