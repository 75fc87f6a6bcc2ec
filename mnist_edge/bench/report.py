"""The benchmark report on a terminal and in markdown, and ``compare_reports`` between two saved reports.

The report itself, its schema and its checks: :mod:`mnist_edge.bench.document`.

``compare_reports`` writes ``mnist-edge-bench/1/compare``: ``a`` and ``b`` (machine, versions, date),
``models`` {a, b: {name, folder, files {format: {file, sha256}}}}, ``warnings`` (the runs timed other
models or other files), ``rows`` and ``advice``.
"""

from __future__ import annotations

import textwrap

from mnist_edge.bench.document import SCHEMA, BenchReport, ResultRow
from mnist_edge.files import format_size as _size


def _num(x, fmt="{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def _pi_line(report: BenchReport) -> str | None:
    pi = report.environment.raspberry_pi
    if pi is None:
        return None
    freq = pi.cpufreq or {}
    end = report.environment_end
    thr = (end.throttled if end else None) or pi.throttled or {}
    flags = thr.get("flags") if isinstance(thr.get("flags"), list) else []
    return (f"board: {pi.model}; governor {freq.get('governor', '?')}, {freq.get('cur_mhz', '?')}"
            f"/{freq.get('max_mhz', '?')} MHz; {thr.get('raw') or 'throttling state unknown'}"
            + (f" ({', '.join(map(str, flags))})" if flags else ""))


def environment_lines(report: BenchReport) -> list[str]:
    env = report.environment
    cpu, v = env.cpu, env.versions
    flags = " ".join(k for k, on in cpu.flags.items() if on) or "none found"
    name = f"emulated (host: {cpu.host_cpu or 'unknown'})" if cpu.emulated else cpu.model
    source = f" (from {cpu.flags_source})" if cpu.flags_source else ""
    end = report.environment_end.load_average if report.environment_end else None
    lines = [f"CPU: {name or 'unknown'} ({cpu.arch}, {cpu.usable_cores} usable of "
             f"{cpu.logical_cores} cores); flags{source}: {flags}; int8: {cpu.int8_note}",
             f"OS: {env.os.platform}; memory {env.memory_mb or '?'} MiB; load average "
             f"{env.load_average} at start, {end} at end",
             f"versions: Python {v.get('python')}, numpy {v.get('numpy')}, onnxruntime {v.get('onnxruntime')}, "
             f"torch {v.get('torch') or 'not installed'}, mnist-edge {v.get('mnist_edge')}"]
    pi = _pi_line(report)
    if pi:
        lines.append(pi)
    s = report.settings
    budget = f"{s.runs} runs" if s.runs else f"{s.seconds} s"
    lines.append(f"settings: model {report.model.name} ({report.model.folder}), device "
                 f"{s.device}, {budget} per case after {s.warmup} warm-up, "
                 f"{'one process per format' if s.isolate else 'one process'}")
    return lines


COLUMNS = ("format", "batch", "thr", "p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "min ms", "img/s",
           "x eager", "cold ms", "size", "RSS MiB", "acc %", "provider")
# The default table: fits 100 columns (`--wide` shows every column).
NARROW = ("format", "batch", "thr", "p50 ms", "p99 ms", "img/s", "x eager", "cold ms", "size", "RSS MiB", "acc %")


def _select(rows, columns):
    keep = [COLUMNS.index(c) for c in columns]
    return [[r[i] for i in keep] if len(r) == len(COLUMNS) else r for r in rows]


def _cells(r: ResultRow, entry, eager: dict) -> list[str]:
    base = eager.get((r.batch, r.threads))
    return [r.format, str(r.batch), str(r.threads), _num(r.p50_ms), _num(r.p90_ms), _num(r.p99_ms),
            _num(r.mean_ms), _num(r.std_ms), _num(r.min_ms), _num(r.images_per_s, "{:.0f}"),
            _num(base / r.p50_ms if base else None, "{:.2f}"), _num(r.cold_start_ms, "{:.1f}"),
            _size(entry.size_bytes), _num(entry.peak_rss_mb, "{:.0f}"), _num(entry.accuracy, "{:.2f}"),
            r.provider + _placement(r.placement)]


def table_rows(report: BenchReport) -> list[list[str]]:
    """The result table as strings (every column of COLUMNS), one row per case; formats that did not run
    get one short row each."""
    eager = report.p50s("eager")
    out = []
    for e in report.formats:
        if not e.ok:
            out.append([e.format, f"{e.status}: {e.reason}"])  # a short row: no timings
            continue
        out += [_cells(r, e, eager) for r in report.results if r.format == e.format]
    return out


def _placement(placement) -> str:
    from mnist_edge.runtime.placement import summary

    text = summary({"nodes": placement.nodes}) if placement is not None else ""
    return f" ({text})" if text else ""


def _aligned(header, rows) -> str:
    """Columns padded to width; a short row (a format that did not run) is its name, then its reason."""
    full = [r for r in rows if len(r) == len(header)]
    widths = [max([len(h)] + [len(r[i]) for r in full]) for i, h in enumerate(header)]
    last = len(header) - 1

    def line(cells):
        return "  ".join(c.ljust(w) if i in (0, last) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths))).rstrip()

    return "\n".join([line(header)] + [line(r) if len(r) == len(header) else
                                       r[0].ljust(widths[0]) + "  " + "  ".join(r[1:]) for r in rows])


def render_table(report: BenchReport, wide: bool = False) -> str:
    """The terminal report: environment, the table (100 columns; ``wide``: every column), notes, warnings
    and the advice line."""
    columns = COLUMNS if wide else NARROW
    parts = environment_lines(report) + ["", _aligned(columns, _select(table_rows(report), columns)), ""]
    parts += textwrap.wrap("img/s: batch / p50; x eager: PyTorch eager's p50 / this p50 at the same batch and "
                           "threads (higher is faster); cold: load + first inference; RSS: the format's peak "
                           "resident memory" + ("" if wide else "; --wide for p90, mean, std, min and provider"), 100)
    for e in report.formats:
        parts += [f"note ({e.format}): {note}" for note in e.notes]
    parts += [f"warning: {w}" for w in report.warnings]
    parts.append(f"advice: {report.advice.line}")
    return "\n".join(parts)


def _md_row(cells) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def render_markdown(report: BenchReport) -> str:
    """The report as markdown: the table, the environment as a list, warnings and the advice."""
    lines = [f"## mnist-edge bench: {report.model.name}", ""]
    lines += [f"- {x}" for x in environment_lines(report)]
    if report.command:
        lines.append(f"- command: `{report.command}`")
    lines += ["", _md_row(COLUMNS), _md_row(["---"] * len(COLUMNS))]
    for r in table_rows(report):
        lines.append(_md_row(r if len(r) == len(COLUMNS) else r + [""] * (len(COLUMNS) - len(r))))
    lines += ["", "img/s: batch / p50; x eager: PyTorch eager's p50 / this p50 at the same batch and threads "
              "(higher is faster); "
              "cold: load + first inference, ms; RSS: peak resident memory of the format's process, MiB.", ""]
    lines += [f"> warning: {w}" for w in report.warnings]
    lines += ["", f"**Advice:** {report.advice.line}", ""]
    return "\n".join(lines)


def _who(report: BenchReport) -> str:
    env = report.environment
    board = env.raspberry_pi.model if env.raspberry_pi else None
    return (f"{board or env.cpu.model or 'unknown CPU'}, onnxruntime {env.versions.get('onnxruntime')}, "
            f"{report.created_utc}")


def _models(report: BenchReport) -> dict:
    files = {e.format: {"file": e.file, "sha256": e.sha256} for e in report.formats if e.ok}
    return {"name": report.model.name, "folder": report.model.folder, "files": files}


def _ratios(x: ResultRow, y: ResultRow) -> dict:
    return {"a_p50_ms": x.p50_ms, "b_p50_ms": y.p50_ms, "p50_ratio": y.p50_ms / x.p50_ms,
            "a_p99_ms": x.p99_ms, "b_p99_ms": y.p99_ms, "p99_ratio": y.p99_ms / x.p99_ms,
            "speedup": x.p50_ms / y.p50_ms, "throughput_ratio": y.images_per_s / x.images_per_s}


def compare_reports(a: BenchReport, b: BenchReport) -> dict:
    """Ratios B / A for every case in both reports (same format, batch and threads).

    ``p50_ratio`` and ``p99_ratio`` below 1 mean B is faster; ``speedup`` is A's p50 / B's p50. The two
    runs' models and files are named, with a warning where they differ (then the ratios compare more than
    the machines).
    """
    ma, mb = _models(a), _models(b)
    warnings = []
    if ma["name"] != mb["name"]:
        warnings.append(f"the runs timed different models: A {ma['name']}, B {mb['name']}")
    for fmt in [f for f in ma["files"] if f in mb["files"]]:
        fa, fb = ma["files"][fmt], mb["files"][fmt]
        if fa["sha256"] and fb["sha256"] and fa["sha256"] != fb["sha256"]:
            warnings.append(f"{fmt}: different files (A {fa['file']} sha256 {fa['sha256'][:12]}, B {fb['file']} "
                            f"sha256 {fb['sha256'][:12]})")
    ra, rb = {r.key: r for r in a.results}, {r.key: r for r in b.results}
    rows = []
    for k in list(ra) + [k for k in rb if k not in ra]:
        x, y = ra.get(k), rb.get(k)
        row = {"format": k[0], "batch": k[1], "threads": k[2], "only_in": None if x and y else ("A" if x else "B")}
        if x and y:
            row.update(_ratios(x, y))
        rows.append(row)
    return {"schema": SCHEMA + "/compare", "a": _who(a), "b": _who(b), "models": {"a": ma, "b": mb},
            "warnings": warnings, "rows": rows, "advice": {"a": a.advice.line, "b": b.advice.line}}


def _model_line(m: dict) -> str:
    files = ", ".join(f"{fmt} {f['file']} ({(f['sha256'] or '?')[:12]})" for fmt, f in m["files"].items())
    return f"{m['name']} in {m['folder']}: {files or 'no file timed'}"


def render_compare(cmp: dict, markdown: bool = False) -> str:
    header = ["format", "batch", "thr", "A p50", "B p50", "B/A p50", "A p99", "B p99", "B/A p99", "B/A img/s"]
    body = []
    for r in cmp["rows"]:
        if r["only_in"]:
            body.append([r["format"], f"batch {r['batch']}, {r['threads']} threads: only in {r['only_in']}"])
            continue
        body.append([r["format"], str(r["batch"]), str(r["threads"]), _num(r["a_p50_ms"]), _num(r["b_p50_ms"]),
                     _num(r["p50_ratio"], "{:.2f}"), _num(r["a_p99_ms"]), _num(r["b_p99_ms"]),
                     _num(r["p99_ratio"], "{:.2f}"), _num(r["throughput_ratio"], "{:.2f}")])
    intro = [f"A: {cmp['a']}", f"B: {cmp['b']}"]
    if cmp.get("models"):
        intro += [f"A model: {_model_line(cmp['models']['a'])}", f"B model: {_model_line(cmp['models']['b'])}"]
    intro += [f"warning: {w}" for w in cmp.get("warnings") or []]
    outro = ["B/A below 1: B is faster (times); above 1: B has more images/s.",
             f"advice A: {cmp['advice']['a']}", f"advice B: {cmp['advice']['b']}"]
    if markdown:
        lines = ["## mnist-edge bench: compare", ""] + [f"- {x}" for x in intro] + ["", _md_row(header),
                                                                                     _md_row(["---"] * len(header))]
        padded = [r + [""] * (len(header) - len(r)) for r in body]
        return "\n".join(lines + [_md_row(r) for r in padded] + [""] + [f"- {x}" for x in outro] + [""])
    return "\n".join(intro + [""] + [_aligned(header, body)] + [""] + outro)
