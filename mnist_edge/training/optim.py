"""The optimizer and learning-rate schedule a recipe names (plain dicts of the valid names)."""

from __future__ import annotations

from mnist_edge.errors import UsageError

# recipe.optimizer -> how to build it (a plain dict: the registry of optimizers a recipe may name)
OPTIMIZERS = {
    "sgd": lambda torch, params, r: torch.optim.SGD(params, lr=r.lr, momentum=r.momentum, nesterov=r.nesterov,
                                                    weight_decay=r.weight_decay),
    "adam": lambda torch, params, r: torch.optim.Adam(params, lr=r.lr, weight_decay=r.weight_decay),
    "adamw": lambda torch, params, r: torch.optim.AdamW(params, lr=r.lr, weight_decay=r.weight_decay),
}
SCHEDULES = ("step", "onecycle")


def make_optimizer(recipe, params):
    """The recipe's optimizer; an unknown name is a UsageError listing the valid ones (never a default)."""
    import torch

    if recipe.optimizer not in OPTIMIZERS:
        raise UsageError(f"unknown optimizer {recipe.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[recipe.optimizer](torch, params, recipe)


def make_scheduler(recipe, opt, steps_per_epoch: int):
    """(scheduler, True when it steps per batch) for the recipe's schedule; (None, False) for a constant rate."""
    import torch

    if recipe.schedule not in SCHEDULES:
        raise UsageError(f"unknown schedule {recipe.schedule!r}; valid: {', '.join(SCHEDULES)}")
    if recipe.schedule == "onecycle":
        total, warmup = recipe.epochs * steps_per_epoch, recipe.warmup
        if total >= 2 and warmup * total <= 1:
            # a run of a handful of steps (--limit-train): OneCycleLR divides by zero when the warm-up is
            # exactly one step and goes wrong when shorter, so the rate rises over one and a half steps
            warmup = 1.5 / total
        return torch.optim.lr_scheduler.OneCycleLR(
            opt, max_lr=recipe.lr, epochs=recipe.epochs, steps_per_epoch=steps_per_epoch,
            pct_start=warmup, cycle_momentum=recipe.optimizer == "sgd"), True
    if recipe.step_size:
        return torch.optim.lr_scheduler.StepLR(opt, recipe.step_size, recipe.gamma), False
    return None, False
