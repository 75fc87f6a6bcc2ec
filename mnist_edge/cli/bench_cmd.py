"""`mnist-edge bench`: latency of every exported format side by side, or `--compare A.json B.json`."""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import replace
from pathlib import Path

from mnist_edge.cli import add_command


def register(sub) -> None:
    from mnist_edge.artifacts import MODEL_HELP

    p = add_command(sub, "bench", "latency of every format side by side (eager, TorchScript, ONNX, int8)",
                    "Times every exported format of one model on this machine: warm-up, then timed runs; "
                    "p50/p99, throughput, cold start, size, peak memory, and one line of advice on whether int8 "
                    "pays here. See docs/raspberry-pi.md.",
                    ["mnist-edge bench", "mnist-edge bench --model lenet5 --threads 1 --runs 1000 --json pi.json",
                     "mnist-edge bench --compare laptop.json pi.json"])
    p.add_argument("--model", metavar="NAME_OR_PATH", help=MODEL_HELP)
    p.add_argument("--formats", nargs="+", metavar="FORMAT",
                   help="any of: eager torchscript onnx int8 (default: all four)")
    p.add_argument("--batch-sizes", nargs="+", type=int, metavar="N", help="batch sizes (default: 1 64)")
    p.add_argument("--threads", nargs="+", metavar="N|all", help="thread counts, 'all' = usable cores "
                                                                 "(default: 1 all)")
    budget = p.add_mutually_exclusive_group()
    budget.add_argument("--runs", type=int, help="timed runs per case (default: 200)")
    budget.add_argument("--seconds", type=float, help="time budget per case instead of a run count")
    p.add_argument("--warmup", type=int, help="untimed runs before timing (default: 20)")
    p.add_argument("--accuracy", action="store_true", help="also measure accuracy on the 10k test set")
    p.add_argument("--data", type=Path, help="MNIST folder for --accuracy (default: $MNIST_EDGE_DATA, the cache)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--json", type=Path, metavar="FILE", help="write the report as JSON (schema mnist-edge-bench/1)")
    p.add_argument("--markdown", type=Path, metavar="FILE", help="write the report as a markdown table")
    p.add_argument("--compare", nargs=2, type=Path, metavar=("A.json", "B.json"),
                   help="print the ratios B/A between two saved reports instead of benchmarking")
    p.add_argument("--in-process", action="store_true",
                   help="run every format in this process (default: one process per format, for per-format "
                        "peak memory and crash isolation)")
    p.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    p.add_argument("--wide", action="store_true", help="every column (p90, mean, std, min, provider); the default "
                                                       "table fits 100 columns")
    p.set_defaults(func=run)


def _command(args, options) -> str:
    """The full command with every setting spelled out, so the report says how to reproduce it."""
    parts = ["mnist-edge", "bench"] + (["--model", args.model] if args.model else [])
    parts += ["--formats", *options.formats, "--batch-sizes", *map(str, options.batch_sizes),
              "--threads", *map(str, options.threads)]
    parts += ["--seconds", str(args.seconds)] if args.seconds is not None else ["--runs", str(args.runs or 200)]
    parts += ["--warmup", str(options.warmup), "--device", args.device]
    parts += ["--accuracy"] * args.accuracy + ["--in-process"] * args.in_process
    return " ".join(shlex.quote(p) for p in parts)


class _StatusLine:
    """Progress on stderr: one line per message, rewritten in place on a terminal."""

    def __init__(self, stream=None):
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.shown = False

    def __call__(self, message: str) -> None:
        self.stream.write("\r" + message.ljust(72) if self.tty else message + "\n")
        self.stream.flush()
        self.shown = True

    def close(self) -> None:
        if self.tty and self.shown:
            self.stream.write("\r" + " " * 72 + "\r")
            self.stream.flush()


def _compare(args) -> int:
    from mnist_edge.bench import report as rep
    from mnist_edge.bench.document import BenchReport
    from mnist_edge.files import write_text_atomic

    cmp = rep.compare_reports(BenchReport.from_json(args.compare[0]), BenchReport.from_json(args.compare[1]))
    print(rep.render_compare(cmp))
    if args.json:
        write_text_atomic(args.json, json.dumps(cmp, indent=2) + "\n")
    if args.markdown:
        write_text_atomic(args.markdown, rep.render_compare(cmp, markdown=True))
    return 0


def _options(args):
    from mnist_edge.bench.options import DEFAULT_BATCH_SIZES, DEFAULT_FORMATS, DEFAULT_THREADS, DEFAULT_WARMUP
    from mnist_edge.bench.options import BenchOptions

    options = BenchOptions(formats=tuple(args.formats or DEFAULT_FORMATS),
                           batch_sizes=tuple(args.batch_sizes or DEFAULT_BATCH_SIZES),
                           threads=tuple(args.threads or DEFAULT_THREADS), runs=args.runs, seconds=args.seconds,
                           warmup=DEFAULT_WARMUP if args.warmup is None else args.warmup, accuracy=args.accuracy,
                           data_dir=args.data, device=args.device, isolate=not args.in_process)
    return replace(options, command=_command(args, options))


def run(args) -> int:
    from mnist_edge.artifacts import resolve
    from mnist_edge.bench import report as rep
    from mnist_edge.bench.runner import run_bench
    from mnist_edge.files import write_text_atomic

    if args.compare:
        return _compare(args)
    options = _options(args)
    folder = resolve(args.model).folder  # a model file stands for its folder: every format is measured
    line = None if args.no_progress else _StatusLine()
    try:
        report = run_bench(folder, options, progress=line)
    finally:
        if line is not None:
            line.close()
    print(rep.render_table(report, wide=args.wide))
    if args.json:
        report.write(args.json)
        print(f"json: {args.json}")
    if args.markdown:
        write_text_atomic(args.markdown, rep.render_markdown(report))
        print(f"markdown: {args.markdown}")
    bad = [e.format for e in report.formats if e.status == "failed"]
    if bad:
        print(f"mnist-edge bench: error: failed: {', '.join(bad)} (reasons in the table)", file=sys.stderr)
        return 1
    if not report.results:
        print("mnist-edge bench: error: nothing was measured (no requested format is available here)",
              file=sys.stderr)
        return 1
    return 0
