"""A card's lines about the runtimes: every runtime file raced in bench, and which LiteRT int8 recipe and which
file the export chose and why (docs/litert.md)."""

from __future__ import annotations

import math


def race_lines(bench) -> list[str]:
    """Every runtime file interleaved in one process (with LiteRT files): p50 and ratio to the fastest."""
    rows = bench.race.rows if bench.race is not None and bench.race.rows else []
    if not rows:
        return []
    threads = min(r.threads for r in rows)
    out = ["", f"Every runtime file timed interleaved in one process ({threads} thread), as the export races them; "
               "p50 in ms and its ratio to the fastest at that batch size (95% interval):", "",
           "| file | " + " | ".join(f"batch {b}" for b in sorted({r.batch for r in rows})) + " |",
           "|---|" + "---|" * len({r.batch for r in rows})]
    for name in dict.fromkeys(r.file for r in sorted(rows, key=lambda r: (r.batch, r.ratio))):
        cells = []
        for b in sorted({r.batch for r in rows}):
            r = next((r for r in rows if r.file == name and r.batch == b and r.threads == threads), None)
            cells.append("-" if r is None else f"{r.p50_ms:.3f} ({r.ratio:.2f}x [{r.low:.2f}, {r.high:.2f}])")
        out.append(f"| `{name}` | " + " | ".join(cells) + " |")
    return out


def runtime_choice_lines(manifest: dict) -> list[str]:
    """Which LiteRT int8 recipe won and why, and which runtime file the export found fastest (docs/litert.md)."""
    def obj(v) -> dict:
        return v if isinstance(v, dict) else {}

    def finite(v) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    litert, race = obj(manifest.get("litert")), obj(manifest.get("fastest"))
    lines = []
    if isinstance(litert.get("why"), str):
        lines += ["", f"LiteRT int8 recipe: {litert['why']}."]
    parts = []
    for batch, one in obj(race.get("by_batch")).items():  # a hand-edited manifest: show only what is sound
        w = obj(obj(one).get("winner"))
        margin = w.get("margin")
        if isinstance(w.get("file"), str) and isinstance(w.get("runner_up"), str) and isinstance(margin, list) \
                and len(margin) == 3 and all(finite(m) for m in margin):
            parts.append(f"batch {batch}: `{w['file']}`, {w['runner_up']} {margin[0]:.2f}x its p50 "
                         f"[{margin[1]:.2f}, {margin[2]:.2f}]")
    if parts:
        cpu = race.get("cpu") if isinstance(race.get("cpu"), str) else "its machine"
        lines += ["", f"Recommended: `{manifest.get('recommended')}`, the fastest runtime file at batch 1 when the "
                      f"export raced them all on {cpu} (1 thread; " + "; ".join(parts) + ")."]
    return lines
