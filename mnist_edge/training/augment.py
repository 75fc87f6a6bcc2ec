"""Batched training-time augmentation as tensor ops (no per-sample Python work).

``seed002`` reproduces seed 002's torchvision pipeline on a whole batch at once:
``RandomApply([CenterCrop(22)], p=0.1)`` then ``Resize(28)`` (a 28/22 zoom on 10% of images) and
``RandomRotation(±15°, fill=0)``, fused into one affine warp per image with bilinear sampling.

``edge`` is ours, for the edge model: digits as they come from a camera or a canvas rather than MNIST's
centred ones. One affine warp (rotation ±15°, scale 0.85-1.15, shift ±2 px), then on some images a stroke
thinned or thickened by one pixel (grey erosion/dilation, 3x3 cross) and Gaussian noise. ``edge_strokes``
is its stroke changes alone, ``edge_nowarp`` the stroke changes and the noise, ``edge_nowarp_light`` the
same with noise on fewer images.
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


def _warp(x: torch.Tensor, angle, scale, shift) -> torch.Tensor:
    """Per image: rotate by ``angle`` (radians), scale the content by ``scale`` about the centre, then move it
    by ``shift`` [N, 2] (pixels, x and y); bilinear, zero outside."""
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    t = shift * (2.0 / x.shape[-1])  # pixels -> affine_grid's [-1, 1] units
    # affine_grid maps output coordinates to input ones: input = A (output - t), A the inverse warp
    bx, by = -(cos * t[:, 0] - sin * t[:, 1]), -(sin * t[:, 0] + cos * t[:, 1])
    theta = torch.stack([torch.stack([cos, -sin, bx], 1), torch.stack([sin, cos, by], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def cross_morph(x: torch.Tensor, dilate: bool) -> torch.Tensor:
    """Grey dilation (max) or erosion (min) with a 3x3 cross; pixels outside the image count as 0."""
    p = F.pad(x, (1, 1, 1, 1))
    parts = torch.stack([x, p[..., :-2, 1:-1], p[..., 2:, 1:-1], p[..., 1:-1, :-2], p[..., 1:-1, 2:]])
    return parts.amax(0) if dilate else parts.amin(0)


def _restroke(x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
    """Per image, by its uniform draw ``u`` [N]: 15% thinned by one pixel, 15% thickened, the rest as they are."""
    pick = u.view(-1, 1, 1, 1)
    return torch.where(pick < 0.15, cross_morph(x, dilate=False), torch.where(pick > 0.85, cross_morph(x, dilate=True), x))


def edge(x: torch.Tensor, generator: torch.Generator, degrees: float = 15.0, scale_low: float = 0.85,
         scale_span: float = 0.3) -> torch.Tensor:
    """x: float pixels in [0, 1], [N, 1, 28, 28] -> same shape, warped, re-stroked and noisy (see module).
    The warp turns by up to ``degrees`` either way and scales by ``scale_low`` to ``scale_low + scale_span``."""
    n, dev = x.shape[0], x.device
    u = torch.rand(n, 7, generator=generator, device=generator.device).to(dev)
    angle = (u[:, 0] * (2.0 * degrees) - degrees) * (math.pi / 180.0)
    scale = scale_low + scale_span * u[:, 1]
    shift = u[:, 2:4] * 4.0 - 2.0
    x = _warp(x, angle, scale, shift)
    return _noisy(_restroke(x, u[:, 4]), u[:, 5:7], generator)


def edge_mild(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``edge`` with a milder warp: rotation ±10° and scale 0.9-1.1 (shift, strokes and noise the same)."""
    return edge(x, generator, degrees=10.0, scale_low=0.9, scale_span=0.2)


def _noisy(x: torch.Tensor, u: torch.Tensor, generator: torch.Generator, share: float = 0.3) -> torch.Tensor:
    """Per image, by its two uniform draws ``u`` [N, 2]: on ``share`` of them, Gaussian noise of sigma up to
    40/255."""
    sigma = torch.where(u[:, 0] < share, u[:, 1] * (40.0 / 255.0), 0.0).view(-1, 1, 1, 1)
    noise = torch.randn(x.shape, generator=generator, device=generator.device).to(x.device)
    return (x + sigma * noise).clamp_(0.0, 1.0)


def edge_strokes(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``edge``'s stroke changes alone (15% thinned, 15% thickened), no warp and no noise: for a clean tail
    that still shows the model thin and thick strokes."""
    u = torch.rand(x.shape[0], generator=generator, device=generator.device).to(x.device)
    return _restroke(x, u)


def edge_nowarp(x: torch.Tensor, generator: torch.Generator, noise_share: float = 0.3) -> torch.Tensor:
    """``edge`` without its warp: strokes thinned or thickened and noise (on ``noise_share`` of the images),
    on digits left where they are."""
    u = torch.rand(x.shape[0], 3, generator=generator, device=generator.device).to(x.device)
    return _noisy(_restroke(x, u[:, 0]), u[:, 1:3], generator, share=noise_share)


def edge_nowarp_light(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """``edge_nowarp`` with noise on 10% of the images instead of 30%: the stroke changes in full, and just
    enough noise that a tail of it does not forget noisy digits."""
    return edge_nowarp(x, generator, noise_share=0.1)


AUGMENTATIONS = {"seed002": seed002, "edge": edge, "edge_mild": edge_mild, "edge_strokes": edge_strokes,
                 "edge_nowarp": edge_nowarp, "edge_nowarp_light": edge_nowarp_light}
