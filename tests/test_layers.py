"""The package's layers point one way, packages never import each other both ways, and the runtime reaches
neither torch nor onnx.

Every ``import`` in the package is read from the source (at module level and inside functions alike: a
lazy import is still a dependency), so this holds whatever a test run happens to import. Layers are
assigned by package (``mnist_edge/<package>/``); each module of the package root is a unit of its own.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mnist_edge"

# Each unit's layer: a unit may import units of its own layer or below, never above. Root modules not
# named here are the base (layer 0): errors, files, artifacts, contract, manifest, packaged, torchrun, ...
LAYERS = {
    "system": 0, "zoo": 0, "documents": 0,
    "runtime": 1,  # numpy + onnxruntime only
    "data": 2,  # reads image folders through the runtime's image reader
    "training": 3, "evaluate": 3,
    "bench": 4, "int8": 4,
    "exporter": 5,  # torch conversion and the export pipeline: uses training, evaluate, int8
    "cards": 6, "demo": 6,
    "cli": 7, "__main__": 7,
    "mnist_edge": 7,  # the package's own __init__: the public facade, export() and train(), imports lazily
}


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return out


MODULES = _modules()


def imports(name: str) -> set[str]:
    """Every module ``name`` imports: mnist_edge modules by full name, others by top-level package."""
    path = MODULES[name]
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] + ([base] if base else []))
            subs = [f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES]
            targets = subs if len(subs) == len(node.names) else [base, *subs]
        else:
            continue
        for t in targets:
            if t.startswith("mnist_edge"):
                while t not in MODULES and "." in t:
                    t = t.rpartition(".")[0]
                if t != name:
                    found.add(t)
            else:
                found.add(t.partition(".")[0])
    return found


GRAPH = {name: imports(name) for name in MODULES}


def unit(name: str) -> str:
    """The package (or root module) a module belongs to: ``mnist_edge.int8.search`` -> ``int8``."""
    parts = name.split(".")
    return parts[1] if len(parts) > 1 else "mnist_edge"


def layer(name: str) -> int:
    return LAYERS.get(unit(name), 0)


def test_every_package_has_a_layer():
    packages = {p.name for p in PACKAGE.iterdir() if (p / "__init__.py").is_file()}
    assert packages <= set(LAYERS), f"give these packages a layer: {sorted(packages - set(LAYERS))}"


def test_layers_point_one_way():
    wrong = [f"{a} -> {b}" for a, deps in GRAPH.items() for b in deps
             if b in MODULES and layer(b) > layer(a)]
    assert wrong == [], "a lower layer imports a higher one: " + "; ".join(sorted(wrong))
    assert not any(unit(d) == "cli" for a, deps in GRAPH.items() if unit(a) not in ("cli", "__main__")
                   for d in deps), "only the CLI itself imports mnist_edge.cli"


def test_no_two_units_import_each_other():
    """Packages (and root modules) form a graph without circles: no package imports one that imports it."""
    edges = {}
    for a, deps in GRAPH.items():
        for b in deps:
            if b in MODULES and unit(a) != unit(b) and unit(a) != "mnist_edge" and unit(b) != "mnist_edge":
                edges.setdefault(unit(a), set()).add(unit(b))
    both = sorted(f"{a} <-> {b}" for a, bs in edges.items() for b in bs if a < b and a in edges.get(b, ()))
    assert both == []


def test_no_import_circle():
    seen, stack, cycles = {}, [], []

    def visit(v):
        seen[v] = "open"
        stack.append(v)
        for w in sorted(d for d in GRAPH[v] if d in MODULES):
            if seen.get(w) == "open":
                cycles.append(" -> ".join(stack[stack.index(w):] + [w]))
            elif w not in seen:
                visit(w)
        stack.pop()
        seen[v] = "done"

    for v in sorted(MODULES):
        if v not in seen:
            visit(v)
    assert cycles == []


# What a runtime-only install (numpy + onnxruntime) runs: the runtime and the robustness suite (self-test
# bundles too, checking TorchScript only where torch is installed).
RUNTIME_ONLY = ("mnist_edge.runtime", "mnist_edge.evaluate.robustness")


def test_the_runtime_reaches_neither_torch_nor_onnx():
    reach, todo = set(), [m for m in MODULES if m.startswith(RUNTIME_ONLY)]
    while todo:
        m = todo.pop()
        if m in reach:
            continue
        reach.add(m)
        todo += [d for d in GRAPH[m] if d in MODULES]
    offenders = sorted(f"{m} imports {d}" for m in reach for d in GRAPH[m] & {"torch", "onnx", "onnxscript"})
    assert offenders == []
    assert not any(layer(m) > 3 for m in reach), sorted(m for m in reach if layer(m) > 3)


def test_the_package_root_stays_small():
    root = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(root) <= 12, root


def test_the_walk_sees_lazy_imports():
    assert "torch" in GRAPH["mnist_edge.torchrun"]  # imported only inside functions there
    assert "mnist_edge.exporter.pipeline" in GRAPH["mnist_edge.cli.export_cmd"] or \
        "mnist_edge.exporter" in GRAPH["mnist_edge.cli.export_cmd"]
