"""One line of advice from a report: does int8 pay on this machine, and which artifact to ship.

The rule, in order:
0. With LiteRT files in the folder, bench races every runtime file (ONNX Runtime and LiteRT, fp32 and int8)
   interleaved in one process (:mod:`mnist_edge.bench.race`); the file to ship is the fastest at the
   smallest batch size among the files that keep their accuracy, and ``fastest`` names the winner at every
   batch size with the runner-up's margin (its p50 over the winner's, 95% interval). Rules 1-5 still decide
   ONNX Runtime's own int8-or-fp32 question, quoted after it; on CUDA and under emulation they alone apply.
1. On CUDA, ship ``model.onnx``: onnxruntime runs an int8 QDQ model there as simulated quantization in
   float32 (see ``mnist_edge.runtime.session``), so int8 cannot pay.
   Under emulation (``environment.cpu.emulated``: qemu-user running ARM code on an x86 host) neither the
   timings nor the emulated CPU's flags say anything about a device: no verdict, the line says so.
2. Both accuracies measured and int8 more than ``MAX_ACCURACY_DROP`` points below fp32: ship ``model.onnx``.
3. int8 and fp32 timed interleaved in one process (the report's ``int8_vs_fp32``, as the int8 search times
   them): the search's rule, at the fewest threads measured. int8 pays when the 95% interval of int8/fp32
   lies below 1 at every batch size, does not pay when it lies above 1 at any, else "undetermined". With
   both files under the same load the interval is the noise, so no extra margin is added.
4. Reports without that measurement (older ones): int8 pays when its p50 is at least ``PAYS_AT`` times faster than fp32's at
   the smallest batch and thread count measured (the edge case: one image at a time). A gain under 10% is
   within the noise of a shared machine and does not justify a second kind of numerics: ship fp32. When
   the report has each p50's confidence interval and the interval of the ratio (fp32 low / int8 high to
   fp32 high / int8 low) includes 1, the verdict is "undetermined": the runs cannot tell which is faster
   (``int8_pays`` None, ``ship`` None); measure with more runs on a quieter machine.
5. Otherwise (not measured), the CPU flags predict it: VNNI on x86, dot product (asimddp) or i8mm on ARM.
The measurement wins over the flags; where they disagree the line says so.
"""

from __future__ import annotations

from mnist_edge import artifacts as A
from mnist_edge.bench.document import Advice, BenchReport, Fastest, PairRow, Speedup
from mnist_edge.bench.ratio import int8_verdict

PAYS_AT = 1.10
MAX_ACCURACY_DROP = 0.3  # percentage points, the export gate's limit
FP32, INT8 = A.ONNX, A.INT8


def speedup_interval(report: BenchReport, key) -> tuple[float, float] | None:
    """The interval of fp32 p50 / int8 p50 at ``key`` (batch, threads) from the two p50 intervals, or None
    when the report does not carry them (reports before they were recorded)."""
    a, b = report.row("onnx", *key), report.row("int8", *key)
    if not a or not b or not a.p50_ci_ms or not b.p50_ci_ms:
        return None
    return a.p50_ci_ms[0] / b.p50_ci_ms[1], a.p50_ci_ms[1] / b.p50_ci_ms[0]


def int8_speedups(report: BenchReport) -> dict:
    """{(batch, threads): fp32 p50 / int8 p50} for every case measured in both ONNX formats."""
    fp32, int8 = report.p50s("onnx"), report.p50s("int8")
    return {k: fp32[k] / int8[k] for k in sorted(fp32) if k in int8}


def paired_rows(report: BenchReport) -> list[PairRow]:
    """The interleaved int8/fp32 rows at the fewest threads measured, by batch ([] when absent)."""
    rows = report.paired_rows
    if not rows:
        return []
    threads = min(r.threads for r in rows)
    return sorted((r for r in rows if r.threads == threads), key=lambda r: r.batch)


def _paired_advice(rows: list[PairRow], capable, why: str) -> Advice:
    first = rows[0]
    how = ", ".join(f"{r.ratio:.2f}x [{r.low:.2f}, {r.high:.2f}] at batch {r.batch}" for r in rows)
    how = (f"int8/fp32 p50 {how} ({first.threads} thread{'s' if first.threads > 1 else ''}, timed "
           f"interleaved in one process; 95% intervals)")
    measured = Speedup(batch=first.batch, threads=first.threads, value=1 / first.ratio,
                       interval=[1 / first.high, 1 / first.low])
    verdict = int8_verdict(r.verdict for r in rows)  # the search's rule: the manifest's recommendation
    if verdict == "pays":
        line = f"int8 pays here: {how}; {why}. Ship model.int8.onnx."
        if capable is False:
            line = line[:-1] + " (faster even without int8 instructions)."
        return Advice(int8_pays=True, ship=INT8, basis="measured", int8_speedup=measured, line=line)
    if verdict == "does not pay":
        line = f"int8 does not pay here: {how}; {why}. Ship model.onnx."
        return Advice(int8_pays=False, ship=FP32, basis="measured", int8_speedup=measured, line=line)
    return Advice(basis="measured", int8_speedup=measured,
                  line=f"Undetermined: {how}; an interval includes 1, so these runs cannot tell which is faster. "
                       "Measure again with more --runs on a quieter machine.")


def _unpaired_advice(report: BenchReport, speedups: dict, capable, why: str) -> Advice:
    """Rule 4: the quotient of the two p50s at the smallest batch and thread count measured."""
    (batch, threads), s = min(speedups.items(), key=lambda kv: (kv[0][0], kv[0][1]))
    interval = speedup_interval(report, (batch, threads))
    pays = s >= PAYS_AT
    others = [f"{v:.2f}x at batch {b}" for (b, t), v in speedups.items() if t == threads and b != batch]
    extra = f" ({', '.join(others)})" if others else ""
    how = f"{s:.2f}x ONNX fp32's speed at batch {batch}, {threads} thread{'s' if threads > 1 else ''}{extra}"
    measured = Speedup(batch=batch, threads=threads, value=s, interval=list(interval) if interval else None)
    if interval and interval[0] <= 1.0 <= interval[1]:
        return Advice(basis="measured", int8_speedup=measured,
                      line=f"Undetermined: int8 runs at {how}, but the 95% interval of that ratio "
                           f"({interval[0]:.2f}x to {interval[1]:.2f}x) includes 1: these runs cannot tell "
                           "which is faster. Measure again with more --runs on a quieter machine.")
    if interval:
        how += f"; 95% interval {interval[0]:.2f}x to {interval[1]:.2f}x"
    if pays:
        line = f"int8 pays here: {how}; {why}. Ship model.int8.onnx."
        if capable is False:
            line = line[:-1] + " (faster even without int8 instructions)."
    else:
        line = f"int8 does not pay here: {how}; {why}. Ship model.onnx."
        if capable:
            line = (line[:-1] + " (unexpected with these instructions: check the machine's load and "
                    "the onnxruntime version).")
    return Advice(int8_pays=pays, ship=INT8 if pays else FP32, basis="measured", int8_speedup=measured, line=line)


def fastest_rows(report: BenchReport) -> list[Fastest]:
    """Per batch size (fewest threads raced): the fastest file of the cross-runtime race among those that keep
    their accuracy (an int8 file more than ``MAX_ACCURACY_DROP`` points below its runtime's fp32 file is left
    out), and the runner-up's margin. [] without a race."""
    rows = report.race.rows if report.race is not None and report.race.rows else []
    if not rows:
        return []
    acc = {e.file: getattr(e, "accuracy", None) for e in report.formats if e.file}
    lossy = {int8 for fp32, int8 in ((A.ONNX, A.INT8), (A.TFLITE, A.TFLITE_INT8))
             if acc.get(fp32) is not None and acc.get(int8) is not None and acc[fp32] - acc[int8] > MAX_ACCURACY_DROP}
    threads = min(r.threads for r in rows)
    out = []
    for batch in sorted({r.batch for r in rows if r.threads == threads}):
        ranked = sorted((r for r in rows if r.threads == threads and r.batch == batch and r.file not in lossy),
                        key=lambda r: r.ratio)
        if not ranked:
            continue
        first, second = ranked[0], (ranked[1] if len(ranked) > 1 else None)
        base = first.ratio  # 1 unless the race's winner was left out: ratios then relative to the new first
        out.append(Fastest(batch=batch, threads=threads, file=first.file, runner_up=second and second.file,
                           margin=second and [round(second.low / base, 4), round(second.high / base, 4)],
                           ratio=second and round(second.ratio / base, 4)))
    return out


def _with_race(advice: Advice, rows: list[Fastest]) -> Advice:
    """Rule 0 (module docstring): with a race, ship the fastest file at the smallest batch size."""
    def one(f: Fastest) -> str:
        if f.runner_up is None:
            return f"{f.file} at batch {f.batch}"
        return (f"{f.file} at batch {f.batch} ({f.runner_up} {f.ratio:.2f}x its p50 [{f.margin[0]:.2f}, "
                f"{f.margin[1]:.2f}])")
    ship = rows[0].file
    line = (f"Ship {ship}: fastest here of every runtime file, timed interleaved in one process "
            f"({rows[0].threads} thread{'s' if rows[0].threads > 1 else ''}): {'; '.join(one(f) for f in rows)}. "
            f"ONNX Runtime alone: {advice.line}")
    return Advice(int8_pays=advice.int8_pays, ship=ship, basis="measured", int8_speedup=advice.int8_speedup,
                  fastest=rows, line=line)


def advise(report: BenchReport) -> Advice:
    """The advice of ``report`` (its ``advice`` field is not read), by the rule in the module docstring."""
    advice = _advise_onnx(report)
    rows = fastest_rows(report)
    if not rows or advice.basis in ("device", "emulation"):
        return advice
    return _with_race(advice, rows)


def _advise_onnx(report: BenchReport) -> Advice:
    """Rules 1-5: ONNX Runtime's two files."""
    cpu = report.environment.cpu
    capable, why = cpu.int8_instructions, cpu.int8_note or ""
    if report.settings.device.startswith("cuda"):
        return Advice(int8_pays=False, ship=FP32, basis="device",
                      line="On CUDA ship model.onnx: onnxruntime runs the int8 QDQ model as float32 simulated "
                           "quantization there (no int8 kernels), so int8 cannot pay.")
    if cpu.emulated:  # emulated timings rank formats by the emulator's costs, not a CPU's
        return Advice(basis="emulation",
                      line=f"Timings mean nothing here: this {cpu.arch or 'CPU'} is emulated (qemu-user or the "
                           f"like; host CPU: {cpu.host_cpu or 'unknown'}), and neither they nor the emulated "
                           "CPU's flags tell whether int8 pays on a real device. Run the benchmark on the device.")
    acc = {f: getattr(report.entry(f), "accuracy", None) for f in ("onnx", "int8")}
    if acc["onnx"] is not None and acc["int8"] is not None and acc["onnx"] - acc["int8"] > MAX_ACCURACY_DROP:
        return Advice(int8_pays=False, ship=FP32, basis="accuracy",
                      line=f"int8 loses {acc['onnx'] - acc['int8']:.2f} accuracy points (limit "
                           f"{MAX_ACCURACY_DROP}): ship model.onnx.")
    paired = paired_rows(report)
    if paired:
        return _paired_advice(paired, capable, why)
    speedups = int8_speedups(report)
    if speedups:
        return _unpaired_advice(report, speedups, capable, why)
    missing = [f"{f} {getattr(report.entry(f), 'status', 'not requested')}" for f in ("onnx", "int8")
               if getattr(report.entry(f), "status", None) != "ok"]
    guess = {True: "int8 should pay here", False: "int8 is unlikely to pay here",
             None: "whether int8 pays here is unknown"}[capable]
    ship = {True: INT8, False: FP32, None: None}[capable]
    return Advice(int8_pays=capable, ship=ship, basis="cpu flags",
                  line=f"Not measured ({', '.join(missing)}); {why}: {guess}. Measure with --formats onnx int8.")
