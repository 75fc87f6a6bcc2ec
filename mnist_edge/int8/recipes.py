"""The int8 recipe registry: per model, the quantization options the search chose and whether int8 pays.

A registry file is one JSON object of model name -> entry; an entry holds only what ``mnist-edge export
--quantize`` needs: the :class:`~mnist_edge.int8.quantize.QuantizeOptions`, the file to recommend
(``model.int8.onnx``, or ``model.onnx`` when int8 does not pay on the machine the search ran on), the
verdict and its one-line summary, and the schema of the search result it came from. The zoo's registry,
``mnist_edge/zoo/int8_recipes.json``, is read-only package data; ``mnist-edge quantize --register FILE``
writes one entry into a registry file named explicitly (the zoo's, in a checkout). The evidence (machine,
ratios, every trial) stays in the search's ``int8_recipe.json`` beside the artifacts
(:mod:`mnist_edge.int8.result`). The search measures time, so it is not reproducible; the entry it
registers is a committed input, so an export from it is. A model without an entry gets the default
options and no verdict. Standard library only (plus the options' module).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from mnist_edge.errors import UsageError
from mnist_edge.int8.quantize import QuantizeOptions
from mnist_edge.int8.result import FP32_FILE, INT8_FILE, SCHEMA, VERDICTS, SearchResult, write_json  # noqa: F401

REGISTRY = Path(__file__).resolve().parents[1] / "zoo" / "int8_recipes.json"  # the zoo's, read-only
REGISTRY_SOURCE = "registry:{}"  # an entry of the zoo's registry, as the manifest names it
ENTRY_KEYS = ("schema", "options", "recommended", "verdict", "summary")


@dataclass(frozen=True)
class Int8Recipe:
    """The options export quantizes with, and what the search that chose them concluded."""

    options: QuantizeOptions
    recommended: str = FP32_FILE  # int8 only where a timing showed it pays (mnist_edge.bench.ratio.SHIP)
    verdict: str | None = None  # None: never searched (the default recipe)
    source: str = "default"  # "registry:NAME", a file path (with "#NAME" for a registry file), or "default"
    summary: str | None = None  # the search's one-line conclusion

    def record(self) -> dict:
        """What the manifest keeps: source, verdict, recommendation and summary (the evidence stays in the
        search's int8_recipe.json)."""
        rec = {"source": self.source, "verdict": self.verdict, "recommended": self.recommended}
        return rec if self.summary is None else {**rec, "summary": self.summary}


def parse_recipe(data, source: str) -> Int8Recipe:
    """An :class:`Int8Recipe` from a search result's dict or a registry entry."""
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise UsageError(f"{source} is not an int8 recipe (expected \"schema\": \"{SCHEMA}\")")
    try:
        options = QuantizeOptions.from_dict(data.get("options"), source)
    except UsageError as e:  # validate()'s messages name the option, not the file
        raise UsageError(str(e) if str(e).startswith(source) else f"{source}: options: {e}") from None
    recommended = data.get("recommended", INT8_FILE)
    if recommended not in (FP32_FILE, INT8_FILE):
        raise UsageError(f"{source}: recommended {recommended!r} must be {FP32_FILE!r} or {INT8_FILE!r}")
    verdict = data.get("verdict")
    if verdict is not None and verdict not in VERDICTS:
        raise UsageError(f"{source}: verdict {verdict!r} is not one of: {', '.join(VERDICTS)}")
    summary = data.get("summary")
    if summary is not None and not isinstance(summary, str):
        raise UsageError(f"{source}: summary {summary!r:.60} must be a string")
    return Int8Recipe(options, recommended, verdict, source, summary)


def load_recipe(model: str, path: str | os.PathLike | None = None, *, registry=None) -> Int8Recipe:
    """``path``'s recipe (a search result, an entry, or a registry file holding ``model``), else ``model``'s
    entry in ``registry`` (default: the zoo's), else the default options (source "default")."""
    if path is None:
        entries = read_registry(registry or REGISTRY) if Path(registry or REGISTRY).is_file() else {}
        if model not in entries:
            return Int8Recipe(QuantizeOptions())
        return parse_recipe(entries[model], REGISTRY_SOURCE.format(model) if registry is None
                            else f"{os.fspath(registry)}#{model}")
    data = _read(path)
    if is_registry(data):
        if model not in data:
            raise UsageError(f"registry '{path}' holds no recipe for {model!r}; it holds: "
                             f"{', '.join(sorted(data)) or 'none'}")
        return parse_recipe(data[model], f"{os.fspath(path)}#{model}")
    recipe = parse_recipe(data, os.fspath(path))
    if data.get("model") not in (None, model):
        raise UsageError(f"recipe '{path}' was searched for model {data.get('model')!r}, not {model!r}")
    return recipe


def read_recipe_file(path: str | os.PathLike) -> dict[str, Int8Recipe]:
    """Every recipe the ``--recipe`` file ``path`` holds, each checked: {model: recipe} of a registry,
    {the model it was searched for ("" when it names none): recipe} of one recipe or search result.
    UsageError naming the file (and the model) otherwise."""
    data = _read(path)
    if is_registry(data):
        return {name: parse_recipe(entry, f"{os.fspath(path)}#{name}") for name, entry in data.items()}
    recipe = parse_recipe(data, os.fspath(path))
    model = data.get("model")
    if model is not None and not isinstance(model, str):
        raise UsageError(f"{os.fspath(path)}: model {model!r:.60} must be a string (the model it was searched for)")
    return {model or "": recipe}


def starting_options(model: str, recipe: str | os.PathLike | None = None, *, search: bool) -> QuantizeOptions:
    """The recipe ``mnist-edge quantize`` starts from: ``recipe``'s options when given; else onnxruntime's
    defaults for a search (starting from the recipe an earlier search registered would bias it) and
    ``model``'s registered recipe for a check of one recipe."""
    if recipe is None and search:
        return QuantizeOptions()
    return load_recipe(model, recipe).options


def is_registry(data) -> bool:
    """Whether parsed JSON is a registry (name -> entry) rather than one recipe (which names its schema)."""
    return isinstance(data, dict) and "schema" not in data


def read_registry(path: str | os.PathLike) -> dict[str, dict]:
    """The entries of the registry file ``path``, each checked; a recipe file or a malformed entry is a
    UsageError naming the file and the model."""
    data = _read(path)
    if not is_registry(data):
        raise UsageError(f"'{path}' is an int8 recipe, not a registry (a JSON object of model name -> entry)")
    for name, entry in data.items():
        parse_recipe(entry, f"registry '{path}', model {name!r}")
    return data


def registry_entry(result: SearchResult) -> dict:
    """What a registry keeps of a search result: the options and the conclusion, not the evidence."""
    return {"schema": SCHEMA, "options": result.options.to_dict(), "recommended": result.recommended,
            "verdict": result.verdict, "summary": result.summary}


def register_recipe(path: str | os.PathLike, model: str, result: SearchResult) -> Path:
    """Record ``result`` as ``model``'s entry in the registry file ``path`` (created when absent): read it,
    update that one entry, write a temporary file and rename it over the old one."""
    path = Path(path)
    entries = read_registry(path) if path.exists() else {}
    entries[model] = registry_entry(result)
    return write_json(dict(sorted(entries.items())), path)


def _read(path) -> object:
    from mnist_edge.documents import load_json

    if not Path(path).exists():
        raise UsageError(f"--recipe '{path}' does not exist")
    return load_json(path, error=UsageError)
