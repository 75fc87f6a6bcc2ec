"""What a benchmark run is asked to do (:class:`BenchOptions`), checked and resolved into the report's
:class:`~mnist_edge.bench.document.Settings` before any work starts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from mnist_edge.bench.document import Settings
from mnist_edge.bench.formats import FORMATS, check_formats
from mnist_edge.bench.timing import check_budget
from mnist_edge.errors import UsageError

DEFAULT_FORMATS = tuple(FORMATS)
DEFAULT_BATCH_SIZES = (1, 64)
DEFAULT_THREADS = (1, "all")
DEFAULT_RUNS, DEFAULT_WARMUP = 200, 20
MAX_BATCH = 4096  # the runtime's chunk size: above it ONNX and torch would not run the same thing
INPUT = "random uint8 [batch, 1, 28, 28], numpy default_rng seed 0"


@dataclass(frozen=True)
class BenchOptions:
    """``runs`` timed calls per case, or as many as fit in ``seconds`` (neither: ``DEFAULT_RUNS`` runs);
    ``threads`` holds positive integers or "all" (the cores this process may use); ``device`` is "cpu",
    "cuda" or "cuda:N"; ``accuracy`` also measures the test set (from ``data_dir``); ``isolate`` runs each
    format in its own process; ``command`` is recorded in the report (how to reproduce it)."""

    formats: tuple = DEFAULT_FORMATS
    batch_sizes: tuple = DEFAULT_BATCH_SIZES
    threads: tuple = DEFAULT_THREADS
    runs: int | None = None
    seconds: float | None = None
    warmup: int = DEFAULT_WARMUP
    accuracy: bool = False
    data_dir: str | Path | None = None
    device: str = "cpu"
    isolate: bool = True
    command: str | None = None


def parse_threads(values) -> list[int]:
    """Thread counts: positive integers or "all" (the cores this process may use); deduplicated."""
    from mnist_edge.system.machine import usable_cores

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


def resolve_settings(options: BenchOptions) -> Settings:
    """The report's settings for ``options``; UsageError naming the valid choices for any bad value."""
    runs = DEFAULT_RUNS if options.runs is None and options.seconds is None else options.runs
    check_budget(runs, options.seconds, options.warmup)
    names = check_formats(options.formats)
    batch_sizes = check_batch_sizes(options.batch_sizes)
    thread_counts = parse_threads(options.threads)
    from mnist_edge.system.devices import parse_device

    parse_device(options.device, allow_auto=False)  # UsageError naming the valid ones
    return Settings(formats=names, batch_sizes=batch_sizes, threads=thread_counts,
                    threads_requested=[str(t) for t in options.threads], runs=runs, seconds=options.seconds,
                    warmup=options.warmup, device=options.device, accuracy=bool(options.accuracy),
                    isolate=bool(options.isolate), input=INPUT)
