"""Training by recipe: the loop, augmentation, batch-norm re-estimation, checkpoints (torch, imported when training).

The public surface: :func:`train` (a network, a recipe, the data, a contract), :class:`TrainOptions` and
:class:`TrainResult`. Importing them does not import torch.
"""

from mnist_edge.training.loop import TrainOptions, TrainResult, train

__all__ = ["train", "TrainOptions", "TrainResult"]
