"""Lookups on an ONNX graph shared by the float-graph rewrites (:mod:`mnist_edge.int8.rewrites`,
:mod:`mnist_edge.int8.channel_pad`): nodes by recipe selector, a tensor's consumers, an initializer by
name, who makes a tensor, and the error for a selector a rewrite cannot apply to. Needs nothing but the ModelProto.
"""

from __future__ import annotations

from mnist_edge.errors import UsageError


def selector_index(nodes) -> dict[str, int]:
    """``{"MaxPool[0]": index in nodes, ...}`` (the same numbering as quantize.node_selectors)."""
    seen: dict[str, int] = {}
    out = {}
    for i, node in enumerate(nodes):
        k = seen.get(node.op_type, 0)
        seen[node.op_type] = k + 1
        out[f"{node.op_type}[{k}]"] = i
    return out


def producers(nodes) -> dict[str, int]:
    """``{tensor name: index of the node that outputs it}``."""
    return {o: i for i, n in enumerate(nodes) for o in n.output}


def consumers(nodes, name: str) -> list[int]:
    return [i for i, n in enumerate(nodes) if name in n.input]


def initializer(model, name: str):
    for t in model.graph.initializer:
        if t.name == name:
            return t
    return None


def require_valid(option: str, selectors, valid: list[str], what: str) -> None:
    """A UsageError naming the ``selectors`` not in ``valid`` (``what`` they should have been) and the valid ones."""
    bad = [s for s in selectors if s not in valid]
    if bad:
        raise UsageError(f"{option} {', '.join(bad)} is not {what} in this graph; valid: {', '.join(valid) or 'none'}")
