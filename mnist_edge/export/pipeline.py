"""``export_model``: checkpoint -> TorchScript, ONNX, int8 ONNX and manifest, gated, swapped in atomically.

Everything is written into a temporary folder beside the output folder; the gates run on the files as
written; the manifest is written last; then the temporary folder replaces the output folder in one
atomic exchange. On any failure, Ctrl-C included, the temporary folder is removed and the previous
output folder keeps every byte. Files in the previous folder that are not ours (the checkpoint, training
curves, notes) are carried over into the new one.
"""

from __future__ import annotations

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
from mnist_edge.errors import CheckpointError, ExportError, GateError, UsageError
from mnist_edge.export import gates as G
from mnist_edge.export import records
from mnist_edge.export.records import created_time  # noqa: F401 (re-exported)
from mnist_edge.export.onnx_export import DEFAULT_OPSET, check_opset, export_onnx, metadata_json
from mnist_edge.export.quantize import QuantizeOptions
from mnist_edge.export.swap import remove_tree, swap_into_place
from mnist_edge.files import lock_fd, note_replaced, remove_stale, sigint_deferred
from mnist_edge.manifest import MANIFEST_NAME, write_manifest

EXPORT_ROOT = A.EXPORTED  # the artifact layout and its names: mnist_edge.artifacts
CHECKPOINT_NAME = A.CHECKPOINT
TORCHSCRIPT_NAME = A.TORCHSCRIPT
ONNX_NAME = A.ONNX
INT8_NAME = A.INT8
# Files an export owns: replaced on every export, never carried over (a stale int8 file would lie).
OWN_NAMES = (TORCHSCRIPT_NAME, ONNX_NAME, INT8_NAME, MANIFEST_NAME, A.SELFTEST)


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


def default_out(model: str) -> Path:
    return A.default_folder(model)


def default_checkpoint(model: str) -> Path:
    """Where a model's committed checkpoint lives (what ``mnist-edge train --model NAME`` should produce)."""
    return EXPORT_ROOT / model / CHECKPOINT_NAME


def export_model(model: str, *, checkpoint=None, out=None, quantize: bool = False, opset: int = DEFAULT_OPSET,
                 recipe=None, quantize_options: QuantizeOptions | None = None, data_dir=None,
                 calibration_images: np.ndarray | None = None, batch_sizes=G.BATCH_SIZES,
                 eval_limit: int | None = None, thresholds: dict | None = None, progress=None) -> ExportResult:
    """Export registry model ``model`` from its checkpoint into ``out`` and check every artifact.

    ``checkpoint`` defaults to ``exported/MODEL/checkpoint.pt``, ``out`` to ``exported/MODEL/``.
    int8 uses ``quantize_options`` if given, else the options of ``recipe`` (a recipe file), else the
    model's registered recipe (``mnist_edge/int8_recipes/MODEL.json``, written by ``mnist-edge quantize
    --search --register``), else the defaults; the manifest records which, and the recommended file.
    ``calibration_images`` (uint8 [N, 28, 28]) replaces the class-balanced training images, for tests
    and experiments; ``eval_limit`` gates on the first N test images instead of all 10,000 (recorded).
    ``thresholds`` replaces :data:`gates.THRESHOLDS` (same keys; recorded in the manifest): for tests of
    the pipeline on briefly trained models, whose int8 agreement sits near the real gate by chance.
    Before writing, a softmax temperature T is fitted on training images (the checkpoint's held-out split
    where it has one; :mod:`mnist_edge.export.calibrate`) and put into every graph: probabilities =
    softmax(logits / T); the manifest and the metadata record T, the split and ECE before and after.
    ``progress`` is called with a short message before each step. Raises a subclass of MnistEdgeError.
    """
    from mnist_edge.zoo import get_spec

    t0 = time.perf_counter()
    say = progress or (lambda msg: None)
    spec = get_spec(model)
    from mnist_edge.extras import require

    require("train", "export (TorchScript, ONNX, int8)", ("torch", "onnx", "onnxscript"))
    check_opset(opset)
    from mnist_edge.export.recipes import load_recipe

    int8_recipe = load_recipe(model, recipe)
    qopts = (quantize_options or int8_recipe.options).validate()
    batch_sizes = tuple(batch_sizes)
    if not batch_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in batch_sizes):
        raise UsageError(f"batch sizes must be positive integers, got {batch_sizes!r}")
    if eval_limit is not None and (isinstance(eval_limit, bool) or not isinstance(eval_limit, int)
                                   or not 1 <= eval_limit <= 10_000):
        raise UsageError(f"eval_limit {eval_limit!r} must be an integer from 1 to 10000")

    thresholds = G.check_thresholds(thresholds)
    from mnist_edge.data import require_splits

    require_splits(data_dir, ("test", "train"))  # train: the temperature's fitting split (and int8 calibration)
    out = Path(out) if out is not None else default_out(model)
    ckpt_path = Path(checkpoint) if checkpoint is not None else default_checkpoint(model)
    if not ckpt_path.is_file():
        how = (f"train one with: mnist-edge train --model {model} --out {default_checkpoint(model)}"
               if checkpoint is None else "check the --checkpoint path")
        trained = A.RUNS / model / CHECKPOINT_NAME  # where `mnist-edge train` writes by default
        if checkpoint is None and trained.is_file():
            how += f" (or export the one it wrote: --checkpoint {trained})"
        raise CheckpointError(f"no checkpoint at '{ckpt_path}' for model '{model}'; {how}")
    _preflight(out)

    from mnist_edge.checkpoint import load_checkpoint
    from mnist_edge.files import current_umask, describe_os_error, sha256_file

    try:
        ckpt_sha = sha256_file(ckpt_path)
    except OSError as e:
        raise CheckpointError(f"cannot read checkpoint '{ckpt_path}': {describe_os_error(e)}") from None
    net, ckpt = load_checkpoint(ckpt_path)
    if ckpt["model"] != model:
        raise CheckpointError(f"checkpoint '{ckpt_path}' holds model '{ckpt['model']}', not '{model}'")

    say("loading MNIST")
    from mnist_edge.data import load_mnist

    x_test, y_test = load_mnist("test", data_dir=data_dir)
    n_eval = eval_limit or len(x_test)
    x_eval, y_eval = np.ascontiguousarray(x_test[:n_eval, None]), np.asarray(y_test[:n_eval]).astype(np.int64)
    from mnist_edge.export.calibrate import calibrate, metadata_record
    from mnist_edge.models import build_edge_model

    edge = build_edge_model(spec, net).eval()
    say("fitting the softmax temperature (on training images, never test images)")
    temperature = calibrate(edge, ckpt, x_eval, y_eval, data_dir)  # sets edge.temperature: the graphs carry it
    say(f"temperature {temperature['temperature']:g} ({temperature['fitted_on']['split']}); ECE on the "
        f"{n_eval:,} test images {temperature['test']['ece_before']:.4f} -> {temperature['test']['ece_after']:.4f}")
    if quantize:
        from mnist_edge.export.quantize import custom_source, training_calibration_images

        if calibration_images is None:
            cal_images, cal_source = training_calibration_images(qopts.calibration_samples, qopts.seed, data_dir)
        else:
            cal_images, cal_source = np.asarray(calibration_images), custom_source(calibration_images)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        remove_stale(out.parent, stale_pattern(out.name))  # folders of exports that were killed
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.export-", dir=out.parent))
        tmp_fd = os.open(tmp, os.O_RDONLY)
    except OSError as e:
        raise ExportError(f"cannot write into '{out.parent}': {e.strerror or e}") from None
    lock_fd(tmp_fd)  # held until we return: marks the folder as a live export's, not a leftover
    try:
        # mkdtemp makes 0700; the swapped-in folder keeps the previous folder's mode (or 0777 less the umask)
        os.chmod(tmp, stat.S_IMODE(out.stat().st_mode) if out.is_dir() else 0o777 & ~current_umask())
        vers = records.versions()
        _carry_over(out, tmp)
        shutil.copyfile(ckpt_path, tmp / CHECKPOINT_NAME)
        if sha256_file(tmp / CHECKPOINT_NAME) != ckpt_sha:
            raise ExportError(f"checkpoint '{ckpt_path}' changed while it was being exported")

        from mnist_edge.export.onnx_export import set_metadata, load_model, save_onnx
        from mnist_edge.export.torchscript import export_torchscript

        meta = records.onnx_metadata(spec, ckpt_sha, vers, metadata_record(temperature))
        say(f"writing {TORCHSCRIPT_NAME}")
        export_torchscript(edge, tmp / TORCHSCRIPT_NAME, metadata=meta)
        say(f"writing {ONNX_NAME} (opset {opset})")
        onnx_info = export_onnx(edge, tmp / ONNX_NAME, opset=opset, metadata=meta, doc=spec.description)
        recipe = None
        if quantize:
            from mnist_edge.export.quantize import quantize_int8

            say(f"writing {INT8_NAME} ({qopts.calibration_method} calibration, "
                f"{len(cal_images)} {cal_source['split']} images)")
            recipe = quantize_int8(tmp / ONNX_NAME, tmp / INT8_NAME, cal_images, qopts, source=cal_source)
            for message in recipe["onnxruntime_messages"]:
                say(f"onnxruntime: {message}")
            q = load_model(tmp / INT8_NAME)
            if q.ir_version > onnx_info["ir_version"]:
                q.ir_version = onnx_info["ir_version"]  # quantizer may bump IR; ours loads everywhere
            set_metadata(q, dict(meta, **{META_KEYS["precision"]: "int8",
                                          META_KEYS["quantization"]: metadata_json(recipe)}),
                         doc=spec.description + " (static int8)")
            save_onnx(q, tmp / INT8_NAME)

        checks, measured = _run_gates(model, edge, tmp, x_eval, y_eval, batch_sizes, quantize, thresholds, say)
        try:
            G.raise_on_failure(checks, model)
        except GateError as e:
            hint = ""
            if quantize and any(not c.passed for c in checks if c.artifact == INT8_NAME):
                from mnist_edge.export.diagnose import gate_failure_hint

                hint = gate_failure_hint(model, tmp / ONNX_NAME, tmp / INT8_NAME, qopts, x_eval)
            raise GateError(f"{e}{hint}. Nothing was written: '{out}' is unchanged") from None

        from mnist_edge.export.selftest_bundle import write_bundle

        say("writing selftest.bin (the folder's own test images and reference outputs)")
        bundle = write_bundle(tmp, model=model, edge=edge, images=x_test, labels=y_test)
        manifest = records.build_manifest(spec, ckpt, ckpt_sha, tmp, checks, measured, vers, onnx_info, opset, recipe,
                             n_eval, batch_sizes, thresholds)
        manifest["files"][A.SELFTEST] = bundle
        manifest["temperature"] = temperature
        if quantize:
            manifest.update(records.recommendation(int8_recipe, qopts))
        write_manifest(tmp, manifest)
        say(f"replacing '{out}'")
        with sigint_deferred():  # the swap and its record go together: an interrupt message tells the truth
            swap_into_place(tmp, out)
            note_replaced(out)
    except OSError as e:
        remove_tree(tmp)
        raise ExportError(f"writing the export for '{out}' failed: {e}; '{out}' is unchanged") from e
    except BaseException:
        remove_tree(tmp)
        raise
    finally:
        os.close(tmp_fd)
    from mnist_edge.manifest import read_manifest

    return ExportResult(model=model, out=out, manifest=read_manifest(out), checks=checks,
                        seconds=time.perf_counter() - t0)


def stale_pattern(name: str) -> str:
    """The regex of the temporary folders an export of ``name`` makes (``mkdtemp``'s 8 random characters)."""
    return re.escape(f".{name}.") + r"(export|old)-[A-Za-z0-9_]{8}"


def _preflight(out: Path) -> None:
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
                              f"needs a folder of its own, e.g. --out {EXPORT_ROOT / 'NAME'}; nothing was changed")
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
        if entry.name in OWN_NAMES or entry.name == CHECKPOINT_NAME:  # checkpoint: copied from its source
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, tmp / entry.name, symlinks=True)
        else:
            shutil.copy2(entry, tmp / entry.name, follow_symlinks=False)


def _attempt(fn, *args):
    """Run fn; an exception becomes the value, so a gate can report it as a failed check."""
    try:
        return fn(*args)
    except Exception as e:
        return e


def _run_gates(model, edge, folder: Path, x, y, batch_sizes, quantize: bool, thresholds: dict, say):
    from mnist_edge.export.ort_eval import make_session, ort_logits, ort_outputs
    from mnist_edge.runtime.checks import session_io_problems as contract_problems
    from mnist_edge.torchrun import load_torchscript, torch_logits, torch_outputs, torch_threads

    n = len(x)
    checks: list = []
    measured: dict = {}
    with torch_threads(1):
        say(f"gates: PyTorch reference on {n:,} test images at batch sizes {', '.join(map(str, batch_sizes))}")
        ref = {bs: torch_logits(edge, x, bs) for bs in batch_sizes}
        say(f"gates: {TORCHSCRIPT_NAME}")
        ts, _ = load_torchscript(folder / TORCHSCRIPT_NAME)
        ts_out = {bs: _attempt(torch_logits, ts, x, bs) for bs in batch_sizes}
    checks += G.parity_checks(TORCHSCRIPT_NAME, ref, ts_out, **thresholds["torchscript"])

    say(f"gates: {ONNX_NAME}")
    sess = make_session(folder / ONNX_NAME)
    checks.append(G.contract_check(ONNX_NAME, contract_problems(sess)))
    onnx_out = {bs: _attempt(ort_logits, sess, x, bs) for bs in batch_sizes}
    checks += G.parity_checks(ONNX_NAME, ref, onnx_out, **thresholds["onnx"])
    outputs = {"pytorch": ref, TORCHSCRIPT_NAME: ts_out, ONNX_NAME: onnx_out}

    if quantize:
        say(f"gates: {INT8_NAME}")
        sess8 = make_session(folder / INT8_NAME)
        checks.append(G.contract_check(INT8_NAME, contract_problems(sess8)))
        int8_out = {bs: _attempt(ort_logits, sess8, x, bs) for bs in batch_sizes}
        fp32 = {bs: (o if isinstance(o, np.ndarray) else ref[bs]) for bs, o in onnx_out.items()}
        checks += G.int8_checks(INT8_NAME, fp32, int8_out, y, **thresholds["int8"])
        outputs[INT8_NAME] = int8_out

    acc_bs = max(batch_sizes)
    say(f"gates: probabilities = softmax(logits / {edge.temperature:g}) in every file")
    x_p = x[:G.PROBABILITY_IMAGES]
    with torch_threads(1):
        ts_both = _attempt(torch_outputs, ts, x_p, acc_bs)
    checks.append(G.probabilities_check(TORCHSCRIPT_NAME, acc_bs, ts_both, edge.temperature))
    for name, session in ((ONNX_NAME, sess), *(((INT8_NAME, sess8),) if quantize else ())):
        checks.append(G.probabilities_check(name, acc_bs, _attempt(ort_outputs, session, x_p, acc_bs),
                                            edge.temperature))

    for name, outs in outputs.items():
        o = outs[acc_bs]
        measured[name] = {"accuracy": round(float((o.argmax(1) == y).mean() * 100), 4)
                          if isinstance(o, np.ndarray) else None}
    for name, ref_name, ref_outs in ((TORCHSCRIPT_NAME, "pytorch", ref), (ONNX_NAME, "pytorch", ref),
                                     (INT8_NAME, ONNX_NAME, outputs.get(ONNX_NAME))):
        if name not in outputs:
            continue
        agree = [float((o.argmax(1) == ref_outs[bs].argmax(1)).mean() * 100)
                 for bs, o in outputs[name].items()
                 if isinstance(o, np.ndarray) and isinstance(ref_outs[bs], np.ndarray)]
        diffs = [float(np.abs(o - ref_outs[bs]).max()) for bs, o in outputs[name].items()
                 if isinstance(o, np.ndarray) and isinstance(ref_outs[bs], np.ndarray)]
        measured[name].update(reference=ref_name, agreement=round(min(agree), 4) if agree else None,
                              max_abs_diff=max(diffs) if diffs else None)
    return checks, measured

