"""`mnist-edge bench`: every exported format of a model side by side, with the machine it ran on.

    from mnist_edge.bench import run_bench, render_table
    report = run_bench("exported/bn_cnn", batch_sizes=[1, 64], threads=[1, "all"], runs=200)
    print(render_table(report)); report["advice"]["line"]

Modules: ``timing`` (warm-up, timed runs, percentiles), ``environment`` (CPU, flags, versions, a Pi's
clock state), ``formats`` (eager, TorchScript, ONNX fp32, ONNX int8 loaders), ``worker`` (one format in
one process), ``runner`` (``run_bench``), ``report`` (the versioned JSON schema, tables, compare) and
``advice`` (does int8 pay here). Importing this package imports neither torch nor onnxruntime.
"""

from mnist_edge.bench.advice import advise
from mnist_edge.bench.formats import FORMATS
from mnist_edge.bench.report import (
    SCHEMA,
    compare_reports,
    load_report,
    render_compare,
    render_markdown,
    render_table,
    validate_report,
    write_json,
)
from mnist_edge.bench.runner import run_bench
from mnist_edge.bench.timing import measure, summarize

__all__ = [
    "FORMATS",
    "SCHEMA",
    "advise",
    "compare_reports",
    "load_report",
    "measure",
    "render_compare",
    "render_markdown",
    "render_table",
    "run_bench",
    "summarize",
    "validate_report",
    "write_json",
]
