"""Where each node of an onnxruntime session runs: counted from onnxruntime's own profiling record.

``get_providers()`` lists the providers a session *may* use; onnxruntime still assigns single nodes to
the CPU when the preferred provider has no kernel for them, and says so only in a verbose log line
("Some nodes were not assigned to the preferred execution providers...") that our sessions silence. The
session profiler records, for every node it runs, the provider that ran it (``args.provider`` of each
``cat: "Node"`` event named ``<node>_kernel_time``). :func:`measure_placement` creates a session with the
runtime's own options plus profiling, runs one blank image, ends profiling (later runs are not profiled)
and counts those events. Nodes that onnxruntime folded away at load time do not run and are not counted.

Strict mode is onnxruntime's ``session.disable_cpu_ep_fallback`` (see ``session.create_session``): with it,
creating a session fails when any node would be assigned to the CPU provider. It only has a meaning for a
device other than the CPU.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections import Counter

import numpy as np

from mnist_edge.errors import DeviceError

SHORT = {"CPUExecutionProvider": "CPU", "CUDAExecutionProvider": "CUDA", "TensorrtExecutionProvider": "TensorRT",
         "AzureExecutionProvider": "Azure"}


def placement_from_profile(events) -> dict:
    """``{"nodes": {provider: count}, "ops": {provider: {op: count}}, "total"}`` from profiling events."""
    by_node = {}
    for e in events if isinstance(events, list) else []:
        if not isinstance(e, dict) or e.get("cat") != "Node" or not str(e.get("name", "")).endswith("_kernel_time"):
            continue
        args = e.get("args") or {}
        # one event per node per run; key by node name so a second run is not counted twice
        by_node[e["name"]] = (str(args.get("provider", "unknown")), str(args.get("op_name", "?")))
    nodes = Counter(p for p, _ in by_node.values())
    ops: dict = {}
    for provider, op in by_node.values():
        ops.setdefault(provider, Counter())[op] += 1
    return {"nodes": dict(nodes), "ops": {p: dict(c) for p, c in ops.items()}, "total": sum(nodes.values())}


def summary(placement: dict | None) -> str:
    """``"21 CUDA + 2 CPU nodes"`` (empty for None)."""
    if not placement or not placement.get("nodes"):
        return ""
    parts = sorted(placement["nodes"].items(), key=lambda kv: (kv[0] == "CPUExecutionProvider", -kv[1]))
    return " + ".join(f"{n} {SHORT.get(p, p)}" for p, n in parts) + " nodes"


def fallback_nodes(placement: dict, provider: str) -> dict:
    """{op: count} of the nodes that ran on any provider other than ``provider`` (the one asked for)."""
    out: Counter = Counter()
    for p, ops in (placement.get("ops") or {}).items():
        if p != provider:
            out.update(ops)
    return dict(out)


def measure_placement(data: bytes, *, source: str, device: str = "cpu", threads: int | None = None,
                      strict: bool = False) -> dict:
    """Node placement of model bytes ``data`` on ``device``, with the runtime's session options (one run).

    Returns :func:`placement_from_profile`'s dict plus ``"device"`` and ``"provider"`` (the session's first
    provider). The profile file goes to a temporary folder that is removed.
    """
    from mnist_edge.runtime.session import create_session

    with tempfile.TemporaryDirectory(prefix="mnist-edge-placement-") as tmp:
        session, used, _ = create_session(data, source=source, device=device, threads=threads, strict=strict,
                                          profile_prefix=os.path.join(tmp, "placement"))
        session.run(None, {"image": np.zeros((1, 1, 28, 28), np.uint8)})
        path = session.end_profiling()
        try:
            with open(path, encoding="utf-8") as f:
                events = json.load(f)
        except (OSError, ValueError) as e:
            raise DeviceError(f"{source}: onnxruntime's profile of the placement run is unreadable ({e})") from None
    out = placement_from_profile(events)
    out.update(device=used, provider=session.get_providers()[0])
    return out


def check_strict(placement: dict, source: str) -> None:
    """DeviceError when any node ran on a provider other than the session's first (belt and braces:
    onnxruntime's own strict option already refuses such a session at creation)."""
    fell = fallback_nodes(placement, placement["provider"])
    if fell:
        ops = ", ".join(f"{op} x{n}" for op, n in sorted(fell.items()))
        raise DeviceError(f"{source}: strict device placement: {sum(fell.values())} node(s) did not run on "
                          f"{placement['provider']} ({ops})")
