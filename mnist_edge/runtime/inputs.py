"""Turn what a caller passes to ``predict`` into the model's input: uint8 [N, 1, 28, 28], C-contiguous.

The rules (also in ``Classifier.predict``'s docstring):
- uint8: used as is; 0 is background, 255 ink, as MNIST stores pixels.
- float16/32/64: pixels in **[0, 1]** (what ``ToTensor``-style pipelines produce), converted with
  ``round(x * 255)``. Values outside [0, 1] (beyond 1e-6 of rounding slack) are an InputError, so an
  array in 0-255 floats is refused with a hint rather than silently saturated; NaN and Inf are an
  InputError, never a label (onnxruntime would answer class 0 for NaN).
- other integer types (int8..int64, uint16..uint64): accepted when every value is in [0, 255], converted
  exactly; anything else is an InputError naming the range found.
- bool, complex, object, strings: InputError naming the accepted dtypes (a bool mask is ambiguous:
  pass ``mask.astype(np.uint8) * 255``).
- lists, tuples and other array-likes go through ``np.asarray`` and then the same rules.
- shapes (28, 28) (one image), (N, 28, 28) and (N, 1, 28, 28); anything else is an InputError naming
  the shape. N may be 0: the empty batch gives an empty result.
- non-contiguous, Fortran-ordered and read-only arrays give the same result as a contiguous copy.
"""

from __future__ import annotations

import numpy as np

from mnist_edge.errors import InputError

SIDE = 28
ACCEPTED_SHAPES = "(28, 28), (N, 28, 28) or (N, 1, 28, 28)"
ACCEPTED_DTYPES = "uint8 (0-255), float16/32/64 in [0, 1], or another integer type with values in 0-255"
FLOAT_SLACK = 1e-6


def as_batch(images) -> np.ndarray:
    """``images`` -> uint8 [N, 1, 28, 28], C-contiguous; InputError when the rules above refuse it."""
    if isinstance(images, np.ndarray):
        arr = images
    else:
        try:
            arr = np.asarray(images)
        except (ValueError, TypeError) as e:  # ragged nested lists
            raise InputError(f"cannot read the input as an array ({e}); expected {ACCEPTED_SHAPES}") from None
    shape = arr.shape
    if shape == (SIDE, SIDE):
        arr = arr[None, None]
    elif arr.ndim == 3 and shape[1:] == (SIDE, SIDE):
        arr = arr[:, None]
    elif not (arr.ndim == 4 and shape[1:] == (1, SIDE, SIDE)):
        hint = ""
        if arr.ndim in (3, 4) and shape[-1] in (3, 4):
            hint = " (colour images: convert to grayscale first, or use load_image() on the file)"
        elif arr.ndim >= 2 and shape[-2:] != (SIDE, SIDE):
            hint = " (other sizes: use normalize_digit() to fit the digit into 28x28 as MNIST does)"
        raise InputError(f"input shape {shape} is not {ACCEPTED_SHAPES}{hint}")
    return np.ascontiguousarray(_to_uint8(arr))


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    kind = arr.dtype.kind
    if arr.dtype == np.uint8:
        return arr
    if kind == "f":
        if arr.size == 0:
            return arr.astype(np.uint8)
        finite = np.isfinite(arr)
        if not finite.all():
            bad = arr[~finite]
            n_nan = int(np.isnan(bad).sum())
            raise InputError(f"input has {n_nan} NaN and {bad.size - n_nan} infinite value(s); pixels must be "
                             f"finite ({ACCEPTED_DTYPES})")
        lo, hi = float(arr.min()), float(arr.max())
        if lo < -FLOAT_SLACK or hi > 1 + FLOAT_SLACK:
            hint = "; for 0-255 pixels pass uint8 (images.astype(np.uint8))" if hi <= 255 and lo >= 0 else ""
            raise InputError(f"float pixels must be in [0, 1]; this {arr.dtype} input ranges over "
                             f"[{lo:g}, {hi:g}]{hint}")
        # float64 math so that x * 255 rounds the same whatever the input precision
        return np.rint(np.clip(arr.astype(np.float64), 0.0, 1.0) * 255.0).astype(np.uint8)
    if kind in "iu":
        if arr.size:
            lo, hi = int(arr.min()), int(arr.max())
            if lo < 0 or hi > 255:
                raise InputError(f"integer pixels must be in 0-255; this {arr.dtype} input ranges over "
                                 f"[{lo}, {hi}]")
        return arr.astype(np.uint8)
    if kind == "b":
        raise InputError(f"bool input is ambiguous; expected {ACCEPTED_DTYPES} "
                         "(for a mask: mask.astype(np.uint8) * 255)")
    raise InputError(f"input dtype {arr.dtype} is not accepted; expected {ACCEPTED_DTYPES}")
