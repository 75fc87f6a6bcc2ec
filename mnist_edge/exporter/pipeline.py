"""``export``: a network -> TorchScript, ONNX, int8 ONNX, self-test bundle and manifest, gated, swapped in.

The stages run on one :class:`Plan`: prepare (validate, the evaluation images, the EdgeModel and its
softmax temperature, int8 calibration images) -> write the formats -> gate them -> self-test bundle ->
manifest -> swap. Everything is written into a temporary folder beside the output folder; the gates run
on the files as written; the manifest is written last; then the temporary folder replaces the output
folder in one atomic exchange. On any failure, Ctrl-C included, the temporary folder is removed and the
previous output folder keeps every byte. Files in the previous folder that are not ours (the checkpoint,
training curves, notes) are carried over into the new one.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mnist_edge import artifacts as A
from mnist_edge.contract import META_KEYS
from mnist_edge.errors import CheckpointError, ExportError, GateError
from mnist_edge.evaluate import gates as G
from mnist_edge.exporter import records
from mnist_edge.exporter.options import ExportOptions
from mnist_edge.exporter.source import ModelSource
from mnist_edge.exporter.swap import remove_tree, swap_into_place
from mnist_edge.files import lock_fd, note_replaced, remove_stale, sigint_deferred

# Files an export owns: replaced on every export, never carried over (a stale int8 file would lie).
OWN_NAMES = (A.TORCHSCRIPT, A.ONNX, A.INT8, A.TFLITE, A.TFLITE_INT8, A.MANIFEST, A.SELFTEST)


@dataclass
class ExportResult:
    model: str
    out: Path
    manifest: dict
    checks: list = field(default_factory=list)  # gates.Check rows, all passed
    seconds: float = 0.0

    @property
    def files(self) -> dict:
        return self.manifest["files"]


@dataclass
class Plan:
    """One export: what goes in, and what the stages found out so far."""

    source: ModelSource
    data: object  # mnist_edge.data.dataset.Digits
    options: ExportOptions
    out: Path
    say: object  # progress: a callable taking one message
    checkpoint_sha: str = ""
    checkpoint_bytes: bytes = b""  # the folder's own checkpoint, for a source without one
    reference: object = None  # the oracle (mnist_edge.exporter.reference): PyTorch, or the user's ONNX file
    x_eval: np.ndarray | None = None  # uint8 [N, 1, 28, 28]
    y_eval: np.ndarray | None = None
    temperature: dict = field(default_factory=dict)
    metadata: dict = field(default_factory=dict)  # every file's metadata_props
    calibration: tuple = ()  # (images, source record) for int8
    versions: dict = field(default_factory=dict)
    onnx_info: dict = field(default_factory=dict)
    quantization: dict | None = None  # the quantizer's record of the int8 file
    litert: dict | None = None  # the LiteRT stage's record (mnist_edge.exporter.litert), or why it was skipped
    fastest: dict | None = None  # every runtime file raced at batch 1 and 64 (when LiteRT files were written)
    input_scaling: str = ""  # whether model.onnx's input scaling was folded into its first layer, and why not

    @property
    def n_eval(self) -> int:
        return len(self.x_eval)


def export(source: ModelSource, data, options: ExportOptions | None = None, *, out, progress=None) -> ExportResult:
    """Export ``source``'s network into ``out`` and check every artifact; raises a subclass of MnistEdgeError.

    ``data`` (a :class:`mnist_edge.data.dataset.Digits` with train and test splits) gates on the test
    images and fits the softmax temperature T on training images, never test images (the checkpoint's
    held-out split where it has one; :mod:`mnist_edge.exporter.temperature`): every graph outputs
    probabilities = softmax(logits / T). int8 calibration uses class-balanced training images.
    ``options.int8`` (from :func:`mnist_edge.exporter.options.int8_choice`) asks for the int8 file; the
    manifest records its recipe and the recommended file. ``progress`` is called with a short message
    before each step.
    """
    from mnist_edge.system.extras import require

    t0 = time.perf_counter()
    if source.onnx is None:
        require("train", "export (TorchScript, ONNX, int8)", ("torch", "onnx", "onnxscript"))
    else:
        require("quantize", "export of an ONNX file (wrap, int8)", ("onnx",))
    plan = Plan(source, data.need("train", "test"), (options or ExportOptions()).validated(), Path(out),
                progress or (lambda msg: None))
    preflight(plan.out)
    _prepare(plan)
    tmp, tmp_fd = _staging_folder(plan.out)
    try:
        _write_formats(plan, tmp)
        checks, measured = _gate(plan, tmp)
        if plan.litert and plan.litert.get("versions"):
            plan.fastest = _race(plan, tmp)
        _write_manifest(plan, tmp, checks, measured)
        plan.say(f"replacing '{plan.out}'")
        with sigint_deferred():  # the swap and its record go together: an interrupt message tells the truth
            swap_into_place(tmp, plan.out)
            note_replaced(plan.out)
    except OSError as e:
        remove_tree(tmp)
        raise ExportError(f"writing the export for '{plan.out}' failed: {e}; '{plan.out}' is unchanged") from e
    except BaseException:
        remove_tree(tmp)
        raise
    finally:
        os.close(tmp_fd)
    from mnist_edge.manifest import read_manifest

    return ExportResult(model=source.name, out=plan.out, manifest=read_manifest(plan.out), checks=checks,
                        seconds=time.perf_counter() - t0)


def _prepare(plan: Plan) -> None:
    """Hash the source, choose the evaluation images, set up the reference, fit T, draw calibration images."""
    from mnist_edge.exporter.temperature import fit, metadata_record

    src, opts = plan.source, plan.options
    plan.checkpoint_sha = _source_sha(plan)
    test = plan.data.test.head(opts.eval_limit)
    plan.x_eval, plan.y_eval = np.ascontiguousarray(test.images[:, None]), test.labels
    plan.reference = _reference(src)
    plan.say("fitting the softmax temperature (on training images, never test images)")
    t = plan.temperature = fit(plan.reference, src.record, plan.x_eval, plan.y_eval, plan.data.train)
    plan.say(f"temperature {t['temperature']:g} ({t['fitted_on']['split']}); ECE on the {plan.n_eval:,} test "
             f"images {t['test']['ece_before']:.4f} -> {t['test']['ece_after']:.4f}")
    plan.versions = records.versions(torch=src.onnx is None)
    plan.metadata = records.onnx_metadata(src, plan.checkpoint_sha, plan.versions, metadata_record(t))
    if opts.quantize:
        plan.calibration = _calibration_images(plan)


def _source_sha(plan: Plan) -> str:
    """SHA-256 of what the files were made from: the checkpoint (ours for an in-memory network), or the
    user's own ONNX file."""
    from mnist_edge.files import describe_os_error, sha256_file

    src = plan.source
    if src.onnx is None and src.checkpoint is None:  # a network handed over in memory: a checkpoint of its own
        plan.checkpoint_bytes = _own_checkpoint(src)
        return hashlib.sha256(plan.checkpoint_bytes).hexdigest()
    path = src.onnx if src.onnx is not None else src.checkpoint
    try:
        return sha256_file(path)
    except OSError as e:
        raise CheckpointError(f"cannot read '{path}': {describe_os_error(e)}") from None


def _reference(src: ModelSource):
    """The oracle: PyTorch on the network in its contract, or the user's ONNX file run by onnxruntime."""
    from mnist_edge.exporter.reference import OnnxReference, TorchReference

    c = src.contract
    if src.onnx is not None:
        # the graph as loaded: external data read in from beside the file (onnxruntime would refuse the path)
        return OnnxReference(src.onnx_model.SerializeToString(), src.onnx_input, c, str(src.onnx))
    from mnist_edge.zoo.networks import EdgeModel

    return TorchReference(EdgeModel.of(src.net, c).eval())


def _own_checkpoint(src: ModelSource) -> bytes:
    """A weights-only checkpoint of an in-memory network (its state, the class that rebuilds it, the contract)."""
    from mnist_edge.training.checkpoint import checkpoint_bytes

    c = src.contract
    contract = {"labels": list(c.labels), "input_size": c.input_size, "mean": c.mean, "std": c.std,
                "channels": c.channels}
    return checkpoint_bytes(model=src.name, state_dict=src.net.state_dict(), recipe={}, history=[], data_sha256="",
                            metrics={}, extra={"contract": contract}, architecture=src.architecture or ("", {}))


def _calibration_images(plan: Plan) -> tuple:
    from mnist_edge.data.dataset import balanced_sample
    from mnist_edge.int8.quantize import custom_source

    given, q = plan.options.calibration_images, plan.options.int8.options
    if given is not None:
        return np.asarray(given), custom_source(given)
    return balanced_sample(plan.data.train, q.calibration_samples, q.seed)


def _staging_folder(out: Path) -> tuple[Path, int]:
    """A fresh temporary folder beside ``out``, locked (a live export's, not a leftover), with the mode the
    swapped-in folder should have: the previous folder's, or 0777 less the umask."""
    from mnist_edge.files import current_umask

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out.parent, stale_pattern(out.name))  # folders of exports that were killed
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
        tmp_fd = os.open(tmp, os.O_RDONLY)
    except OSError as e:
        raise ExportError(f"cannot write into '{out.parent}': {e.strerror or e}") from None
    lock_fd(tmp_fd)  # held until the export returns
    try:
        os.chmod(tmp, stat.S_IMODE(out.stat().st_mode) if out.is_dir() else 0o777 & ~current_umask())
    except BaseException:
        os.close(tmp_fd)
        remove_tree(tmp)
        raise
    return tmp, tmp_fd


def _write_formats(plan: Plan, tmp: Path) -> None:
    """The checkpoint copy (checked against its hash), TorchScript, ONNX and, if asked, int8 ONNX; for a
    float ONNX source, its graph wrapped into the contract (no checkpoint, no TorchScript)."""
    from mnist_edge.exporter.onnx_export import export_onnx
    from mnist_edge.exporter.torchscript import export_torchscript

    src, opts = plan.source, plan.options
    _carry_over(plan.out, tmp)
    if src.onnx is not None:
        plan.say(f"writing {A.ONNX} (your graph, wrapped into the contract)")
        plan.onnx_info = _write_wrapped(plan, tmp / A.ONNX)
    else:
        _copy_checkpoint(plan, tmp)
        edge = plan.reference.edge
        plan.say(f"writing {A.TORCHSCRIPT}")
        export_torchscript(edge, tmp / A.TORCHSCRIPT, metadata=plan.metadata)
        plan.say(f"writing {A.ONNX} (opset {opts.opset})")
        plan.onnx_info = export_onnx(edge, tmp / A.ONNX, opset=opts.opset, metadata=plan.metadata,
                                     doc=src.description)
    plan.input_scaling = _fold(tmp / A.ONNX)
    if opts.quantize:
        _write_int8(plan, tmp)
        from mnist_edge.exporter.litert import stage

        stage(plan, tmp)


def _fold(path: Path) -> str:
    """The input scaling folded into the first layer where exact (mnist_edge.exporter.fold); what was done."""
    from mnist_edge.exporter.fold import fold_input_scaling
    from mnist_edge.exporter.onnx_export import load_model, save_onnx

    model = load_model(path)
    done = fold_input_scaling(model)
    if done.startswith("folded"):
        save_onnx(model, path)
    return done


def _race(plan: Plan, tmp: Path) -> dict:
    """Every runtime file of ``tmp`` (all passed their gates) raced, 1 thread, at batch 1 and the largest gate
    batch: the fastest per batch size with its margin (mnist_edge.bench.race.race_files)."""
    from mnist_edge.bench.race import race_files
    from mnist_edge.evaluate.ort_eval import make_session

    names = [n for n in A.RUNTIME_FILES if (tmp / n).is_file()]
    largest = max(plan.options.batch_sizes)
    plan.say(f"timing {', '.join(names)} interleaved (1 thread, batch 1 and {largest})")
    return race_files({n: make_session(tmp / n) for n in names}, plan.x_eval, ((1, 20), (largest, 3)))


def _copy_checkpoint(plan: Plan, tmp: Path) -> None:
    from mnist_edge.files import sha256_file

    src = plan.source
    if src.checkpoint is None:
        (tmp / A.CHECKPOINT).write_bytes(plan.checkpoint_bytes)
    else:
        shutil.copyfile(src.checkpoint, tmp / A.CHECKPOINT)
    if sha256_file(tmp / A.CHECKPOINT) != plan.checkpoint_sha:
        raise ExportError(f"checkpoint '{src.checkpoint}' changed while it was being exported")


def _write_wrapped(plan: Plan, path: Path) -> dict:
    """The user's float ONNX graph inside the contract, with our metadata, as one checked file."""
    from mnist_edge.evaluate.ort_eval import MAX_IR_VERSION
    from mnist_edge.exporter.onnx_export import save_onnx, set_metadata
    from mnist_edge.exporter.onnx_source import wrap

    model = wrap(plan.source.onnx_model, plan.source.onnx_input, plan.source.contract, plan.reference.temperature)
    model.ir_version = min(model.ir_version, MAX_IR_VERSION)
    set_metadata(model, plan.metadata, doc=plan.source.description)
    save_onnx(model, path)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {"opset": opset, "ir_version": model.ir_version}


def _write_int8(plan: Plan, tmp: Path) -> None:
    from mnist_edge.exporter.onnx_export import load_model, metadata_json, save_onnx, set_metadata
    from mnist_edge.int8.quantize import quantize_int8

    q = plan.options.int8.options
    images, source = plan.calibration
    plan.say(f"writing {A.INT8} ({q.calibration_method} calibration, {len(images)} {source['split']} images)")
    plan.quantization = quantize_int8(tmp / A.ONNX, tmp / A.INT8, images, q, source=source)
    for message in plan.quantization["onnxruntime_messages"]:
        plan.say(f"onnxruntime: {message}")
    model = load_model(tmp / A.INT8)
    if model.ir_version > plan.onnx_info["ir_version"]:
        model.ir_version = plan.onnx_info["ir_version"]  # quantizer may bump IR; ours loads everywhere
    set_metadata(model, dict(plan.metadata, **{META_KEYS["precision"]: "int8",
                                               META_KEYS["quantization"]: metadata_json(plan.quantization)}),
                 doc=plan.source.description + " (static int8)")
    save_onnx(model, tmp / A.INT8)


def _gate(plan: Plan, tmp: Path) -> tuple[list, dict]:
    """Every gate on the files in ``tmp``; a failure raises a GateError listing each failed check."""
    from mnist_edge.exporter.parity import run_gates

    opts = plan.options
    checks, measured = run_gates(plan.reference, tmp, plan.x_eval, plan.y_eval, batch_sizes=opts.batch_sizes,
                                 quantize=opts.quantize, thresholds=opts.thresholds, say=plan.say)
    try:
        G.raise_on_failure(checks, plan.source.name)
    except GateError as e:
        hint = ""
        if opts.quantize and any(not c.passed for c in checks if c.artifact == A.INT8):
            from mnist_edge.int8.diagnose import gate_failure_hint

            hint = gate_failure_hint(plan.source.name, tmp / A.ONNX, tmp / A.INT8, opts.int8.options, plan.x_eval)
        raise GateError(f"{e}{hint}. Nothing was written: '{plan.out}' is unchanged") from None
    return checks, measured


def _write_manifest(plan: Plan, tmp: Path, checks: list, measured: dict) -> None:
    """The self-test bundle, then the manifest of every file (written last: it seals the folder)."""
    from mnist_edge.exporter.selftest_bundle import write_bundle
    from mnist_edge.manifest import write_manifest

    plan.say("writing selftest.bin (the folder's own test images and reference outputs)")
    bundle = write_bundle(tmp, model=plan.source.name, reference=plan.reference, images=plan.data.test.images,
                          labels=plan.data.test.labels)
    manifest = records.build_manifest(plan, tmp, checks, measured)
    manifest["files"][A.SELFTEST] = bundle
    manifest["temperature"] = plan.temperature
    if plan.options.quantize:
        manifest.update(plan.options.int8.record())
    if plan.litert is not None:
        manifest["litert"] = plan.litert
    if plan.fastest is not None:  # measured here, over every runtime: the fastest file at batch 1 is shipped
        manifest["fastest"] = plan.fastest
        manifest["recommended"] = plan.fastest["by_batch"]["1"]["winner"]["file"]
    write_manifest(tmp, manifest)


def stale_pattern(name: str) -> str:
    """The regex of the temporary folders an export of ``name`` makes (``mkdtemp``'s 8 random characters)."""
    return re.escape(f".{name}.") + r"(export|old)-[A-Za-z0-9_]{8}"


def preflight(out: Path) -> None:
    """Fail before any work when ``out`` cannot be replaced: not a folder, read-only, or a folder that
    holds the working directory or is a mount point (an export replaces its output folder as a whole)."""
    if out.exists() and not out.is_dir():
        raise ExportError(f"output '{out}' exists and is not a folder")
    if out.is_dir():
        real, cwd = out.resolve(), Path.cwd().resolve()
        if real == cwd or real in cwd.parents or os.path.ismount(real):
            what = "is the working directory" if real == cwd else "holds the working directory" \
                if real in cwd.parents else "is a mount point"
            raise ExportError(f"output '{out}' {what}: an export replaces its output folder as a whole, so it "
                              f"needs a folder of its own, e.g. --out {A.EXPORT_RUNS / 'NAME'}; nothing was changed")
    if out.exists():
        mode = out.stat().st_mode
        # Root passes os.access on a chmod 555 folder; the missing write bits still say "leave this alone".
        if not os.access(out, os.W_OK) or not mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
            raise ExportError(f"output folder '{out}' is read-only (mode {stat.filemode(mode)}); "
                              "its artifacts are unchanged")
    existing = next(p for p in (out.parent, *out.parent.parents) if p.exists())
    if not os.access(existing, os.W_OK):
        raise ExportError(f"cannot write into '{existing}' (read-only); nothing was changed")


def _carry_over(out: Path, tmp: Path) -> None:
    """Copy every file of the previous output folder that an export does not own into ``tmp``."""
    if not out.is_dir():
        return
    for entry in out.iterdir():
        if entry.name in OWN_NAMES or entry.name == A.CHECKPOINT:  # checkpoint: copied from its source
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, tmp / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, tmp / entry.name, follow_symlinks=False)
