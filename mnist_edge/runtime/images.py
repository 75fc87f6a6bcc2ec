"""Digits from image files (PNG, JPEG, ... through Pillow) normalized the way MNIST normalized its own.

Pillow is the optional extra ``images`` (install the wheel with ``[images]``), imported only when a file is
read or a digit normalized. MNIST's recipe (LeCun et al.): the digit is size-normalized to fit a 20x20
box keeping its aspect ratio (anti-aliased, hence grey levels), then placed in 28x28 so that its centre
of mass is at the centre. Measured on the 10k MNIST test digits: the larger side of the ink's bounding
box is 20 pixels for 9,997 of them (19 for 3) and the centre of mass, in array-index coordinates, lies in
[13.5, 14.5] on both axes, i.e. it rounds to pixel (14, 14). We reproduce exactly that, so an MNIST digit
written to PNG and read back comes out (nearly) unchanged, and a photographed or drawn digit looks like
an MNIST one:

1. grayscale (ITU-R 601 luma); transparency is flattened onto white when the visible strokes are dark,
   onto black when they are light; a phone photo's EXIF orientation is applied; an image over 1000
   pixels on a side is averaged over blocks down to that;
2. polarity: the median of the outermost ring of pixels; a light one (> 127.5) is inverted, so ink is
   bright on black as in MNIST;
3. paper: the ring's median when at least half the ring has exactly that value (MNIST, drawings, paper
   clipped at white), else a plane through the ring (slopes from the medians of opposite sides), so a
   lighting gradient is taken out; ink = image - paper;
4. noise: the ring of the ink averaged over boxes of ~1/100 of the image (at least 3x3) gives the
   paper's level and robust deviation (1.4826 * MAD). None (MNIST, drawings): every pixel above the paper
   is ink, stretched so the brightest is 255 (MNIST digits come out unchanged but for that stretch,
   which moves a pixel by at most 1 level). Noisy (scans, photos): the digit is grown from strong ink
   (8 deviations above the paper and half the strongest, in the averaged image) through pixels 3
   deviations above it (hysteresis); isolated specks stay out and faint stroke edges stay in, and the
   digit's 99th-percentile pixel becomes 255 instead of a single noisy maximum. On synthesized scans
   (tests/test_images.py) this keeps the committed models' accuracy where clean renders have it for
   white paper with sensor noise clipped at white, grey paper, lighting gradients and JPEG;
5. crop to the digit's box: the box of strong ink, widened while more ink lies within 40% of its size
   (detached pieces and soft edges count, as in MNIST's boxes; specks farther away do not; on a noisy
   background only ink of at least a quarter strength counts); resize it
   (bilinear, anti-aliased when shrinking) so its larger side is 20 pixels, and paste it at the integer
   offset that puts the centre of mass nearest (14, 14), moved back inside the 28x28 field if the digit
   would overflow it.

An image whose ink is fainter than 32 grey levels above its paper (or, when noisy, than 8 deviations of the
noise) is refused as blank, the message giving the paper's grey level as it is in the file. Files are
refused before decoding when they exceed ``max_pixels`` (default 40 megapixels), ``max_bytes`` or
``max_decoded_bytes``; see :func:`read_gray` for what else guards the decoder.
"""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np

from mnist_edge.errors import InputError, first_line
from mnist_edge.files import FileTooLargeError, describe_os_error, read_regular

BOX = 20  # MNIST fits the digit into a 20x20 box
SIDE = 28
CENTER = 14.0  # where MNIST's centre of mass lands, in array-index coordinates
MAX_SIDE = 1000  # larger images are block-averaged down to this first
SMOOTH_DIVISOR = 100  # noise is judged on the image averaged over boxes of about 1/100 of its size
SEED_SIGMAS = 8.0  # strong ink: this many robust deviations of the smoothed paper above it...
LOW_SIGMAS = 3.0  # ...and the digit grows from it through pixels this far above the paper
MIN_CONTRAST = 32.0  # grey levels of ink above the background below which an image counts as blank
MAX_PIXELS = 40_000_000
MAX_BYTES = 64 * 1024 * 1024
MAX_DECODED_BYTES = 96 * 1024 * 1024  # a 24-megapixel RGB image; bounds what one file can make us allocate
WORK_SIDE = 2048  # larger decoded images are box-reduced to this many pixels a side before the float work
# Float images (Pillow mode "F", e.g. a float32 TIFF) carry no scale: values below FLOAT_255_FROM are read
# as 0..1, larger ones as 0..255 grey levels. Between 1 and 2 neither fits (as 0..255 it is blank, as 0..1
# out of range), so it is refused; FLOAT_ROUNDING (relative to the range) is allowed beyond either end.
FLOAT_255_FROM = 2.0
FLOAT_ROUNDING = 1e-6
# The Pillow formats we decode: common for photos, scans and drawings, with well-exercised decoders.
FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")


def _pil():
    try:
        from PIL import Image, ImageOps, UnidentifiedImageError
    except ImportError:
        from mnist_edge.system.extras import install_hint

        raise InputError(f"reading image files needs Pillow, the optional extra 'images': {install_hint('images')}"
                         ) from None
    return Image, ImageOps, UnidentifiedImageError


def load_image(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """The digit in image file ``path`` as an MNIST-style uint8 [28, 28] array (see the module docstring)."""
    return normalize_digit(read_gray(path, max_pixels=max_pixels, max_bytes=max_bytes), source=str(path))


def load_resized(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES) -> np.ndarray:
    """The image file ``path`` in grey, plainly resized to uint8 [28, 28] (no MNIST-style centring or
    inversion): what a model that is not a one-channel digit model is fed."""
    Image, _, _ = _pil()
    gray = read_gray(path, max_pixels=max_pixels, max_bytes=max_bytes)
    small = Image.fromarray(gray.astype(np.float32)).resize((SIDE, SIDE), Image.Resampling.BILINEAR)
    return np.clip(np.rint(np.asarray(small, np.float32)), 0, 255).astype(np.uint8)


def load_images(paths, **limits) -> np.ndarray:
    """:func:`load_image` for each path: uint8 [N, 28, 28]; the first bad file raises, naming it."""
    out = [load_image(p, **limits) for p in paths]
    return np.stack(out) if out else np.zeros((0, SIDE, SIDE), np.uint8)


def read_gray(path: str | os.PathLike, *, max_pixels: int = MAX_PIXELS, max_bytes: int = MAX_BYTES,
              max_decoded_bytes: int = MAX_DECODED_BYTES) -> np.ndarray:
    """Decode ``path`` to float32 [H, W] grey levels in [0, 255]; InputError naming the file if it cannot.

    Safety of the decoder (hostile or careless files): only the formats in :data:`FORMATS` are opened
    (no EPS, which would run Ghostscript, no JPEG 2000 or AVIF, whose decoders failed on fuzzed input
    with MemoryError and RuntimeError); the file is read once, bounded by ``max_bytes``, and must be a
    regular file (a FIFO or device is refused, never read); the header's size is checked against
    ``max_pixels`` and its decoded size against ``max_decoded_bytes`` before anything is decoded (JPEGs
    are decoded at a reduced scale when that is enough); a decoded image larger than :data:`WORK_SIDE`
    on a side is box-reduced before the float work, which bounds peak memory; and every decoder failure,
    whatever Pillow's plugin raised, is an InputError.
    """
    Image, ImageOps, UnidentifiedImageError = _pil()
    if not os.fspath(path).strip():
        raise InputError(f"image path {os.fspath(path)!r} is empty; give an image file")
    p = Path(path)
    if p.is_dir():
        raise InputError(f"image {p} is a directory, not an image file")
    try:
        data = read_regular(p, max_bytes)
    except FileNotFoundError:
        raise InputError(f"image {p}: no such file") from None
    except FileTooLargeError:
        size = f"{p.stat().st_size:,} bytes" if p.is_file() else f"more than {max_bytes:,} bytes"
        raise InputError(f"image {p} is {size}, over the limit of {max_bytes:,}") from None
    except OSError as e:
        raise InputError(f"image {p}: {describe_os_error(e)}") from None
    if not data:
        raise InputError(f"image {p} is empty (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Pillow's "possibly corrupt EXIF" and similar: errors decide
            return _decode(data, p, Image, ImageOps, max_pixels, max_decoded_bytes)
    except InputError:
        raise
    except UnidentifiedImageError:
        found = _sniff(data)
        what = f"a {found} file, a format mnist-edge does not decode" if found else "not an image mnist-edge reads"
        raise InputError(f"image {p} is {what}; readable formats: {', '.join(FORMATS)}") from None
    except Image.DecompressionBombError as e:
        raise InputError(f"image {p} is over Pillow's decompression-bomb limit ({e})") from None
    except MemoryError:
        raise InputError(f"image {p}: decoding it needs more memory than is available") from None
    except Exception as e:  # noqa: BLE001 - Pillow's plugins raise OSError, SyntaxError, struct.error,
        # TypeError, RuntimeError... for corrupt data; all of them mean "this file cannot be decoded"
        text = first_line(e, 200)
        raise InputError(f"image {p} is corrupt or truncated ({type(e).__name__}: {text})") from None


def _decode(data: bytes, p: Path, Image, ImageOps, max_pixels: int, max_decoded_bytes: int) -> np.ndarray:
    with Image.open(io.BytesIO(data), formats=FORMATS) as img:  # open() reads the header only
        w, h = img.size
        if w * h > max_pixels:
            raise InputError(f"image {p} is {w}x{h} = {w * h:,} pixels, over the limit of {max_pixels:,}")
        if w == 0 or h == 0:
            raise InputError(f"image {p} has no pixels ({w}x{h})")
        if img.format == "JPEG" and max(w, h) > WORK_SIDE:
            img.draft(img.mode, (min(w, WORK_SIDE), min(h, WORK_SIDE)))  # DCT scaling: 1/2..1/8 decoded
        dw, dh = img.size
        # Pillow keeps one pointer per row besides the pixels: a 1 x 40,000,000 PNG (39 kB on disk) needs
        # 320 MB of row pointers for 40 MB of pixels, so rows count too.
        decoded = dh * (dw * _BYTES_PER_PIXEL.get(img.mode, 4) + 8)
        if decoded > max_decoded_bytes:
            raise InputError(f"image {p} is {w}x{h} {img.mode}: {decoded:,} bytes decoded, over the limit of "
                             f"{max_decoded_bytes:,}")
        img.load()  # decode now, inside the caller's try: truncated or corrupt data raises here
        factor = -(-max(img.size) // WORK_SIDE)
        if factor > 1:  # box-average down to at most WORK_SIDE a side: bounds the float work that follows
            if img.mode in ("1", "P") or img.mode.startswith("I;16"):
                img = img.convert("RGBA" if img.mode == "P" else "I" if img.mode.startswith("I;16") else "L")
            img = img.reduce(factor)
        return _to_gray(ImageOps.exif_transpose(img), Image, source=f"image {p}")


# How Pillow stores a decoded pixel of each mode (RGB is padded to 4 bytes); unknown modes count 4.
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "I;16": 2, "I;16B": 2, "I;16L": 2, "I": 4, "F": 4}
_MAGIC = ((b"%!PS", "PostScript/EPS"), (b"\xc5\xd0\xd3\xc6", "EPS"), (b"%PDF", "PDF"),
          (b"\xff\x4f\xff\x51", "JPEG 2000"), (b"\x00\x00\x00\x0cjP  ", "JPEG 2000"))


def _sniff(data: bytes) -> str | None:
    """The name of a well-known format we refuse, for the error message (never used to decode)."""
    for magic, name in _MAGIC:
        if data.startswith(magic):
            return name
    if data[4:8] == b"ftyp":
        brand = data[8:12]
        return "AVIF" if brand in (b"avif", b"avis") else "HEIF" if brand in (b"heic", b"heix", b"mif1") else None
    return None


def _to_gray(img, Image, source: str = "image") -> np.ndarray:
    """A Pillow image -> float32 [H, W] in [0, 255], transparency flattened (see the module docstring)."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):  # 16/32-bit grey: scale to 0-255 if it uses the range
        arr = np.asarray(img, dtype=np.float64)
        return (arr / 257.0 if arr.max() > 255 else arr).clip(0, 255).astype(np.float32)
    if img.mode == "F":
        return _float_gray(np.asarray(img, dtype=np.float64), source)
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


def _float_gray(arr: np.ndarray, source: str) -> np.ndarray:
    """A float image -> float32 grey levels in [0, 255]; InputError for NaN/Inf or values outside its range
    (NaN once became 0, a confident wrong label; one 1.0001 in a 0..1 image made it read as a blank 0..255)."""
    finite = np.isfinite(arr)
    if not finite.all():
        raise InputError(f"{source} has NaN or infinite values ({int((~finite).sum()):,} of {arr.size:,} pixels); "
                         "a float image must be finite")
    lo, hi = float(arr.min()), float(arr.max())
    top = 1.0 if hi < FLOAT_255_FROM else 255.0
    slack = FLOAT_ROUNDING * top
    if lo < -slack or hi > top + slack:
        value = lo if lo < -slack else hi
        raise InputError(f"{source}: float value {value:.6g} lies outside 0..{top:g} (float images are read as 0..1 "
                         f"when all values are below {FLOAT_255_FROM:g}, else as 0..255, each within "
                         f"{FLOAT_ROUNDING:g} of the range for rounding)")
    return (arr / top * 255.0).clip(0, 255).astype(np.float32)


def normalize_digit(gray, *, source: str = "image") -> np.ndarray:
    """A 2-D grey image (uint8, or floats in [0, 255]) of one digit -> MNIST-style uint8 [28, 28].

    Dark-on-light or light-on-dark, any size and position, clean or a noisy scan; see the module docstring
    for the steps. Needs Pillow (for the anti-aliased resize).
    """
    Image = _pil()[0]
    g = np.asarray(gray, dtype=np.float64)
    if g.ndim != 2 or min(g.shape) == 0:
        raise InputError(f"{source}: expected a 2-D grey image, got shape {g.shape}")
    if not np.isfinite(g).all():
        raise InputError(f"{source}: grey levels must be finite")
    g = _shrink(g)
    inverted = _median(_ring(g)) > 127.5
    if inverted:  # light background: invert so ink is bright, as MNIST stores it
        g = 255.0 - g
    r = g - _background(g)  # ink above the paper, with a lighting gradient taken out
    smooth = _box_mean(r, max(1, round(max(g.shape) / SMOOTH_DIVISOR)))
    ring = _ring(smooth)
    bg = _median(ring)
    spread = 1.4826 * _median(np.abs(ring - bg))  # robust standard deviation of the smoothed paper
    paper = _median(_ring(g))
    paper = 255.0 - paper if inverted else paper
    if spread == 0:  # a clean background (MNIST, drawings): every pixel above it is ink
        peak = float(r.max())
        if peak < MIN_CONTRAST:
            raise InputError(f"{source}: no digit found (no ink {MIN_CONTRAST:g} grey levels from the "
                             f"background {paper:.0f}; is the image blank?)")
        ink = np.clip(r / peak, 0.0, 1.0) * 255.0  # background 0, brightest ink 255
    else:  # at least one grey level: 8-bit rounding of a lighting gradient is not noise to grow through
        ink = _noisy_ink(r, smooth, bg, max(spread, 1.0), source=source, paper=paper)
    # A clean background: every ink pixel is the digit's. A noisy one: the grown digit carries a faint
    # rim of noise, so only ink of at least a quarter strength sets the box (0.88 -> 0.95 mean correlation
    # with the MNIST originals on the synthesized scans).
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


def _noisy_ink(r, smooth, bg, spread, *, source, paper) -> np.ndarray:
    """Ink in [0, 255] of a noisy image: strokes grown from strong ink through the smoothed image.

    ``smooth`` is ``r`` averaged over a box; its paper has median ``bg`` and robust deviation ``spread``.
    Seeds: smoothed ink well above the noise and at least half the strongest; the digit is every pixel
    connected to a seed (4-neighbours) whose smoothed value is ``LOW_SIGMAS`` deviations above the paper
    (hysteresis, as in edge detectors): faint parts of a stroke stay, isolated specks of noise go.
    Inside the digit the values are those of ``r`` less the paper level, stretched so that the 99th
    percentile of the digit's pixels (not a single noisy maximum) is 255.
    """
    peak = float(smooth.max())
    if peak - bg < max(MIN_CONTRAST, SEED_SIGMAS * spread):
        raise InputError(f"{source}: no digit found (nothing stands {max(MIN_CONTRAST, SEED_SIGMAS * spread):.0f} "
                         f"grey levels out of the noisy background {paper:.0f}; is the image blank?)")
    seeds = smooth >= bg + max(SEED_SIGMAS * spread, 0.5 * (peak - bg))
    digit = _grow(seeds, smooth > bg + LOW_SIGMAS * spread)
    values = np.where(digit, np.maximum(r - bg, 0.0), 0.0)
    inside = np.sort(values[digit])
    top = float(inside[int(0.99 * (len(inside) - 1))])
    if top <= 0:
        raise InputError(f"{source}: no digit found (the ink is too faint for the noise)")
    return np.minimum(values / top, 1.0) * 255.0


def _shrink(g: np.ndarray) -> np.ndarray:
    """An image over ``MAX_SIDE`` pixels averaged over f x f blocks down to at most that (a 12-megapixel
    photo: 4 x 4); the digit is drawn 20 pixels high in the end, and the averaging lowers the noise."""
    f = min(-(-max(g.shape) // MAX_SIDE), min(g.shape))
    if f == 1:
        return g
    h, w = g.shape[0] // f, g.shape[1] // f
    acc = np.zeros((h, w))
    for dy in range(f):  # one slice at a time, in a fixed order (the JavaScript port adds the same way)
        for dx in range(f):
            acc += g[dy:h * f:f, dx:w * f:f]
    return acc / (f * f)


def _ring(a: np.ndarray) -> np.ndarray:
    """The outermost ring of pixels (top row, bottom row, then the side columns without the corners)."""
    return np.concatenate([a[0], a[-1], a[1:-1, 0], a[1:-1, -1]]) if a.shape[0] > 1 else a[0].copy()


def _median(v: np.ndarray) -> float:
    """The median, the middle two averaged as (a + b) / 2 (the JavaScript port does the same)."""
    s = np.sort(np.asarray(v, np.float64).ravel())
    n = len(s)
    return float(s[(n - 1) // 2]) if n % 2 else float((s[n // 2 - 1] + s[n // 2]) / 2)


def _background(g: np.ndarray) -> np.ndarray | float:
    """The paper's grey level: a plane through the ring (uneven lighting), or its median when at least half
    the ring has exactly that value (MNIST, drawings, paper clipped at white)."""
    ring = _ring(g)
    level = _median(ring)
    h, w = g.shape
    if (ring == level).mean() >= 0.5 or h < 3 or w < 3:
        return level
    # Slopes from the medians of opposite sides, then the level that centres the ring (all medians:
    # ink touching the border does not tilt the plane).
    dx = (_median(g[:, -1]) - _median(g[:, 0])) / (w - 1)
    dy = (_median(g[-1]) - _median(g[0])) / (h - 1)
    plane = np.arange(h)[:, None] * dy + np.arange(w)[None, :] * dx
    return plane + _median(ring - _ring(plane))


def _box_mean(a: np.ndarray, radius: int) -> np.ndarray:
    """The mean over a (2 radius + 1)-square box around each pixel (edges replicated), via summed areas."""
    k = 2 * radius + 1
    p = np.pad(a, radius, mode="edge")
    s = np.zeros((p.shape[0] + 1, p.shape[1] + 1))
    s[1:, 1:] = p.cumsum(axis=0).cumsum(axis=1)
    h, w = a.shape
    return (s[k:k + h, k:k + w] - s[:h, k:k + w] - s[k:k + h, :w] + s[:h, :w]) / (k * k)


def _grow(seeds: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """The pixels of ``allowed`` 4-connected to a seed: whole runs along rows, then columns, until stable."""
    m = seeds & allowed
    while True:
        grown = _fill_runs(_fill_runs(m, allowed).T, allowed.T).T
        if (grown == m).all():
            return m
        m = grown


def _fill_runs(m: np.ndarray, allowed: np.ndarray) -> np.ndarray:
    """Every run of ``allowed`` along a row that holds a pixel of ``m``."""
    a = np.pad(allowed, ((0, 0), (0, 1))).ravel()  # a False column: runs never cross rows
    start = a & ~np.concatenate([[False], a[:-1]])
    run = np.cumsum(start) * a  # run number per pixel, 0 outside
    hit = np.zeros(int(run.max()) + 1, bool)
    hit[run[np.pad(m, ((0, 0), (0, 1))).ravel()]] = True
    hit[0] = False
    return hit[run].reshape(allowed.shape[0], -1)[:, :-1]


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
