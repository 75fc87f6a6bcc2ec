"""Card sections on how a model behaves beyond clean accuracy: the robustness suite's tables (per card and
for the zoo index) and confidence you can act on (the temperature, ECE, and what ``--min-confidence``
rejects on the test set and over the robustness suite). Drawn from ``manifest.json`` (its ``temperature``
record, read into :class:`Temperature`) and ``robustness.json``; :mod:`mnist_edge.cards.card` assembles them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mnist_edge.documents.fields import (FINITE, FLAG, NONNEG, PERCENT, POSITIVE, TEXT, Where, count, extra_field,
                                         optional, parse, spec)


@dataclass
class Rejection:
    """What ``--min-confidence threshold`` rejects on a split (mnist_edge.evaluate.confidence.rejection_table)."""

    threshold: float = spec(FINITE, required=True)
    errors: int = spec(count(0), required=True)
    errors_rejected_pct: float | None = spec(optional(PERCENT))
    correct_rejected_pct: float | None = spec(optional(PERCENT))
    accepted_accuracy_pct: float | None = spec(optional(PERCENT))
    extra: dict = extra_field()


@dataclass
class SplitRecord:
    """Calibration figures on one split: where T was fitted, or the test set."""

    images: int = spec(count(1), required=True)
    accuracy_pct: float = spec(PERCENT, required=True)
    ece_before: float = spec(NONNEG, required=True)
    ece_after: float = spec(NONNEG, required=True)
    nll_before: float = spec(NONNEG, required=True)
    nll_after: float = spec(NONNEG, required=True)
    split: str | None = spec(optional(TEXT))
    seen_in_training: bool | None = spec(optional(FLAG))
    rejection: list = spec(Rejection, many=True, factory=list)
    rejection_before: list | None = spec(Rejection, many=True)  # the same at T = 1
    extra: dict = extra_field()


@dataclass
class Temperature:
    """The manifest's ``temperature`` record (mnist_edge.exporter.temperature)."""

    temperature: float = spec(POSITIVE, required=True)
    fitted_temperature: float | None = spec(optional(POSITIVE))
    fitted_on: SplitRecord = spec(SplitRecord, required=True)
    test: SplitRecord = spec(SplitRecord, required=True)
    extra: dict = extra_field()

    def validate(self, where: Where) -> None:
        if self.fitted_on.split is None or self.fitted_on.seen_in_training is None:
            raise where.at("fitted_on").fail("lacks split or seen_in_training")


def temperature_of(manifest: dict, source="manifest.json") -> Temperature | None:
    """The manifest's temperature record, checked (None for a folder exported before temperature scaling)."""
    rec = manifest.get("temperature")
    return parse(Temperature, rec, Where(source, "temperature")) if rec else None


def load_robustness(folder: Path) -> dict | None:
    """The folder's robustness report (bounded read, validated, with the fields the card shows checked),
    None when it has none."""
    from mnist_edge.documents import load_json
    from mnist_edge.evaluate.robustness import REPORT_NAME, validate_report

    path = folder / REPORT_NAME
    if not path.exists():
        return None
    report = validate_report(load_json(path, kind="robustness"), str(path))  # every field the tables show
    if not isinstance(report.get("command"), str):  # the card quotes it (the library may write null)
        raise Where(path).at("command").bad(report.get("command"), "a string")
    return report


def robustness_lines(name: str, report: dict | None, stale: dict | None = None) -> list[str]:
    """The card's robustness section: one row per condition, one column per ONNX file."""
    from mnist_edge.evaluate.robustness import REPORT_NAME, render_table

    lines = ["## Robustness", ""]
    if not report:
        return lines + [f"Not measured yet: run `mnist-edge robustness {name} --json "
                        f"exported/{name}/{REPORT_NAME}`.", ""]
    v = report.get("versions") or {}  # a report may leave it out (mnist_edge.evaluate.robustness_report)
    lines += [f"`{report['command']}`: accuracy on the {report['images']:,} MNIST test images transformed by each "
              f"condition of the robustness suite (numpy {v.get('numpy')}, onnxruntime {v.get('onnxruntime')}; "
              "`mnist_edge/evaluate/robustness.py` defines each condition).", "", render_table(report, markdown=True).rstrip()]
    if stale:
        lines += ["", "**Stale:** " + "; ".join(f"{p}: {why}" for p, why in stale.items())
                  + ". These figures describe other files; run the robustness command again."]
    return lines + [""]


def robustness_index(rows: list[tuple[str, dict | None, dict]]) -> list[str]:
    """The index's robustness table: one row per model file, one column per condition; ``rows`` holds
    (model name, its report or None, {precision: why stale})."""
    from mnist_edge.evaluate.robustness import CONDITIONS, NOISE_SIGMA, REPORT_NAME, worst

    measured = [r for _, r, _ in rows if r]
    names = [n for n in CONDITIONS if any(n in {c["name"] for c in r["conditions"]} for r in measured)]
    lines = ["## Robustness", "",
             "Accuracy (%) of each ONNX file on the 10,000 test images transformed by each condition of "
             "`mnist-edge robustness` (from each model's `robustness.json`): moved 2 px up, down, left or right; "
             f"turned 15 degrees either way; resized 0.8x or 1.2x about the centre; strokes 1 px thinner or "
             f"thicker at each edge (grey erosion or dilation with a 3x3 cross); Gaussian noise of sigma "
             f"{NOISE_SIGMA:g} (pixels 0-255). Worst: the lowest but clean. Every condition is deterministic; "
             "`mnist_edge/evaluate/robustness.py` defines them.", "",
             "| model | file | " + " | ".join(names) + " | worst |", "|---|---|" + "---|" * (len(names) + 1)]
    for name, report, stale in rows:
        if not report:
            lines.append(f"| [`{name}`]({name}/README.md) | not measured: `mnist-edge robustness {name} --json "
                         f"exported/{name}/{REPORT_NAME}` |" + " |" * (len(names) + 1))
            continue
        for e in report["files"]:
            acc = e["accuracy"]
            w = worst(e)
            mark = " (stale)" if e["precision"] in stale else ""
            lines.append(f"| [`{name}`]({name}/README.md) | {e['precision']}{mark} | "
                         + " | ".join(f"{acc[n]:.2f}" if n in acc else "-" for n in names)
                         + f" | {f'{w[1]:.2f} ({w[0]})' if w else '-'} |")
    return lines + [""]


SEEN_NOTE = ("No temperature is applied (T = 1): this model's recipe trained on all 60,000 training images, so "
             "the only images left to fit T on are ones it was trained on (the test set is never used for "
             "fitting). A network is more confident on digits it has seen, so the T fitted there comes out "
             "below 1 and would sharpen probabilities that are already too confident on new digits (it made "
             "the test set's ECE worse for six of the seven such models). The value it gave is in the manifest "
             "(`fitted_temperature`); a recipe with a validation split (`val_size`) gives a T that transfers.")


def _pct(v, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}%"


def confidence_lines(rec: Temperature | None) -> list[str]:
    """The card's section on the temperature and what ``--min-confidence`` rejects (from the manifest)."""
    if not rec:
        return ["", "## Confidence you can act on", "",
                "Exported before temperature scaling: `probabilities` = softmax(logits) (T = 1, not fitted)."]
    fit, test = rec.fitted_on, rec.test
    lines = ["", "## Confidence you can act on", "",
             f"`probabilities` = softmax(logits / T) with **T = {rec.temperature:g}**, inside every graph "
             f"(`model.pt`, `model.onnx`, `model.int8.onnx`; the logits are unchanged) and applied by the Python "
             f"runtime. T minimises the negative log-likelihood on the fitting split: {fit.split}, "
             f"{fit.images:,} images.", ""]
    if fit.seen_in_training:
        lines += ["**Caution.** " + SEEN_NOTE, ""]
    lines += ["| split | images | accuracy | ECE at T = 1 | ECE at T | NLL at T = 1 | NLL at T |",
              "|---|---|---|---|---|---|---|"]
    for label, r in (("fitting split" + (" (seen in training)" if fit.seen_in_training else ""), fit),
                     ("test set", test)):
        lines.append(f"| {label} | {r.images:,} | {r.accuracy_pct:.2f}% | {r.ece_before:.4f} | "
                     f"{r.ece_after:.4f} | {r.nll_before:.4f} | {r.nll_after:.4f} |")
    lines += ["", "ECE: expected calibration error, top label, 15 equal-width bins. `mnist-edge predict "
                  "--min-confidence P` (or `predict(..., min_confidence=P)`) answers \"unsure\" when the best probability is below P. "
                  f"On the {test.images:,} test images (PyTorch, the fp32 graphs agree):", "",
              "| P | errors caught | correct digits rejected | accuracy on the answered | errors caught at T = 1 | "
              "correct rejected at T = 1 |", "|---|---|---|---|---|---|"]
    for r, b in zip(test.rejection, test.rejection_before or [None] * len(test.rejection)):
        lines.append(f"| {r.threshold:g} | {_pct(r.errors_rejected_pct)} of {r.errors} | "
                     f"{_pct(r.correct_rejected_pct)} | {_pct(r.accepted_accuracy_pct, 2)} | "
                     f"{_pct(b.errors_rejected_pct if b else None)} | {_pct(b.correct_rejected_pct if b else None)} |")
    return lines


def confidence_table(rows, *, at_one: bool = False) -> list[str]:
    """One row per model: T, where it was fitted, test ECE before/after, and at each P the share of the
    test set's errors caught / of its correct digits rejected (markdown lines; README and zoo index).
    ``rows`` hold (model name, its manifest, ...); ``at_one``: the rejection shares of the uncalibrated
    probabilities (T = 1) instead, for comparison."""
    recs = [(name, temperature_of(man, f"{name}'s manifest")) for name, man, *_ in rows]
    thresholds = next(([r.threshold for r in rec.test.rejection] for _, rec in recs if rec), [])
    lines = ["| model | T | fitted on | test ECE, T = 1 → T | "
             + " | ".join(f"P = {t:g}" for t in thresholds) + " |",
             "|---|---|---|---|" + "---|" * len(thresholds)]
    for name, rec in recs:
        if not rec:
            lines.append(f"| `{name}` | not fitted | | |" + " |" * len(thresholds))
            continue
        fit, test = rec.fitted_on, rec.test
        table = test.rejection_before if at_one else test.rejection
        cells = [f"{_pct(r.errors_rejected_pct)} / {_pct(r.correct_rejected_pct)}" for r in table or []]
        if fit.seen_in_training:
            seen = rec.fitted_temperature
            where = "no held-out images: T = 1" + (f" (seen images gave {seen:g})" if seen is not None else "")
        else:
            where = f"held-out validation ({fit.images:,})"
        lines.append(f"| `{name}` | {rec.temperature:g} | {where} | "
                     f"{test.ece_before:.4f} → {test.ece_after:.4f} | " + " | ".join(cells) + " |")
    return lines


def robustness_rejection_table(rows) -> list[str]:
    """One row per model (its fp32 file): at each P, over the robustness suite's transformed conditions
    pooled, the share of errors caught / of correct digits rejected (markdown lines; README)."""
    lines, thresholds = [], None
    for name, report in rows:
        entry = next((e for e in (report or {}).get("files", []) if e["precision"] == "fp32"), None)
        table = (entry or {}).get("rejection_transformed")
        if not table:
            continue
        if thresholds is None:
            thresholds = [r["threshold"] for r in table]
            lines = ["| model | errors in the suite | " + " | ".join(f"P = {t:g}" for t in thresholds) + " |",
                     "|---|---|" + "---|" * len(thresholds)]
        cells = [f"{_pct(r['errors_rejected_pct'])} / {_pct(r['correct_rejected_pct'])}" for r in table]
        lines.append(f"| `{name}` | {table[0]['errors']:,} | " + " | ".join(cells) + " |")
    return lines
