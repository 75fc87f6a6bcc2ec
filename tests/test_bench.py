"""The benchmark harness, not the speed: statistics, run counts, schema, compare, advice, the CLI end to end.

Speed is never asserted (this machine is shared). The artifact folder is a tiny one built here: the zoo's
``mlp`` with fresh weights as a checkpoint, a traced TorchScript file, the same network written as an
ONNX graph by hand (so all four formats compute one function) and a QDQ int8 file quantized from it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

from mnist_edge import contract as C
from mnist_edge.system import machine as environment
from mnist_edge.bench import advice, report, runner, timing
from mnist_edge.bench.document import BenchModel, BenchReport, Speedup
from mnist_edge.bench.formats import FORMATS
from mnist_edge.bench.options import BenchOptions, parse_threads
from mnist_edge.cli import main
from mnist_edge.errors import ArtifactError, UnknownModelError, UsageError

EXPORTED = Path(__file__).resolve().parents[1] / "exported"

ALL = list(FORMATS)
TFLITE = ("tflite", "tflite-int8")  # not in the tiny folder (tests/test_litert.py benches the LiteRT files)


# --- a tiny artifact folder ---------------------------------------------------------------------------

def _onnx_mlp(state: dict, mean: float, std: float, path: Path) -> None:
    """The zoo's Mlp inside EdgeModel as a hand-written ONNX graph: uint8 image -> logits, probabilities."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    inits = [numpy_helper.from_array(np.array(v, np.float32), n) for n, v in
             (("k255", 255.0), ("mean", mean), ("std", std))]
    nodes = [helper.make_node("Cast", ["image"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Div", ["f", "k255"], ["x01"]), helper.make_node("Sub", ["x01", "mean"], ["c"]),
             helper.make_node("Div", ["c", "std"], ["n"]), helper.make_node("Flatten", ["n"], ["h0"], axis=1)]
    layers = sorted({k.rsplit(".", 1)[0] for k in state})  # body.0, body.2, body.4
    for i, layer in enumerate(layers):
        w, b = f"w{i}", f"b{i}"
        inits += [numpy_helper.from_array(state[f"{layer}.weight"].numpy(), w),
                  numpy_helper.from_array(state[f"{layer}.bias"].numpy(), b)]
        out = "logits" if i == len(layers) - 1 else f"g{i}"
        nodes.append(helper.make_node("Gemm", [f"h{i}", w, b], [out], transB=1))
        if out != "logits":
            nodes.append(helper.make_node("Relu", [out], [f"h{i + 1}"]))
    nodes.append(helper.make_node("Softmax", ["logits"], ["probabilities"], axis=1))
    graph = helper.make_graph(
        nodes, "tiny_mlp", [helper.make_tensor_value_info("image", TensorProto.UINT8, ["batch", 1, 28, 28])],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, ["batch", 10]) for n in C.OUTPUT_NAMES], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    meta = {"contract": C.CONTRACT_VERSION, "model": "mlp", "labels": json.dumps(list(C.LABELS)),
            "input": json.dumps({"name": C.INPUT_NAME, "dtype": C.INPUT_DTYPE, "shape": ["batch", 1, 28, 28]}),
            "outputs": json.dumps(list(C.OUTPUT_NAMES)), "normalization": json.dumps({"mean": mean, "std": std}),
            "precision": "fp32"}
    helper.set_model_props(model, {C.META_KEYS[k]: v for k, v in meta.items()})
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))


def _quantize(src: Path, dst: Path) -> None:
    import onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            rng = np.random.default_rng(1)
            self.batches = iter([{"image": rng.integers(0, 256, (16, 1, 28, 28), dtype=np.uint8)}
                                 for _ in range(2)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
    model = onnx.load(str(dst))
    for prop in model.metadata_props:
        if prop.key == C.META_KEYS["precision"]:
            prop.value = "int8"
    onnx.save(model, str(dst))


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    import torch

    from mnist_edge.training.checkpoint import save_checkpoint
    from mnist_edge.zoo.networks import build_edge_model
    from mnist_edge.zoo.registry import get_spec

    folder = tmp_path_factory.mktemp("bench") / "mlp"
    spec = get_spec("mlp")
    torch.manual_seed(0)
    model = build_edge_model(spec).eval()
    save_checkpoint(folder / "checkpoint.pt", model="mlp", state_dict=model.net.state_dict(), recipe={},
                    history=[], data_sha256="0" * 64, metrics={})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.jit.trace(model, torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).save(str(folder / "model.pt"))
    _onnx_mlp(model.net.state_dict(), spec.mean, spec.std, folder / "model.onnx")
    _quantize(folder / "model.onnx", folder / "model.int8.onnx")
    # TorchScript is code: bench loads only a model.pt its manifest vouches for. The ONNX files stay
    # unlisted, so the "not hash-checked" warning is exercised too.
    from mnist_edge.manifest import file_record, write_manifest

    write_manifest(folder, {"model": "mlp", "files": {n: {"kind": "model", **file_record(folder / n)}
                                                      for n in ("checkpoint.pt", "model.pt")}})
    return folder


# --- timing -------------------------------------------------------------------------------------------

def test_summary_percentiles_are_ordered_and_count_the_runs():
    samples = np.random.default_rng(0).lognormal(12, 1, size=501).astype(np.int64)  # ~0.16 ms, long tail
    s = timing.summarize(samples, batch=64)
    assert s["runs"] == 501
    assert s["min_ms"] <= s["p50_ms"] <= s["p90_ms"] <= s["p99_ms"] <= s["max_ms"]
    assert s["p50_ms"] == pytest.approx(np.median(samples) / 1e6, abs=1e-5)  # rounded to 10 ns
    assert s["throughput_ips"] == pytest.approx(64 * 1000 / s["mean_ms"], rel=1e-4)
    assert timing.summarize([5_000_000], batch=1)["std_ms"] == 0.0


def test_measure_warms_up_then_times_exactly_runs_calls():
    calls = []
    samples = timing.measure(lambda: calls.append(1), warmup=3, runs=7)
    assert len(samples) == 7 and len(calls) == 10 and all(isinstance(t, int) and t >= 0 for t in samples)
    budget = timing.measure(lambda: None, warmup=0, seconds=1e-6)  # a tiny budget still gives MIN_RUNS
    assert len(budget) >= timing.MIN_RUNS


@pytest.mark.parametrize("kwargs", [dict(runs=None, seconds=None), dict(runs=5, seconds=1.0), dict(runs=0),
                                    dict(runs=True), dict(seconds=-1.0), dict(seconds=float("nan")),
                                    dict(runs=5, warmup=-1)])
def test_bad_budgets_are_usage_errors(kwargs):
    with pytest.raises(UsageError):
        timing.check_budget(kwargs.get("runs"), kwargs.get("seconds"), kwargs.get("warmup", 0))


# --- environment --------------------------------------------------------------------------------------

PI4 = ("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm crc32 cpuid\nCPU implementer\t: 0x41\n"
       "CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0xd08\nCPU revision\t: 3\n\nprocessor\t: 1\n"
       "Features\t: fp asimd evtstrm crc32 cpuid\n\nHardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n")
PI5 = ("processor\t: 0\nBogoMIPS\t: 108.00\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp "
       "asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
       "CPU part\t: 0xd0b\n\n")
X86 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 fma avx512f avx512_vnni\n\n"


@pytest.mark.parametrize("text, family, core, capable", [
    (PI4, "arm", "Cortex-A72", False), (PI5, "arm", "Cortex-A76", True), (X86, "x86", None, True),
    (X86.replace(" avx512_vnni", ""), "x86", None, False), ("", "arm", None, None)])
def test_cpu_flags_say_whether_int8_kernels_can_pay(text, family, core, capable):
    cpu = environment.parse_cpuinfo(text)
    assert cpu["core"] == core
    assert cpu["model"] == (core or ("AMD EPYC" if "EPYC" in text else None))
    ok, why = environment.int8_support(family, cpu["flags"])
    assert ok is capable and why


def test_pi_board_throttling_and_32_bit_os_messages():
    assert environment.raspberry_pi_model("Raspberry Pi 5 Model B Rev 1.0\x00") == "Raspberry Pi 5 Model B Rev 1.0"
    assert environment.raspberry_pi_model("QEMU virt") is None
    assert environment.decode_throttled(0) == []
    assert environment.decode_throttled(0x50005) == ["under-voltage now", "throttled now",
                                                     "under-voltage occurred", "throttling occurred"]
    assert "64-bit Raspberry Pi OS" in environment.os_message("armv7l", 32)
    assert "64-bit" in environment.os_message("aarch64", 32)  # 64-bit kernel, 32-bit userland
    assert environment.os_message("aarch64", 64) is None and environment.os_message("x86_64", 64) is None


def test_environment_is_collected_without_importing_onnxruntime():
    code = ("import sys, json; from mnist_edge.system.machine import collect_environment; "
            "env = collect_environment(); json.dumps(env); "
            "print('onnxruntime' in sys.modules, 'torch' in sys.modules, env['versions']['onnxruntime'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[:2] == ["False", "False"] and out[2] != "None"


# --- advice and compare on synthetic reports ----------------------------------------------------------

def _row(fmt, batch, threads, p50, runs=10):
    return {"format": fmt, "batch": batch, "threads": threads, "runs": runs, "warmup": 1, "p50_ms": p50,
            "p90_ms": p50 * 1.1, "p99_ms": p50 * 1.2, "mean_ms": p50, "std_ms": 0.0, "min_ms": p50 * 0.9,
            "max_ms": p50 * 1.3, "throughput_ips": batch * 1000 / p50, "load_ms": 1.0, "first_ms": 1.0,
            "cold_start_ms": 2.0, "provider": "CPUExecutionProvider", "device": "cpu"}


def _report(fp32_p50=(1.0, 20.0), int8_p50=(0.5, 8.0), flags=True, acc=(None, None), device="cpu"):
    capable, note = environment.int8_support("arm", {"asimddp"} if flags else {"asimd"})
    rows = [_row("eager", b, 1, 2 * f) for b, f in zip((1, 64), fp32_p50)]
    rows += [_row("onnx", b, 1, p) for b, p in zip((1, 64), fp32_p50) if p]
    rows += [_row("int8", b, 1, p) for b, p in zip((1, 64), int8_p50) if p]
    fmts = [{"format": f, "label": f, "status": "ok", "reason": None, "file": FORMATS[f].file,
             "accuracy": a} for f, a in (("eager", None), ("onnx", acc[0]), ("int8", acc[1]))]
    r = {"schema": report.SCHEMA, "created_utc": "2026-01-01T00:00:00Z", "command": None,
         "model": {"name": "bn_cnn", "folder": "exported/bn_cnn"},
         "settings": {"device": device, "runs": 10, "seconds": None, "warmup": 1, "isolate": True},
         "environment": {"cpu": {"model": "Cortex-A76", "arch": "aarch64", "int8_instructions": capable,
                                 "int8_note": note, "flags": {}},
                         "os": {"platform": "Linux"}, "versions": {"onnxruntime": "1.20.1"}},
         "formats": fmts, "results": rows, "warnings": [], "advice": {"line": "(recomputed below)"}}
    r = BenchReport.from_dict(r)
    r.advice = advice.advise(r)
    return r


def test_advice_follows_the_measurement_then_the_flags():
    pays = _report().advice
    assert pays.int8_pays is True and pays.ship == "model.int8.onnx" and pays.basis == "measured"
    assert pays.int8_speedup == Speedup(batch=1, threads=1, value=2.0, interval=None)
    assert "2.00x" in pays.line and "2.50x at batch 64" in pays.line
    slow = _report(int8_p50=(1.05, 30.0), flags=False).advice  # a Pi 4: within 10%, then slower
    assert slow.int8_pays is False and slow.ship == "model.onnx" and "dot-product" in slow.line
    surprising = _report(int8_p50=(1.3, 30.0), flags=True).advice
    assert surprising.int8_pays is False and "unexpected" in surprising.line
    dropped = _report(acc=(99.4, 98.9)).advice  # fast but 0.5 points worse
    assert dropped.ship == "model.onnx" and dropped.basis == "accuracy"
    assert _report(device="cuda").advice.ship == "model.onnx"
    pi4_guess = _report(int8_p50=(None, None), flags=False).advice
    assert pi4_guess.basis == "cpu flags" and pi4_guess.int8_pays is False and "Measure" in pi4_guess.line
    assert _report(int8_p50=(None, None), flags=True).advice.ship == "model.int8.onnx"


def _with_intervals(r, spread):
    """``r`` with each p50's 95% interval at p50 * (1 -+ spread), and its advice recomputed."""
    for row in r.results:
        row.p50_ci_ms = [row.p50_ms * (1 - spread), row.p50_ms * (1 + spread)]
    r.advice = advice.advise(r)
    return r


def test_verdict_is_undetermined_when_the_ratios_interval_includes_1():
    tight = _with_intervals(_report(int8_p50=(0.8, 16.0)), 0.05).advice  # 1.25x, interval 1.13x-1.38x
    assert tight.int8_pays is True and tight.int8_speedup.interval == pytest.approx([0.95 / 0.84, 1.05 / 0.76])
    assert "95% interval 1.13x to 1.38x" in tight.line
    loose = _with_intervals(_report(int8_p50=(0.8, 16.0)), 0.2).advice  # 1.25x, interval 0.83x-1.88x
    assert loose.int8_pays is None and loose.ship is None and loose.basis == "measured"
    assert loose.line.startswith("Undetermined: ") and "includes 1" in loose.line and "1.25x" in loose.line
    slower = _with_intervals(_report(int8_p50=(1.5, 30.0)), 0.05).advice  # clearly slower: decided
    assert slower.int8_pays is False and slower.ship == "model.onnx"


def test_summary_carries_the_p50_interval_and_p50_throughput():
    rng = np.random.default_rng(0)
    small, large = (timing.summarize((1e6 * (1 + rng.exponential(0.2, n))).astype(np.int64), 8) for n in (50, 5000))
    for s in (small, large):
        lo, hi = s["p50_ci_ms"]
        assert lo <= s["p50_ms"] <= hi and s["throughput_p50_ips"] == pytest.approx(8000 / s["p50_ms"], rel=1e-4)
    assert large["p50_ci_ms"][1] - large["p50_ci_ms"][0] < small["p50_ci_ms"][1] - small["p50_ci_ms"][0]
    assert timing.median_interval(np.array([3.0])) == (3.0, 3.0)


def test_default_table_fits_100_columns_and_shows_the_advices_throughput():
    r = _report()
    for row in r.results:
        row.mean_ms = row.p50_ms * 1.5  # a skewed run: mean-based img/s would disagree with the advice
        row.throughput_ips = row.batch * 1000 / row.mean_ms
        row.provider = "CPUExecutionProvider"
    text = report.render_table(r)
    table = text.split("\n\n")[1].splitlines()
    assert max(map(len, table)) <= 100 and "provider" not in table[0] and "p90" not in table[0]
    onnx1 = next(line for line in table if line.split()[:3] == ["onnx", "1", "1"])
    assert "1000" in onnx1.split()  # batch 1 / p50 1.0 ms, not / mean 1.5 ms (667)
    assert all(len(line) <= 100 for line in text.splitlines()[4:-1])
    wide = report.render_table(r, wide=True).split("\n\n")[1].splitlines()
    assert "provider" in wide[0] and "p90 ms" in wide[0] and "mean ms" in wide[0]


def test_compare_names_both_models_and_warns_when_they_differ():
    a, b = _report(), _report(fp32_p50=(0.5, 10.0))
    for r, digest in ((a, "a" * 64), (b, "a" * 64)):
        for e in r.formats:
            e.sha256 = digest
    same = report.compare_reports(a, b)
    assert same["warnings"] == [] and same["models"]["a"]["name"] == same["models"]["b"]["name"] == "bn_cnn"
    text = report.render_compare(same)
    assert "A model: bn_cnn in exported/bn_cnn: eager checkpoint.pt (aaaaaaaaaaaa)" in text and "warning" not in text
    b.model = BenchModel(name="lenet5", folder="exported/lenet5")
    b.entry("onnx").sha256 = "b" * 64
    cmp = report.compare_reports(a, b)
    assert cmp["warnings"][0] == "the runs timed different models: A bn_cnn, B lenet5"
    assert any(w.startswith("onnx: different files") for w in cmp["warnings"])
    assert "warning: the runs timed different models" in report.render_compare(cmp)
    assert "B model: lenet5 in exported/lenet5" in report.render_compare(cmp, markdown=True)


def test_compare_gives_ratios_and_lists_unmatched_cases(tmp_path):
    a, b = _report(), _report(fp32_p50=(2.0, 40.0), int8_p50=(0.5, None))
    cmp = report.compare_reports(a, b)
    rows = {(r["format"], r["batch"]): r for r in cmp["rows"]}
    assert rows["onnx", 1]["p50_ratio"] == pytest.approx(2.0) and rows["onnx", 1]["speedup"] == pytest.approx(0.5)
    assert rows["onnx", 64]["p99_ratio"] == pytest.approx(2.0)
    assert rows["onnx", 1]["throughput_ratio"] == pytest.approx(0.5)
    assert rows["int8", 1]["p50_ratio"] == pytest.approx(1.0)
    assert rows["int8", 64]["only_in"] == "A"
    text = report.render_compare(cmp)
    assert "2.00" in text and "only in A" in text
    assert "| onnx | 1 | 1 |" in report.render_compare(cmp, markdown=True)


def test_every_committed_report_reads_and_writes_back_unchanged():
    paths = sorted(EXPORTED.glob("*/bench.json"))
    assert paths
    for path in paths:
        doc = json.loads(path.read_text())
        r = BenchReport.from_json(path)
        assert r.to_json() == doc and list(r.to_json()) == list(doc), path
        assert r.advice == advice.advise(r), path  # the advice follows from the report it sits in


def _doc() -> dict:
    return _report().to_json()


@pytest.mark.parametrize("edit, match", [
    (lambda d: d.update(schema="mnist-edge-bench/2"), r"schema is 'mnist-edge-bench/2', expected one of "
                                                      r"'mnist-edge-bench/1'"),
    (lambda d: d.pop("advice"), "advice is missing"),
    (lambda d: d.update(advice={}), "advice.line is missing"),
    (lambda d: d["results"][0].update(p99_ms=[None]), r"results\[0\].p99_ms is \[None\], expected a positive finite"),
    (lambda d: d["results"][1].update(p50_ms=0), r"results\[1\].p50_ms is 0, expected a positive finite number"),
    (lambda d: d["results"][0].update(p99_ms=d["results"][0]["p50_ms"] / 2), r"results\[0\] has percentiles out of "
                                                                           "order"),
    (lambda d: d["results"][0].update(format={"a": 1}), r"results\[0\].format is \{'a': 1\}, expected a string"),
    (lambda d: d["formats"][0].update(status="fine"), r"formats\[0\].status is 'fine', expected one of 'ok'"),
    (lambda d: d["formats"][1].update(accuracy=1e300), r"formats\[1\].accuracy is 1e\+300, expected a percentage"),
    (lambda d: d["environment"]["cpu"].update(flags=["avx2"]),
     r"environment.cpu.flags is \['avx2'\], expected an object"),
    (lambda d: d.update(results={}), r"results is \{\}, expected a list of objects"),
    (lambda d: d["advice"].update(int8_speedup={"batch": 1, "threads": 1, "value": 2.0, "interval": [2, 1]}),
     r"advice.int8_speedup.interval is \[2, 1\], expected \[low, high\]"),
])
def test_a_malformed_report_is_one_error_naming_the_field(edit, match):
    doc = _doc()
    edit(doc)
    with pytest.raises(ArtifactError, match=match):
        BenchReport.from_dict(doc, "r.json")


def test_a_report_file_is_read_bounded_and_strict(tmp_path, capsys):
    good = tmp_path / "good.json"
    _report().write(good)
    assert BenchReport.from_json(good).to_json() == _doc()
    for name, text, match in [("nan.json", good.read_text().replace('"p50_ms": 1.0', '"p50_ms": NaN', 1),
                               "not valid JSON"),
                              ("inf.json", good.read_text().replace('"p50_ms": 1.0', '"p50_ms": 1e999', 1),
                               "1e999 is out of the range of a finite number"),
                              ("broken.json", "{not json", "not valid JSON"), ("list.json", "[]", "not a bench")]:
        (tmp_path / name).write_text(text)
        with pytest.raises(ArtifactError, match=match):
            BenchReport.from_json(tmp_path / name)
        assert main(["bench", "--compare", str(good), str(tmp_path / name)]) == 1
        assert match.split()[-1] in capsys.readouterr().err
    os.mkfifo(tmp_path / "fifo")  # a FIFO is refused, not read (nothing writes to it: reading would hang)
    with pytest.raises(ArtifactError, match="fifo"):
        BenchReport.from_json(tmp_path / "fifo")


# --- options and folders ------------------------------------------------------------------------------

def test_options_are_checked_with_the_valid_choices(tiny, tmp_path, monkeypatch):
    with pytest.raises(UsageError, match="Did you mean 'onnx'"):
        runner.run_bench(tiny, BenchOptions(formats=("onx",)))
    with pytest.raises(UsageError, match="threads"):
        runner.run_bench(tiny, BenchOptions(threads=("two",)))
    with pytest.raises(UsageError, match="batch sizes"):
        runner.run_bench(tiny, BenchOptions(batch_sizes=(0,)))
    with pytest.raises(ArtifactError, match="does not exist"):
        runner.run_bench(tmp_path / "nowhere")
    assert runner.resolve_folder(tiny / "model.onnx") == tiny  # a file stands for its folder
    with pytest.raises(UnknownModelError, match="bn_cnn"):
        runner.resolve_folder("bn_cn")
    assert parse_threads([1, "all", "1"]) == [1] + ([environment.usable_cores()]
                                                  if environment.usable_cores() > 1 else [])
    monkeypatch.chdir(tmp_path)
    (tmp_path / "exported").symlink_to(tiny.parent, target_is_directory=True)
    assert runner.resolve_folder("mlp").resolve() == tiny.resolve()


# --- the real thing, on the tiny model ----------------------------------------------------------------

def _quick(**kw) -> BenchOptions:
    """Options for a short in-process run: batch 1, 1 thread, 2 runs, no warm-up (then ``kw``)."""
    return BenchOptions(**{"batch_sizes": (1,), "threads": (1,), "runs": 2, "warmup": 0, "isolate": False, **kw})


def test_cli_end_to_end_all_formats_in_process(tiny, tmp_path, capsys):
    out_json, out_md = tmp_path / "r.json", tmp_path / "r.md"
    rc = main(["bench", "--model", str(tiny), "--runs", "4", "--warmup", "1", "--batch-sizes", "1", "3",
               "--threads", "1", "--in-process", "--json", str(out_json), "--markdown", str(out_md), "--accuracy"])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    r = BenchReport.from_json(out_json)  # every field checked
    assert r.to_json() == json.loads(out_json.read_text())
    assert [e.format for e in r.formats] == ALL and all(e.ok for e in r.formats if e.format not in TFLITE)
    assert all(e.status == "not available" and "litert" in e.reason for e in r.formats if e.format in TFLITE)
    assert [x.key for x in r.results] == [(f, b, 1) for f in ALL if f not in TFLITE for b in (1, 3)]
    assert all(x.runs == 4 and x.p50_ms <= x.p90_ms <= x.p99_ms for x in r.results)
    assert {x.provider for x in r.results if x.format in ("onnx", "int8")} == {"CPUExecutionProvider"}
    assert all(x.predict_p50_ms for x in r.results if x.format in ("onnx", "int8"))
    for e in (e for e in r.formats if e.ok):
        assert e.size_bytes == (tiny / e.file).stat().st_size and len(e.sha256) == 64
        assert e.accuracy_images == 10_000 and 0 <= e.accuracy <= 100
    acc = {e.format: e.accuracy for e in r.formats}
    assert abs(acc["eager"] - acc["onnx"]) < 0.5 and acc["eager"] == acc["torchscript"]  # one function
    assert r.settings.isolate is False and any("cumulative" in w for w in r.warnings)
    assert any("not hash-checked" in w for w in r.warnings)  # the tiny folder has no manifest
    assert "--runs 4" in r.command and r.advice.line in captured.out
    assert "bench [8/8]" in captured.err  # the progress lines
    assert "| int8 | 3 | 1 |" in out_md.read_text()


def test_one_process_per_format_isolates_memory_and_failures(tiny, tmp_path, capsys):
    folder = tmp_path / "broken"
    folder.mkdir()
    (folder / "model.onnx").write_bytes((tiny / "model.onnx").read_bytes())
    (folder / "model.int8.onnx").write_bytes(b"not a model")  # this worker fails; the other one does not
    rc = main(["bench", "--model", str(folder), "--formats", "onnx", "int8", "--batch-sizes", "2", "--threads", "1",
               "--runs", "3", "--warmup", "0", "--no-progress", "--json", str(tmp_path / "r.json")])
    assert rc == 1 and "failed: int8" in capsys.readouterr().err
    r = BenchReport.from_json(tmp_path / "r.json")
    onnx, int8 = r.formats
    assert onnx.ok and onnx.rss_scope == "format" and onnx.peak_rss_mb > 0
    assert onnx.import_ms > 0 and onnx.torch_loaded is False  # an ONNX worker never pulls torch in
    assert int8.status == "failed" and "Error" in int8.reason
    assert [x.format for x in r.results] == ["onnx"]
    assert "onnxruntime 1.21.0" in runner._signal_reason(-signal.SIGILL)  # a worker killed by SIGILL
    assert runner._signal_reason(-signal.SIGSEGV) == "worker died with SIGSEGV"


def _session_settings(session) -> dict:
    so = session.get_session_options()
    return {"optimization": so.graph_optimization_level, "execution": so.execution_mode,
            "intra_op_threads": so.intra_op_num_threads, "inter_op_threads": so.inter_op_num_threads,
            "spinning": so.get_session_config_entry("session.intra_op.allow_spinning"),
            "providers": session.get_providers()}


def test_bench_and_the_int8_search_time_sessions_with_the_same_settings(tiny):
    """The search (export.ort_eval.make_session, one thread) and `bench --threads 1` time the same kind of
    session: the runtime's options, which are what a user's process gets."""
    from mnist_edge.evaluate.ort_eval import make_session
    from mnist_edge.runtime.session import session_options

    for fmt in ("onnx", "int8"):
        file = tiny / FORMATS[fmt].file
        searched, benched = make_session(file), FORMATS[fmt].load(file, "cpu", 1).session
        assert _session_settings(searched) == _session_settings(benched)
        assert _session_settings(benched)["intra_op_threads"] == 1
    runtime = session_options(1)  # and both are the runtime's own options, spinning off
    assert _session_settings(benched)["spinning"] == runtime.get_session_config_entry(
        "session.intra_op.allow_spinning") == "0"
    assert _session_settings(benched)["optimization"] == runtime.graph_optimization_level


def test_bench_times_int8_against_fp32_interleaved_as_the_search_does(tiny, monkeypatch):
    """The advice's ratio comes from the search's own paired timing (ratio.time_pair in one process), not
    from the quotient of two p50s measured one after the other; faked samples, so no clock is asserted."""
    from mnist_edge.bench import ratio as R

    asked = []

    def fake_pair(a, b, *, repeats, calls, warmup=3):
        asked.append((repeats, calls))
        a(), b()  # both callables run: int8 first, then fp32
        return [[50] * calls] * repeats, [[100] * calls] * repeats

    monkeypatch.setattr(R, "time_pair", fake_pair)
    r = runner.run_bench(tiny, _quick(formats=("onnx", "int8"), batch_sizes=(1, 64), runs=200))
    rows = r.int8_vs_fp32.rows
    assert [(x.batch, x.threads, x.ratio, x.verdict) for x in rows] == [(1, 1, 0.5, "faster"), (64, 1, 0.5, "faster")]
    assert asked == [(runner.PAIR_REPEATS, runner.PAIR_CALLS)] * 2 and "alternating" in r.int8_vs_fp32.method
    assert r.advice.int8_pays is True and "0.50x [0.50, 0.50] at batch 1" in r.advice.line
    monkeypatch.setattr(R, "time_pair", lambda a, b, **kw: ([[150] * 10] * 4, [[100] * 10] * 4))
    slower = runner.run_bench(tiny, _quick(formats=("onnx", "int8"), runs=40))
    assert slower.int8_vs_fp32.rows[0].verdict == "slower" and slower.advice.ship == "model.onnx"
    only = runner.run_bench(tiny, _quick(formats=("onnx",)))
    assert only.int8_vs_fp32 is None


def test_missing_file_is_listed_not_available(tiny, tmp_path):
    partial = tmp_path / "partial"
    partial.mkdir()
    (partial / "model.onnx").write_bytes((tiny / "model.onnx").read_bytes())
    r = runner.run_bench(partial, _quick(formats=("onnx", "int8")))
    assert r.entry("int8").status == "not available" and "--quantize" in r.entry("int8").reason
    assert "not available" in report.render_table(r) and r.advice.basis == "cpu flags"


def test_eager_is_not_available_for_a_network_the_zoo_does_not_define(tiny, tmp_path):
    """A user's own network: its checkpoint names no zoo model, so the eager row (which rebuilds zoo networks
    by name) is listed as not available with the reason, not failed; progress is a callable of messages."""
    import torch

    from mnist_edge.training.checkpoint import FORMAT

    folder = tmp_path / "mynet"
    folder.mkdir()
    ckpt = torch.load(tiny / "checkpoint.pt", weights_only=True)
    torch.save({**ckpt, "format": FORMAT, "model": "mynet"}, folder / "checkpoint.pt")
    (folder / "model.onnx").write_bytes((tiny / "model.onnx").read_bytes())
    messages = []
    r = runner.run_bench(folder, _quick(formats=("eager", "onnx")), progress=messages.append)
    eager = r.entry("eager")
    assert eager.status == "not available" and "'mynet', not a zoo network" in eager.reason
    assert r.entry("onnx").ok and [x.format for x in r.results] == ["onnx"]
    assert messages and all(m.startswith("bench [") for m in messages)
    assert "not available: checkpoint.pt holds 'mynet'" in report.render_table(r)


def test_compare_command_reads_two_reports(tmp_path, capsys):
    a, b = tmp_path / "pi4.json", tmp_path / "pi5.json"
    _report().write(a)
    _report(fp32_p50=(0.5, 10.0)).write(b)
    assert main(["bench", "--compare", str(a), str(b), "--markdown", str(tmp_path / "c.md")]) == 0
    out = capsys.readouterr().out
    assert "0.50" in out and "B/A" in out and (tmp_path / "c.md").read_text().startswith("## mnist-edge bench")
    (tmp_path / "junk.json").write_text("[]")
    assert main(["bench", "--compare", str(a), str(tmp_path / "junk.json")]) == 1


def test_without_torch_the_torch_formats_are_not_available(tiny, tmp_path):
    code = f"""
import sys
sys.modules["torch"] = None  # as on a Pi with the runtime-only install
from mnist_edge.cli import main
rc = main(["bench", "--model", {str(tiny)!r}, "--runs", "3", "--warmup", "0", "--batch-sizes", "1",
           "--threads", "1", "--in-process", "--no-progress", "--json", {str(tmp_path / "t.json")!r}])
assert sys.modules["torch"] is None
sys.exit(rc)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env={**os.environ, "PYTHONWARNINGS": "ignore"})
    assert proc.returncode == 0, proc.stderr
    r = BenchReport.from_json(tmp_path / "t.json")
    status = {e.format: (e.status, e.reason) for e in r.formats}
    assert status["eager"][0] == status["torchscript"][0] == "not available"
    assert "torch is not installed" in status["eager"][1]
    assert status["onnx"][0] == status["int8"][0] == "ok"
    assert r.environment.versions["torch"] is None and "not available" in proc.stdout


def test_files_are_hash_checked_against_the_manifest_before_loading(tiny, tmp_path):
    from mnist_edge.manifest import file_record, write_manifest

    folder = tmp_path / "sealed"
    folder.mkdir()
    for name in ("model.pt", "model.onnx"):
        (folder / name).write_bytes((tiny / name).read_bytes())
    write_manifest(folder, {"model": "mlp", "files": {n: {"kind": "model", **file_record(folder / n)}
                                                      for n in ("model.pt", "model.onnx")}})
    data = bytearray((folder / "model.pt").read_bytes())
    data[len(data) // 2] ^= 1  # one flipped bit in the TorchScript file
    (folder / "model.pt").write_bytes(bytes(data))
    r = runner.run_bench(folder, _quick(formats=("torchscript", "onnx")))
    ts, onnx = r.formats
    assert ts.status == "failed" and "model.pt" in ts.reason and "SHA-256" in ts.reason
    assert onnx.ok and onnx.verified is True
    assert r.model.name == "mlp" and not any("not hash-checked" in w for w in r.warnings)


def test_bench_reads_a_real_export_folder(artifact_dir):
    """The exporter's folder (conftest: short-trained bn_cnn, full gates): every file found and hash-checked.
    (Accuracy across formats is checked on the tiny model above; on bn_cnn it would take seconds per format.)"""
    r = runner.run_bench(artifact_dir, _quick(formats=tuple(FORMATS), batch_sizes=(1, 7), runs=3, warmup=1))
    assert all(e.ok and e.verified for e in r.formats), r.formats
    assert r.model.name == "bn_cnn" and len(r.results) == 12  # six formats (LiteRT's two too) x two batch sizes
    assert not any("not hash-checked" in w for w in r.warnings)
    # measured: a file to ship, or none when the ratio's interval includes 1 (a busy machine can't tell)
    assert r.advice.basis == "measured"
    raced = {row.file for row in r.race.rows}  # with LiteRT files, every runtime file raced: the fastest is shipped
    assert raced == {"model.onnx", "model.int8.onnx", "model.tflite", "model.int8.tflite"}
    assert r.advice.ship in raced and r.advice.line.startswith(f"Ship {r.advice.ship}")


@pytest.mark.parametrize("verdicts", [("faster", "faster"), ("faster", "slower"), ("faster", "undetermined"),
                                      ("undetermined", "undetermined"), ("slower", "slower")])
def test_the_search_and_bench_name_the_same_file_from_the_same_timings(verdicts):
    """One rule (bench.ratio.SHIP): the search's recommended file (what the manifest records) and bench's
    advice agree for every combination of per-batch results; bench alone may say it cannot tell."""
    from mnist_edge.bench.advice import _paired_advice
    from mnist_edge.bench.document import PairRow
    from mnist_edge.bench.ratio import SHIP
    from mnist_edge.int8.quantize import QuantizeOptions
    from mnist_edge.int8.result import Ratio
    from mnist_edge.int8.search import Trial, verdict_of

    bounds = {"faster": (0.5, 0.6), "slower": (1.2, 1.3), "undetermined": (0.9, 1.1)}
    rows = [PairRow(batch=b, threads=1, ratio=sum(bounds[v]) / 2, low=bounds[v][0], high=bounds[v][1], verdict=v)
            for b, v in zip((1, 64), verdicts)]
    trial = Trial("t", "stage", QuantizeOptions(), passed=True,
                  ratios={r.batch: Ratio(ratio=r.ratio, low=r.low, high=r.high, verdict=r.verdict, repeats=8, calls=10,
                                                p50_ms=0.1, reference_p50_ms=0.1) for r in rows})
    verdict, recommended = verdict_of(trial)
    advice = _paired_advice(rows, True, "test")
    assert recommended == SHIP[verdict]
    assert advice.ship in (recommended, None) and (advice.ship is None) == (verdict == "undetermined")
