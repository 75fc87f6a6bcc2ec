"""The int8 recipe search: which quantization recipe is fastest here and still passes the accuracy gates.

Every trial quantizes the fp32 ONNX file with one :class:`QuantizeOptions`, gates it exactly as the export
does (accuracy drop and top-1 agreement against the fp32 file, on the test images at batch sizes 1, 7 and
64), and, when it passes, times it against fp32 at batch 1 and 64 (interleaved, repeated; the ratio's
95% interval from :mod:`mnist_edge.bench.ratio`). A trial is scored by its worse ratio of the two.

Stages, so a search costs a dozen trials rather than the whole product of options:

1. the default recipe; when it fails the gate, the accuracy-controlled fallback keeps the layers around
   the worst tensor (lowest SQNR) in float, one at a time, until it passes, and that becomes the base;
2. one change at a time for speed: quant_pre_process, U8S8, QOperator (U8S8), per-tensor weights,
   reduce_range, Conv/Gemm only, the first compute layer in float, first and last in float (a MaxPool after
   a Relu/Tanh after such a float conv moved before the activation, so onnxruntime keeps it a float pool:
   :func:`mnist_edge.int8.candidates.float_side_pools`); the leader by score is then timed head to head
   against the next two (:meth:`Searcher.beats`);
3. the best of stage 2 combined with each other change that beat the base, each kept only when it beats
   the current best head to head;
4. layout rewrites on that graph (:mod:`mnist_edge.int8.rewrites`): the Relu moved before each MaxPool that
   follows a quantized node, the flatten done in NHWC order, and both; these remove the DQ -> float MaxPool
   -> Q round trips and the Transposes that onnxruntime's optimizer otherwise leaves at batch 1; each kept
   only when it beats the current best head to head; then, on the winner, the input channels of each
   quantized conv padded to a multiple of four (:mod:`mnist_edge.int8.channel_pad`: onnxruntime's fast
   symmetric int8 conv kernel on x64 needs them in fours), or of 8 or 16 where the conv feeding it stays in
   float (onnxruntime's NCHWc blocks), each with and without the NHWC flatten, kept only when it beats the
   best so far;
5. calibration on the chosen graph (Entropy, Percentile 99.99 / 99.999, Distribution): these change
   ranges, not the graph, so the one with the highest agreement wins (ties keep the current one);
6. the chosen recipe is timed once more with ``CONFIRM_FACTOR`` times the repeats (stage "confirm"): the
   trials above are compared on short, noisy samples, and the verdict and the published ratios should not be
   the lucky draw that won a comparison. Same method (interleaved ABBA blocks), more samples.

The verdict: "pays" when the chosen trial is faster than fp32 at both batch sizes (interval below 1),
"does not pay" when it is slower at either (interval above 1), else "undetermined"; only "pays"
recommends the int8 file. A failed trial's gate message names its three worst tensors; with
``keep_failed`` its int8 file and diagnosis are kept there, otherwise nothing is left behind.
Needs onnx and onnxruntime, never torch.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mnist_edge.errors import ExportError, UsageError
from mnist_edge.evaluate import gates as G
from mnist_edge.bench import ratio as R
from mnist_edge.int8.candidates import calibration_variants, layout_variants, merge, pad_variants, speed_variants
from mnist_edge.int8.quantize import QuantizeOptions, float_graph, quantize_int8
from mnist_edge.int8.result import (FP32_FILE, INT8_FILE, HeadToHead, Machine, Ratio, SearchInfo, SearchResult,
                                    Timing, Trial)
from mnist_edge.int8.settings import SearchSettings

TIMING_BATCHES = (1, 64)
FALLBACK_MAX_STEPS = 6
CONFIRM_FACTOR = 3
HEAD_TO_HEAD = 3  # stage 2's leader and the next two by score are compared head to head


@dataclass(frozen=True)
class SearchInputs:
    """The images one search uses: calibration images from the training split, gate images from the test split."""

    calibration: np.ndarray  # uint8 [N, 28, 28]
    calibration_source: dict  # which images: recorded in the result and in the int8 file
    x: np.ndarray  # uint8 [n, 1, 28, 28], the gate's test images
    y: np.ndarray  # int64 [n]


def search_inputs(data, options: QuantizeOptions, settings: SearchSettings) -> SearchInputs:
    """The inputs of a search on ``data`` (a :class:`mnist_edge.data.dataset.Digits` with both splits): the
    class-balanced calibration images ``options`` asks for (or one class only, ``settings.calibration_class``)
    and the first ``settings.eval_limit`` test images."""
    from mnist_edge.data.dataset import balanced_sample
    from mnist_edge.int8.quantize import custom_source

    data.need("train", "test")
    c = settings.calibration_class
    if c is None:
        cal, source = balanced_sample(data.train, options.calibration_samples, options.seed)
    else:
        classes = np.unique(data.train.labels)
        if c not in classes:
            raise UsageError(f"--calibration-class {c!r} is not a class of the training images; "
                             f"their classes are: {', '.join(map(str, classes))}")
        cal = data.train.images[data.train.labels == c][:options.calibration_samples]
        source = dict(custom_source(cal), split="train", only_class=c, note="deliberately one class only")
    test = data.test.head(settings.eval_limit)
    return SearchInputs(cal, source, np.ascontiguousarray(test.images[:, None]), np.asarray(test.labels, np.int64))


class Searcher:
    """One fp32 file, its calibration and test images, and a scratch folder; :meth:`trial` runs one recipe."""

    def __init__(self, fp32_path, inputs: SearchInputs, settings: SearchSettings, *, workdir, progress=None):
        from mnist_edge.evaluate.ort_eval import make_session, ort_logits

        settings.validate()
        self.fp32 = Path(fp32_path)
        self.cal, self.cal_source = inputs.calibration, inputs.calibration_source
        self.x, self.y = np.ascontiguousarray(inputs.x), np.asarray(inputs.y).astype(np.int64)
        self.batch_sizes, self.timing_batches = tuple(G.BATCH_SIZES), TIMING_BATCHES
        self.repeats, self.calls = settings.repeats, settings.calls
        self.keep_failed = Path(settings.keep_failed) if settings.keep_failed is not None else None
        self.say = progress or (lambda msg: None)
        self.work = Path(workdir)
        self.trials: list[Trial] = []
        self.fp32_session = make_session(self.fp32)
        self.fp32_out = {bs: ort_logits(self.fp32_session, self.x, bs) for bs in self.batch_sizes}

    def trial(self, name: str, stage: str, options: QuantizeOptions, *, timed: bool = True,
              repeats: int | None = None) -> Trial:
        from mnist_edge.evaluate.ort_eval import make_session, ort_logits

        t = Trial(name, stage, options)
        t0 = time.perf_counter()
        path = self.work / f"trial{len(self.trials):02d}.int8.onnx"
        self.say(f"trial {len(self.trials) + 1} {name}: {_changes(options)}")
        try:
            rec = quantize_int8(self.fp32, path, self.cal, options, source=self.cal_source)
            t.messages = rec["onnxruntime_messages"]
            sess = make_session(path)
            out = {bs: ort_logits(sess, self.x, bs) for bs in self.batch_sizes}
        except (ExportError, UsageError) as e:
            t.error = str(e)
        else:
            checks = G.int8_checks(INT8_FILE, self.fp32_out, out, self.y, **G.THRESHOLDS["int8"])
            summary = G.summarize(checks, INT8_FILE)["worst"]
            t.agreement, t.accuracy_drop_pp = summary["agreement_pct"], summary["accuracy_drop_pp"]
            t.accuracy = round(float((out[max(self.batch_sizes)].argmax(1) == self.y).mean() * 100), 4)
            t.passed = all(c.passed for c in checks)
            if not t.passed:
                t.worst_tensors = self.worst(path, options)
                failed = "; ".join(f"{k} {G._fmt(k, v)}" for k, v in summary.items()
                                   if any(c.metric == k and not c.passed for c in checks))
                from mnist_edge.int8.diagnose import worst_text

                t.error = f"gate failed ({failed}); worst tensors: {worst_text(t.worst_tensors)}"
            elif timed:
                for bs in self.timing_batches:
                    t.ratios[bs] = self.time(sess, bs, repeats or self.repeats)
        t.seconds = time.perf_counter() - t0
        if not t.passed and self.keep_failed is not None and path.is_file():
            self.keep_failed.mkdir(parents=True, exist_ok=True)
            kept = self.keep_failed / f"{len(self.trials):02d}-{name}.int8.onnx"
            shutil.copyfile(path, kept)
            t.kept = str(kept)
        if t.passed and timed:
            t.model = path.read_bytes()
        path.unlink(missing_ok=True)
        self.trials.append(t)
        self.say("  " + _line(t))
        return t

    def time(self, sess, bs: int, repeats: int) -> Ratio:
        from mnist_edge.contract import INPUT_NAME

        feed = {INPUT_NAME: self.x[:bs]}
        int8 = lambda: sess.run(None, feed)  # noqa: E731
        fp32 = lambda: self.fp32_session.run(None, feed)  # noqa: E731
        a, b = R.time_pair(int8, fp32, repeats=repeats, calls=self.calls)
        return Ratio(**R.ratio_interval(a, b))

    def beats(self, challenger: Trial, incumbent: Trial) -> bool:
        """Whether ``challenger`` is faster than ``incumbent``, timed against it (interleaved, both int8).

        Trials timed against fp32 minutes apart on a shared machine differ by more than the changes compared
        here (the same graph measured 0.76x and 0.98x within ten minutes on the 2-core EPYC), so a challenger
        is compared with the incumbent directly: its estimated ratio to fp32 at each batch is the incumbent's
        times challenger / incumbent, and it wins when the worse of those is below the incumbent's."""
        from mnist_edge.contract import INPUT_NAME
        from mnist_edge.evaluate.ort_eval import make_session

        if not (challenger.passed and incumbent.passed and challenger.model and incumbent.model):
            return False
        a, b = make_session(challenger.model), make_session(incumbent.model)
        ratios = {}
        for bs in self.timing_batches:
            feed = {INPUT_NAME: self.x[:bs]}
            sa, sb = R.time_pair(lambda: a.run(None, feed), lambda: b.run(None, feed), repeats=self.repeats,
                                 calls=self.calls)
            ratios[bs] = Ratio(**R.ratio_interval(sa, sb))
        challenger.against = HeadToHead(incumbent.name, ratios)
        estimate = max(ratios[bs].ratio * incumbent.ratios[bs].ratio for bs in self.timing_batches)
        won = estimate < incumbent.score
        self.say(f"  head to head, '{challenger.name}' / '{incumbent.name}': " + "  ".join(
            f"b{bs} {r.text()}" for bs, r in ratios.items()) + (" -> better" if won else " -> kept the incumbent"))
        return won

    def confirm(self, chosen: Trial) -> Trial:
        """``chosen`` timed again with CONFIRM_FACTOR times the repeats (stage "confirm")."""
        self.say(f"confirming '{chosen.name}' with {CONFIRM_FACTOR}x the repeats")
        again = self.trial(chosen.name, "confirm", chosen.options, repeats=self.repeats * CONFIRM_FACTOR)
        return again if again.passed else chosen

    def worst(self, int8_path, options: QuantizeOptions) -> list[dict]:
        """Per-tensor SQNR rows of a failed candidate, worst first (against the graph the quantizer saw)."""
        from mnist_edge.int8.diagnose import tensor_errors

        scratch = Path(tempfile.mkdtemp(prefix="float-", dir=self.work))
        try:
            return tensor_errors(float_graph(self.fp32, options, scratch), int8_path, self.x[:256])
        except Exception as e:  # a diagnosis must never hide the gate failure it explains
            return [{"tensor": f"(diagnosis failed: {type(e).__name__})", "local_sqnr_db": 0.0,
                     "accumulated_sqnr_db": 0.0, "nodes": []}]
        finally:
            shutil.rmtree(scratch, ignore_errors=True)

    def fallback(self, failed: Trial) -> Trial:
        """Keep the layers around the worst tensor in float, one tensor at a time, until the gate passes."""
        current = failed
        for step in range(1, FALLBACK_MAX_STEPS + 1):
            new = next((n for r in current.worst_tensors for n in r["nodes"]
                        if n not in current.options.keep_float), None)
            if new is None:
                break
            worst = next(r for r in current.worst_tensors if new in r["nodes"])
            around = [n for n in worst["nodes"] if n not in current.options.keep_float]
            self.say(f"fallback step {step}: {worst['tensor']} (local {worst['local_sqnr_db']:.1f} dB) -> "
                     f"keep {', '.join(around)} in float")
            options = current.options.with_(keep_float=current.options.keep_float + tuple(around))
            current = self.trial(f"{failed.name}+fallback{step}", "fallback", options)
            if current.passed:
                break
        return current


def _changes(options: QuantizeOptions) -> str:
    d = options.differences()
    d.pop("calibration_samples", None)
    return ", ".join(f"{k}={v}" for k, v in d.items()) or "onnxruntime defaults (QDQ S8S8 per-channel MinMax)"


def _line(t: Trial) -> str:
    if not t.passed:
        return f"FAILED ({t.seconds:.1f} s): {t.error}"
    ratios = "  ".join(f"b{b} {r.text()}" for b, r in t.ratios.items())
    return f"passed: agreement {t.agreement:.2f}%, drop {t.accuracy_drop_pp:+.2f} pp; int8/fp32 {ratios} ({t.seconds:.1f} s)"


def run_search(s: Searcher, base: QuantizeOptions, *, full: bool = True) -> Trial | None:
    """The stages above on ``s``; returns the chosen trial (None when nothing passed)."""
    first = s.trial("base", "base", base)
    if not first.passed:
        first = s.fallback(first)
    if not full:
        return first if first.passed else None
    if not first.passed:
        return None
    root = first.options
    variants = [s.trial(n, "speed", o) for n, o in speed_variants(root, s.fp32)]
    passing = sorted([first] + [t for t in variants if t.passed], key=lambda t: t.score)
    best = passing[0]
    for t in passing[1:HEAD_TO_HEAD]:  # the runners-up against the leader, head to head
        if s.beats(t, best):
            best = t
    helpful = [t for t in variants if t.passed and t.score < first.score and t is not best]
    for t in sorted(helpful, key=lambda t: t.score)[:3]:
        merged = merge(best.options, t.options)
        if merged == best.options or any(x.options == merged for x in s.trials):
            continue
        c = s.trial(f"{best.name}+{t.name}", "combine", merged)
        if s.beats(c, best):
            best = c
    start = best
    for n, o in layout_variants(start.options, s.fp32):
        if any(x.options == o for x in s.trials):
            continue
        c = s.trial(f"{start.name}+{n}", "layout", o)
        if s.beats(c, best):
            best = c
    start = best
    for n, o in pad_variants(start.options, s.fp32):
        c = s.trial(f"{start.name}+{n}", "layout", o)
        if s.beats(c, best):
            best = c
    chosen = best
    for n, o in calibration_variants(best.options):
        c = s.trial(f"{best.name}+{n}", "calibration", o)
        if c.passed and (c.agreement, -c.accuracy_drop_pp) > (chosen.agreement, -chosen.accuracy_drop_pp):
            chosen = c
    return chosen


def verdict_of(chosen: Trial | None) -> tuple[str, str]:
    """(verdict, recommended file), by the rule bench's advice uses too (:data:`mnist_edge.bench.ratio.SHIP`)."""
    if chosen is None:
        return "no recipe passed", FP32_FILE
    verdict = R.int8_verdict(r.verdict for r in chosen.ratios.values())
    return verdict, R.SHIP[verdict]


def summary_line(model: str, verdict: str, chosen: Trial | None) -> str:
    if chosen is None:
        return f"no int8 recipe passed the accuracy gates for {model}: ship model.onnx (fp32)"
    ratios = ", ".join(f"batch {b} {r.text()}" for b, r in chosen.ratios.items())
    text = {"pays": f"int8 pays on this machine for {model}",
            "does not pay": f"int8 does not pay on this machine for this model ({model}): ship model.onnx (fp32)",
            "undetermined": f"int8 vs fp32 is undetermined on this machine for {model} (an interval includes 1; "
                            "re-run on a quiet machine): ship model.onnx (fp32)"}[verdict]
    return f"{text}; recipe '{chosen.name}' int8/fp32 p50 {ratios}, agreement {chosen.agreement:.2f}%"


def search_int8(fp32_path, data, options: QuantizeOptions, settings: SearchSettings, *, name: str, progress=None,
                workdir=None) -> SearchResult:
    """Search (``settings.search``) or check one recipe with fallback; returns the result (not yet written).

    ``data``: a :class:`mnist_edge.data.dataset.Digits` (calibration images come from its training split,
    the gates run on its test split); ``options``: the starting recipe; ``name``: a label for the result.
    Scratch files live in a temporary folder under ``workdir`` (default: the run's scratch folder,
    :func:`mnist_edge.system.scratch.run_scratch`) that is removed at the end, failure or not. A recipe that
    names a node the graph does not have is a UsageError before any trial.
    """
    from mnist_edge.int8.quantize import check_selectors
    from mnist_edge.system.scratch import run_scratch

    settings, base = settings.validate(), options.validate()
    inputs = search_inputs(data, base, settings)
    t0 = time.perf_counter()
    with run_scratch() as scratch:
        work = Path(tempfile.mkdtemp(prefix="int8-search-", dir=workdir if workdir is not None else scratch))
        try:
            check_selectors(fp32_path, base, work)
            s = Searcher(fp32_path, inputs, settings, workdir=work, progress=progress)
            chosen = run_search(s, base, full=settings.search)
            if settings.search and chosen is not None and chosen.ratios:
                chosen = s.confirm(chosen)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    verdict, recommended = verdict_of(chosen)
    timing = Timing(batch_sizes=list(s.timing_batches), repeats=settings.repeats, calls_per_block=settings.calls,
                    confirm_repeats=settings.repeats * CONFIRM_FACTOR if settings.search else None)
    info = SearchInfo(mode="search" if settings.search else "single recipe with fallback", trials=len(s.trials),
                      seconds=round(time.perf_counter() - t0, 1), fp32=Path(fp32_path).name,
                      eval_images=int(len(s.x)), gate_batch_sizes=list(s.batch_sizes),
                      gate_thresholds=G.THRESHOLDS["int8"], timing=timing, calibration=inputs.calibration_source)
    return SearchResult(model=name, options=chosen.options if chosen else base, verdict=verdict,
                        recommended=recommended, summary=summary_line(name, verdict, chosen), chosen=chosen,
                        machine=this_machine(), search=info, trials=s.trials)


def this_machine() -> Machine:
    """The machine the trials were timed on (1 thread each)."""
    from mnist_edge.system.machine import collect_environment

    env = collect_environment()
    return Machine(cpu=env["cpu"]["model"], arch=env["cpu"]["arch"], int8_instructions=env["cpu"]["int8_note"],
                   usable_cores=env["cpu"]["usable_cores"], load_average=env["load_average"],
                   onnxruntime=env["versions"]["onnxruntime"], threads=1)


def plot_search(result: SearchResult, path) -> Path | None:
    """Latency ratio (worse of batch 1 and 64) against agreement, one point per passed trial; failed
    trials on the left edge. Needs matplotlib (``[train]``); returns None without it."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(7, 4.5))
    chosen = result.chosen.name if result.chosen else None
    for t in result.trials:
        if not t.ratios:
            continue
        worst = max(t.ratios.values(), key=lambda r: r.ratio)
        ax.errorbar(t.agreement, worst.ratio, yerr=[[worst.ratio - worst.low], [worst.high - worst.ratio]],
                    fmt="o", color="tab:red" if t.name == chosen else "tab:blue", capsize=3)
        ax.annotate(t.name, (t.agreement, worst.ratio), fontsize=7, xytext=(4, 2), textcoords="offset points")
    failed = [t for t in result.trials if not t.passed]
    ax.axhline(1.0, color="gray", lw=0.8, ls="--")
    ax.set_xlabel("top-1 agreement with fp32, % (worst batch size)")
    ax.set_ylabel("int8 / fp32 p50 latency (worse of batch 1, 64)")
    ax.set_title(f"{result.model}: {result.verdict} ({len(result.trials)} trials, "
                 f"{len(failed)} failed the gate)\n{result.machine.cpu}", fontsize=9)
    fig.tight_layout()
    from mnist_edge.files import atomic_path

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=100)
    plt.close(fig)
    return path
