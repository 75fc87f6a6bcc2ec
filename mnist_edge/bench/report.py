"""The benchmark report: its versioned JSON schema, checks, the terminal and markdown tables, and compare.

Schema ``mnist-edge-bench/1`` (a JSON object; times in milliseconds, sizes in bytes, RSS in MiB):

- ``schema``: "mnist-edge-bench/1". A reader accepts the same major version; fields may be added to
  version 1, never removed or renamed (that makes version 2).
- ``created_utc``, ``command``: when, and the command line that produced it.
- ``model``: ``name`` (zoo name), ``folder``.
- ``settings``: ``formats``, ``batch_sizes``, ``threads`` (resolved counts), ``threads_requested``,
  ``runs`` or ``seconds`` (the other null), ``warmup``, ``device``, ``accuracy``, ``isolate`` (one process
  per format), ``input``.
- ``environment``: ``cpu`` {model, core (ARM core name), arch, family (x86|arm), flags {name: bool},
  flags_source ("/proc/cpuinfo", "AT_HWCAP/AT_HWCAP2" on 64-bit ARM Linux, "sysctl" or null),
  int8_instructions (bool|null), int8_note, emulated (bool: /proc/cpuinfo describes another architecture,
  as under qemu-user; the timings then mean nothing), emulation_note, host_cpu (the emulating host's CPU
  or null), logical_cores, usable_cores}; ``os`` {system, release,
  platform, pointer_bits, message (32-bit ARM warning or null)}; ``memory_mb``; ``load_average`` (1, 5,
  15 min at the start); ``raspberry_pi`` {model, throttled {raw, value, flags}, cpufreq {governor, cur_mhz,
  max_mhz}} or null; ``cpufreq``; ``versions`` {python, numpy, onnxruntime, torch, mnist_edge} (the
  libraries the workers really loaded); ``torch_importable``.
- ``environment_end``: ``load_average`` and ``throttled`` after the run.
- ``formats``: one object per requested format: ``format`` (eager|torchscript|onnx|int8), ``label``,
  ``status`` ("ok" | "not available" | "failed"), ``reason`` (why not, else null), ``file``; when ok also
  ``size_bytes``, ``sha256``, ``verified`` (hash-checked against the folder's manifest.json before
  loading; false when there is none), ``import_ms`` (importing torch/onnxruntime in a fresh process),
  ``peak_rss_mb`` (the worker's peak resident memory, measured before the accuracy pass), ``rss_scope``
  ("format" or "cumulative"), ``providers``, ``notes``, ``library`` {name, version}, ``accuracy``
  (percent on the test set, or null), ``accuracy_images``, ``torch_loaded``.
- ``results``: one object per (format, batch, threads): ``runs``, ``warmup``, ``p50_ms``, ``p90_ms``,
  ``p99_ms``, ``mean_ms``, ``std_ms``, ``min_ms``, ``max_ms``, ``throughput_ips`` (images/s =
  batch / mean), ``throughput_p50_ips`` (batch / p50: what the tables show, the advice's statistic),
  ``p50_ci_ms`` ([low, high], a 95% interval of the p50; both added in 1.x, absent from older reports),
  ``load_ms`` (model/session load), ``first_ms`` (first inference), ``cold_start_ms``
  (their sum), ``provider``, ``device``; ONNX formats add ``predict_p50_ms`` (Classifier.predict, the
  public path with its input checks) and ``placement`` (nodes per onnxruntime provider, from its
  profiling record: {"nodes": {provider: count}, "ops", "total", "device", "provider"}; null for torch).
- ``int8_vs_fp32`` (added in 1.x; null when onnx or int8 did not run): {``method``, ``rows``: one per
  (threads, batch): ``batch``, ``threads``, ``ratio`` (int8 p50 / fp32 p50), ``low``, ``high`` (95% bootstrap
  interval), ``verdict`` ("faster" | "slower" | "undetermined", for int8), ``repeats``, ``calls``, ``p50_ms``,
  ``reference_p50_ms``} or {``method``, ``error``}. Both files timed interleaved in one process, as the int8
  search times them; the per-format ``results`` rows come from separate processes run one after the other.
- ``warnings``: list of strings (busy machine, throttling, too few runs for p99, ...).
- ``advice``: {line, int8_pays (null: undetermined or unknown), ship, int8_speedup {batch, threads, value,
  interval ([low, high] or null)} or null, basis ("measured" from ``int8_vs_fp32`` or, in older reports,
  from the two p50s; "accuracy", "device", "emulation", "cpu flags")}.

``compare_reports`` writes ``mnist-edge-bench/1/compare``: ``a`` and ``b`` (machine, versions, date),
``models`` {a, b: {name, folder, files {format: {file, sha256}}}}, ``warnings`` (the runs timed other
models or other files), ``rows`` and ``advice``.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

from mnist_edge.errors import UsageError
from mnist_edge.files import format_size as _size

SCHEMA_NAME, SCHEMA_MAJOR = "mnist-edge-bench", 1
SCHEMA = f"{SCHEMA_NAME}/{SCHEMA_MAJOR}"
TOP_KEYS = ("schema", "created_utc", "model", "settings", "environment", "formats", "results", "warnings",
            "advice")
ROW_NUMBERS = ("runs", "p50_ms", "p90_ms", "p99_ms", "mean_ms", "std_ms", "min_ms", "max_ms",
               "throughput_ips", "load_ms", "first_ms", "cold_start_ms")
ROW_KEYS = ("format", "batch", "threads") + ROW_NUMBERS + ("provider",)
STATUSES = ("ok", "not available", "failed")


def validate_report(report, source: str = "report") -> dict:
    """``report`` if it follows this schema version; UsageError listing every problem otherwise."""
    if not isinstance(report, dict):
        raise UsageError(f"{source} is not a benchmark report (a JSON object with schema {SCHEMA!r})")
    schema = report.get("schema")
    if not isinstance(schema, str) or not schema.startswith(SCHEMA_NAME + "/"):
        raise UsageError(f"{source} is not a benchmark report: schema {schema!r}, expected {SCHEMA!r}")
    if schema != SCHEMA:
        raise UsageError(f"{source} has schema {schema!r}; this mnist-edge reads {SCHEMA!r}")
    problems = [f"missing '{k}'" for k in TOP_KEYS if k not in report]
    for i, row in enumerate(report.get("results") or []):
        missing = [k for k in ROW_KEYS if k not in row]
        if missing:
            problems.append(f"results[{i}] lacks {', '.join(missing)}")
            continue
        if not row["p50_ms"] <= row["p90_ms"] <= row["p99_ms"] <= row["max_ms"] or row["min_ms"] > row["p50_ms"]:
            problems.append(f"results[{i}]: percentiles out of order")
    for i, entry in enumerate(report.get("formats") or []):
        if entry.get("status") not in STATUSES or "format" not in entry:
            problems.append(f"formats[{i}]: needs 'format' and a status in {STATUSES}")
    if problems:
        raise UsageError(f"{source} does not follow {SCHEMA}: " + "; ".join(problems))
    return report


def load_report(path) -> dict:
    """Read and validate a report JSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except OSError as e:
        raise UsageError(f"cannot read benchmark report {path}: {e.strerror or e}") from None
    except (ValueError, RecursionError) as e:  # RecursionError: nested too deeply
        raise UsageError(f"{path} is not JSON: {str(e)[:200] or type(e).__name__}") from None
    return validate_report(data, str(path))


def write_json(report: dict, path) -> Path:
    from mnist_edge.files import write_text_atomic

    write_text_atomic(path, json.dumps(report, indent=2) + "\n")
    return Path(path)


def _num(x, fmt="{:.3f}") -> str:
    return "-" if x is None else fmt.format(x)


def environment_lines(report: dict) -> list[str]:
    env = report["environment"]
    cpu, v = env["cpu"], env["versions"]
    flags = " ".join(k for k, on in (cpu.get("flags") or {}).items() if on) or "none found"
    name = f"emulated (host: {cpu.get('host_cpu') or 'unknown'})" if cpu.get("emulated") else cpu.get("model")
    source = f" (from {cpu['flags_source']})" if cpu.get("flags_source") else ""
    lines = [f"CPU: {name or 'unknown'} ({cpu.get('arch')}, {cpu.get('usable_cores')} usable of "
             f"{cpu.get('logical_cores')} cores); flags{source}: {flags}; int8: {cpu.get('int8_note')}",
             f"OS: {env['os'].get('platform')}; memory {env.get('memory_mb') or '?'} MiB; load average "
             f"{env.get('load_average')} at start, {(report.get('environment_end') or {}).get('load_average')} "
             "at end",
             f"versions: Python {v.get('python')}, numpy {v.get('numpy')}, onnxruntime {v.get('onnxruntime')}, "
             f"torch {v.get('torch') or 'not installed'}, mnist-edge {v.get('mnist_edge')}"]
    pi = env.get("raspberry_pi")
    if pi:
        freq = pi.get("cpufreq") or {}
        thr = (report.get("environment_end") or {}).get("throttled") or pi.get("throttled") or {}
        lines.append(f"board: {pi.get('model')}; governor {freq.get('governor', '?')}, {freq.get('cur_mhz', '?')}"
                     f"/{freq.get('max_mhz', '?')} MHz; {thr.get('raw') or 'throttling state unknown'}"
                     + (f" ({', '.join(thr['flags'])})" if thr.get("flags") else ""))
    s = report["settings"]
    budget = f"{s['runs']} runs" if s.get("runs") else f"{s.get('seconds')} s"
    lines.append(f"settings: model {report['model']['name']} ({report['model']['folder']}), device "
                 f"{s.get('device')}, {budget} per case after {s.get('warmup')} warm-up, "
                 f"{'one process per format' if s.get('isolate') else 'one process'}")
    return lines


def _eager_p50(report) -> dict:
    return {(r["batch"], r["threads"]): r["p50_ms"] for r in report["results"] if r["format"] == "eager"}


COLUMNS = ("format", "batch", "thr", "p50 ms", "p90 ms", "p99 ms", "mean ms", "std ms", "min ms", "img/s",
           "x eager", "cold ms", "size", "RSS MiB", "acc %", "provider")
# The default table: fits 100 columns (`--wide` shows every column).
NARROW = ("format", "batch", "thr", "p50 ms", "p99 ms", "img/s", "x eager", "cold ms", "size", "RSS MiB", "acc %")


def _throughput(r):
    """Images/s at the p50 (the advice's statistic); batch / mean for reports that lack it."""
    if r.get("throughput_p50_ips") is not None:
        return r["throughput_p50_ips"]
    return r["batch"] * 1000.0 / r["p50_ms"] if r.get("p50_ms") else None


def _select(rows, columns):
    keep = [COLUMNS.index(c) for c in columns]
    return [[r[i] for i in keep] if len(r) == len(COLUMNS) else r for r in rows]


def table_rows(report: dict) -> list[list[str]]:
    """The result table as strings (every column of COLUMNS), one row per case; formats that did not run
    get one short row each."""
    entries = {e["format"]: e for e in report["formats"]}
    eager = _eager_p50(report)
    out = []
    for e in report["formats"]:
        rows = [r for r in report["results"] if r["format"] == e["format"]]
        if e["status"] != "ok":
            out.append([e["format"], f"{e['status']}: {e['reason']}"])  # a short row: no timings
            continue
        for r in rows:
            base = eager.get((r["batch"], r["threads"]))
            entry = entries[r["format"]]
            out.append([r["format"], str(r["batch"]), str(r["threads"]), _num(r["p50_ms"]), _num(r["p90_ms"]),
                        _num(r["p99_ms"]), _num(r["mean_ms"]), _num(r["std_ms"]), _num(r["min_ms"]),
                        _num(_throughput(r), "{:.0f}"), _num(base / r["p50_ms"] if base else None, "{:.2f}"),
                        _num(r["cold_start_ms"], "{:.1f}"), _size(entry.get("size_bytes")),
                        _num(entry.get("peak_rss_mb"), "{:.0f}"), _num(entry.get("accuracy"), "{:.2f}"),
                        r["provider"] + _placement(r.get("placement"))])
    return out


def _placement(placement) -> str:
    from mnist_edge.runtime.placement import summary

    text = summary(placement)
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


def render_table(report: dict, wide: bool = False) -> str:
    """The terminal report: environment, the table (100 columns; ``wide``: every column), notes, warnings
    and the advice line."""
    columns = COLUMNS if wide else NARROW
    parts = environment_lines(report) + ["", _aligned(columns, _select(table_rows(report), columns)), ""]
    parts += textwrap.wrap("img/s: batch / p50; x eager: PyTorch eager's p50 / this p50 at the same batch and "
                           "threads (higher is faster); cold: load + first inference; RSS: the format's peak "
                           "resident memory" + ("" if wide else "; --wide for p90, mean, std, min and provider"), 100)
    for e in report["formats"]:
        for note in e.get("notes") or []:
            parts.append(f"note ({e['format']}): {note}")
    parts += [f"warning: {w}" for w in report.get("warnings") or []]
    parts.append(f"advice: {report['advice']['line']}")
    return "\n".join(parts)


def _md_row(cells) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def render_markdown(report: dict) -> str:
    """The report as markdown: the table, the environment as a list, warnings and the advice."""
    lines = [f"## mnist-edge bench: {report['model']['name']}", ""]
    lines += [f"- {x}" for x in environment_lines(report)]
    if report.get("command"):
        lines.append(f"- command: `{report['command']}`")
    lines += ["", _md_row(COLUMNS), _md_row(["---"] * len(COLUMNS))]
    for r in table_rows(report):
        lines.append(_md_row(r if len(r) == len(COLUMNS) else r + [""] * (len(COLUMNS) - len(r))))
    lines += ["", "img/s: batch / p50; x eager: PyTorch eager's p50 / this p50 at the same batch and threads "
              "(higher is faster); "
              "cold: load + first inference, ms; RSS: peak resident memory of the format's process, MiB.", ""]
    lines += [f"> warning: {w}" for w in report.get("warnings") or []]
    lines += ["", f"**Advice:** {report['advice']['line']}", ""]
    return "\n".join(lines)


def _key(r):
    return (r["format"], r["batch"], r["threads"])


def _who(report) -> str:
    env = report["environment"]
    board = (env.get("raspberry_pi") or {}).get("model")
    return (f"{board or env['cpu'].get('model') or 'unknown CPU'}, onnxruntime {env['versions'].get('onnxruntime')}"
            f", {report['created_utc']}")


def _models(report) -> dict:
    files = {e["format"]: {"file": e.get("file"), "sha256": e.get("sha256")}
             for e in report["formats"] if e.get("status") == "ok"}
    return {"name": report["model"].get("name"), "folder": report["model"].get("folder"), "files": files}


def compare_reports(a: dict, b: dict) -> dict:
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
    ra, rb = {_key(r): r for r in a["results"]}, {_key(r): r for r in b["results"]}
    rows = []
    for k in list(ra) + [k for k in rb if k not in ra]:
        x, y = ra.get(k), rb.get(k)
        row = {"format": k[0], "batch": k[1], "threads": k[2], "only_in": None if x and y else ("A" if x else "B")}
        if x and y:
            row.update({"a_p50_ms": x["p50_ms"], "b_p50_ms": y["p50_ms"], "p50_ratio": y["p50_ms"] / x["p50_ms"],
                        "a_p99_ms": x["p99_ms"], "b_p99_ms": y["p99_ms"], "p99_ratio": y["p99_ms"] / x["p99_ms"],
                        "speedup": x["p50_ms"] / y["p50_ms"],
                        "throughput_ratio": _throughput(y) / _throughput(x)})
        rows.append(row)
    return {"schema": SCHEMA + "/compare", "a": _who(a), "b": _who(b), "models": {"a": ma, "b": mb},
            "warnings": warnings, "rows": rows, "advice": {"a": a["advice"]["line"], "b": b["advice"]["line"]}}


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
