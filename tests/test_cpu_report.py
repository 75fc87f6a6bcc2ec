"""The CPU report on recorded machines: a Pi 4, a Pi 5, an x86 VNNI server, and aarch64 emulated on it.

ARM flags come from the auxiliary vector (AT_HWCAP/AT_HWCAP2), x86 flags from /proc/cpuinfo; emulation
(cpuinfo of another architecture than the process's) is reported and the advice then refuses to read
the timings. Fixtures and where their values come from: tests/fixtures/cpu/README.md.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

import pytest

from mnist_edge.system import hwcaps
from mnist_edge.system import machine as environment
from mnist_edge.bench import advice, report, runner
from mnist_edge.bench.document import SCHEMA, BenchReport, Environment, EnvironmentEnd

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "cpu"


def cpuinfo(name: str) -> str:
    return (FIXTURES / f"{name}.cpuinfo").read_text()


def auxv(name: str) -> bytes:
    return (FIXTURES / f"{name}.auxv").read_bytes()


def test_auxv_pairs_are_parsed_up_to_at_null():
    vector = hwcaps.parse_auxv(auxv("pi5"))
    assert vector[hwcaps.AT_HWCAP] == 0x119FFF and vector[hwcaps.AT_HWCAP2] == 0 and vector[6] == 4096
    assert hwcaps.parse_auxv(auxv("pi5")[:-16] + b"\x01\x02\x03") == vector  # no AT_NULL, a torn tail: ignored
    assert hwcaps.parse_auxv((16).to_bytes(8, "little") + (1).to_bytes(8, "little") + bytes(16)
                             + (16).to_bytes(8, "little") + (3).to_bytes(8, "little")) == {16: 1}  # AT_NULL ends it
    assert hwcaps.arm64_features({6: 4096}) is None  # no AT_HWCAP: unknown, not "no features"


@pytest.mark.parametrize("board", ["pi4", "pi5"])
def test_hwcap_bits_name_the_features_cpuinfo_prints(board):
    features = next(line for line in cpuinfo(board).splitlines() if line.startswith("Features"))
    assert hwcaps.arm64_features(hwcaps.parse_auxv(auxv(board))) == set(features.split(":", 1)[1].split())


@pytest.mark.parametrize("machine, name, model, has, lacks, source, int8", [
    ("aarch64", "pi4", "Cortex-A72", {"asimd"}, {"asimddp", "i8mm"}, "AT_HWCAP/AT_HWCAP2", False),
    ("aarch64", "pi5", "Cortex-A76", {"asimd", "asimddp", "asimdhp"}, {"i8mm", "sve"}, "AT_HWCAP/AT_HWCAP2", True),
    ("x86_64", "x86_vnni", "Intel(R) Xeon(R) Platinum 8375C CPU @ 2.90GHz", {"avx2", "avx512f", "avx512_vnni"},
     {"amx_int8", "asimddp"}, "/proc/cpuinfo", True),
])
def test_real_machines(machine, name, model, has, lacks, source, int8):
    aux = auxv(name) if (FIXTURES / f"{name}.auxv").exists() else None
    cpu = environment.describe_cpu(machine, cpuinfo(name), aux)
    assert cpu["model"] == model and cpu["flags_source"] == source
    assert has <= cpu["flags"] and not lacks & cpu["flags"]
    assert not cpu["emulated"] and cpu["emulation_note"] is None and cpu["host_cpu"] is None
    capable, why = environment.int8_support(environment.arch_family(machine), cpu["flags"])
    assert capable is int8
    assert ("no dot-product" in why) is (name == "pi4")


def test_arm_flags_come_from_hwcap_not_cpuinfo():
    cpu = environment.describe_cpu("aarch64", cpuinfo("pi4"), auxv("pi5"))  # the kernel's bits win
    assert "asimddp" in cpu["flags"] and cpu["model"] == "Cortex-A72"
    fallback = environment.describe_cpu("aarch64", cpuinfo("pi5"), None)  # auxv unreadable: Features line
    assert "asimddp" in fallback["flags"] and fallback["flags_source"] == "/proc/cpuinfo"
    bare = environment.describe_cpu("aarch64", "", None)
    assert bare["flags"] == set() and bare["flags_source"] is None and not bare["emulated"]
    assert environment.int8_support("arm", bare["flags"])[0] is None  # unknown, not "has none"


def test_emulation_is_noticed_and_the_host_is_not_called_this_cpu(monkeypatch):
    cpu = environment.describe_cpu("aarch64", cpuinfo("qemu_arm64_on_x86"), auxv("qemu_arm64_on_x86"))
    assert cpu["emulated"] and cpu["model"] is None and cpu["core"] is None
    assert cpu["host_cpu"].startswith("Intel(R) Xeon(R)")
    assert {"asimddp", "i8mm", "sve"} <= cpu["flags"] and cpu["flags_source"] == "AT_HWCAP/AT_HWCAP2"
    assert "avx512_vnni" not in cpu["flags"]  # the host's flags are not this process's
    assert "timings mean nothing" in cpu["emulation_note"] and "aarch64" in cpu["emulation_note"]
    monkeypatch.setattr(platform, "machine", lambda: "aarch64")
    monkeypatch.setattr(platform, "processor", lambda: "")
    monkeypatch.setattr(environment, "_read", lambda p: cpuinfo("qemu_arm64_on_x86"))
    assert environment.cpu_model() == "aarch64"  # what a checkpoint records as its training hardware
    reverse = environment.describe_cpu("x86_64", cpuinfo("pi4"), None)
    assert reverse["emulated"] and reverse["flags"] == set() and reverse["host_cpu"] == "Cortex-A72"


def _env(monkeypatch, machine: str, name: str) -> dict:
    """collect_environment() as it runs on the recorded machine (cpuinfo, auxv and architecture patched)."""
    real_read = environment._read
    monkeypatch.setattr(platform, "machine", lambda: machine)
    monkeypatch.setattr(environment, "_read",
                        lambda p: cpuinfo(name) if str(p) == "/proc/cpuinfo" else real_read(p))
    aux = auxv(name) if (FIXTURES / f"{name}.auxv").exists() else None
    monkeypatch.setattr(hwcaps, "read_auxv", lambda: aux)
    return environment.collect_environment()


def _report(env: dict, int8_speedup: float | None) -> BenchReport:
    def row(fmt, p50):
        return {"format": fmt, "batch": 1, "threads": 1, "runs": 200, "p50_ms": p50, "p90_ms": p50, "p99_ms": p50,
                "mean_ms": p50, "std_ms": 0.0, "min_ms": p50, "max_ms": p50, "throughput_ips": 1000 / p50,
                "load_ms": 1.0, "first_ms": 1.0, "cold_start_ms": 2.0, "provider": "CPUExecutionProvider"}

    rows = [row("onnx", 1.0)] + ([row("int8", 1.0 / int8_speedup)] if int8_speedup is not None else [])
    formats = [{"format": "onnx", "status": "ok"},
               {"format": "int8", "status": "ok" if int8_speedup is not None else "not available"}]
    r = BenchReport.from_dict({"schema": SCHEMA, "created_utc": "2026-01-01T00:00:00Z", "environment": env,
                               "model": {"name": "bn_cnn", "folder": "x"}, "settings": {"device": "cpu"},
                               "formats": formats, "results": rows, "warnings": [], "advice": {"line": ""}})
    r.advice = advice.advise(r)
    return r


@pytest.mark.parametrize("machine, name", [("aarch64", "pi4"), ("aarch64", "pi5"), ("x86_64", "x86_vnni"),
                                           ("aarch64", "qemu_arm64_on_x86")])
@pytest.mark.parametrize("speedup", [35.0, 1.5, 0.8, None])
def test_the_advice_never_contradicts_itself_or_the_report(monkeypatch, machine, name, speedup):
    env = _env(monkeypatch, machine, name)
    a = _report(env, speedup).advice
    line = a.line
    assert a.ship == {True: "model.int8.onnx", False: "model.onnx", None: None}[a.int8_pays]
    assert set(re.findall(r"model(?:\.int8)?\.onnx", line)) <= {a.ship}  # names no file but the shipped one
    if name == "qemu_arm64_on_x86":
        assert a.basis == "emulation" and "Timings mean nothing" in line and a.ship is None
        assert a.int8_speedup is None and "35" not in line and "pays here" not in line
        assert "dot-product" not in line  # no claim about the CPU either way
        return
    dot_product = env["cpu"]["flags"].get("asimddp") or env["cpu"]["flags"].get("avx512_vnni")
    assert ("no dot-product" in line or "no VNNI" in line) is (not dot_product)
    assert a.basis == ("measured" if speedup else "cpu flags")
    assert ("int8 pays here" in line) is (speedup is not None and speedup >= advice.PAYS_AT)


def test_the_report_warns_under_emulation_and_names_the_flags_source(monkeypatch):
    env = _env(monkeypatch, "aarch64", "qemu_arm64_on_x86")
    warnings = runner._warnings(Environment.from_dict(env), EnvironmentEnd(), [], [], True)
    assert env["cpu"]["emulation_note"] in warnings
    assert env["cpu"]["flags"]["asimddp"] and env["cpu"]["flags"]["i8mm"]
    cpu_line = report.environment_lines(_report(env, None))[0]
    assert cpu_line.startswith("CPU: emulated (host: Intel(R) Xeon(R)") and "(aarch64," in cpu_line
    assert "flags (from AT_HWCAP/AT_HWCAP2): asimd asimddp i8mm sve" in cpu_line
    pi = _env(monkeypatch, "aarch64", "pi5")
    assert pi["cpu"]["emulated"] is False and not [w for w in runner._warnings(Environment.from_dict(pi),
                                                                               EnvironmentEnd(), [], [], True)
                                                   if "emulated" in w]
