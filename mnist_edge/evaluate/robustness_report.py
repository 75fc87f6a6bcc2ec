"""The robustness report (``mnist-edge robustness --json``, schema mnist-edge-robustness/1) as typed records:
every field a table or a card shows is checked when the report is read, so a malformed or hand-edited
report is one ArtifactError naming the file and the field, never a KeyError or a nan in a card.

- ``schema``, ``command`` (null when the library wrote it), ``model``, ``images`` (test images per
  condition), ``data``, ``threads``, ``versions`` {library: version};
- ``settings``: ``noise_sigma``, ``noise_seed`` and how the conditions were drawn (kept as written);
- ``conditions``: [{name, description}], at least one;
- ``files``: one entry per ONNX file: ``precision``, ``file`` (its name in the folder), ``sha256``,
  ``verified``, ``correct`` and ``accuracy`` (percent) per condition (every condition listed), and
  ``rejection_transformed`` (what ``--min-confidence`` rejects over the transformed conditions, or null).
"""

from __future__ import annotations

from dataclasses import dataclass

from mnist_edge.documents import SCHEMAS
from mnist_edge.documents.fields import (FINITE, FLAG, PATH, PERCENT, TEXT, Where, count, dict_of, extra_field,
                                         one_of, optional, parse, spec)

SCHEMA = SCHEMAS["robustness"]


@dataclass
class Settings:
    noise_sigma: float = spec(FINITE, required=True)
    noise_seed: int = spec(count(0), required=True)
    extra: dict = extra_field()


@dataclass
class Condition:
    name: str = spec(TEXT, required=True)
    description: str = spec(TEXT, required=True)
    extra: dict = extra_field()


@dataclass
class Rejection:
    """One row of mnist_edge.evaluate.confidence.rejection_table."""

    threshold: float = spec(FINITE, required=True)
    errors: int = spec(count(0), required=True)
    errors_rejected_pct: float | None = spec(optional(PERCENT), required=True)  # null: no errors to catch
    correct: int = spec(count(0), required=True)
    correct_rejected_pct: float | None = spec(optional(PERCENT), required=True)
    rejected_pct: float | None = spec(optional(PERCENT), required=True)
    accepted_accuracy_pct: float | None = spec(optional(PERCENT), required=True)  # null: nothing answered
    extra: dict = extra_field()


@dataclass
class FileEntry:
    precision: str = spec(TEXT, required=True)
    file: str = spec(PATH, required=True)
    sha256: str = spec(TEXT, required=True)
    verified: bool | None = spec(optional(FLAG))
    correct: dict | None = spec(optional(dict_of(count(0))))
    accuracy: dict = spec(dict_of(PERCENT), required=True)  # {condition: percent}
    rejection_transformed: list | None = spec(Rejection, many=True)
    extra: dict = extra_field()


@dataclass
class RobustnessReport:
    schema: str = spec(one_of(SCHEMA), required=True)
    command: str | None = spec(optional(TEXT))
    model: str = spec(TEXT, required=True)
    images: int = spec(count(1, 10_000_000), required=True)
    data: str | None = spec(optional(TEXT))
    settings: Settings = spec(Settings, required=True)
    conditions: list = spec(Condition, many=True, required=True)
    threads: int | None = spec(optional(count(1)))
    versions: dict = spec(dict_of(optional(TEXT)), factory=dict)
    files: list = spec(FileEntry, many=True, required=True)
    extra: dict = extra_field()

    def validate(self, where: Where) -> None:
        for key in ("conditions", "files"):
            if not getattr(self, key):
                raise where.at(key).fail("is empty")
        names = [c.name for c in self.conditions]
        for i, e in enumerate(self.files):
            missing = [n for n in names if n not in e.accuracy]
            if missing:
                raise where.at("files").at(i).at("accuracy").fail(f"lacks the condition(s) {', '.join(missing)[:120]}")


def check_report(data, source) -> RobustnessReport:
    """The typed report of parsed JSON ``data``; ArtifactError naming ``source`` and the field otherwise."""
    return parse(RobustnessReport, data, Where(source))
