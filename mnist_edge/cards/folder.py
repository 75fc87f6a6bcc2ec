"""What a model card is drawn from, read from one exported folder and checked when it is loaded: the
manifest's per-file results, the checkpoint's training record, the bench report, the robustness report,
the int8 diagnosis and the temperature record. The card code then reads attributes it can trust; a field
missing or of the wrong type is one ArtifactError naming the folder, the file and the field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from mnist_edge import artifacts as A
from mnist_edge.bench.document import BenchReport
from mnist_edge.cards.int8 import check_records, load_search
from mnist_edge.cards.reliability import Temperature, load_robustness, temperature_of
from mnist_edge.errors import ArtifactError
from mnist_edge.documents.fields import (MS0, NONNEG, PERCENT, TEXT, Where, count, dict_of, extra_field, optional, parse,
                                         record, spec)

MODEL_FILES = (A.TORCHSCRIPT, A.ONNX, A.INT8, A.TFLITE, A.TFLITE_INT8)  # the files a card's parity table shows
BENCH = "bench.json"
INT8_REPORT = "int8_report.json"
OPT_TEXT = optional(TEXT)


@dataclass
class FileResult:
    """One model file as the export measured it (manifest.json ``files``)."""

    size: int = spec(count(0), required=True)
    accuracy: float | None = spec(optional(PERCENT))
    agreement: float | None = spec(optional(PERCENT))
    max_abs_diff: float | None = spec(optional(NONNEG))
    reference: str | None = spec(OPT_TEXT)
    extra: dict = extra_field()


@dataclass
class Restat:
    """The recipe's re-estimation of the batch-norm statistics after the last epoch."""

    images: int = spec(count(1), required=True)
    applied: str | None = spec(OPT_TEXT)
    val_loss_before: float | None = spec(optional(NONNEG))
    val_loss: float | None = spec(optional(NONNEG))
    val_acc_before: float | None = spec(optional(PERCENT))
    val_acc: float | None = spec(optional(PERCENT))
    extra: dict = extra_field()

    def validate(self, where: Where) -> None:
        vals = (self.val_loss_before, self.val_loss, self.val_acc_before, self.val_acc)
        if any(v is not None for v in vals) and any(v is None for v in vals):
            raise where.fail("has some of val_loss_before, val_loss, val_acc_before, val_acc but not all four")

    @property
    def validated(self) -> bool:
        return self.val_loss is not None


@dataclass
class Metrics:
    """The checkpoint's final metrics; a checkpoint trained elsewhere may have none of them."""

    test_accuracy: float | None = spec(optional(PERCENT))
    selected: str | None = spec(OPT_TEXT)
    train_seconds: float | None = spec(optional(NONNEG))
    device: str | None = spec(OPT_TEXT)
    device_name: str | None = spec(OPT_TEXT)
    threads: int | None = spec(optional(count(1)))
    seed: int | None = spec(optional(count(0)))
    reestimate_bn: Restat | None = spec(Restat)
    extra: dict = extra_field()


@dataclass
class Epoch:
    seconds: float = spec(NONNEG, required=True)
    extra: dict = extra_field()


TRAINING_ROW = ("train_seconds", "device", "device_name", "threads", "seed")  # what the training row shows


@dataclass
class Training:
    """What the checkpoint says about how the network was trained (none of it for a network trained
    elsewhere: then the card has no training row and no recipe section)."""

    recipe: dict = spec(record(2), factory=dict)  # {setting: value}
    history: list = spec(Epoch, many=True, factory=list)  # one entry per epoch
    metrics: Metrics = spec(Metrics, factory=Metrics)
    extra: dict = extra_field()

    def validate(self, where: Where) -> None:
        missing = [k for k in TRAINING_ROW if getattr(self.metrics, k) is None]
        if self.history and missing:
            raise where.at("metrics").fail(f"lacks {', '.join(missing)} (a checkpoint with a training history "
                                           "records them)")

    @property
    def epoch_seconds(self) -> float | None:
        return sum(e.seconds for e in self.history) / len(self.history) if self.history else None


def training_of(ckpt: dict, source) -> Training:
    """The training record of a checkpoint dict (``read_checkpoint``), checked."""
    return parse(Training, {k: ckpt[k] for k in ("recipe", "history", "metrics") if k in ckpt}, Where(source))


@dataclass
class CardFolder:
    """Everything one card shows, loaded and checked."""

    folder: Path
    name: str  # the zoo name
    manifest: dict  # read_manifest's, for the int8 sections (mnist_edge.cards.int8)
    files: dict  # {file name: FileResult} of the model files the manifest lists
    training: Training
    temperature: Temperature | None
    bench: BenchReport | None = None
    robustness: dict | None = None
    int8_report: dict | None = None
    search: object = None  # the folder's int8 search result (mnist_edge.cards.int8.load_search), or None
    stale: dict = field(default_factory=dict)  # {bench format: why its timing describes other bytes}
    robustness_stale: dict = field(default_factory=dict)


def _check_profile(profile, where: Where) -> None:
    """``profile``: {batch (digits): {"fp32"|"int8": {ms_per_call, ops: [{op, ms}, ...]}}}, as the card's
    table reads it (mnist_edge.int8.diagnose.profile_markdown)."""
    if not isinstance(profile, dict):
        raise where.bad(profile, "an object keyed by batch size")
    op = record(1)
    for batch, both in profile.items():
        if not (batch.isascii() and batch.isdigit() and len(batch) <= 7):
            raise where.bad(batch, "keys that are batch sizes (digits)")
        for fmt in ("fp32", "int8"):
            part = both.get(fmt) if isinstance(both, dict) else None
            at = where.at(batch).at(fmt)
            if not (isinstance(part, dict) and MS0(part.get("ms_per_call")) and isinstance(part.get("ops"), list)):
                raise at.bad(part, "an object with ms_per_call (a time in ms) and a list of ops")
            for i, o in enumerate(part["ops"]):
                if not (op(o) and TEXT(o.get("op")) and MS0(o.get("ms"))):
                    raise at.at("ops").at(i).bad(o, "an object with op (a string) and ms (a time in ms)")


def load_int8_report(path: Path) -> dict | None:
    """The int8 diagnosis at ``path`` (``mnist-edge quantize --report`` writes int8_report.json), read by the
    one bounded loader, with what the card shows checked; None when there is no such file (a FIFO or a
    device there is an error, not an absent file)."""
    from mnist_edge.documents import load_json

    path = Path(path)
    if not path.exists():
        return None
    doc = load_json(path)
    where = Where(path)
    if not isinstance(doc, dict):
        raise where.bad(doc, "a JSON object")
    if doc.get("profile") is not None:
        _check_profile(doc["profile"], where.at("profile"))
    left = doc.get("left_after_optimization")
    if left is not None and not dict_of(count(0))(left):
        raise where.at("left_after_optimization").bad(left, "an object of node counts")
    return doc


def load_card_folder(folder: Path, name: str) -> CardFolder:
    """Read and check every file the card of ``folder`` (zoo model ``name``) draws on."""
    from mnist_edge.evaluate.robustness import stale_files
    from mnist_edge.manifest import read_manifest
    from mnist_edge.training.checkpoint import read_checkpoint

    folder = Path(folder)
    manifest = read_manifest(folder)  # ArtifactError naming a folder without a manifest
    try:
        check_records(manifest, folder / A.MANIFEST)
        files = {n: parse(FileResult, manifest["files"][n], Where(folder / A.MANIFEST, f"files.{n}"))
                 for n in MODEL_FILES if n in manifest["files"]}
        training = training_of(read_checkpoint(folder / A.CHECKPOINT), folder / A.CHECKPOINT)
        temperature = temperature_of(manifest, folder / A.MANIFEST)
        bench = BenchReport.from_json(folder / BENCH) if (folder / BENCH).exists() else None
        robustness = load_robustness(folder)
        int8_report = load_int8_report(folder / INT8_REPORT)
        search = load_search(folder)
    except ArtifactError as e:
        raise ArtifactError(f"cannot make the card of '{folder}' (a file lacks a field the card needs, holds a "
                            f"wrong type or cannot be read): {e}") from None
    return CardFolder(folder=folder, name=name, manifest=manifest, files=files, training=training,
                      temperature=temperature, bench=bench, robustness=robustness, int8_report=int8_report,
                      search=search, stale=stale_formats(folder, bench), robustness_stale=stale_files(folder, robustness))


def stale_formats(folder: Path, bench: BenchReport | None) -> dict[str, str]:
    """{format: why} for each benchmarked format whose file is gone or has other bytes than were timed."""
    from mnist_edge.files import sha256_file

    out = {}
    for e in bench.formats if bench else []:
        if not e.ok or not e.file or not e.sha256:
            continue
        path = folder / Path(e.file).name
        if not path.is_file():
            out[e.format] = f"{path.name} is gone"
        elif sha256_file(path) != e.sha256:
            out[e.format] = f"{path.name} changed since it was timed"
    return out
