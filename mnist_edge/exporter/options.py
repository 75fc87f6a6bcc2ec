"""How to export: one options object, validated once, and the int8 recipe resolved once (file + overrides).

The CLI passes what the user typed into :func:`int8_choice`; nothing below the library merges options.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace

import numpy as np

from mnist_edge.bench.ratio import SHIP
from mnist_edge.errors import UsageError
from mnist_edge.evaluate import gates as G
from mnist_edge.exporter.onnx_export import DEFAULT_OPSET, check_opset
from mnist_edge.int8.quantize import QuantizeOptions



@dataclass(frozen=True)
class Int8Choice:
    """The int8 options an export uses, and the recipe they came from (for the manifest's record)."""

    options: QuantizeOptions
    recipe: object  # mnist_edge.int8.recipes.Int8Recipe

    def record(self) -> dict:
        """The manifest's ``recommended`` and ``int8_recipe``: the recipe's verdict holds only for its own
        options; options changed on top of it have none, so fp32 is recommended until a timing says otherwise
        (one rule with bench's advice: :data:`mnist_edge.bench.ratio.SHIP`)."""
        record = self.recipe.record()
        if self.options != self.recipe.options:
            record.update(source=f"{record['source']}, options changed on the command line", verdict=None,
                          recommended=SHIP[None])  # not timed: int8 is recommended only where it was
            record.pop("summary", None)  # about other options
        return {"recommended": record["recommended"], "int8_recipe": record}


def int8_choice(model: str, recipe_path=None, overrides: dict | None = None) -> Int8Choice:
    """``recipe_path``'s recipe (else ``model``'s registered one, else the defaults), with ``overrides``
    (QuantizeOptions field -> value; None values are ignored) applied on top, validated."""
    from mnist_edge.int8.recipes import load_recipe

    recipe = load_recipe(model, recipe_path)
    given = {k: (tuple(v) if isinstance(v, list) else v) for k, v in (overrides or {}).items() if v is not None}
    valid = {f.name for f in fields(QuantizeOptions)}
    unknown = sorted(set(given) - valid)
    if unknown:
        raise UsageError(f"unknown int8 option(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    return Int8Choice((recipe.options.with_(**given) if given else recipe.options).validate(), recipe)


@dataclass(frozen=True)
class ExportOptions:
    """Everything an export may vary. ``int8`` None: no int8 file. ``eval_limit`` gates on the first N test
    images instead of all (recorded); ``thresholds`` replaces :data:`gates.THRESHOLDS` (same keys;
    recorded): for tests of the pipeline on briefly trained models. ``calibration_images`` (uint8
    [N, 28, 28]) replaces the class-balanced training images, for tests and experiments. ``litert`` (with
    ``int8``): also ``model.tflite`` and ``model.int8.tflite`` (mnist_edge.exporter.litert); None writes them
    where the ``litert`` extra is installed and says in one line why not elsewhere, True requires them, False
    skips them."""

    int8: Int8Choice | None = None
    opset: int = DEFAULT_OPSET
    batch_sizes: tuple = G.BATCH_SIZES
    eval_limit: int | None = None
    thresholds: dict | None = None
    calibration_images: np.ndarray | None = field(default=None, compare=False)
    litert: bool | None = None  # with int8: LiteRT files too; None: when the litert extra is installed


    @property
    def quantize(self) -> bool:
        return self.int8 is not None

    def validated(self) -> "ExportOptions":
        """A copy with thresholds filled in and every field checked (UsageError naming the bad value)."""
        check_opset(self.opset)
        sizes = tuple(self.batch_sizes)
        if not sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1 for b in sizes):
            raise UsageError(f"batch sizes must be positive integers, got {sizes!r}")
        n = self.eval_limit
        if n is not None and (isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 10_000):
            raise UsageError(f"eval_limit {n!r} must be an integer from 1 to 10000")
        return replace(self, batch_sizes=sizes, thresholds=G.check_thresholds(self.thresholds))
