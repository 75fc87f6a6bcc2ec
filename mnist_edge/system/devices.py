"""Devices: the one registry of what ``--device`` accepts, and its one parser (standard library only).

The runtime (onnxruntime providers), training and the benchmark's torch formats all read ``--device``
through :func:`parse_device`, so the same words mean the same thing everywhere and an unknown one is
refused with the same list of valid ones.
"""

from __future__ import annotations

import re

from mnist_edge.errors import UsageError

# name -> what it means; "cuda:N" picks GPU N
DEVICES: dict[str, str] = {
    "cpu": "the CPU",
    "cuda": "the first CUDA GPU (cuda:N for GPU N); an error where there is none, never a silent CPU run",
    "auto": "CUDA when it really initialises, else the CPU, saying which and why (the runtime only)",
}
VALID = "cpu, cuda, cuda:N (a GPU index), auto"


def parse_device(device, *, allow_auto: bool = True) -> tuple[str, int]:
    """``"cpu" | "cuda" | "cuda:N" | "auto"`` -> (kind, GPU index); anything else is a UsageError naming
    the valid ones. ``allow_auto=False`` where a choice must be explicit (training, torch formats)."""
    text = str(device).strip().lower()
    m = re.fullmatch(r"cuda:(\d+)", text)
    if m:
        return "cuda", int(m.group(1))
    if text in DEVICES and (allow_auto or text != "auto"):
        return text, 0
    valid = VALID if allow_auto else VALID.replace(", auto", "")
    raise UsageError(f"unknown device {device!r}; valid: {valid}")
