"""What the runtime does with confidence: softmax at a temperature, the temperature a file records, and
the ``min_confidence`` a caller may ask for. numpy only; fitting T and measuring calibration is
:mod:`mnist_edge.evaluate.confidence`."""

from __future__ import annotations

import json
import math

import numpy as np

from mnist_edge.errors import ContractError, UsageError

# Search interval for T: a temperature outside it means the logits are broken, not miscalibrated.
T_MIN, T_MAX = 0.05, 20.0


def softmax(logits, temperature: float = 1.0) -> np.ndarray:
    """softmax(logits / temperature) along the last axis, computed in float64 (returned as float64)."""
    z = np.asarray(logits, dtype=np.float64) / float(temperature)
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def check_min_confidence(value) -> float:
    """``value`` as a float strictly between 0 and 1, else a UsageError naming it."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)) \
            or not math.isfinite(value) or not 0 < value < 1:
        raise UsageError(f"min_confidence (--min-confidence) must be a number strictly between 0 and 1, e.g. 0.9; "
                         f"got {value!r}")
    return float(value)


def temperature_from_metadata(meta: dict, source: str) -> float:
    """The temperature recorded in a model's ``metadata_props`` (1.0 when the key is absent: files
    exported before calibration); a present but malformed record is a ContractError."""
    from mnist_edge.contract import META_KEYS

    raw = meta.get(META_KEYS["temperature"])
    if raw is None:
        return 1.0
    try:
        t = json.loads(raw)["temperature"]
    except (ValueError, KeyError, TypeError):
        raise ContractError(f"{source}: metadata {META_KEYS['temperature']} is not a JSON object with a "
                            f"'temperature': {raw[:80]!r}") from None
    if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not T_MIN <= t <= T_MAX:
        raise ContractError(f"{source}: calibration temperature {t!r} must be a number from {T_MIN} to {T_MAX}")
    return float(t)
