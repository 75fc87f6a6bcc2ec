"""The Python API for training a network of your own: ``mnist_edge.train(net, name=..., out=...)``.

Two general recipes, named as the zoo's are: ``seed`` (Adam 1e-3, batch 64, 5 epochs: what the seed
documents' CNNs and MLPs use) and ``fast`` (AdamW one-cycle peaking at 4e-3, batch 128, 3 epochs, label
smoothing 0.1: the zoo's fast recipes in general form). The checkpoint records the class and its
arguments, so ``mnist-edge export --net FILE.py:CLASS --weights CHECKPOINT`` takes it as it is.
"""

from __future__ import annotations

from mnist_edge.contract import MNIST_MEAN, MNIST_STD, make_contract
from mnist_edge.errors import UsageError
from mnist_edge.zoo.registry import Recipe

USER_RECIPES = {
    "seed": Recipe(optimizer="adam", lr=1e-3, batch_size=64, epochs=5,
                   notes="general seed-style recipe: Adam 1e-3, batch 64, 5 epochs"),
    "fast": Recipe(optimizer="adamw", schedule="onecycle", warmup=0.2, weight_decay=1e-4, lr=4e-3, batch_size=128,
                   epochs=3, label_smoothing=0.1,
                   notes="general fast recipe: AdamW one-cycle peaking at 4e-3, batch 128, 3 epochs, label "
                         "smoothing 0.1"),
}


def user_recipe(name: str, epochs: int | None = None) -> Recipe:
    """``seed`` or ``fast`` (see the module docstring), with ``epochs`` overridden when given."""
    import dataclasses

    if name not in USER_RECIPES:
        raise UsageError(f"unknown recipe {name!r}; valid: {', '.join(USER_RECIPES)}")
    if epochs is not None and (isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 1):
        raise UsageError(f"--epochs must be a positive whole number, got {epochs!r}")
    recipe = USER_RECIPES[name]
    return dataclasses.replace(recipe, epochs=epochs) if epochs else recipe


# Keyword-only, one per user-facing choice (the CLI's flags of the same names), hence more than eight.
def train_net(net, *, name: str, out=None, recipe: str = "fast", epochs: int | None = None, data=None,
              labels=None, input_size: int = 28, mean: float = MNIST_MEAN, std: float = MNIST_STD, seed: int = 0,
              limit_train: int | None = None, channels: int = 1, architecture: tuple | None = None,
              progress=None):
    """Train ``net`` (a torch.nn.Module taking normalized [N, 1, S, S] floats, returning logits) by the general
    ``recipe`` on ``data`` (None: MNIST; a folder or ``.npz``: :func:`mnist_edge.data.sources.load_data`);
    write ``out`` (a checkpoint path; None: nothing written). Returns the TrainResult."""
    from mnist_edge.data.dataset import Digits
    from mnist_edge.data.sources import load_data
    from mnist_edge.training.loop import train
    from mnist_edge.training.options import TrainOptions

    digits, data_labels = (data, None) if isinstance(data, Digits) else load_data(data)
    contract = make_contract(labels if labels is not None else data_labels, input_size, mean, std, channels)
    ref, args = architecture or (f"{type(net).__module__}:{type(net).__qualname__}", {})
    options = TrainOptions(seed=seed, out=out, limit_train=limit_train, progress=progress, test_each_epoch=False,
                           recipe_name=recipe)
    return train(net, user_recipe(recipe, epochs), digits, name=name, contract=contract, net_args=args,
                 options=options, net_class=ref)
