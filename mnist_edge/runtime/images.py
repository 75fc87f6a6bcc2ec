"""Digits from image files (PNG, JPEG, ... through Pillow) normalized the way MNIST normalized its own.

Pillow is the optional extra ``images`` (``pip install mnist-edge[images]``), imported only when a file is
read or a digit normalized. MNIST's recipe (LeCun et al.): the digit is size-normalized to fit a 20x20
box keeping its aspect ratio (anti-aliased, hence grey levels), then placed in 28x28 so that its centre
of mass is at the centre. Measured on the 10k MNIST test digits: the larger side of the ink's bounding
box is 20 pixels for 9,997 of them (19 for 3) and the centre of mass, in array-index coordinates, lies in
[13.5, 14.5] on both axes, i.e. it rounds to pixel (14, 14). We reproduce exactly that, so an MNIST digit
written to PNG and read back comes out (nearly) unchanged, and a photographed or drawn digit looks like
an MNIST one:

1. grayscale (ITU-R 601 luma); transparency is flattened onto white when the visible strokes are dark,
   onto black when they are light; a phone photo's EXIF orientation is applied;
2. background: the median of the outermost ring of pixels; a light one (> 127) is inverted, so ink is
   bright on black as in MNIST;
3. noise floor = background + 4 robust standard deviations of that ring (1.4826 * MAD); pixels at or
   below it become 0 and the rest is stretched so the brightest ink is 255 (MNIST digits: background 0
   and ring spread 0, so only that stretch applies, which moves a pixel by at most 1 level);
4. crop to the digit's box: the box of strong ink, widened while more ink lies within 40% of its size
   (detached pieces and soft edges count, as in MNIST's boxes; specks of noise farther away do not; on
   a noisy background only ink of at least a quarter strength counts); resize it (bilinear,
   anti-aliased when shrinking) so its larger side is 20 pixels, and paste it at the integer offset
   that puts the centre of mass nearest (14, 14), moved back inside the 28x28 field if the digit
   would overflow it.

An image whose ink is fainter than 32 grey levels above its background is refused as blank. Files are
refused before decoding when they exceed ``max_pixels`` (default 40 megapixels) or ``max_bytes``.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from mnist_edge.errors import InputError

BOX = 20  # MNIST fits the digit into a 20x20 box
SIDE = 28
CENTER = 14.0  # where MNIST's centre of mass lands, in array-index coordinates
NOISE_SIGMAS = 4.0  # background noise floor, in robust standard deviations of the outer ring
MIN_CONTRAST = 32.0  # grey levels of ink above the background below which an image counts as blank
MAX_PIXELS = 40_000_000
MAX_BYTES = 64 * 1024 * 1024


def _pil():
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:
        raise InputError("reading image files needs Pillow, the optional extra 'images': "
                         "pip install 'mnist-edge[images]' (or pip install pillow)") from None
    return Image, ImageOps, UnidentifiedImageError


def load_image(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """The digit in image file ``path`` as an MNIST-style uint8 [28, 28] array (see the module docstring)."""
    return normalize_digit(read_gray(path, max_pixels=max_pixels, max_bytes=max_bytes), source=str(path))


def load_images(paths, **limits) -> np.ndarray:
    """:func:`load_image` for each path: uint8 [N, 28, 28]; the first bad file raises, naming it."""
    out = [load_image(p, **limits) for p in paths]
    return np.stack(out) if out else np.zeros((0, SIDE, SIDE), np.uint8)


def read_gray(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """Decode ``path`` to float32 [H, W] grey levels in [0, 255]; InputError naming the file if it cannot."""
    Image, ImageOps, UnidentifiedImageError = _pil()
    p = Path(path)
    try:
        st = p.stat()
    except FileNotFoundError:
        raise InputError(f"image {p}: no such file") from None
    except OSError as e:
        raise InputError(f"image {p}: cannot access it ({e.strerror or e})") from None
    if p.is_dir():
        raise InputError(f"image {p} is a directory, not an image file")
    if st.st_size == 0:
        raise InputError(f"image {p} is empty (0 bytes)")
    if st.st_size > max_bytes:
        raise InputError(f"image {p} is {st.st_size:,} bytes, over the limit of {max_bytes:,}")
    try:
        with open(p, "rb") as f, Image.open(f) as img:  # open() reads the header only
            w, h = img.size
            if w * h > max_pixels:
                raise InputError(f"image {p} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}")
            if w == 0 or h == 0:
                raise InputError(f"image {p} has no pixels ({w}x{h})")
            img.load()  # decode now, inside the try: truncated data raises here
            return _to_gray(ImageOps.exif_transpose(img), Image)
    except InputError:
        raise
    except PermissionError:
        raise InputError(f"image {p}: permission denied") from None
    except UnidentifiedImageError:
        raise InputError(f"image {p} is not an image Pillow can read (PNG, JPEG, BMP, GIF, TIFF, WebP...)") from None
    except Image.DecompressionBombError as e:
        raise InputError(f"image {p} is over Pillow's decompression-bomb limit ({e})") from None
    except (OSError, SyntaxError, ValueError, EOFError) as e:  # truncated or corrupt data
        raise InputError(f"image {p} is corrupt or truncated ({e})") from None


def _to_gray(img, Image) -> np.ndarray:
    """A Pillow image -> float32 [H, W] in [0, 255], transparency flattened (see the module docstring)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: scale to 0-255 if it uses the range
        arr = np.asarray(img, dtype=np.float64)
        return (arr / 257.0 if arr.max() > 255 else arr).clip(0, 255).astype(np.float32)
    if img.mode == "F":
        arr = np.asarray(img, dtype=np.float64)
        hi = 1.0 if arr.max() <= 1.0 else 255.0
        return (np.nan_to_num(arr) / hi * 255.0).clip(0, 255).astype(np.float32)
    has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in img.info
    if not has_alpha:
        return np.asarray(img.convert("L"), dtype=np.float32)
    la = np.asarray(img.convert("LA"), dtype=np.float32)
    gray, alpha = la[..., 0], la[..., 1] / 255.0
    if alpha.min() >= 1.0:
        return gray
    weight = alpha.sum()
    ink_is_dark = weight == 0 or (gray * alpha).sum() / weight < 128.0
    background = 255.0 if ink_is_dark else 0.0
    return gray * alpha + background * (1.0 - alpha)


def normalize_digit(gray, *, source: str = "image") -> np.ndarray:
    """A 2-D grey image (uint8, or floats in [0, 255]) of one digit -> MNIST-style uint8 [28, 28].

    Dark-on-light or light-on-dark, any size and position; see the module docstring for the steps.
    Needs Pillow (for the anti-aliased resize).
    """
    Image = _pil()[0]
    g = np.asarray(gray, dtype=np.float64)
    if g.ndim != 2 or min(g.shape) == 0:
        raise InputError(f"{source}: expected a 2-D grey image, got shape {g.shape}")
    if not np.isfinite(g).all():
        raise InputError(f"{source}: grey levels must be finite")
    ring = np.concatenate([g[0], g[-1], g[1:-1, 0], g[1:-1, -1]])
    if np.median(ring) > 127.5:  # light background: invert so ink is bright, as MNIST stores it
        g, ring = 255.0 - g, 255.0 - ring
    bg = float(np.median(ring))
    spread = 1.4826 * float(np.median(np.abs(ring - bg)))  # robust standard deviation of the background
    floor = bg + NOISE_SIGMAS * spread
    peak = float(g.max())
    if peak - max(floor, bg) < MIN_CONTRAST:
        raise InputError(f"{source}: no digit found (ink is less than {MIN_CONTRAST:g} grey levels from the "
                         f"background {bg:.0f}; is the image blank?)")
    ink = np.clip((g - floor) / (peak - floor), 0.0, 1.0) * 255.0  # background 0, brightest ink 255
    # A clean background (MNIST, drawings): every ink pixel is the digit. A noisy one (photos): faint
    # specks must not stretch the box, so only ink of at least a quarter of full strength counts.
    top, bottom, left, right = _ink_box(ink, 0.0 if spread == 0 else 0.25 * 255.0)
    crop = ink[top:bottom, left:right]
    h, w = crop.shape
    scale = BOX / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) != (h, w):
        # Pillow's "F" mode resizes float32; bilinear widens its support when shrinking (anti-aliasing).
        small = Image.fromarray(crop.astype(np.float32)).resize((nw, nh), Image.Resampling.BILINEAR)
        crop = np.asarray(small, dtype=np.float64).clip(0.0, 255.0)
    total = crop.sum()
    if total <= 0:
        raise InputError(f"{source}: no digit found after resizing (the ink is too thin or faint)")
    cy = (crop.sum(axis=1) * np.arange(nh)).sum() / total
    cx = (crop.sum(axis=0) * np.arange(nw)).sum() / total
    top = min(max(int(np.floor(CENTER - cy + 0.5)), 0), SIDE - nh)  # round half up, kept inside 28x28
    left = min(max(int(np.floor(CENTER - cx + 0.5)), 0), SIDE - nw)
    out = np.zeros((SIDE, SIDE), np.float64)
    out[top:top + nh, left:left + nw] = crop
    return np.rint(out).clip(0, 255).astype(np.uint8)


def _ink_box(ink: np.ndarray, level: float) -> tuple[int, int, int, int]:
    """(top, bottom, left, right), exclusive ends: the box of the digit's ink (> ``level``), without specks.

    Start from the box of strong ink (at least half the brightest) and widen it on each side while there
    is ink within ``gap`` pixels of that side: a digit's faint anti-aliased edges and detached pieces
    are kept (MNIST counts them in its 20-pixel boxes: on its test set such pieces lie up to 7 pixels
    from the strong strokes), while specks farther away in a photo do not inflate the box and shrink
    the digit. ``gap`` is 40% of the strong box's larger side (at least 2 pixels).
    """
    strong = ink >= 127.5
    rows, cols = np.flatnonzero(strong.any(axis=1)), np.flatnonzero(strong.any(axis=0))
    t, b, left, r = int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1
    gap = max(2, round(0.4 * max(b - t, r - left)))
    h, w = ink.shape
    mask = ink > level
    while True:
        lo, hi = max(left - gap, 0), min(r + gap, w)
        above = np.flatnonzero(mask[max(t - gap, 0):t, lo:hi].any(axis=1))
        below = np.flatnonzero(mask[b:min(b + gap, h), lo:hi].any(axis=1))
        lo, hi = max(t - gap, 0), min(b + gap, h)
        before = np.flatnonzero(mask[lo:hi, max(left - gap, 0):left].any(axis=0))
        after = np.flatnonzero(mask[lo:hi, r:min(r + gap, w)].any(axis=0))
        box = (t - (min(t, gap) - above[0]) if above.size else t,
               b + below[-1] + 1 if below.size else b,
               left - (min(left, gap) - before[0]) if before.size else left,
               r + after[-1] + 1 if after.size else r)
        if box == (t, b, left, r):
            return box
        t, b, left, r = box
