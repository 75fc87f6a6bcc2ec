"""Batch-norm statistics re-estimated after training, on images chosen by the recipe.

A model that is the moving average of its weights carries running statistics averaged the same way, over
the training batches, which a recipe like edge_cnn's fills with warped, re-stroked and noisy digits. One
pass in training mode over clean training images (no gradient, a cumulative average instead of a
momentum) fits them to the digits as they are: the step ``torch.optim.swa_utils.update_bn`` takes after
weight averaging. Unlike ``update_bn`` only the batch-norm layers leave eval mode, so a dropout layer in
front of one does not change what it sees. The weights are untouched.
"""

from __future__ import annotations


def reestimate_batchnorm(net, batches) -> int:
    """Reset the running mean and variance of every batch-norm layer of ``net`` and re-estimate them as the
    cumulative average over ``batches`` (an iterable of input tensors, already prepared for ``net``).
    Returns the number of layers re-estimated (0: ``net`` has none and is left as it was). ``net`` is in
    eval mode afterwards, with each layer's momentum restored."""
    import torch
    from torch.nn.modules.batchnorm import _BatchNorm

    layers = [m for m in net.modules() if isinstance(m, _BatchNorm) and m.track_running_stats]
    if not layers:
        return 0
    momenta = [m.momentum for m in layers]
    net.eval()
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average: every batch weighs the same
        m.train()
    try:
        with torch.no_grad():
            for x in batches:
                net(x)
    finally:
        for m, momentum in zip(layers, momenta):
            m.momentum = momentum
        net.eval()
    return len(layers)
