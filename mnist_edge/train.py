"""Training by recipe: the whole data set as one uint8 tensor in memory, batches by index, no DataLoader.

Reported accuracy is honest: the final epoch, or the epoch chosen on the validation split (seed 004),
measured on the full 10,000-image test set. Test accuracy is recorded per epoch for the curves but never
used to choose a checkpoint.
"""

from __future__ import annotations

import copy
import dataclasses
import importlib.util
import datetime
import math
import time
from dataclasses import dataclass
from pathlib import Path

from mnist_edge.artifacts import RUNS as RUNS_DIR  # noqa: F401 (where checkpoints go by default: the CLI reads it here)
from mnist_edge.errors import TrainingError, UsageError, WriteError


@dataclass
class TrainResult:
    net: object  # the selected torch.nn.Module, in eval mode, on the CPU
    checkpoint: Path | None
    history: list
    test_accuracy: float  # percent, full test set, selected model
    selected: str  # "final" or "val_loss@<epoch>"
    seconds: float
    other_load_cores: float | None = None  # CPUs other processes kept busy meanwhile (None: unknown, or GPU)


def resolve_device(device: str):
    """'cpu', 'cuda' or 'cuda:N' as a torch.device; an absent CUDA is an error, never a silent CPU run."""
    from mnist_edge.torchrun import torch_device

    return torch_device(device)


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


def make_recipe(spec, recipe: str = "seed", **overrides):
    """The spec's named recipe (``seed`` or ``fast``) with single settings overridden (None: keep)."""
    from mnist_edge.training_recipes import recipe_for

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


def split_indices(n: int, val_size: int, seed: int, limit: int | None = None, split_seed: int | None = None):
    """(training indices in training order, validation indices or None) of the ``n`` training images, as
    train() draws them: the recipe's validation split (drawn by ``split_seed``, else by ``seed``), else a
    seeded permutation; ``limit`` keeps the first."""
    import torch

    from mnist_edge.data import train_val_split

    train_idx, val_idx = (train_val_split(n, val_size, seed if split_seed is None else split_seed) if val_size
                          else (torch.randperm(n, generator=torch.Generator().manual_seed(seed)).numpy(), None))
    return (train_idx[:limit] if limit else train_idx), val_idx


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


def evaluate(net, prepare, images, labels, batch: int = 1000):
    """(mean loss, accuracy %) of ``net`` over uint8 images [N,1,28,28] on their device."""
    import torch
    import torch.nn.functional as F

    net.eval()
    loss, correct = torch.zeros((), device=images.device), torch.zeros((), device=images.device)
    with torch.no_grad():
        for i in range(0, len(images), batch):
            logits = net(prepare(images[i:i + batch].float() / 255.0))
            y = labels[i:i + batch]
            loss += F.cross_entropy(logits, y, reduction="sum")
            correct += (logits.argmax(1) == y).sum()
    return loss.item() / len(images), 100.0 * correct.item() / len(images)


def train(model: str, *, data_dir=None, recipe: str = "seed", epochs=None, batch_size=None, lr=None,
          seed: int = 0, device: str = "cpu", out=None, limit_train: int | None = None, progress: bool = False,
          plot: bool = True, threads: int | None = None, test_each_epoch: bool | None = None, log=None) -> TrainResult:
    """Train registry model ``model`` by its named recipe (``seed`` or ``fast``); write a checkpoint (and
    curves PNG) to ``out``.

    ``test_each_epoch=False`` scores the test set once, at the end, instead of after every epoch (for the
    curves only: it never chooses the model); smoke runs and test fixtures skip the per-epoch passes. The
    default (None) scores every epoch except under the fast recipe, which evaluates only when needed.
    ``log`` (e.g. ``print`` to stderr) receives one-line status messages: what is starting, within a moment
    of the call, and whether other processes kept the machine busy.
    """
    from mnist_edge.busy import OtherLoad, busy_line
    from mnist_edge.data import require_splits
    from mnist_edge.extras import require
    from mnist_edge.machine import usable_cores
    from mnist_edge.torchrun import bounded_openmp_spin, bf16_autocast, device_name, keep_freed_memory
    from mnist_edge.zoo import get_spec

    spec = get_spec(model)
    recipe_name, recipe = recipe, make_recipe(spec, recipe, epochs=epochs, batch_size=batch_size, lr=lr)
    if test_each_epoch is None:
        test_each_epoch = not (recipe_name == "fast" and spec.seed_file)
    for flag, value in (("--threads", threads), ("--limit-train", limit_train)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise UsageError(f"{flag} must be a positive integer, got {value!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63:
        raise UsageError(f"--seed must be an integer from 0 to 2**63-1, got {seed!r}")
    require_splits(data_dir)  # before any other work: say how to get the data
    if importlib.util.find_spec("torch") is None:  # cheap: the one-line error comes before any status line
        require("train", "training", ("torch",))
    others, cores = OtherLoad(), usable_cores()
    if log:
        log(f"{spec.name}: {recipe_name if spec.seed_file else 'its own'} recipe, {recipe.epochs} epochs of batch {recipe.batch_size} on {device}; "
            "loading torch and MNIST ...")
    bounded_openmp_spin()  # before torch loads OpenMP: idle threads spin briefly, then sleep (see torchrun)
    keep_freed_memory()  # freed activations are reused, not page-faulted in again every step (see torchrun)
    require("train", "training", ("torch",))
    import torch

    from mnist_edge.checkpoint import save_checkpoint
    from mnist_edge.data import data_sha256, load_mnist
    from mnist_edge.models import build_edge_model

    dev = resolve_device(device)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    gen = torch.Generator(device=dev).manual_seed(seed)

    x_all, y_all = load_mnist("train", data_dir=data_dir)
    x_test, y_test = load_mnist("test", data_dir=data_dir)
    train_idx, val_idx = split_indices(len(x_all), recipe.val_size, seed, limit_train, recipe.split_seed)

    def to_dev(a):  # uint8 stays uint8 in memory: 47 MB for all 60k images
        return torch.from_numpy(a.copy()).to(dev)

    x_tr, y_tr = to_dev(x_all[train_idx]).unsqueeze(1), to_dev(y_all[train_idx]).long()
    x_te, y_te = to_dev(x_test).unsqueeze(1), to_dev(y_test).long()
    x_va, y_va = (to_dev(x_all[val_idx]).unsqueeze(1), to_dev(y_all[val_idx]).long()) if val_idx is not None else (None, None)

    edge = build_edge_model(spec).to(dev)
    net, prepare = edge.net, edge.prepare
    if recipe.channels_last:
        net = net.to(memory_format=torch.channels_last)
    opt = make_optimizer(recipe, net.parameters())
    n, bs = len(x_tr), recipe.batch_size
    steps = (n + bs - 1) // bs
    sched, per_batch = make_scheduler(recipe, opt, steps)
    bf16, why = bf16_autocast(recipe, dev)
    if recipe.bf16 and log:
        log(f"precision: {'bf16 autocast' if bf16 else 'float32'} ({why})")
    loop = _EpochLoop(net, prepare, opt, sched if per_batch else None, recipe, gen, x_tr, y_tr, bf16)
    if dev.type == "cpu" and log and (line := busy_line(others.cores(), cores, "training")):
        log(line)

    history, best, t0 = [], None, time.perf_counter()
    for epoch in range(1, recipe.epochs + 1):
        te = time.perf_counter()
        bar = _progress(steps, f"{model} epoch {epoch}/{recipe.epochs}", progress)
        tail = epoch > recipe.epochs - recipe.augment_tail
        loss_sum, correct = loop.run_epoch(bar, tail=tail)
        train_seconds = time.perf_counter() - te
        if not math.isfinite(loss_sum):  # diverged: weights are NaN/Inf from here on; write nothing
            raise TrainingError(f"training {model} diverged in epoch {epoch}: the loss is {loss_sum} "
                                f"(learning rate {recipe.lr:g}); try a smaller --lr. Nothing was written")
        row = {"epoch": epoch, "lr": opt.param_groups[0]["lr"], "train_loss": loss_sum / n,
               "train_acc": 100.0 * correct / n, "seconds": round(train_seconds, 3)}
        if sched and not per_batch:
            sched.step()
        if x_va is not None:
            row["val_loss"], row["val_acc"] = evaluate(loop.model(), prepare, x_va, y_va)
            if best is None or row["val_loss"] < best[1]:
                best = (epoch, row["val_loss"], copy.deepcopy(loop.model().state_dict()))
        if test_each_epoch:
            row["test_loss"], row["test_acc"] = evaluate(loop.model(), prepare, x_te, y_te)
        history.append(row)
        if bar is None and log:  # no bar (--no-progress, a log file): one line per epoch instead
            log(f"{model} epoch {epoch}/{recipe.epochs}: train loss {row['train_loss']:.4f}, {row['seconds']:.1f} s"
                + (f", test {row['test_acc']:.2f}%" if "test_acc" in row else ""))
        if bar is not None:
            bar.set_postfix(loss=f"{row['train_loss']:.4f}", acc=f"{row['train_acc']:.2f}",
                            **({"test": f"{row['test_acc']:.2f}"} if "test_acc" in row else {}))
            bar.close()

    selected, net = "final", loop.model()
    if recipe.select == "val_loss" and best is not None:
        net.load_state_dict(best[2])
        selected = f"val_loss@{best[0]}"
    last = history[-1]
    restat = None
    if recipe.reestimate_bn:
        restat = reestimate_final_bn(net, prepare, x_tr, (x_va, y_va), log)
    if selected == "final" and "test_acc" in last and restat is None:  # the last epoch's pass scored this model
        test_acc = last["test_acc"]
    else:
        _, test_acc = evaluate(net, prepare, x_te, y_te)
    seconds = time.perf_counter() - t0
    net = net.cpu().to(memory_format=torch.contiguous_format).eval()
    busy = others.cores() if dev.type == "cpu" else None

    ckpt_path = None
    if out is not None:
        ckpt_path = Path(out)
        finished = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        metrics = {"test_accuracy": test_acc, "selected": selected, "train_seconds": round(seconds, 1),
                   "finished_utc": finished, "recipe_name": recipe_name,
                   "device": str(dev), "device_name": device_name(dev), "threads": torch.get_num_threads(),
                   "precision": "bf16 autocast" if bf16 else "float32",
                   "other_load_cores": busy, "usable_cores": cores,
                   "seed": seed, "train_images": n, "limit_train": limit_train,
                   **({"reestimate_bn": restat} if restat else {})}
        state = {k: v.contiguous() for k, v in net.state_dict().items()}
        save_checkpoint(ckpt_path, model=model, state_dict=state, recipe=recipe.to_dict(),
                        history=history, data_sha256=data_sha256(data_dir), metrics=metrics)
        if plot:
            from mnist_edge.plots import plot_history

            curves = ckpt_path.with_name("training_curves.png")
            try:
                plot_history(history, curves, title=f"{model} ({selected})")
            except OSError as e:
                raise WriteError(f"cannot write '{curves}': {e.strerror or e}; the checkpoint '{ckpt_path}' was "
                                 f"written (complete), '{curves}' is unchanged") from None
    return TrainResult(net=net, checkpoint=ckpt_path, history=history, test_accuracy=test_acc,
                       selected=selected, seconds=seconds, other_load_cores=busy)


def reestimate_final_bn(net, prepare, x_train, validation, log=None, batch: int = 500) -> dict:
    """The recipe's ``reestimate_bn`` step (:mod:`mnist_edge.batchnorm`): ``net``'s batch-norm statistics
    re-estimated on the training images ``x_train`` (uint8 [N,1,28,28]) as they are, in their order, never
    on validation or test images. Returns the record for the checkpoint's metrics, with the validation
    figures before and after when ``validation`` (images, labels) is given. The pass runs in the contiguous
    (NCHW) layout the checkpoint stores, so applied to a saved checkpoint it gives the same statistics to the
    bit as inside a channels-last training run."""
    import torch

    from mnist_edge.batchnorm import reestimate_batchnorm

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


class _EpochLoop:
    """One pass over the training images in a fresh random order: augmentation, loss, step."""

    def __init__(self, net, prepare, opt, batch_sched, recipe, gen, x, y, bf16: bool = False):
        from mnist_edge.augment import AUGMENTATIONS

        self.net, self.prepare, self.opt, self.batch_sched, self.gen, self.x, self.y = (
            net, prepare, opt, batch_sched, gen, x, y)
        self.bs, self.smoothing, self.channels_last = recipe.batch_size, recipe.label_smoothing, recipe.channels_last
        self.augment = AUGMENTATIONS[recipe.augment] if recipe.augment else None
        self.tail_augment = AUGMENTATIONS[recipe.augment_tail_with] if recipe.augment_tail_with else self.augment
        self.tail_share = recipe.augment_tail_share
        self.bf16 = bf16
        self.ema, self.ema_decay, self.ema_steps = (copy.deepcopy(net) if recipe.ema else None), recipe.ema, 0

    def model(self):
        """The model as trained so far: the weights' moving average when the recipe keeps one."""
        return self.ema if self.ema is not None else self.net

    def _update_ema(self):
        """ema <- d ema + (1 - d) weights, batch-norm statistics included; d ramps up to the recipe's decay
        ((1 + t) / (10 + t) at step t), so a short run is not dominated by the initial weights."""
        import torch

        self.ema_steps += 1
        d = min(self.ema_decay, (1 + self.ema_steps) / (10 + self.ema_steps))
        with torch.no_grad():
            for e, w in zip(self.ema.state_dict().values(), self.net.state_dict().values()):
                if e.dtype.is_floating_point:
                    e.lerp_(w, 1.0 - d)
                else:
                    e.copy_(w)

    def run_epoch(self, bar, tail: bool = False) -> tuple[float, float]:
        """(summed loss, correct count) over the epoch. Every image is augmented, except in the recipe's
        tail: there only its share (a fresh random pick per batch), with the tail's augmentation."""
        import torch
        import torch.nn.functional as F

        net, dev, n, bs = self.net, self.x.device, len(self.x), self.bs
        augment, augment_share = (self.tail_augment, self.tail_share) if tail else (self.augment, 1.0)
        steps = (n + bs - 1) // bs
        net.train()
        perm = torch.randperm(n, generator=self.gen, device=dev)
        loss_sum, correct = torch.zeros((), device=dev), torch.zeros((), device=dev)
        for s in range(steps):
            idx = perm[s * bs:(s + 1) * bs]
            x = self.x[idx].float() / 255.0
            if augment and augment_share >= 1.0:
                x = augment(x, self.gen)
            elif augment and augment_share > 0.0:
                pick = torch.rand(len(x), generator=self.gen, device=self.gen.device).to(dev) < augment_share
                x = torch.where(pick.view(-1, 1, 1, 1), augment(x, self.gen), x)
            y = self.y[idx]
            x = self.prepare(x)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=self.bf16):
                logits = net(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=self.smoothing)
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.step()
            if self.ema is not None:
                self._update_ema()
            if self.batch_sched is not None:
                self.batch_sched.step()
            loss_sum += loss.detach() * len(idx)
            correct += (logits.detach().argmax(1) == y).sum()
            if bar is not None and (s % 50 == 0 or s == steps - 1):
                bar.update(s + 1 - bar.n)
                bar.set_postfix(loss=f"{loss.item():.4f}")
        return loss_sum.item(), correct.item()


def _progress(total: int, desc: str, enabled: bool):
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, desc=desc, unit="batch", leave=True, dynamic_ncols=True)
