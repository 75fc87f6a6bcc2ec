"""One epoch of training (augmentation, loss, step, weight average) and the evaluation pass, on tensors in memory."""

from __future__ import annotations

import copy


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


class EpochLoop:
    """One pass over the training images in a fresh random order: augmentation, loss, step."""

    def __init__(self, net, prepare, opt, batch_sched, recipe, gen, data, bf16: bool = False):
        """``data``: (uint8 images [N,1,28,28], int64 labels [N]) on the training device; ``batch_sched``: the
        schedule that steps per batch, else None; ``gen``: the generator of the order and augmentation."""
        from mnist_edge.training.augment import AUGMENTATIONS

        self.net, self.prepare, self.opt, self.batch_sched, self.gen = net, prepare, opt, batch_sched, gen
        self.x, self.y = data
        self.bs, self.smoothing, self.channels_last = recipe.batch_size, recipe.label_smoothing, recipe.channels_last
        self.augment = AUGMENTATIONS[recipe.augment] if recipe.augment else None
        self.tail_augment = AUGMENTATIONS[recipe.augment_tail_with] if recipe.augment_tail_with else self.augment
        self.tail_share = recipe.augment_tail_share
        self.bf16 = bf16
        self.ema, self.ema_decay, self.ema_steps = (copy.deepcopy(net) if recipe.ema else None), recipe.ema, 0

    @property
    def steps(self) -> int:
        """Batches per epoch (the last one may be short)."""
        return (len(self.x) + self.bs - 1) // self.bs

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

    def _batch(self, idx, augment, augment_share):
        """The prepared float input of the images ``idx``, augmented as the epoch asks."""
        import torch

        x = self.x[idx].float() / 255.0
        if augment and augment_share >= 1.0:
            x = augment(x, self.gen)
        elif augment and augment_share > 0.0:
            pick = torch.rand(len(x), generator=self.gen, device=self.gen.device).to(x.device) < augment_share
            x = torch.where(pick.view(-1, 1, 1, 1), augment(x, self.gen), x)
        x = self.prepare(x)
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def run_epoch(self, bar, tail: bool = False) -> tuple[float, float]:
        """(summed loss, correct count) over the epoch. Every image is augmented, except in the recipe's
        tail: there only its share (a fresh random pick per batch), with the tail's augmentation."""
        import torch
        import torch.nn.functional as F

        net, dev, n, bs, steps = self.net, self.x.device, len(self.x), self.bs, self.steps
        augment, augment_share = (self.tail_augment, self.tail_share) if tail else (self.augment, 1.0)
        net.train()
        perm = torch.randperm(n, generator=self.gen, device=dev)
        loss_sum, correct = torch.zeros((), device=dev), torch.zeros((), device=dev)
        for s in range(steps):
            idx = perm[s * bs:(s + 1) * bs]
            x, y = self._batch(idx, augment, augment_share), self.y[idx]
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
