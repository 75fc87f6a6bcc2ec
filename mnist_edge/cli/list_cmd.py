"""`mnist-edge list`: the model zoo, one line per model."""

from __future__ import annotations

from mnist_edge.cli import add_command


def register(sub) -> None:
    p = add_command(sub, "list", "list the model zoo (parameters, MACs, documented accuracy)",
                    "One line per model you can train and export: its name (what --model takes), the seed "
                    "document it comes from, parameter and multiply-accumulate counts (these need torch), the "
                    "accuracy its seed documents, and the architecture in a few words.",
                    ["mnist-edge list", "mnist-edge list --json"])
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=run)


def zoo_table() -> list[dict]:
    """One row per registry entry (no torch: parameter and MAC counts come from the registry)."""
    from mnist_edge.zoo.registry import MODELS

    return [{
        "name": name,
        "seed": spec.seed_file.split("_")[0],
        "params": spec.params,
        "macs": spec.macs,
        "documented_params": spec.documented_params,
        "documented_accuracy": spec.documented_accuracy,
        "description": spec.description,
    } for name, spec in MODELS.items()]


def run(args) -> int:
    rows = zoo_table()
    if args.json:
        import json

        print(json.dumps(rows, indent=2))
        return 0
    fmt = "{:<16} {:>4} {:>9} {:>11} {:>8}  {}"
    print(fmt.format("name", "seed", "params", "MACs/image", "doc acc", "model"))
    for r in rows:
        acc = f"{r['documented_accuracy']:.2f}%" if r["documented_accuracy"] else "-"
        print(fmt.format(r["name"], r["seed"], f"{r['params']:,}", f"{r['macs']:,}", acc, r["description"]))
    return 0
