"""Running torch models on the contract's uint8 batches: TorchScript files we wrote, EdgeModels, thread count,
the device, its name and whether it computes bf16.

Below the export and the benchmark (both use it, as do the self-test and verify); torch is imported inside
the functions. torch 2.13 marks ``torch.jit.load`` deprecated; TorchScript is still what the project
ships, so the warning is silenced here (and in the export) rather than shown to every user.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings

import numpy as np

EXTRA_FILE = "mnist_edge.json"  # contract metadata stored inside the .pt archive (torch.jit _extra_files)


@contextlib.contextmanager
def _no_jit_deprecation():
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit\.\w+` is deprecated", category=DeprecationWarning)
        yield


def load_torchscript(source):
    """Load a TorchScript file we wrote, from a path or its bytes (call only after its hash matched:
    TorchScript files are code). Returns (module in eval mode, the metadata dict stored with it)."""
    import torch

    with _no_jit_deprecation():
        extra = {EXTRA_FILE: ""}
        f = io.BytesIO(source) if isinstance(source, bytes) else os.fspath(source)
        module = torch.jit.load(f, map_location="cpu", _extra_files=extra)
    return module.eval(), json.loads(extra[EXTRA_FILE] or "{}")


def torch_logits(module, images: np.ndarray, batch_size: int) -> np.ndarray:
    """Logits float32 [N, classes] of an EdgeModel or its TorchScript, ``batch_size`` images per call."""
    import torch

    images = np.ascontiguousarray(images)
    x = torch.from_numpy(images if images.flags.writeable else images.copy())  # torch warns on read-only arrays
    parts = []
    with _no_jit_deprecation(), torch.inference_mode():
        for start in range(0, len(images), batch_size):
            parts.append(module(x[start:start + batch_size])[0].numpy())
    return np.concatenate(parts).astype(np.float32, copy=False) if parts else np.zeros((0, 10), np.float32)


SPIN_COUNT = "20000"  # GOMP_SPINCOUNT: how long an idle OpenMP thread spins before it sleeps


def bounded_openmp_spin() -> bool:
    """Let OpenMP's idle threads spin only briefly, then sleep (``GOMP_SPINCOUNT=20000``), unless the user
    set ``GOMP_SPINCOUNT`` or ``OMP_WAIT_POLICY``; True when it took effect. Must run before torch loads
    OpenMP (its first import).

    With libgomp's default, torch's worker threads spin long between operations. On a machine shared with
    other jobs a spinning thread holds a core another job needs, and the thread it waits for gets no time:
    one 6,000-image epoch of cnn_small_1conv took 49.8 s with 2 threads against 2.3 s with threads that
    never spin (OMP_WAIT_POLICY=PASSIVE) and 1.5-1.7 s with this bounded spin, on 2 cores with two other
    CPU-bound processes. Never spinning costs 10-30% on a quiet machine (a bn_cnn epoch: 9.9-12.6 s against
    8.0-9.3 s spinning briefly); the bounded spin keeps the quiet machine's speed.
    """
    import sys

    if "torch" in sys.modules or "OMP_WAIT_POLICY" in os.environ or "GOMP_SPINCOUNT" in os.environ:
        return False
    os.environ["GOMP_SPINCOUNT"] = SPIN_COUNT
    return True


TRIM_THRESHOLD = 1 << 30  # bytes of freed heap glibc may keep instead of handing back to the kernel
MMAP_THRESHOLD = 32 << 20  # allocations up to this size come from the heap, not from fresh mmap pages


def keep_freed_memory() -> bool:
    """Let glibc's malloc reuse the memory torch frees instead of returning it to the kernel; True when it
    took effect (Linux with glibc, and the user set no malloc tuning of their own).

    A training step allocates and frees the same activation buffers, hundreds of kB to a few MB each, every
    step. With glibc's default (adaptive) thresholds many of them are mmap'ed fresh or trimmed away on free,
    so each step touches new pages and the kernel zero-fills them again: 3.1-6.2 million page faults in
    a 20-32 s run of cnn_small_1conv's fast recipe, 1.4 million in lenet5_mod's. With freed memory kept (these two
    ``mallopt`` settings, the same as ``GLIBC_TUNABLES=glibc.malloc.mmap_threshold=...:trim_threshold=...``)
    both ran with about 100,000. The process keeps its peak heap until it exits, which for training is
    what it holds at every step anyway. Numerics are unchanged.
    """
    import ctypes
    import sys

    if not sys.platform.startswith("linux") or any(
            k in os.environ for k in ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_")) \
            or "glibc.malloc" in os.environ.get("GLIBC_TUNABLES", ""):
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # glibc only: musl's mallopt does nothing
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # <malloc.h>
    return bool(mallopt(m_mmap_threshold, MMAP_THRESHOLD)) and bool(mallopt(m_trim_threshold, TRIM_THRESHOLD))


def torch_outputs(module, images: np.ndarray, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """(logits, probabilities), float32 [N, 10] each, of an EdgeModel or its TorchScript."""
    import torch

    x = torch.from_numpy(np.array(images))  # a writable copy: torch warns on read-only arrays
    with _no_jit_deprecation(), torch.inference_mode():
        parts = [module(x[start:start + batch_size]) for start in range(0, len(images), batch_size)]
    return tuple(torch.cat([p[i] for p in parts]).numpy() for i in range(2))


@contextlib.contextmanager
def torch_threads(n: int):
    """Temporarily run torch with ``n`` intra-op threads (restored afterwards).

    One thread for the gates: at batch 1 and 7 these models spend their time in per-op overhead, and on a
    2-core machine shared with another job two OpenMP threads made batch-1 loops up to 100x slower.
    """
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def torch_device(device):
    """A torch.device for ``device`` (cpu, cuda, cuda:N); DeviceError when torch sees no CUDA GPU."""
    import torch

    from mnist_edge.errors import DeviceError

    from mnist_edge.system.devices import parse_device

    kind, index = parse_device(device, allow_auto=False)
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        raise DeviceError(f"--device {device}: this torch ({torch.__version__}) sees no CUDA GPU; use --device cpu "
                          "or install a CUDA build of torch")
    return torch.device("cuda", index)


def bf16_autocast(recipe, dev) -> tuple[bool, str]:
    """(whether to train under bf16 autocast, why): the recipe asks for it and the device computes bf16 in
    hardware. Weights, optimizer state and the loss stay float32; evaluation runs in float32."""
    import torch

    if not recipe.bf16:
        return False, "the recipe trains in float32"
    if dev.type == "cuda":
        ok = torch.cuda.is_bf16_supported()
        return ok, f"{torch.cuda.get_device_name(dev)} {'supports' if ok else 'lacks'} bf16"
    if dev.type != "cpu":
        return False, f"no bf16 autocast on {dev.type}"
    from mnist_edge.system.machine import native_bf16

    ok, why = native_bf16()
    return ok, why + ("" if ok else "; training in float32, slower than the recipe's measured time")


def device_name(dev) -> str:
    """The GPU's name for a CUDA device, else the CPU model (what a checkpoint records it trained on)."""
    import torch

    from mnist_edge.system.machine import cpu_model

    return torch.cuda.get_device_name(dev) if dev.type == "cuda" else cpu_model()
