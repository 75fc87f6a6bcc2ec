"""Synthesized scans of MNIST digits: the noisy pages real users feed `mnist-edge predict` (test helper).

Each is a digit enlarged 5x (140 pixels) on a 300x260 page, ink dark on light, with one defect the issue
reports made the old normalizer fail; seeded, so every run sees the same pixels.
"""

import io

import numpy as np
from PIL import Image

KINDS = ("clean", "white_noise", "overexposed", "grey_noise", "gradient", "gradient_noise", "jpeg", "small_noisy")


def _ink(digit, size):
    """Ink coverage in [0, 1] of an MNIST digit enlarged to size x size."""
    big = Image.fromarray(digit).resize((size, size), Image.Resampling.BICUBIC)
    return np.asarray(big, np.float64).clip(0, 255) / 255


def scan(digit: np.ndarray, kind: str, seed: int) -> np.ndarray:
    """uint8 [H, W]: ``digit`` (uint8 28x28, MNIST polarity) printed on a page with defect ``kind``."""
    rng = np.random.default_rng(seed)
    h, w = 300, 260
    ink = np.zeros((h, w))
    ink[80:220, 60:200] = _ink(digit, 140)
    lighting = np.linspace(150, 220, w)[None, :].repeat(h, 0)  # a lamp on the right
    if kind == "clean":
        page = 255 - 255 * ink
    elif kind == "white_noise":  # white paper, sensor noise sigma 25, clipped at white
        page = 255 - 230 * ink + rng.normal(0, 25, (h, w))
    elif kind == "overexposed":  # paper brighter than white: nine pixels in ten clip at 255
        page = 290 - 250 * ink + rng.normal(0, 25, (h, w))
    elif kind == "grey_noise":  # grey paper (200), the same noise
        page = 200 - 150 * ink + rng.normal(0, 25, (h, w))
    elif kind == "gradient":  # a clear dark digit on a 150 -> 220 lighting gradient
        page = lighting * (1 - 0.8 * ink)
    elif kind == "gradient_noise":  # gradients both ways, and noise
        page = (lighting + np.linspace(-20, 20, h)[:, None]) * (1 - 0.7 * ink) + rng.normal(0, 10, (h, w))
    elif kind == "jpeg":  # grey noisy paper saved as a JPEG of quality 70
        page = 190 - 140 * ink + rng.normal(0, 12, (h, w))
    elif kind == "small_noisy":  # the 28x28 digit itself, dark on white, noise sigma 20
        page = 255 - digit.astype(np.float64) + rng.normal(0, 20, digit.shape)
    else:
        raise ValueError(f"unknown scan kind {kind!r}; valid: {', '.join(KINDS)}")
    arr = page.clip(0, 255).astype(np.uint8)
    if kind == "jpeg":
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, "JPEG", quality=70)
        arr = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("L"))
    return arr
