"""Training by recipe: the whole data set as one uint8 tensor in memory, batches by index, no DataLoader.

:func:`train` takes things, not names: a network, a recipe, the data, the contract. It runs in stages on
one :class:`_Run` (device and seeds, data on the device and the validation split, network and optimizer,
the epochs, the final selection and evaluation, the checkpoint and curves). Registry names are resolved
before it, by the CLI (:mod:`mnist_edge.zoo.training` resolves a zoo entry).

Reported accuracy is honest: the final epoch, or the epoch chosen on the validation split (seed 004),
measured on the full 10,000-image test set. Test accuracy is recorded per epoch for the curves but never
used to choose a checkpoint.
"""

from __future__ import annotations

import copy
import datetime
import math
import time
from dataclasses import dataclass, field

from mnist_edge.errors import TrainingError, UsageError, WriteError
from mnist_edge.training.epoch import EpochLoop, evaluate
from mnist_edge.training.optim import make_optimizer, make_scheduler
from mnist_edge.training.options import TrainOptions, TrainResult

__all__ = ["train", "TrainOptions", "TrainResult", "split_indices", "reestimate_final_bn", "resolve_device",
           "evaluate"]


def resolve_device(device: str):
    """'cpu', 'cuda' or 'cuda:N' as a torch.device; an absent CUDA is an error, never a silent CPU run."""
    from mnist_edge.torchrun import torch_device

    return torch_device(device)


def split_indices(n: int, val_size: int, seed: int, limit: int | None = None, split_seed: int | None = None):
    """(training indices in training order, validation indices or None) of the ``n`` training images, as
    train() draws them: the recipe's validation split (drawn by ``split_seed``, else by ``seed``), else a
    seeded permutation; ``limit`` keeps the first."""
    import torch

    from mnist_edge.data.mnist import train_val_split

    train_idx, val_idx = (train_val_split(n, val_size, seed if split_seed is None else split_seed) if val_size
                          else (torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy(), None))
    return (train_idx[:limit] if limit else train_idx), val_idx


def train(net, recipe, data, *, name: str, contract, net_args: dict | None = None, net_class: str | None = None,
          options: TrainOptions | None = None) -> TrainResult:
    """Train ``net`` by ``recipe`` on ``data``; write a checkpoint (and curves PNG) to ``options.out``.

    ``net``: a ``torch.nn.Module`` taking the contract's normalized float input [N, 1, S, S] and returning
    logits [N, classes]; it moves to the device and is trained in place. Or a callable without arguments
    that builds one: it is called right after the training seed is set, so the initial weights are the
    seed's too (how the zoo trains: a run is reproduced from its seed alone).
    ``recipe``: a :class:`mnist_edge.zoo.registry.Recipe` (``mnist_edge.zoo.training.make_recipe`` gives a
    zoo model's ``seed`` or ``fast`` one). ``data``: a :class:`mnist_edge.data.dataset.Digits` with its
    train and test splits, loaded once by the caller. ``name``: the label of the checkpoint (its
    ``model``) and of the messages. ``contract``: a :class:`mnist_edge.contract.Contract`; its mean, std and
    input size prepare the pixels exactly as the exported graph will. ``net_args``: the constructor
    arguments the checkpoint records beside the class name, so it rebuilds its network (None: none);
    ``net_class``: how the checkpoint names that class (None: its name, as in the zoo's registry; a user's
    network: ``my_model.py:MyNet``, what ``mnist-edge export --net`` takes).
    """
    from mnist_edge.system.busy import OtherLoad

    options = options or TrainOptions()
    _check(recipe, data, contract)
    run = _Run(name=name, recipe=recipe, options=options, others=OtherLoad())
    _start(run)
    _load_data(run, data)
    _build(run, net, contract)
    _run_epochs(run)
    _finish(run)
    return _save(run, data, (net_class or type(run.net).__name__, net_args or {}))


@dataclass
class _Run:
    """One training run: what it was asked (name, recipe, options), then what each stage adds."""

    name: str
    recipe: object
    options: TrainOptions
    others: object  # system.busy.OtherLoad: CPUs other processes keep busy from the start of the run
    dev: object = None  # torch.device
    gen: object = None  # torch.Generator of the order and the augmentation, on the device
    bf16: bool = False
    train_set: tuple = ()  # (uint8 images [N,1,28,28], int64 labels [N]) on the device, in training order
    val_set: tuple = (None, None)
    test_set: tuple = ()
    prepare: object = None  # float pixels in [0, 1] -> the network's normalized input (the contract's)
    loop: EpochLoop | None = None
    opt: object = None
    epoch_sched: object = None  # the scheduler when it steps once per epoch, else None
    history: list = field(default_factory=list)
    best: tuple | None = None  # (epoch, validation loss, state_dict) of the lowest validation loss so far
    t0: float = 0.0
    net: object = None  # the selected model, once _finish has run
    selected: str = "final"
    restat: dict | None = None  # the batch-norm re-estimation record
    test_acc: float = 0.0
    seconds: float = 0.0
    busy: float | None = None


def _check(recipe, data, contract) -> None:
    """What train() cannot work with, as one-line errors before any work."""
    from mnist_edge.training.augment import AUGMENTATIONS

    data.need("train", "test")
    for what, chosen in (("augment", recipe.augment), ("augment_tail_with", recipe.augment_tail_with)):
        if chosen is not None and chosen not in AUGMENTATIONS:
            raise UsageError(f"unknown {what} {chosen!r}; valid: {', '.join(AUGMENTATIONS)}")
    if recipe.select not in ("final", "val_loss"):
        raise UsageError(f"unknown select {recipe.select!r}; valid: final, val_loss")


def _start(run: _Run) -> None:
    """Device, threads and seeds."""
    import torch

    from mnist_edge.torchrun import keep_freed_memory

    keep_freed_memory()  # freed activations are reused, not page-faulted in again every step (see torchrun)
    run.dev = resolve_device(run.options.device)
    if run.options.threads:
        torch.set_num_threads(run.options.threads)
    torch.manual_seed(run.options.seed)  # the initial weights (of a net built here) and dropout's draws
    run.gen = torch.Generator(device=run.dev).manual_seed(run.options.seed)


def _load_data(run: _Run, data) -> None:
    """The training split (less the recipe's validation images, cut to ``limit_train``), the validation
    images and the test set, on the device as uint8 (47 MB for all 60k training images)."""
    import torch

    recipe, opts = run.recipe, run.options
    images, labels = data.train.images, data.train.labels
    train_idx, val_idx = split_indices(len(images), recipe.val_size, opts.seed, opts.limit_train, recipe.split_seed)

    def pair(x, y):  # images gain their channel axis: [N, 1, H, W]
        return (torch.from_numpy(x.copy()).to(run.dev).unsqueeze(1),
                torch.from_numpy(y.copy()).to(run.dev).long())

    run.train_set = pair(images[train_idx], labels[train_idx])
    run.val_set = pair(images[val_idx], labels[val_idx]) if val_idx is not None else (None, None)
    run.test_set = pair(data.test.images, data.test.labels)


def _build(run: _Run, net, contract) -> None:
    """The network on the device (built here when ``net`` is a callable), its optimizer and schedule, the
    precision, and the epoch loop."""
    import torch

    from mnist_edge.torchrun import bf16_autocast
    from mnist_edge.zoo.networks import EdgeModel

    recipe = run.recipe
    if not isinstance(net, torch.nn.Module):
        built = net() if callable(net) else net
        if not isinstance(built, torch.nn.Module):
            raise UsageError(f"train() takes a torch.nn.Module or a callable building one, got {type(built).__name__}")
        net = built
    net = net.to(run.dev)
    run.prepare = EdgeModel.of(net, contract).prepare
    if recipe.channels_last:
        net = net.to(memory_format=torch.channels_last)
    run.opt = make_optimizer(recipe, net.parameters())
    steps = (len(run.train_set[0]) + recipe.batch_size - 1) // recipe.batch_size
    sched, per_batch = make_scheduler(recipe, run.opt, steps)
    run.epoch_sched = None if per_batch else sched
    run.bf16, why = bf16_autocast(recipe, run.dev)
    if recipe.bf16:
        run.options.say(f"precision: {'bf16 autocast' if run.bf16 else 'float32'} ({why})")
    run.loop = EpochLoop(net, run.prepare, run.opt, sched if per_batch else None, recipe, run.gen, run.train_set,
                         run.bf16)


def _run_epochs(run: _Run) -> None:
    """Every epoch: train, score on the validation and test sets, report."""
    run.t0 = time.perf_counter()
    for epoch in range(1, run.recipe.epochs + 1):
        bar = _bar(run.loop.steps, f"{run.name} epoch {epoch}/{run.recipe.epochs}", run.options.bar)
        row = _train_epoch(run, epoch, bar)
        _score_epoch(run, row)
        run.history.append(row)
        _report_epoch(run, row, bar)
        if epoch == 1:
            _report_busy(run)


def _train_epoch(run: _Run, epoch: int, bar) -> dict:
    """One pass over the training images: the history row of its loss, accuracy, rate and seconds."""
    recipe, n = run.recipe, len(run.train_set[0])
    te = time.perf_counter()
    loss_sum, correct = run.loop.run_epoch(bar, tail=epoch > recipe.epochs - recipe.augment_tail)
    train_seconds = time.perf_counter() - te
    if not math.isfinite(loss_sum):  # diverged: weights are NaN/Inf from here on; write nothing
        raise TrainingError(f"training {run.name} diverged in epoch {epoch}: the loss is {loss_sum} "
                            f"(learning rate {recipe.lr:g}); try a smaller --lr. Nothing was written")
    row = {"epoch": epoch, "lr": run.opt.param_groups[0]["lr"], "train_loss": loss_sum / n,
           "train_acc": 100.0 * correct / n, "seconds": round(train_seconds, 3)}
    if run.epoch_sched is not None:
        run.epoch_sched.step()
    return row


def _score_epoch(run: _Run, row: dict) -> None:
    """The validation loss (keeping the best model's weights) and, when asked, the test accuracy."""
    model = run.loop.model()
    if run.val_set[0] is not None:
        row["val_loss"], row["val_acc"] = evaluate(model, run.prepare, *run.val_set)
        if run.best is None or row["val_loss"] < run.best[1]:
            run.best = (row["epoch"], row["val_loss"], copy.deepcopy(model.state_dict()))
    if run.options.test_each_epoch:
        row["test_loss"], row["test_acc"] = evaluate(model, run.prepare, *run.test_set)


def _report_epoch(run: _Run, row: dict, bar) -> None:
    if bar is None:  # no bar (--no-progress, a log file, no tqdm): one line per epoch instead
        run.options.say(f"{run.name} epoch {row['epoch']}/{run.recipe.epochs}: train loss {row['train_loss']:.4f}, "
                        f"{row['seconds']:.1f} s" + (f", test {row['test_acc']:.2f}%" if "test_acc" in row else ""))
        return
    bar.set_postfix(loss=f"{row['train_loss']:.4f}", acc=f"{row['train_acc']:.2f}",
                    **({"test": f"{row['test_acc']:.2f}"} if "test_acc" in row else {}))
    bar.close()


def _report_busy(run: _Run) -> None:
    """Say so when other processes kept a real share of the CPUs busy since the run started (measured over
    the first epoch: the caller loaded torch and the data before, so the start alone is too short to say)."""
    from mnist_edge.system.busy import busy_line
    from mnist_edge.system.machine import usable_cores

    if run.dev.type == "cpu" and (line := busy_line(run.others.cores(), usable_cores(), "training")):
        run.options.say(line)


def _finish(run: _Run) -> None:
    """The model chosen (final epoch or lowest validation loss), its batch-norm statistics re-estimated when
    the recipe says so, its test accuracy; then on the CPU in eval mode."""
    import torch

    net = run.loop.model()
    if run.recipe.select == "val_loss" and run.best is not None:
        net.load_state_dict(run.best[2])
        run.selected = f"val_loss@{run.best[0]}"
    if run.recipe.reestimate_bn:
        run.restat = reestimate_final_bn(net, run.prepare, run.train_set[0], run.val_set, run.options.progress)
    last = run.history[-1]
    if run.selected == "final" and "test_acc" in last and run.restat is None:  # the last pass scored this model
        run.test_acc = last["test_acc"]
    else:
        _, run.test_acc = evaluate(net, run.prepare, *run.test_set)
    run.seconds = time.perf_counter() - run.t0
    run.net = net.cpu().to(memory_format=torch.contiguous_format).eval()
    run.busy = run.others.cores() if run.dev.type == "cpu" else None


def _save(run: _Run, data, architecture: tuple) -> TrainResult:
    """The checkpoint and the curves PNG at ``options.out`` (nothing without one), and the result."""
    out = run.options.out
    if out is not None:
        from mnist_edge.training.checkpoint import digits_sha256, save_checkpoint

        state = {k: v.contiguous() for k, v in run.net.state_dict().items()}
        save_checkpoint(out, model=run.name, state_dict=state, recipe=run.recipe.to_dict(), history=run.history,
                        data_sha256=digits_sha256(data), metrics=_metrics(run),
                        architecture=architecture)
        if run.options.plot:
            _plot(run)
    return TrainResult(net=run.net, checkpoint=out, history=run.history, test_accuracy=run.test_acc,
                       selected=run.selected, seconds=run.seconds, other_load_cores=run.busy)


def _metrics(run: _Run) -> dict:
    """The checkpoint's ``metrics``: the result and what it was measured on (keys in the format's order)."""
    import torch

    from mnist_edge.system.machine import usable_cores
    from mnist_edge.torchrun import device_name

    opts = run.options
    finished = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    return {"test_accuracy": run.test_acc, "selected": run.selected, "train_seconds": round(run.seconds, 1),
            "finished_utc": finished, "recipe_name": opts.recipe_name,
            "device": str(run.dev), "device_name": device_name(run.dev), "threads": torch.get_num_threads(),
            "precision": "bf16 autocast" if run.bf16 else "float32",
            "other_load_cores": run.busy, "usable_cores": usable_cores(),
            "seed": opts.seed, "train_images": len(run.train_set[0]), "limit_train": opts.limit_train,
            **({"reestimate_bn": run.restat} if run.restat else {})}


def _plot(run: _Run) -> None:
    from mnist_edge.plots import plot_history

    ckpt_path = run.options.out
    curves = ckpt_path.with_name("training_curves.png")
    try:
        plot_history(run.history, curves, title=f"{run.name} ({run.selected})")
    except OSError as e:
        raise WriteError(f"cannot write '{curves}': {e.strerror or e}; the checkpoint '{ckpt_path}' was "
                         f"written (complete), '{curves}' is unchanged") from None


def reestimate_final_bn(net, prepare, x_train, validation, log=None, batch: int = 500) -> dict:
    """The recipe's ``reestimate_bn`` step (:mod:`mnist_edge.training.batchnorm`): ``net``'s batch-norm statistics
    re-estimated on the training images ``x_train`` (uint8 [N,1,28,28]) as they are, in their order, never
    on validation or test images. Returns the record for the checkpoint's metrics, with the validation
    figures before and after when ``validation`` (images, labels) is given. The pass runs in the contiguous
    (NCHW) layout the checkpoint stores, so applied to a saved checkpoint it gives the same statistics to the
    bit as inside a channels-last training run. ``log``: a callable taking a message, or None."""
    import torch

    from mnist_edge.training.batchnorm import reestimate_batchnorm

    net.to(memory_format=torch.contiguous_format)
    x_va, y_va = validation
    before = evaluate(net, prepare, x_va, y_va) if x_va is not None else None
    layers = reestimate_batchnorm(net, (prepare(x_train[i:i + batch].float() / 255.0)
                                        for i in range(0, len(x_train), batch)))
    record = {"layers": layers, "images": len(x_train), "batch": batch}
    if before is not None:
        after = evaluate(net, prepare, x_va, y_va)
        record.update(val_loss_before=before[0], val_acc_before=before[1], val_loss=after[0], val_acc=after[1])
    if log:
        log(f"batch-norm statistics of {layers} layers re-estimated on {len(x_train):,} clean training images"
            + (f"; validation loss {before[0]:.4f} -> {after[0]:.4f}, accuracy {before[1]:.2f}% -> {after[1]:.2f}%"
               if before is not None else ""))
    return record


def _bar(total: int, desc: str, enabled: bool):
    """A tqdm bar for one epoch, or None (not asked for, or tqdm not installed)."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="batch", leave=True, dynamic_ncols=True)
