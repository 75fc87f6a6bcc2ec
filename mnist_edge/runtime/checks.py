"""Check at load that a model follows our contract (mnist_edge.contract), so nothing fails at first predict.

Two sources, both checked: the model's own ``metadata_props`` (what the exporter says it wrote) and the
session's real inputs and outputs (what onnxruntime will actually run). Every problem found is listed in
one ContractError, so a user fixing a foreign model sees them all at once.
"""

from __future__ import annotations

import json

from mnist_edge import contract as C
from mnist_edge.errors import ContractError

EXPORT_HINT = "export it with `mnist-edge export`, which writes the contract into the model's metadata"


def _json(meta: dict, key: str, problems: list):
    raw = meta.get(C.META_KEYS[key])
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        problems.append(f"metadata {C.META_KEYS[key]} is not JSON: {raw[:80]!r}")
        return None


def check_metadata(meta: dict, source: str) -> dict:
    """Validate the contract keys of ``meta``; returns the parsed values (labels, input, ...)."""
    missing = [C.META_KEYS[k] for k in C.REQUIRED_META if C.META_KEYS[k] not in meta]
    if missing:
        raise ContractError(f"{source} lacks the metadata our runtime needs: {', '.join(missing)} "
                            f"(keys present: {', '.join(sorted(meta)) or 'none'}); {EXPORT_HINT}")
    problems: list[str] = []
    version = meta[C.META_KEYS["contract"]]
    if version != C.CONTRACT_VERSION:
        problems.append(f"contract version {version!r}, this runtime reads {C.CONTRACT_VERSION!r}")
    labels = _json(meta, "labels", problems)
    if labels is not None and (not isinstance(labels, list) or not 2 <= len(labels) <= C.MAX_CLASSES
                               or not all(isinstance(x, str) and x for x in labels) or len(set(labels)) != len(labels)):
        problems.append(f"labels must be a list of 2 to {C.MAX_CLASSES} distinct names, got {labels!r:.120}")
    outputs = _json(meta, "outputs", problems)
    if outputs is not None and list(outputs) != list(C.OUTPUT_NAMES):
        problems.append(f"metadata outputs {outputs!r}, expected {list(C.OUTPUT_NAMES)}")
    inp = _json(meta, "input", problems)
    if inp is not None:
        if not isinstance(inp, dict):
            problems.append(f"metadata input must be a JSON object, got {inp!r:.120}")
        else:
            if inp.get("name") != C.INPUT_NAME:
                problems.append(f"metadata input name {inp.get('name')!r}, expected {C.INPUT_NAME!r}")
            if inp.get("dtype") != C.INPUT_DTYPE:
                problems.append(f"metadata input dtype {inp.get('dtype')!r}, expected {C.INPUT_DTYPE!r}")
            shape = inp.get("shape")
            if not isinstance(shape, list) or len(shape) != 4 or list(shape[1:]) != list(C.INPUT_SHAPE[1:]):
                problems.append(f"metadata input shape {shape!r}, expected {list(C.INPUT_SHAPE)}")
    _json(meta, "normalization", problems)
    if problems:
        raise ContractError(f"{source} does not follow contract {C.CONTRACT_VERSION}: " + "; ".join(problems))
    return {"labels": labels, "input": inp, "outputs": outputs}


def check_session_io(session, source: str, num_classes: int | None = None) -> None:
    """The graph's real inputs/outputs: one ``image`` uint8 [batch, 1, 28, 28] -> float32 [batch, classes] x2,
    with as many classes as the metadata names labels (``num_classes``)."""
    try:
        problems = session_io_problems(session, num_classes)
    except (UnicodeDecodeError, RuntimeError, ValueError) as e:  # onnxruntime decoding a corrupt name or dim
        raise ContractError(f"{source}: its inputs and outputs cannot be read ({type(e).__name__}: "
                            f"{str(e)[:120]}); the file is corrupt") from None
    if problems:
        raise ContractError(f"{source} does not follow contract {C.CONTRACT_VERSION}: " + "; ".join(problems))


def session_io_problems(session, num_classes: int | None = None) -> list[str]:
    """How a session's inputs/outputs differ from the contract (empty: they match); the exporter's gate too.
    ``num_classes`` None: any class count, the same for both outputs."""
    problems = []
    inputs = session.get_inputs()
    if len(inputs) != 1:
        problems.append(f"{len(inputs)} inputs ({', '.join(i.name for i in inputs)}), expected 1")
    else:
        i = inputs[0]
        if i.name != C.INPUT_NAME:
            problems.append(f"input named {i.name!r}, expected {C.INPUT_NAME!r}")
        if i.type != f"tensor({C.INPUT_DTYPE})":
            problems.append(f"input type {i.type}, expected tensor({C.INPUT_DTYPE})")
        problems += _shape_problems("input", i.shape, (1, 28, 28))
    outputs = {o.name: o for o in session.get_outputs()}
    for name in C.OUTPUT_NAMES:
        o = outputs.get(name)
        if o is None:
            problems.append(f"no output {name!r} (outputs: {', '.join(outputs) or 'none'})")
            continue
        if o.type != "tensor(float)":
            problems.append(f"output {name!r} type {o.type}, expected tensor(float)")
        if num_classes is None and o.shape is not None and len(o.shape) == 2 and isinstance(o.shape[1], int):
            num_classes = o.shape[1]  # the first output fixes the class count the second must have
        problems += _shape_problems(f"output {name!r}", o.shape, (num_classes if num_classes else "classes",))
    return problems


def _shape_problems(what: str, shape, tail: tuple) -> list[str]:
    expected = ["batch", *tail]
    if shape is None or len(shape) != 1 + len(tail):
        return [f"{what} shape {shape}, expected {expected}"]
    out = []
    if isinstance(shape[0], int):  # a fixed batch size, baked in at export
        out.append(f"{what} batch dimension is fixed at {shape[0]} (a fixed batch dimension {shape[0]} baked in "
                   f"at export); expected a dynamic one ({expected})")
    if list(shape[1:]) != list(tail):
        out.append(f"{what} shape {shape}, expected {expected}")
    return out
