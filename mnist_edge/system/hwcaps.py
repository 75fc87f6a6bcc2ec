"""The CPU features Linux grants a 64-bit ARM process: AT_HWCAP and AT_HWCAP2 from its auxiliary vector.

These bits are what the kernel guarantees to userspace (onnxruntime's own CPU detection reads them);
/proc/cpuinfo's "Features" line is printed from the same bits on a real board, but under qemu-user
/proc/cpuinfo shows the host's x86 CPU while the auxiliary vector holds the emulated ARM CPU's bits.

``/proc/self/auxv`` is a sequence of (type, value) pairs of native-endian unsigned longs ending with
AT_NULL. Bit numbers: Linux ``arch/arm64/include/uapi/asm/hwcap.h``; names as /proc/cpuinfo prints them.
Standard library only.
"""

from __future__ import annotations

import sys
from pathlib import Path

AT_NULL, AT_HWCAP, AT_HWCAP2 = 0, 16, 26

# HWCAP_* (bit i of AT_HWCAP), arm64
ARM64_HWCAP = (
    "fp", "asimd", "evtstrm", "aes", "pmull", "sha1", "sha2", "crc32",  # 0-7
    "atomics", "fphp", "asimdhp", "cpuid", "asimdrdm", "jscvt", "fcma", "lrcpc",  # 8-15
    "dcpop", "sha3", "sm3", "sm4", "asimddp", "sha512", "sve", "asimdfhm",  # 16-23
    "dit", "uscat", "ilrcpc", "flagm", "ssbs", "sb", "paca", "pacg",  # 24-31
)
# HWCAP2_* (bit i of AT_HWCAP2), arm64
ARM64_HWCAP2 = (
    "dcpodp", "sve2", "sveaes", "svepmull", "svebitperm", "svesha3", "svesm4", "flagm2",  # 0-7
    "frint", "svei8mm", "svef32mm", "svef64mm", "svebf16", "i8mm", "bf16", "dgh",  # 8-15
    "rng", "bti", "mte", "ecv", "afp", "rpres", "mte3", "sme",  # 16-23
    "smei16i64", "smef64f64", "smei8i32", "smef16f32", "smeb16f32", "smef32f32", "smefa64",  # 24-30
)


def read_auxv() -> bytes | None:
    """This process's auxiliary vector as raw bytes (None where Linux does not expose it)."""
    try:
        return Path("/proc/self/auxv").read_bytes()
    except OSError:
        return None


def parse_auxv(data: bytes, word_size: int = 8, byteorder: str = sys.byteorder) -> dict[int, int]:
    """{type: value} of an auxiliary vector's bytes, up to AT_NULL (a truncated tail is ignored)."""
    out: dict[int, int] = {}
    pair = 2 * word_size
    for start in range(0, len(data) - pair + 1, pair):
        key = int.from_bytes(data[start:start + word_size], byteorder)
        if key == AT_NULL:
            break
        out.setdefault(key, int.from_bytes(data[start + word_size:start + pair], byteorder))
    return out


def decode(value: int, names: tuple[str, ...]) -> set[str]:
    """The names of the bits set in ``value``."""
    return {name for bit, name in enumerate(names) if value >> bit & 1}


def arm64_features(auxv: dict[int, int]) -> set[str] | None:
    """Feature names from AT_HWCAP and AT_HWCAP2 of a 64-bit ARM process; None when AT_HWCAP is absent."""
    if AT_HWCAP not in auxv:
        return None
    return decode(auxv[AT_HWCAP], ARM64_HWCAP) | decode(auxv.get(AT_HWCAP2, 0), ARM64_HWCAP2)
