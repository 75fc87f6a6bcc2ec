"""Named training recipes: ``seed`` (the seed document's, the default) and ``fast`` (time to accuracy).

A fast recipe reaches at least the model's documented accuracy (final epoch, full test set) in a fraction
of the seed recipe's wall time on a 2-core CPU. What it uses, from the fast-training literature and
projects (one-cycle schedules, Smith & Topin 2017; larger batches with scaled learning rates; label
smoothing; oneDNN's channels-last layout), is stated per model in its ``notes``; nothing in it looks at
the test set. ``docs/fast-training.md`` has the measured time-to-accuracy table.

:func:`zoo_training` is the registry's edge for training: it resolves a zoo entry and a recipe name into
the objects :func:`mnist_edge.training.loop.train` takes, so nothing below it looks a name up.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from mnist_edge.contract import Contract
from mnist_edge.errors import UsageError
from mnist_edge.zoo.registry import ModelSpec, Recipe

RECIPE_NAMES = ("seed", "fast")

# Adam-trained seeds: AdamW on a one-cycle schedule, larger batches, no per-epoch test pass.
_ADAMW = dict(optimizer="adamw", schedule="onecycle", warmup=0.2, weight_decay=1e-4)

FAST: dict[str, Recipe] = {
    "cnn_small": Recipe(**_ADAMW, lr=4e-3, batch_size=128, epochs=4, channels_last=True,
                        notes="fast: AdamW one-cycle peaking at 4e-3, batch 128, 4 epochs, channels-last"),
    "cnn_small_1conv": Recipe(**_ADAMW, lr=4e-3, batch_size=128, epochs=5, channels_last=True, bf16=True,
                              notes="fast: AdamW one-cycle peaking at 4e-3, batch 128, 5 epochs, channels-last, "
                                    "bf16 autocast"),
    "mlp": Recipe(**_ADAMW, lr=8e-3, batch_size=128, epochs=2, label_smoothing=0.2,
                  notes="fast: AdamW one-cycle peaking at 8e-3, batch 128, 2 epochs, label smoothing 0.2"),
    "cnn": Recipe(**_ADAMW, lr=3e-3, batch_size=128, epochs=2, channels_last=True, bf16=True,
                  notes="fast: AdamW one-cycle peaking at 3e-3, batch 128, 2 epochs, channels-last, bf16 autocast"),
    "bn_cnn": Recipe(optimizer="sgd", lr=0.2, momentum=0.9, nesterov=True, weight_decay=5e-4,
                     schedule="onecycle", warmup=0.25, batch_size=256, epochs=6, label_smoothing=0.1,
                     augment="seed002", channels_last=True,
                     notes="fast: SGD Nesterov one-cycle peaking at 0.2, batch 256, 6 epochs, label smoothing "
                           "0.1, the seed's augmentation, channels-last"),
    "lenet5": Recipe(**_ADAMW, lr=4e-3, batch_size=128, epochs=1,
                     notes="fast: AdamW one-cycle peaking at 4e-3, batch 128, 1 epoch"),
    "lenet5_mod": Recipe(**_ADAMW, lr=4e-3, batch_size=128, epochs=2, channels_last=True, bf16=True,
                         notes="fast: AdamW one-cycle peaking at 4e-3, batch 128, 2 epochs, channels-last, bf16 "
                               "autocast"),
    "mlp_wide": Recipe(**_ADAMW, lr=2e-3, batch_size=128, epochs=5,
                       notes="fast: AdamW one-cycle peaking at 2e-3, batch 128, 5 epochs (the seed's dropout "
                             "0.2 stays; no validation split: the final epoch is the model)"),
    "cnn_dropout": Recipe(**_ADAMW, lr=3e-3, batch_size=128, epochs=5, channels_last=True,
                          notes="fast: AdamW one-cycle peaking at 3e-3, batch 128, 5 epochs, channels-last (no "
                                "validation split: the final epoch is the model)"),
}


def recipe_for(spec, name: str) -> Recipe:
    """The model's recipe called ``name``: ``seed`` (its documented one) or ``fast``. A model of our own
    (no seed document) has one recipe, already ours, under both names."""
    if name not in RECIPE_NAMES:
        raise UsageError(f"unknown recipe {name!r}; valid: {', '.join(RECIPE_NAMES)}")
    if name == "seed" or not spec.seed_file:
        return spec.recipe
    if spec.name not in FAST:
        raise UsageError(f"--recipe fast: {spec.name} has no fast recipe; use --recipe seed")
    return FAST[spec.name]


def make_recipe(spec: ModelSpec, recipe: str = "seed", **overrides) -> Recipe:
    """The spec's named recipe (``seed`` or ``fast``) with single settings overridden (None: keep)."""
    base = recipe_for(spec, recipe)
    for key, value in overrides.items():
        if value is None:
            continue
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise UsageError(f"{flag} must be a positive finite number, got {value!r}")
        if key in ("epochs", "batch_size") and value != int(value):
            raise UsageError(f"{flag} must be a whole number, got {value!r}")
    return dataclasses.replace(base, **{k: v for k, v in overrides.items() if v is not None})


@dataclass(frozen=True)
class ZooTraining:
    """A zoo entry resolved into what ``train()`` takes: :meth:`build_net` (its ``net``), ``recipe``,
    ``name``, ``contract`` and ``net_args``; ``recipe_name`` and ``test_each_epoch`` for its options."""

    name: str
    recipe: Recipe
    recipe_name: str  # "seed" or "fast", as asked
    recipe_label: str  # how the start line names it: the name, or "its own" for a model without a seed
    contract: Contract
    net_class: str  # class name in mnist_edge.zoo.networks.NETS
    net_args: dict
    # The seed recipes score the test set after every epoch for their curves, as the seeds did; a fast
    # recipe only once, at the end (its time is the training's). A model without a seed has one recipe.
    test_each_epoch: bool

    def build_net(self):
        """A freshly initialised network (imports torch)."""
        from mnist_edge.zoo.networks import NETS

        return NETS[self.net_class](**self.net_args)


def zoo_training(spec: ModelSpec, recipe: str = "seed", **overrides) -> ZooTraining:
    """``spec`` trained by its recipe called ``recipe`` with ``overrides`` (see :func:`make_recipe`). Torch-free."""
    resolved = make_recipe(spec, recipe, **overrides)
    return ZooTraining(name=spec.name, recipe=resolved, recipe_name=recipe,
                       recipe_label=recipe if spec.seed_file else "its own", contract=spec.contract,
                       net_class=spec.net, net_args=dict(spec.kwargs),
                       test_each_epoch=not (recipe == "fast" and bool(spec.seed_file)))
