"""How much CPU other processes take while we work: the whole machine's busy time minus our own.

Training and benchmarks report it because a shared machine changes what they measure: on 2 cores with
other jobs running, an epoch can take several times longer than on a quiet machine. Linux only (from
``/proc/stat``); elsewhere the reading is None and nothing is claimed.
"""

from __future__ import annotations

import os
import time

BUSY_SHARE = 0.25  # other processes using more than this share of our cores: the machine is "busy"


def _machine_busy_seconds() -> float | None:
    """CPU-seconds all processes have spent not idle since boot (every CPU summed), or None off Linux."""
    try:
        with open("/proc/stat") as f:
            fields = f.readline().split()
    except OSError:
        return None
    if not fields or fields[0] != "cpu":
        return None
    ticks = [int(v) for v in fields[1:9]]  # user nice system idle iowait irq softirq steal
    return (sum(ticks) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def _own_seconds() -> float:
    t = os.times()
    return t.user + t.system


class OtherLoad:
    """Average number of CPUs other processes kept busy between ``start()`` (construction) and ``cores()``."""

    def __init__(self):
        self._t, self._machine, self._own = time.monotonic(), _machine_busy_seconds(), _own_seconds()

    def cores(self) -> float | None:
        machine = _machine_busy_seconds()
        wall = time.monotonic() - self._t
        if machine is None or self._machine is None or wall < 0.2:
            return None
        others = (machine - self._machine) - (_own_seconds() - self._own)
        return round(max(0.0, others / wall), 2)


def busy_line(others: float | None, cores: int, what: str) -> str | None:
    """One line saying the machine is busy and what that does to ``what``; None when it is quiet or unknown."""
    if others is None or others <= BUSY_SHARE * cores:
        return None
    return (f"machine busy: other processes kept {others:.1f} of {cores} cores busy; {what} is slower than on a "
            "quiet machine and its times are not comparable with quiet runs")
