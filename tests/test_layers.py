"""The package's layers point one way, with no import circle, and the runtime reaches neither torch nor onnx.

Every ``import`` in the package is read from the source (at module level and inside functions alike: a
lazy import is still a dependency), so this holds whatever a test run happens to import.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "mnist_edge"
# Above the base: the export layer and the benchmark (peers), then what presents them, then the CLI.
MIDDLE = ("mnist_edge.export", "mnist_edge.bench")
TOP = ("mnist_edge.cards", "mnist_edge.demo", "mnist_edge.cli", "mnist_edge.__main__")


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


def layer(name: str) -> int:
    if name.startswith(TOP):
        return 2
    return 1 if name.startswith(MIDDLE) else 0


def test_layers_point_one_way():
    wrong = [f"{a} -> {b}" for a, deps in GRAPH.items() for b in deps
             if b in MODULES and layer(b) > layer(a) and not (a == "mnist_edge.__main__")]
    assert wrong == [], "a lower layer imports a higher one: " + "; ".join(sorted(wrong))
    assert not any(d.startswith("mnist_edge.cli") for a, deps in GRAPH.items() if not a.startswith(
        ("mnist_edge.cli", "mnist_edge.__main__")) for d in deps), "only the CLI itself imports mnist_edge.cli"


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


# What a runtime-only install (numpy + onnxruntime) runs: the runtime and the robustness suite.
RUNTIME_ONLY = ("mnist_edge.runtime", "mnist_edge.robustness")


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
    assert not any(m.startswith(MIDDLE + TOP) for m in reach), sorted(m for m in reach if m.startswith(MIDDLE + TOP))


def test_the_walk_sees_lazy_imports():
    assert "torch" in GRAPH["mnist_edge.torchrun"]  # imported only inside functions there
    assert "mnist_edge.export.pipeline" in GRAPH["mnist_edge.cli.export_cmd"] or \
        "mnist_edge.export" in GRAPH["mnist_edge.cli.export_cmd"]
