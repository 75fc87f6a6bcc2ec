"""The int8 recipe registry: per model, the quantization options the search chose and whether int8 pays.

A recipe file (``mnist_edge/int8_recipes/NAME.json``, written by ``mnist-edge quantize --search
--register``) holds the :class:`~mnist_edge.export.quantize.QuantizeOptions` that ``mnist-edge export
--quantize`` uses, the file to recommend (``model.int8.onnx``, or ``model.onnx`` when int8 does not pay
on the machine the search ran on), the verdict with its evidence (machine, ratios, trials). The search
measures time, so it is not reproducible; the recipe it registers is a committed input, so an export from
it is. A model without a file gets the default options and no verdict. Standard library + numpy only.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path

from mnist_edge import artifacts as A
from mnist_edge.errors import UsageError
from mnist_edge.export.quantize import QuantizeOptions

SCHEMA = "mnist-edge/int8-recipe/1"
REGISTRY = Path(__file__).resolve().parents[1] / "int8_recipes"
FP32_FILE, INT8_FILE = A.ONNX, A.INT8
VERDICTS = ("pays", "does not pay", "undetermined", "no recipe passed")


@dataclass(frozen=True)
class Int8Recipe:
    options: QuantizeOptions
    recommended: str = INT8_FILE
    verdict: str | None = None  # None: never searched (the default recipe)
    source: str = "default"  # "registry:NAME.json", a file path, or "default"
    document: dict = field(default_factory=dict, compare=False)  # the whole file, for the manifest

    def record(self) -> dict:
        """What the manifest keeps: source, verdict, recommendation, and the evidence the file carries."""
        keep = ("summary", "chosen", "machine", "search", "trials")
        return {"source": self.source, "verdict": self.verdict, "recommended": self.recommended,
                **{k: self.document[k] for k in keep if k in self.document}}


def registered_path(model: str) -> Path:
    return REGISTRY / f"{model}.json"


def parse_recipe(data, source: str) -> Int8Recipe:
    """An :class:`Int8Recipe` from a recipe document (a search's output or a registry file)."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UsageError(f"{source} is not an int8 recipe (expected \"schema\": \"{SCHEMA}\")")
    options = QuantizeOptions.from_dict(data.get("options"), source)
    recommended = data.get("recommended", INT8_FILE)
    if recommended not in (FP32_FILE, INT8_FILE):
        raise UsageError(f"{source}: recommended {recommended!r} must be {FP32_FILE!r} or {INT8_FILE!r}")
    verdict = data.get("verdict")
    if verdict is not None and verdict not in VERDICTS:
        raise UsageError(f"{source}: verdict {verdict!r} is not one of: {', '.join(VERDICTS)}")
    return Int8Recipe(options, recommended, verdict, source, data)


def load_recipe(model: str, path: str | os.PathLike | None = None) -> Int8Recipe:
    """``path``'s recipe, else ``model``'s registered one, else the default options (source "default")."""
    if path is None:
        reg = registered_path(model)
        if not reg.is_file():
            return Int8Recipe(QuantizeOptions())
        path, source = reg, f"registry:{reg.name}"
    else:
        source = os.fspath(path)
    try:
        data = json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise UsageError(f"--recipe '{path}' does not exist") from None
    except (OSError, ValueError) as e:
        raise UsageError(f"recipe '{path}' is not readable JSON: {e}") from None
    recipe = parse_recipe(data, source)
    if data.get("model") not in (None, model):
        raise UsageError(f"recipe '{path}' was searched for model {data.get('model')!r}, not {model!r}")
    return recipe


def write_json(document: dict, path: str | os.PathLike) -> Path:
    """Write ``document`` to ``path`` atomically (temp file, then rename), sorted keys, newline at the end."""
    from mnist_edge.files import write_text_atomic

    write_text_atomic(path, json.dumps(document, indent=2, sort_keys=True) + "\n")
    return Path(path)
