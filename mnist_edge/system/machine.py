"""The machine this runs on: CPU and its int8-relevant flags, OS, versions, load, and a Pi's clock state.

Everything here is read without importing torch or onnxruntime (a broken onnxruntime wheel can kill the
process on import: "Illegal instruction" from 1.21.0 on a Pi 4); versions come from package metadata and
the workers report the version they really loaded. Readers take their text as an argument so tests can
feed a Pi 4's or a Pi 5's /proc/cpuinfo and auxiliary vector (:mod:`mnist_edge.system.hwcaps`: on ARM the
flags come from AT_HWCAP/AT_HWCAP2, which are right under emulation too, where /proc/cpuinfo is the host's).

int8 and the CPU: onnxruntime's int8 kernels gain over fp32 on x86-64 with VNNI and on ARM with the
dot-product instructions; older CPUs have few of the instructions needed and quantize/dequantize overhead
can make int8 slower (onnxruntime docs, "Quantize ONNX models", FAQ). A Raspberry Pi 4 (Cortex-A72,
ARMv8.0) has no dot product; a Pi 5 (Cortex-A76, ARMv8.2) has it (``asimddp``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import platform
import shutil
import struct
import subprocess
import sys
from pathlib import Path

from mnist_edge.system import hwcaps

# The flags we report: x86 int8 (VNNI in its AVX-512 and AVX forms, AMX), the vector widths, and ARM's
# dot product (asimddp), int8 matrix multiply (i8mm), SVE and fp16 arithmetic.
X86_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_int8")
ARM_FLAGS = ("asimd", "asimddp", "i8mm", "sve", "asimdhp", "bf16")
INT8_FLAGS = {"x86": ("avx512_vnni", "avx_vnni", "amx_int8"), "arm": ("asimddp", "i8mm")}
FLAG_NAMES = {"avx512_vnni": "AVX-512 VNNI", "avx_vnni": "AVX-VNNI", "amx_int8": "AMX-INT8",
              "asimddp": "dot-product (asimddp)", "i8mm": "int8 matrix multiply (i8mm)"}

# ARM "CPU part" numbers (implementer 0x41) of the cores found in boards people run this on.
ARM_PARTS = {
    "0xd03": "Cortex-A53", "0xd04": "Cortex-A35", "0xd05": "Cortex-A55", "0xd07": "Cortex-A57",
    "0xd08": "Cortex-A72", "0xd09": "Cortex-A73", "0xd0a": "Cortex-A75", "0xd0b": "Cortex-A76",
    "0xd0c": "Neoverse-N1", "0xd0d": "Cortex-A77", "0xd40": "Neoverse-V1", "0xd41": "Cortex-A78",
    "0xd44": "Cortex-X1", "0xd46": "Cortex-A510", "0xd47": "Cortex-A710", "0xd49": "Neoverse-N2",
    "0xd4f": "Neoverse-V2",
}
ARM32_MACHINES = ("armv6l", "armv7l", "armv8l", "arm")

# vcgencmd get_throttled bits (Raspberry Pi firmware documentation).
THROTTLE_BITS = {
    0: "under-voltage now", 1: "ARM frequency capped now", 2: "throttled now", 3: "soft temperature limit now",
    16: "under-voltage occurred", 17: "frequency capping occurred", 18: "throttling occurred",
    19: "soft temperature limit occurred",
}
ORT_DISTRIBUTIONS = ("onnxruntime", "onnxruntime-gpu", "onnxruntime-openvino", "onnxruntime-directml",
                     "onnxruntime-qnn", "ort-nightly")


def _read(path: str | Path) -> str | None:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return None


def parse_cpuinfo(text: str) -> dict:
    """CPU model and flags from Linux /proc/cpuinfo text (first processor block; x86 or ARM layout)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if "flags" in fields or "Features" in fields:
                break  # end of the first processor block
            continue
        key, _, value = line.partition(":")
        fields.setdefault(key.strip(), value.strip())
    flags = set((fields.get("flags") or fields.get("Features") or "").split())
    model = fields.get("model name") or fields.get("Model") or fields.get("Hardware")
    part = fields.get("CPU part", "").lower()
    core = ARM_PARTS.get(part) if fields.get("CPU implementer", "").lower() == "0x41" else None
    if core and (not model or model.startswith("Raspberry")):
        model = core
    # which kind of CPU the text describes (x86 prints vendor_id and "flags", ARM "CPU implementer" and
    # "Features"); compared with the process's architecture to notice emulation
    family = "x86" if "vendor_id" in fields or "flags" in fields else \
        "arm" if "CPU implementer" in fields or "Features" in fields else None
    return {"model": model, "core": core, "flags": flags, "family": family}


def describe_cpu(machine: str, cpuinfo: str, auxv: bytes | None, pointer_bits: int = 64) -> dict:
    """Model, flags and their source, and emulation, from /proc/cpuinfo text and /proc/self/auxv bytes.

    x86 flags come from /proc/cpuinfo; 64-bit ARM flags from AT_HWCAP/AT_HWCAP2 (what the kernel grants
    this process), /proc/cpuinfo's Features only where the auxiliary vector is unreadable. When
    /proc/cpuinfo describes another architecture than the one this process runs as, the process is
    emulated (qemu-user shows the host's cpuinfo): its model is not this CPU's, and timings mean nothing.
    """
    family = arch_family(machine)
    info = parse_cpuinfo(cpuinfo)
    emulated = bool(family and info["family"] and info["family"] != family)
    arm_bits = None
    if family == "arm" and pointer_bits == 64 and auxv:
        arm_bits = hwcaps.arm64_features(hwcaps.parse_auxv(auxv, word_size=8))
    if arm_bits is not None:
        flags, source = arm_bits, "AT_HWCAP/AT_HWCAP2"
    elif emulated or not info["flags"]:
        flags, source = set(), None  # an emulating host's flags say nothing about the emulated CPU
    else:
        flags, source = info["flags"], "/proc/cpuinfo"
    note = None
    if emulated:
        host = info["model"] or f"an {info['family']} CPU"
        note = (f"emulated: this process runs as {machine} but /proc/cpuinfo describes the host's {info['family']} "
                f"CPU ({host}), as under qemu-user; timings mean nothing about any real {machine} CPU "
                f"(run the benchmark on the device itself)")
    return {"model": None if emulated else info["model"], "core": None if emulated else info["core"],
            "flags": flags, "flags_source": source, "emulated": emulated, "emulation_note": note,
            "host_cpu": info["model"] if emulated else None}


def cpu_model() -> str:
    """The CPU's model name, for records such as a checkpoint's training hardware (never an emulating
    host's: then the architecture only)."""
    cpu = describe_cpu(platform.machine(), _read("/proc/cpuinfo") or "", None)
    return cpu["model"] or platform.processor() or platform.machine()


def _darwin_cpu() -> dict:
    def sysctl(name):
        try:
            out = subprocess.run(["sysctl", "-n", name], capture_output=True, text=True, timeout=5)
        except (OSError, subprocess.SubprocessError):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    flags = set()
    if sysctl("hw.optional.arm.FEAT_DotProd") == "1":
        flags |= {"asimd", "asimddp"}
    if sysctl("hw.optional.arm.FEAT_I8MM") == "1":
        flags.add("i8mm")
    for name, flag in (("hw.optional.avx2_0", "avx2"), ("hw.optional.avx512f", "avx512f"),
                       ("hw.optional.avx512vnni", "avx512_vnni")):
        if sysctl(name) == "1":
            flags.add(flag)
    return {"model": sysctl("machdep.cpu.brand_string"), "core": None, "flags": flags}


def arch_family(machine: str) -> str | None:
    m = machine.lower()
    if m in ("x86_64", "amd64", "i386", "i686", "x86"):
        return "x86"
    if m in ("aarch64", "arm64") or m.startswith("arm"):
        return "arm"
    return None


def int8_support(family: str | None, flags) -> tuple[bool | None, str]:
    """(whether the CPU has the instructions onnxruntime's int8 kernels gain from, why in words)."""
    flags = set(flags or ())
    if family not in INT8_FLAGS:
        return None, "unknown CPU architecture: int8 gain cannot be predicted, only measured"
    found = [FLAG_NAMES[f] for f in INT8_FLAGS[family] if f in flags]
    if found:
        return True, "CPU has " + " and ".join(found)
    if family == "arm":
        if not flags:
            return None, "CPU flags not readable: int8 gain cannot be predicted, only measured"
        return False, "CPU has no dot-product instructions (asimddp), as a Pi 4's Cortex-A72"
    if not flags:
        return None, "CPU flags not readable: int8 gain cannot be predicted, only measured"
    return False, "CPU has no VNNI" + (" (AVX2 only)" if "avx2" in flags else "")


BF16_FLAGS = ("avx512_bf16", "amx_bf16", "bf16")  # x86 AVX-512 BF16 and AMX; ARM's FEAT_BF16


def native_bf16() -> tuple[bool, str]:
    """(whether this CPU computes bfloat16 in hardware, which flag says so or that none does): bf16
    autocast pays only there; elsewhere oneDNN emulates it, slower than float32."""
    cpu = describe_cpu(platform.machine(), _read("/proc/cpuinfo") or "", hwcaps.read_auxv())
    found = [f for f in BF16_FLAGS if f in cpu["flags"]]
    return (True, f"CPU has {found[0]}") if found else (False, "CPU has no native bf16 (avx512_bf16, amx_bf16 or bf16)")


def decode_throttled(value: int) -> list[str]:
    """The set bits of ``vcgencmd get_throttled`` in words (empty: never throttled since boot)."""
    return [text for bit, text in THROTTLE_BITS.items() if value >> bit & 1]


def read_throttled() -> dict | None:
    """A Pi's throttling state from ``vcgencmd get_throttled`` (None where vcgencmd is absent)."""
    exe = shutil.which("vcgencmd")
    if not exe:
        return None
    try:
        out = subprocess.run([exe, "get_throttled"], capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.SubprocessError) as e:
        return {"raw": None, "error": str(e)}
    text = out.stdout.strip()  # "throttled=0x50000"
    try:
        value = int(text.split("=", 1)[1], 16)
    except (IndexError, ValueError):
        return {"raw": text or None, "error": (out.stderr.strip() or "unreadable output")[:200]}
    return {"raw": text, "value": value, "flags": decode_throttled(value)}


def read_governor() -> dict | None:
    """CPU frequency governor and current/maximum clock of cpu0 where Linux exposes them."""
    base = Path("/sys/devices/system/cpu/cpu0/cpufreq")
    governor = _read(base / "scaling_governor")
    if governor is None:
        return None
    khz = {k: _read(base / f"scaling_{k}_freq") for k in ("cur", "max")}
    mhz = {f"{k}_mhz": int(v) // 1000 if v and v.strip().isdigit() else None for k, v in khz.items()}
    return {"governor": governor.strip(), **mhz}


def raspberry_pi_model(text: str | None = None) -> str | None:
    """"Raspberry Pi 5 Model B Rev 1.0" from the device tree, or None on other machines."""
    if text is None:
        text = _read("/proc/device-tree/model") or _read("/sys/firmware/devicetree/base/model")
    model = (text or "").replace("\x00", "").strip()
    return model if model.startswith("Raspberry Pi") else None


def os_message(machine: str, pointer_bits: int) -> str | None:
    """A clear message for a 32-bit ARM OS (or 32-bit Python on a 64-bit kernel), else None."""
    m = machine.lower()
    if m in ARM32_MACHINES or (arch_family(m) == "arm" and pointer_bits == 32):
        return (f"32-bit ARM system ({machine}, {pointer_bits}-bit Python): onnxruntime publishes no 32-bit "
                "ARM wheels on PyPI. Install the 64-bit Raspberry Pi OS (uname -m says aarch64) and a 64-bit "
                "Python; see docs/raspberry-pi.md")
    return None


def package_version(*names: str) -> str | None:
    """Installed version of the first distribution of ``names`` that is present (no import)."""
    for name in names:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def torch_status() -> tuple[bool, str | None]:
    """(torch importable here, its version) without importing it; a blocked import counts as absent."""
    if "torch" in sys.modules:
        mod = sys.modules["torch"]
        return (mod is not None, getattr(mod, "__version__", None) if mod is not None else None)
    try:
        spec = importlib.util.find_spec("torch")
    except (ImportError, ValueError):
        spec = None
    return (spec is not None, package_version("torch") if spec is not None else None)


def usable_cores() -> int:
    """CPUs this process may run on (affinity, e.g. a container's share), else the machine's count."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def load_average() -> list[float] | None:
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except (AttributeError, OSError):
        return None


def _mem_total_mb() -> int | None:
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) // 1024
    return None


def collect_environment() -> dict:
    """Everything the report's ``environment`` section holds (see report.py for the schema)."""
    machine = platform.machine()
    family = arch_family(machine)
    pointer_bits = struct.calcsize("P") * 8
    if sys.platform.startswith("linux"):
        cpu = describe_cpu(machine, _read("/proc/cpuinfo") or "", hwcaps.read_auxv(), pointer_bits)
    elif sys.platform == "darwin":
        cpu = {**_darwin_cpu(), "flags_source": "sysctl"}
    else:
        cpu = {"model": platform.processor() or None, "core": None, "flags": set(), "flags_source": None}
    relevant = X86_FLAGS if family == "x86" else ARM_FLAGS if family == "arm" else ()
    capable, why = int8_support(family, cpu["flags"])
    pi = raspberry_pi_model()
    torch_ok, torch_version = torch_status()
    return {
        "cpu": {
            "model": cpu["model"],
            "core": cpu["core"],
            "arch": machine,
            "family": family,
            "flags": {f: f in cpu["flags"] for f in relevant},
            "flags_source": cpu.get("flags_source"),
            "int8_instructions": capable,
            "int8_note": why,
            "emulated": cpu.get("emulated", False),
            "emulation_note": cpu.get("emulation_note"),
            "host_cpu": cpu.get("host_cpu"),
            "logical_cores": os.cpu_count(),
            "usable_cores": usable_cores(),
        },
        "os": {
            "system": platform.system(),
            "release": platform.release(),
            "platform": platform.platform(),
            "pointer_bits": pointer_bits,
            "message": os_message(machine, pointer_bits),
        },
        "memory_mb": _mem_total_mb(),
        "load_average": load_average(),
        "raspberry_pi": {
            "model": pi,
            "throttled": read_throttled(),
            "cpufreq": read_governor(),
        } if pi else None,
        "cpufreq": read_governor() if not pi else None,
        "versions": {
            "python": platform.python_version(),
            "numpy": package_version("numpy"),
            "onnxruntime": package_version(*ORT_DISTRIBUTIONS),
            "torch": torch_version,
            "mnist_edge": _mnist_edge_version(),
        },
        "torch_importable": torch_ok,
    }


def _mnist_edge_version() -> str:
    from mnist_edge.version import __version__

    return __version__
