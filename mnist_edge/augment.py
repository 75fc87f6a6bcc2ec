"""Batched training-time augmentation as tensor ops (no per-sample Python work).

``seed002`` reproduces seed 002's torchvision pipeline on a whole batch at once:
``RandomApply([CenterCrop(22)], p=0.1)`` then ``Resize(28)`` (a 28/22 zoom on 10% of images) and
``RandomRotation(±15°, fill=0)``, fused into one affine warp per image with bilinear sampling.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def seed002(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """x: float pixels in [0, 1], [N, 1, 28, 28] -> same shape, randomly zoomed and rotated."""
    n, dev = x.shape[0], x.device
    # Random draws on the generator's device keep CPU runs reproducible for a given seed.
    u = torch.rand(n, 2, generator=generator, device=generator.device).to(dev)
    angle = (u[:, 0] * 30.0 - 15.0) * (math.pi / 180.0)
    # affine_grid maps output coords to input coords: a crop of 22/28 of the image blown up to 28.
    scale = torch.where(u[:, 1] < 0.1, 22.0 / 28.0, 1.0)
    cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
    zero = torch.zeros_like(cos)
    theta = torch.stack([torch.stack([cos, -sin, zero], 1), torch.stack([sin, cos, zero], 1)], 1)  # [N, 2, 3]
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


AUGMENTATIONS = {"seed002": seed002}
