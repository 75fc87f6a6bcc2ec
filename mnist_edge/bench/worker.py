"""One format's measurements, in the process that runs them: import, load, first run, warm-up, timed runs.

``run_format`` measures every (batch size, threads) case of one format, each with a freshly loaded model
(so every case has its own cold start), then the optional test-set accuracy with the clock stopped.
``run_pair`` times int8 against fp32 interleaved in one process (the int8/fp32 ratio the advice uses).
The runner calls it in a fresh ``python -m mnist_edge.bench.worker`` process per format by default, so
that peak RSS is that format's alone, a crash (SIGILL from a wrong onnxruntime wheel) loses one format
and not the run, and torch's thread settings never leak into onnxruntime's. The protocol: a JSON config
on stdin; on stdout, lines starting with ``PREFIX`` carrying JSON events ({"event": "case", ...} before
each case, then one {"event": "result", ...} or {"event": "error", ...}); any other output is noise.
The parent checks every result it receives (:mod:`mnist_edge.bench.document`).
"""

from __future__ import annotations

import json
import sys
import time
import traceback
from pathlib import Path

PREFIX = "@@mnist-edge-bench "
ACCURACY_BATCH = 500
API_RUNS, API_WARMUP = 50, 5  # Classifier.predict path: a short sample for its p50
INPUT_SEED = 0


def peak_rss_mb() -> float | None:
    """This process's peak resident set size so far (getrusage; None where unavailable, e.g. Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return round(peak / (1024 * 1024 if sys.platform == "darwin" else 1024), 1)  # bytes on macOS, KiB on Linux


def synthetic_batch(batch: int):
    """Seeded uint8 [batch, 1, 28, 28]: latency of these dense CNNs does not depend on pixel values."""
    import numpy as np

    return np.random.default_rng(INPUT_SEED).integers(0, 256, size=(batch, 1, 28, 28), dtype=np.uint8)


def _import_ms(spec) -> float:
    """Time to import the format's library in this process (0 if already imported)."""
    t0 = time.perf_counter_ns()
    if spec.needs_torch:
        import torch  # noqa: F401
    else:
        import onnxruntime  # noqa: F401
    return (time.perf_counter_ns() - t0) / 1e6


def _accuracy(loaded, data_dir) -> dict:
    import numpy as np

    from mnist_edge.data.mnist import load_mnist

    images, labels = load_mnist("test", data_dir)
    correct = 0
    for i in range(0, len(images), ACCURACY_BATCH):
        x = np.array(images[i:i + ACCURACY_BATCH][:, None])  # a writable copy: torch.from_numpy warns on read-only
        correct += int((loaded.logits(x).argmax(axis=1) == labels[i:i + ACCURACY_BATCH]).sum())
    return {"accuracy": 100.0 * correct / len(images), "accuracy_images": int(len(images))}


def verify_against_manifest(folder: Path, name: str) -> bool:
    """Hash-check ``name`` against the folder's manifest before loading it (the runtime's one hash check,
    :func:`mnist_edge.runtime.hashcheck.read_verified`); False when no manifest lists the file
    (ArtifactError when the check fails)."""
    from mnist_edge.runtime.hashcheck import read_verified

    return read_verified(folder / name, None)[2] is not None


def run_format(config: dict, emit=lambda event: None) -> dict:
    """Measure one format; ``config``: format, folder, batch_sizes, threads, runs|seconds, warmup, device,
    accuracy, data. Returns the format's entry and its result rows (see document.py's schema), or
    {"unavailable": reason} when the format cannot run from this folder."""
    from mnist_edge.bench.formats import FORMATS
    from mnist_edge.bench.timing import measure, summarize, time_once
    from mnist_edge.files import sha256_file

    spec = FORMATS[config["format"]]
    file = Path(config["folder"]) / spec.file
    verified = verify_against_manifest(file.parent, spec.file)
    why = spec.unavailable(file) if spec.unavailable is not None else None
    if why:
        return {"unavailable": why}  # the runner lists the format as not available, with this reason
    import_ms = _import_ms(spec)
    rows, providers, notes, last = [], set(), [], None
    for threads in config["threads"]:
        for batch in config["batch_sizes"]:
            emit({"event": "case", "format": spec.name, "batch": batch, "threads": threads})
            x = synthetic_batch(batch)
            load_ms, loaded = time_once(lambda: spec.load(file, config["device"], threads))
            first_ms, _ = time_once(lambda: loaded.call(x))
            samples = measure(lambda: loaded.call(x), warmup=config["warmup"], runs=config.get("runs"),
                              seconds=config.get("seconds"))
            row = {"format": spec.name, "batch": batch, "threads": threads, "warmup": config["warmup"],
                   "load_ms": load_ms, "first_ms": first_ms, "cold_start_ms": round(load_ms + first_ms, 5),
                   **summarize(samples, batch), "provider": loaded.provider, "device": loaded.device}
            if loaded.api_call is not None:
                api = measure(lambda: loaded.api_call(x), warmup=API_WARMUP, runs=API_RUNS)
                row["predict_p50_ms"] = summarize(api, batch)["p50_ms"]
            row["placement"] = loaded.placement() if loaded.placement is not None else None  # after the clock
            rows.append(row)
            providers.add(loaded.provider)
            notes += [n for n in loaded.notes if n not in notes]
            last = loaded
    entry = {
        "format": spec.name, "label": spec.label, "status": "ok", "reason": None, "file": spec.file,
        "size_bytes": file.stat().st_size, "sha256": sha256_file(file), "verified": verified,
        "import_ms": import_ms, "peak_rss_mb": peak_rss_mb(), "providers": sorted(providers),
        "notes": notes, "library": _library_version(spec), "accuracy": None, "accuracy_images": None,
        "torch_loaded": sys.modules.get("torch") is not None,
    }
    if config.get("accuracy") and last is not None:
        emit({"event": "accuracy", "format": spec.name})
        entry.update(_accuracy(last, config.get("data_dir")))
    return {"entry": entry, "rows": rows}


def run_pair(config: dict, emit=lambda event: None) -> dict:
    """int8/fp32 p50 ratios with the int8 search's own method: both ONNX files loaded here, by the same loader
    (the runtime's session options), and timed in alternating blocks (:func:`mnist_edge.bench.ratio.time_pair`)
    so a change of load on a shared machine falls on both; ``config``: folder, batch_sizes, threads, device,
    repeats, calls. Returns {"int8_vs_fp32": [row per (threads, batch)]}."""
    from mnist_edge.bench.formats import FORMATS
    from mnist_edge.bench import ratio as R

    folder = Path(config["folder"])
    rows = []
    for threads in config["threads"]:
        fp32, int8 = (FORMATS[f].load(folder / FORMATS[f].file, config["device"], threads) for f in ("onnx", "int8"))
        for batch in config["batch_sizes"]:
            emit({"event": "pair", "batch": batch, "threads": threads})
            x = synthetic_batch(batch)
            a, b = R.time_pair(lambda: int8.call(x), lambda: fp32.call(x), repeats=config["repeats"],
                               calls=config["calls"])
            rows.append({"batch": batch, "threads": threads, **R.ratio_interval(a, b)})
    return {"int8_vs_fp32": rows}


def run_race(config: dict, emit=lambda event: None) -> dict:
    """Every runtime file of the folder (``config["formats"]``) timed interleaved in this process, per
    (threads, batch) (:mod:`mnist_edge.bench.race`). Returns {"race": [row per file, threads, batch]}."""
    from mnist_edge.bench.formats import FORMATS
    from mnist_edge.bench.race import rank, time_race

    folder = Path(config["folder"])
    rows = []
    for threads in config["threads"]:
        loaded = {FORMATS[f].file: FORMATS[f].load(folder / FORMATS[f].file, config["device"], threads)
                  for f in config["formats"]}
        for batch in config["batch_sizes"]:
            emit({"event": "race", "batch": batch, "threads": threads})
            x = synthetic_batch(batch)
            fns = {name: (lambda f=f: f.call(x)) for name, f in loaded.items()}
            ranked = rank(time_race(fns, repeats=config["repeats"], calls=config["calls"]))
            rows += [{"batch": batch, "threads": threads, **r} for r in ranked]
    return {"race": rows}


def _library_version(spec) -> dict:
    if spec.needs_torch:
        import torch

        return {"name": "torch", "version": str(torch.__version__)}
    import onnxruntime

    return {"name": "onnxruntime", "version": onnxruntime.__version__,
            "providers_available": list(onnxruntime.get_available_providers())}


def _emit(event: dict) -> None:
    sys.stdout.write(PREFIX + json.dumps(event) + "\n")
    sys.stdout.flush()


def main() -> int:
    config = json.loads(sys.stdin.read())
    try:
        result = (run_race if config.get("race") else run_pair if config.get("pair") else run_format)(config, _emit)
    except BaseException as e:  # reported to the parent as this format's failure, never a hang
        _emit({"event": "error", "type": type(e).__name__, "message": str(e)[:2000],
               "traceback": traceback.format_exc()[-4000:]})
        return 1
    _emit({"event": "result", **result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
