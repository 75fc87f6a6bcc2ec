"""`mnist-edge bench`: every exported format of a model side by side, with the machine it ran on.

    from mnist_edge.bench import BenchOptions, run_bench, render_table
    report = run_bench("exported/bn_cnn", BenchOptions(batch_sizes=(1, 64), threads=(1, "all"), runs=200))
    print(render_table(report)); report.advice.line

Modules: ``timing`` (warm-up, timed runs, percentiles), ``ratio`` (int8 against fp32 timed interleaved),
``formats`` (eager, TorchScript, ONNX fp32, ONNX int8 loaders), ``worker`` (one format in one process),
``options`` (what a run is asked to do), ``runner`` (``run_bench``), ``document`` (the report as typed
objects: its versioned JSON schema and checks), ``report`` (tables, compare) and ``advice`` (does int8 pay
here). The machine's description comes from :mod:`mnist_edge.system.machine`. Importing this package
imports neither torch nor onnxruntime.
"""

from mnist_edge.bench.advice import advise
from mnist_edge.bench.document import SCHEMA, BenchReport
from mnist_edge.bench.formats import FORMATS
from mnist_edge.bench.options import BenchOptions
from mnist_edge.bench.report import compare_reports, render_compare, render_markdown, render_table
from mnist_edge.bench.runner import run_bench
from mnist_edge.bench.timing import measure, summarize

__all__ = [
    "FORMATS",
    "SCHEMA",
    "BenchOptions",
    "BenchReport",
    "advise",
    "compare_reports",
    "measure",
    "render_compare",
    "render_markdown",
    "render_table",
    "run_bench",
    "summarize",
]
