"""``run_bench``: run each format of one artifact folder (one worker process each) and build the report.

The parent process never imports torch or onnxruntime: a wheel that dies on import ("Illegal
instruction", onnxruntime 1.21.0 on a Pi 4) kills one worker and is reported as that format's failure
with a hint, and each format's peak RSS is its own. ``isolate=False`` runs every format in this process
instead (peak RSS is then cumulative and says so). What a worker sends back is checked like a report read
from a file (:mod:`mnist_edge.bench.document`) before it enters the report.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Callable

from mnist_edge import artifacts as A
from mnist_edge.bench.advice import advise
from mnist_edge.bench.document import (SCHEMA, BenchModel, BenchReport, Environment, EnvironmentEnd, FormatEntry,
                                       Pair, PairRow, Race, RaceRow, ResultRow, Settings)
from mnist_edge.bench.formats import FORMATS, RUNTIME_FORMATS, unavailable_reason
from mnist_edge.bench.options import DEFAULT_RUNS, BenchOptions, resolve_settings
from mnist_edge.errors import ArtifactError
from mnist_edge.documents.fields import Where, parse

MIN_RUNS_FOR_P99 = 100
# int8 against fp32, interleaved in one process: the int8 search's confirm stage (8 x 3 repeats of 10 calls)
PAIR_REPEATS, PAIR_CALLS = 24, 10
SIGILL_HINT = ("the CPU met an instruction it lacks: on a Raspberry Pi 4 this is the onnxruntime 1.21.0 "
               "aarch64 wheel (pip install 'onnxruntime!=1.21.0'; 1.20.x is reported to work), or a torch wheel "
               "built for a newer ARM core; see docs/raspberry-pi.md")


def resolve_folder(model=None) -> Path:
    """The artifact folder of a model reference by the rule every command uses
    (:func:`mnist_edge.artifacts.resolve`); a model file stands for its folder. For callers at the edge (the
    CLI); :func:`run_bench` itself takes the folder."""
    return A.resolve(model).folder


class _Steps:
    """Turns the workers' events into progress lines, ``bench [i/N] ...``, for ``progress(message)``."""

    def __init__(self, total: int, progress: Callable[[str], None] | None):
        self.total, self.done, self.progress = total, 0, progress

    def __call__(self, event: dict) -> None:
        if event.get("event") == "case":
            self.done += 1
        if self.progress is None:
            return
        if event.get("event") == "case":
            text = (f"bench [{self.done}/{self.total}] {event['format']:<11} batch {event['batch']:<4} "
                    f"threads {event['threads']}")
        elif event.get("event") == "pair":
            text = (f"bench [{self.done}/{self.total}] int8 vs fp32 interleaved, batch {event['batch']:<4} "
                    f"threads {event['threads']}")
        elif event.get("event") == "race":
            text = (f"bench [{self.done}/{self.total}] every runtime file interleaved, batch {event['batch']:<4} "
                    f"threads {event['threads']}")
        elif event.get("event") == "accuracy":
            text = f"bench [{self.done}/{self.total}] {event['format']:<11} accuracy on the test set"
        else:
            return
        self.progress(text)


def _signal_reason(rc: int) -> str:
    try:
        name = signal.Signals(-rc).name
    except ValueError:
        name = f"signal {-rc}"
    return f"worker died with {name}" + (f": {SIGILL_HINT}" if name == "SIGILL" else "")


def _run_worker(config: dict, progress) -> dict:
    """Run one format in a fresh interpreter; returns {"entry", "rows"} or {"error": reason}."""
    from mnist_edge.bench.worker import PREFIX  # imported here: `python -m ...worker` must not find it loaded

    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])  # the folder holding this mnist_edge, installed or not
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
    from mnist_edge.bench.worker import run_format, run_pair, run_race
    from mnist_edge.errors import MnistEdgeError

    try:
        return (run_race if config.get("race") else run_pair if config.get("pair") else run_format)(config, progress)
    except (MnistEdgeError, ImportError, OSError, RuntimeError) as e:
        return {"error": f"{type(e).__name__}: {e}"}


def _model_name(folder: Path) -> str:
    """The manifest's model name, else the folder's name (a folder without a readable manifest still runs)."""
    from mnist_edge.documents import load_json

    try:
        name = load_json(folder / A.MANIFEST).get("model")
    except (ArtifactError, AttributeError):
        return folder.resolve().name
    if isinstance(name, dict):  # a manifest that describes its model as an object names it inside
        name = name.get("name")
    return name if isinstance(name, str) and name else folder.resolve().name


def _warnings(env: Environment, end: EnvironmentEnd, entries: list[FormatEntry], rows: list[ResultRow],
              isolate: bool) -> list[str]:
    out = [w for w in (env.os.message, env.cpu.emulation_note) if w]
    cores = env.cpu.usable_cores or 1
    load = env.load_average
    if load and load[0] > max(0.5, 0.25 * cores):
        out.append(f"machine busy at the start (load average {load[0]:.2f} over 1 min on {cores} usable "
                   "cores): timings are noisy; rerun on an idle machine for numbers to publish")
    throttled = (end.throttled or {}).get("flags") or []
    if throttled:
        out.append("Raspberry Pi reports " + ", ".join(map(str, throttled)) + ": timings are slower than the "
                   "board can do (check the power supply and cooling)")
    freq = (env.raspberry_pi.cpufreq if env.raspberry_pi else None) or env.cpufreq or {}
    if freq.get("governor") == "powersave":
        out.append("CPU governor is 'powersave': the clock is held low; use 'ondemand' or 'performance'")
    if rows and min(r.runs for r in rows) < MIN_RUNS_FOR_P99:
        out.append(f"fewer than {MIN_RUNS_FOR_P99} timed runs in some cases: p99 is close to the maximum "
                   "there; use --runs 200 (the default) or more for a meaningful p99")
    unverified = [e.format for e in entries if e.ok and not e.verified]
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


def _timed_together(kind: str, extra: dict, folder: Path, settings: Settings, steps) -> tuple[dict, int]:
    """One worker (or this process) timing several files interleaved: ``kind`` "pair" (int8 against fp32)
    or "race" (every runtime file); returns its answer and the repeats it used."""
    repeats = pair_repeats(settings.runs)
    config = {kind: True, "folder": str(folder.resolve()), "batch_sizes": settings.batch_sizes,
              "threads": settings.threads, "device": settings.device, "repeats": repeats, "calls": PAIR_CALLS, **extra}
    return (_run_worker(config, steps) if settings.isolate else _run_in_process(config, steps)), repeats


def _section(cls, row_cls, out: dict, key: str, method: str, what: str):
    """A Pair or Race from a worker's answer: its rows checked like a report read from a file, or the error."""
    if "error" in out:
        return cls(method=method, error=out["error"])
    try:
        rows = [parse(row_cls, r, Where(what, f"rows[{i}]")) for i, r in enumerate(out[key])]
    except ArtifactError as e:
        return cls(method=method, error=str(e))
    return cls(method=method, rows=rows)


def _run_pair(folder: Path, settings: Settings, steps) -> Pair:
    """The int8/fp32 ratios timed interleaved in one (worker) process, as the int8 search times them.

    The per-format rows time each file in its own process, one after the other: on a shared machine the load
    changes between them (batch-1 p50s of one file moved 2x between two runs a minute apart here), so their
    quotient is not a ratio anyone can repeat."""
    out, repeats = _timed_together("pair", {}, folder, settings, steps)
    method = (f"int8 and fp32 loaded in one process by the runtime's loader (its session options), timed in "
              f"alternating blocks of {PAIR_CALLS} calls, {repeats} repeats; ratio of p50s with a 95% bootstrap "
              "interval (mnist_edge.bench.ratio, as `mnist-edge quantize --search`)")
    return _section(Pair, PairRow, out, "int8_vs_fp32", method, "the int8/fp32 worker's result")


def _run_race(folder: Path, formats: list, settings: Settings, steps) -> Race:
    """Every runtime file that ran, timed interleaved in one (worker) process: the cross-runtime ranking."""
    out, repeats = _timed_together("race", {"formats": formats}, folder, settings, steps)
    method = (f"{', '.join(FORMATS[f].file for f in formats)} loaded in one process by the runtime's loader, timed "
              f"in blocks of {PAIR_CALLS} calls in a seeded shuffled order, {repeats} repeats; each file's p50 over "
              "the fastest's with a 95% bootstrap interval (mnist_edge.bench.race)")
    return _section(Race, RaceRow, out, "race", method, "the race worker's result")


def _format_result(name: str, out: dict, isolate: bool) -> tuple[FormatEntry, list[ResultRow]]:
    """The entry and rows of one format from its worker's answer; an answer that fails its checks makes
    the format "failed" with the reason."""
    spec = FORMATS[name]
    if "error" in out or "unavailable" in out:
        status = "failed" if "error" in out else "not available"
        return FormatEntry(format=name, label=spec.label, status=status, reason=out.get("error") or
                           out["unavailable"], file=spec.file), []
    where = Where(f"the {name} worker's result")
    try:
        entry = parse(FormatEntry, {**out["entry"], "rss_scope": "format" if isolate else "cumulative"},
                      where.at("entry"))
        rows = [parse(ResultRow, r, where.at("rows").at(i)) for i, r in enumerate(out["rows"])]
    except ArtifactError as e:
        return FormatEntry(format=name, label=spec.label, status="failed", reason=str(e), file=spec.file), []
    return entry, rows


def _measure(folder: Path, settings: Settings, data_dir, env: dict, steps) -> tuple:
    """Every available format of ``folder`` in its own worker (or this process), then int8 against fp32;
    returns (entries in the order asked, rows, pair). Records in ``env`` the library versions the workers
    really loaded."""
    entries, rows = {}, []
    for name in settings.formats:
        spec = FORMATS[name]
        reason = unavailable_reason(spec, folder, env["torch_importable"])
        if reason:
            entries[name] = FormatEntry(format=name, label=spec.label, status="not available", reason=reason,
                                        file=spec.file)
            continue
        config = {"format": name, "folder": str(folder.resolve()), "batch_sizes": settings.batch_sizes,
                  "threads": settings.threads, "runs": settings.runs, "seconds": settings.seconds,
                  "warmup": settings.warmup, "device": settings.device, "accuracy": settings.accuracy,
                  "data_dir": str(data_dir) if data_dir else None}
        out = _run_worker(config, steps) if settings.isolate else _run_in_process(config, steps)
        entries[name], new = _format_result(name, out, settings.isolate)
        rows += new
        lib = entries[name].library or {}
        if entries[name].ok and lib.get("name") in ("onnxruntime", "torch"):
            env["versions"][lib["name"]] = lib.get("version")  # what really loaded, over package metadata
    pair = None  # int8/fp32 interleaved, when both ONNX formats ran
    if all(f in entries and entries[f].ok for f in ("onnx", "int8")):
        pair = _run_pair(folder, settings, steps)
    racing = [f for f in RUNTIME_FORMATS if f in entries and entries[f].ok]
    race = None  # across runtimes, when a LiteRT file ran beside another file
    if len(racing) > 1 and any(f.startswith("tflite") for f in racing):
        race = _run_race(folder, racing, settings, steps)
    return [entries[n] for n in settings.formats], rows, pair, race


def run_bench(folder, options: BenchOptions | None = None, *,
              progress: Callable[[str], None] | None = None) -> BenchReport:
    """Benchmark every requested format of the artifact folder ``folder`` (:class:`BenchOptions`, default:
    every format at batch 1 and 64, 1 and all threads, 200 runs); ``progress(message)`` is called before
    each case. Returns the report; ``report.to_json()`` is the JSON ``--json`` writes."""
    from mnist_edge.system.machine import collect_environment, load_average, read_throttled

    options = options or BenchOptions()
    settings = resolve_settings(options)
    folder = Path(folder)
    if not folder.is_dir():
        raise ArtifactError(f"artifact folder '{folder}' does not exist or is not a folder")
    if settings.accuracy:
        from mnist_edge.data.mnist import require_splits

        require_splits(options.data_dir, ("test",))  # before any timing: say now how to get the data
    env = collect_environment()
    todo = [n for n in settings.formats if not unavailable_reason(FORMATS[n], folder, env["torch_importable"])]
    steps = _Steps(len(todo) * len(settings.batch_sizes) * len(settings.threads), progress)
    entries, rows, pair, race = _measure(folder, settings, options.data_dir, env, steps)
    environment = Environment.from_dict(env, "this machine's description")
    end = EnvironmentEnd(load_average=load_average(), throttled=read_throttled())
    created = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    report = BenchReport(schema=SCHEMA, created_utc=created, command=options.command,
                         model=BenchModel(name=_model_name(folder), folder=str(folder)), settings=settings,
                         environment=environment, environment_end=end, formats=entries,
                         results=rows, int8_vs_fp32=pair, race=race,
                         warnings=_warnings(environment, end, entries, rows, settings.isolate), advice=None)
    report.advice = advise(report)
    return report
