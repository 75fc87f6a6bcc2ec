"""``run_bench``: resolve the artifact folder, run each format (one worker process each), build the report.

The parent process never imports torch or onnxruntime: a wheel that dies on import ("Illegal
instruction", onnxruntime 1.21.0 on a Pi 4) kills one worker and is reported as that format's failure
with a hint, and each format's peak RSS is its own. ``isolate=False`` runs every format in this process
instead (peak RSS is then cumulative and says so).
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from mnist_edge import artifacts as A
from mnist_edge.bench import advice as _advice
from mnist_edge.machine import collect_environment, load_average, read_throttled, usable_cores
from mnist_edge.bench.formats import FORMATS, check_formats, unavailable_reason
from mnist_edge.bench.report import SCHEMA
from mnist_edge.bench.timing import check_budget
from mnist_edge.errors import UsageError

DEFAULT_FORMATS = tuple(FORMATS)
DEFAULT_BATCH_SIZES = (1, 64)
DEFAULT_THREADS = (1, "all")
DEFAULT_RUNS, DEFAULT_WARMUP = 200, 20
MAX_BATCH = 4096  # the runtime's chunk size: above it ONNX and torch would not run the same thing
MIN_RUNS_FOR_P99 = 100
# int8 against fp32, interleaved in one process: the int8 search's confirm stage (8 x 3 repeats of 10 calls)
PAIR_REPEATS, PAIR_CALLS = 24, 10
SIGILL_HINT = ("the CPU met an instruction it lacks: on a Raspberry Pi 4 this is the onnxruntime 1.21.0 "
               "aarch64 wheel (pip install 'onnxruntime!=1.21.0'; 1.20.x is reported to work), or a torch wheel "
               "built for a newer ARM core; see docs/raspberry-pi.md")


def resolve_folder(model=None) -> Path:
    """The artifact folder of ``model`` by the rule every command uses (:func:`mnist_edge.artifacts.resolve`);
    a model file stands for its folder, every format of which is measured."""
    from mnist_edge.artifacts import resolve

    return resolve(model).folder


def parse_threads(values) -> list[int]:
    """Thread counts: positive integers or "all" (the cores this process may use); deduplicated."""
    out: list[int] = []
    for v in values:
        if isinstance(v, str) and v.strip().lower() == "all":
            n = usable_cores()
        else:
            try:
                n = int(v)
            except (TypeError, ValueError):
                raise UsageError(f"threads must be positive integers or 'all', got {v!r}") from None
            if isinstance(v, bool) or n < 1 or str(v).strip() != str(n):
                raise UsageError(f"threads must be positive integers or 'all', got {v!r}")
        if n not in out:
            out.append(n)
    if not out:
        raise UsageError("no thread counts given")
    return out


def check_batch_sizes(values) -> list[int]:
    out: list[int] = []
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= MAX_BATCH:
            raise UsageError(f"batch sizes must be integers from 1 to {MAX_BATCH}, got {v!r}")
        if v not in out:
            out.append(v)
    if not out:
        raise UsageError("no batch sizes given")
    return out


class Progress:
    """One line on stderr per case (rewritten in place on a terminal)."""

    def __init__(self, total: int, enabled: bool = True, stream=None):
        self.total, self.done, self.enabled = total, 0, enabled
        self.stream = stream or sys.stderr
        self.tty = enabled and hasattr(self.stream, "isatty") and self.stream.isatty()

    def __call__(self, event: dict) -> None:
        if not self.enabled:
            return
        if event.get("event") == "case":
            self.done += 1
            text = (f"bench [{self.done}/{self.total}] {event['format']:<11} batch {event['batch']:<4} "
                    f"threads {event['threads']}")
        elif event.get("event") == "pair":
            text = (f"bench [{self.done}/{self.total}] int8 vs fp32 interleaved, batch {event['batch']:<4} "
                    f"threads {event['threads']}")
        elif event.get("event") == "accuracy":
            text = f"bench [{self.done}/{self.total}] {event['format']:<11} accuracy on the test set"
        else:
            return
        if self.tty:
            self.stream.write("\r" + text.ljust(72))
        else:
            self.stream.write(text + "\n")
        self.stream.flush()

    def close(self) -> None:
        if self.tty and self.done:
            self.stream.write("\r" + " " * 72 + "\r")
            self.stream.flush()


def _signal_reason(rc: int) -> str:
    try:
        name = signal.Signals(-rc).name
    except ValueError:
        name = f"signal {-rc}"
    return f"worker died with {name}" + (f": {SIGILL_HINT}" if name == "SIGILL" else "")


def _run_worker(config: dict, progress) -> dict:
    """Run one format in a fresh interpreter; returns {"entry", "rows"} or {"error": reason}."""
    import mnist_edge
    from mnist_edge.bench.worker import PREFIX  # imported here: `python -m ...worker` must not find it loaded

    env = dict(os.environ)
    root = str(Path(mnist_edge.__file__).resolve().parents[1])  # same mnist_edge as ours, installed or not
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen([sys.executable, "-m", "mnist_edge.bench.worker"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    result, noise = None, []
    try:
        proc.stdin.write(json.dumps(config))
        proc.stdin.close()
        for line in proc.stdout:
            if not line.startswith(PREFIX):
                noise = (noise + [line.rstrip()])[-20:]
                continue
            event = json.loads(line[len(PREFIX):])
            if event["event"] in ("result", "error"):
                result = event
            else:
                progress(event)
        rc = proc.wait()
    except BaseException:  # Ctrl-C: do not leave the worker running
        proc.kill()
        proc.wait()
        raise
    if result and result["event"] == "result":
        return {k: v for k, v in result.items() if k != "event"}
    if result:
        return {"error": f"{result['type']}: {result['message']}"}
    if rc < 0:
        return {"error": _signal_reason(rc)}
    tail = " | ".join(x for x in noise[-3:] if x)
    return {"error": f"worker exited with status {rc} without a result" + (f" ({tail})" if tail else "")}


def _run_in_process(config: dict, progress) -> dict:
    from mnist_edge.bench.worker import run_format, run_pair
    from mnist_edge.errors import MnistEdgeError

    try:
        return (run_pair if config.get("pair") else run_format)(config, progress)
    except (MnistEdgeError, ImportError, OSError, RuntimeError) as e:
        return {"error": f"{type(e).__name__}: {e}"}


def _model_name(folder: Path) -> str:
    try:
        manifest = json.loads((folder / A.MANIFEST).read_text())
        name = manifest.get("model") if isinstance(manifest, dict) else None
        if isinstance(name, dict):
            name = name.get("name")
        if isinstance(name, str) and name:
            return name
    except (OSError, ValueError, RecursionError):
        pass
    return folder.resolve().name


def _warnings(env: dict, env_end: dict, entries: list, rows: list, isolate: bool) -> list[str]:
    out = []
    if env["os"]["message"]:
        out.append(env["os"]["message"])
    if env["cpu"].get("emulation_note"):
        out.append(env["cpu"]["emulation_note"])
    cores = env["cpu"]["usable_cores"] or 1
    load = env.get("load_average")
    if load and load[0] > max(0.5, 0.25 * cores):
        out.append(f"machine busy at the start (load average {load[0]:.2f} over 1 min on {cores} usable "
                   "cores): timings are noisy; rerun on an idle machine for numbers to publish")
    throttled = (env_end.get("throttled") or {}).get("flags") or []
    if throttled:
        out.append("Raspberry Pi reports " + ", ".join(throttled) + ": timings are slower than the board can "
                   "do (check the power supply and cooling)")
    freq = (env.get("raspberry_pi") or {}).get("cpufreq") or env.get("cpufreq") or {}
    if freq.get("governor") == "powersave":
        out.append("CPU governor is 'powersave': the clock is held low; use 'ondemand' or 'performance'")
    if rows and min(r["runs"] for r in rows) < MIN_RUNS_FOR_P99:
        out.append(f"fewer than {MIN_RUNS_FOR_P99} timed runs in some cases: p99 is close to the maximum "
                   "there; use --runs 200 (the default) or more for a meaningful p99")
    unverified = [e["format"] for e in entries if e.get("status") == "ok" and not e.get("verified")]
    if unverified:
        out.append(f"not hash-checked (no manifest.json entry): {', '.join(unverified)}")
    if not isolate:
        out.append("all formats ran in one process: peak RSS is cumulative (each format's figure includes "
                   "the ones before it)")
    return out


def pair_repeats(runs: int | None) -> int:
    """Repeats of the interleaved int8/fp32 timing: ``PAIR_REPEATS`` at the default --runs or a time budget,
    fewer (at least 2) when fewer runs were asked for."""
    if runs is None or runs >= DEFAULT_RUNS:
        return PAIR_REPEATS
    return max(2, min(PAIR_REPEATS, runs // PAIR_CALLS))


def _run_pair(folder: Path, batch_sizes, thread_counts, device, runs, isolate, show) -> dict:
    """The int8/fp32 ratios timed interleaved in one (worker) process, as the int8 search times them.

    The per-format rows time each file in its own process, one after the other: on a shared machine the load
    changes between them (batch-1 p50s of one file moved 2x between two runs a minute apart here), so their
    quotient is not a ratio anyone can repeat. Returns {"method", "rows"} or {"method", "error"}."""
    repeats = pair_repeats(runs)
    config = {"pair": True, "folder": str(folder.resolve()), "batch_sizes": batch_sizes, "threads": thread_counts,
              "device": device, "repeats": repeats, "calls": PAIR_CALLS}
    out = _run_worker(config, show) if isolate else _run_in_process(config, show)
    method = (f"int8 and fp32 loaded in one process by the runtime's loader (its session options), timed in "
              f"alternating blocks of {PAIR_CALLS} calls, {repeats} repeats; ratio of p50s with a 95% bootstrap "
              "interval (mnist_edge.export.ratio, as `mnist-edge quantize --search`)")
    if "error" in out:
        return {"method": method, "error": out["error"]}
    return {"method": method, "rows": out["int8_vs_fp32"]}


def run_bench(model=None, *, formats=DEFAULT_FORMATS, batch_sizes=DEFAULT_BATCH_SIZES,
              threads=DEFAULT_THREADS, runs: int | None = None, seconds: float | None = None,
              warmup: int = DEFAULT_WARMUP, accuracy: bool = False, data_dir=None, device: str = "cpu",
              isolate: bool = True, progress: bool = True, command: str | None = None) -> dict:
    """Benchmark every requested format of one artifact folder; returns the report (schema: report.py).

    ``runs`` timed calls per case, or as many as fit in ``seconds`` (default: ``DEFAULT_RUNS`` runs);
    ``threads`` holds positive integers or "all"; ``device`` is "cpu", "cuda" or "cuda:N".
    """
    if runs is None and seconds is None:
        runs = DEFAULT_RUNS
    check_budget(runs, seconds, warmup)
    names = check_formats(formats)
    batch_sizes = check_batch_sizes(batch_sizes)
    thread_counts = parse_threads(threads)
    from mnist_edge.devices import parse_device

    parse_device(device, allow_auto=False)  # UsageError naming the valid ones
    folder = resolve_folder(model)
    if accuracy:
        from mnist_edge.data import require_splits

        require_splits(data_dir, ("test",))  # before any timing: say now how to get the data
    env = collect_environment()
    settings = {"formats": names, "batch_sizes": batch_sizes, "threads": thread_counts,
                "threads_requested": [str(t) for t in threads], "runs": runs, "seconds": seconds,
                "warmup": warmup, "device": device, "accuracy": bool(accuracy), "isolate": bool(isolate),
                "input": "random uint8 [batch, 1, 28, 28], numpy default_rng seed 0"}
    todo, entries = [], {}
    for name in names:
        spec = FORMATS[name]
        reason = unavailable_reason(spec, folder, env["torch_importable"])
        if reason:
            entries[name] = {"format": name, "label": spec.label, "status": "not available", "reason": reason,
                             "file": spec.file}
        else:
            todo.append(name)
    show = Progress(len(todo) * len(batch_sizes) * len(thread_counts), enabled=progress)
    rows: list[dict] = []
    pair = None  # int8/fp32 interleaved, when both ONNX formats ran
    try:
        for name in todo:
            config = {"format": name, "folder": str(folder.resolve()), "batch_sizes": batch_sizes,
                      "threads": thread_counts, "runs": runs, "seconds": seconds, "warmup": warmup,
                      "device": device, "accuracy": bool(accuracy), "data_dir": str(data_dir) if data_dir else None}
            out = _run_worker(config, show) if isolate else _run_in_process(config, show)
            if "error" in out:
                entries[name] = {"format": name, "label": FORMATS[name].label, "status": "failed",
                                 "reason": out["error"], "file": FORMATS[name].file}
                continue
            entry = out["entry"]
            entry["rss_scope"] = "format" if isolate else "cumulative"
            entries[name] = entry
            rows += out["rows"]
            lib = entry.get("library") or {}
            if lib.get("name") in ("onnxruntime", "torch"):
                env["versions"][lib["name"]] = lib["version"]  # what really loaded, over package metadata
        if all((entries.get(f) or {}).get("status") == "ok" for f in ("onnx", "int8")):
            pair = _run_pair(folder, batch_sizes, thread_counts, device, runs, isolate, show)
    finally:
        show.close()
    env_end = {"load_average": load_average(), "throttled": read_throttled()}
    report = {
        "schema": SCHEMA,
        "created_utc": _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command,
        "model": {"name": _model_name(folder), "folder": str(folder)},
        "settings": settings,
        "environment": env,
        "environment_end": env_end,
        "formats": [entries[n] for n in names],
        "results": rows,
        "int8_vs_fp32": pair,
        "warnings": _warnings(env, env_end, [entries[n] for n in names], rows, isolate),
    }
    report["advice"] = _advice.advise(report)
    return report
