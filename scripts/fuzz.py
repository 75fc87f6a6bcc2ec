"""The long fuzz run (opt-in): mutated inputs for every reader of a file the tool reads (the targets of
tests/fuzz_targets.py, one per entry of mnist_edge.documents.readers.READERS, plus the model card), each
case in one worker process that is watched for hangs and crashes.

    python scripts/fuzz.py --minutes 5               # every target, interleaved
    python scripts/fuzz.py --cases 20000 --targets image onnx --out fuzz-findings
    python scripts/fuzz.py --per-target 10000 --minutes 60   # until each target has 10,000 cases

Counts per target: cases, typed errors (a MnistEdgeError), accepted (a valid result), untyped (any other
exception: a bug, must be 0), hangs (no answer within --case-timeout seconds; the worker is killed) and
crashes (the worker died: a signal, or memory past --max-memory-gb). Every untyped, hanging or crashing
input is written to --out with a JSON summary, and the exit status is 1 when there is any.

The cases are the same as tests/test_fuzz.py draws (tests/fuzz_targets.py), generated from --seed and the
case number, so a finding can be replayed with --replay TARGET:CASE.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import select
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))
from fuzz_targets import Targets  # noqa: E402 - found through the path above

TARGETS = Targets.NAMES  # one per reader (tests/test_readers.py checks that every reader has one)


def case_rng(seed: int, target: str, i: int) -> random.Random:
    return random.Random(f"{seed}:{target}:{i}")


# --- the worker: runs cases, one line per case on stdout ----------------------------------------------

def worker(args) -> None:
    import warnings

    warnings.simplefilter("ignore")
    if args.max_memory_gb:
        limit = int(args.max_memory_gb * (1 << 30))
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    from fuzz_targets import classify

    targets = Targets()
    out = sys.stdout
    try:
        for line in sys.stdin:  # "TARGET I" per case
            target, i = line.split()
            kind, data = targets.case(target, case_rng(args.seed, target, int(i)))
            out.write(f"START {target} {i}\n")
            out.flush()
            outcome, detail = classify(targets, target, kind, data)
            out.write(json.dumps({"target": target, "i": int(i), "kind": kind, "outcome": outcome,
                                  "detail": detail}) + "\n")
            out.flush()
    finally:
        targets.close()


# --- the parent: hands out cases, watches, counts -------------------------------------------------------

class Worker:
    def __init__(self, args):
        cmd = [sys.executable, __file__, "--worker", "--seed", str(args.seed),
               "--max-memory-gb", str(args.max_memory_gb)]
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     env=env, cwd=REPO)
        self.buf = b""

    def send(self, target: str, i: int) -> None:
        self.proc.stdin.write(f"{target} {i}\n".encode())
        self.proc.stdin.flush()

    def readline(self, timeout: float) -> str | None:
        """One line, "" at EOF (the worker died), None on timeout. Reads the raw pipe with its own buffer:
        select() on a buffered file object misses lines already read ahead into the buffer."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                return None
            chunk = os.read(fd, 65536)
            if not chunk:
                return ""
            self.buf += chunk
        line, _, self.buf = self.buf.partition(b"\n")
        return line.decode() + "\n"

    def kill(self) -> int | None:
        self.proc.kill()
        return self.proc.wait()


def save_finding(out: Path, seed: int, target: str, i: int, what: str, detail: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    t = Targets()
    try:
        kind, data = t.case(target, case_rng(seed, target, i))
    finally:
        t.close()
    (out / f"{what}-{target}-{i}.{kind}.bin").write_bytes(data)
    with open(out / "findings.jsonl", "a") as f:
        f.write(json.dumps({"what": what, "target": target, "case": i, "kind": kind, "detail": detail}) + "\n")


def run(args) -> int:
    counts = {t: Counter() for t in args.targets}
    details = {t: Counter() for t in args.targets}
    end = time.monotonic() + args.minutes * 60 if args.minutes else None
    w, i = Worker(args), 0
    started = time.monotonic()
    startup_grace = 60.0  # the first case of a fresh worker also imports numpy, onnxruntime and Pillow
    fresh = True
    active = list(args.targets)
    while active and (args.cases is None or i < args.cases) and (end is None or time.monotonic() < end):
        target = active[i % len(active)]
        if args.per_target and counts[target]["cases"] + 1 >= args.per_target:
            active.remove(target)  # its last case: the others go on
        w.send(target, i)
        timeout = args.case_timeout + (startup_grace if fresh else 0.0)
        result, crashed, hung = None, None, False
        while True:
            line = w.readline(timeout)
            if line is None:
                hung = True
                break
            if line == "":
                crashed = w.proc.wait()
                break
            if line.startswith("START"):
                continue
            result = json.loads(line)
            break
        fresh = False
        c = counts[target]
        c["cases"] += 1
        if result is not None:
            c[result["outcome"]] += 1
            if result["outcome"] == "typed":
                details[target][result["detail"]] += 1
            elif result["outcome"] == "untyped":
                save_finding(args.out, args.seed, target, i, "untyped", result["detail"])
                print(f"untyped: {target} case {i} ({result['kind']}): {result['detail']}", file=sys.stderr)
        else:
            what = "hang" if hung else "crash"
            c[what + "s"] += 1
            detail = f"no answer in {args.case_timeout} s" if hung else f"worker exit status {crashed}"
            save_finding(args.out, args.seed, target, i, what, detail)
            print(f"{what}: {target} case {i}: {detail}", file=sys.stderr)
            if hung:
                w.kill()
            w, fresh = Worker(args), True
        i += 1
        if args.progress and i % 500 == 0:
            print(f"  {i} cases, {time.monotonic() - started:.0f} s", file=sys.stderr, flush=True)
    w.proc.stdin.close()
    w.proc.wait()
    peak_mb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    summary = {"seed": args.seed, "seconds": round(time.monotonic() - started, 1), "worker_peak_rss_mb": round(peak_mb),
               "targets": {t: {k: counts[t].get(k, 0) for k in
                               ("cases", "typed", "accepted", "untyped", "hangs", "crashes")} for t in args.targets},
               "typed_errors": {t: dict(details[t].most_common()) for t in args.targets}}
    totals = Counter()
    for t in args.targets:
        totals.update(summary["targets"][t])
    summary["total"] = {k: totals.get(k, 0) for k in ("cases", "typed", "accepted", "untyped", "hangs", "crashes")}
    print(render(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    bad = totals["untyped"] + totals["hangs"] + totals["crashes"]
    return 1 if bad else 0


def render(summary: dict) -> str:
    fmt = "{:<16} {:>8} {:>8} {:>9} {:>8} {:>6} {:>8}"
    lines = [f"fuzz: seed {summary['seed']}, {summary['seconds']} s, worker peak RSS {summary['worker_peak_rss_mb']} MB",
             fmt.format("target", "cases", "typed", "accepted", "untyped", "hangs", "crashes")]
    for name, row in [*summary["targets"].items(), ("total", summary["total"])]:
        lines.append(fmt.format(name, *(row[k] for k in ("cases", "typed", "accepted", "untyped", "hangs", "crashes"))))
    return "\n".join(lines)


def replay(args) -> int:
    from fuzz_targets import classify

    target, i = args.replay.split(":")
    t = Targets()
    try:
        kind, data = t.case(target, case_rng(args.seed, target, int(i)))
        print(f"{target} case {i} ({kind}, {len(data)} bytes): {classify(t, target, kind, data)}")
    finally:
        t.close()
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, help="time budget (default: 5 unless --cases is given)")
    p.add_argument("--cases", type=int, help="number of cases (all targets together)")
    p.add_argument("--per-target", type=int, metavar="N", help="stop each target after N cases (the fast ones do "
                                                               "not wait for the slow ones)")
    p.add_argument("--targets", nargs="+", choices=TARGETS, default=list(TARGETS))
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--case-timeout", type=float, default=20.0, help="seconds before a case counts as a hang")
    p.add_argument("--max-memory-gb", type=float, default=4.0, help="address-space limit of a worker (0: none)")
    p.add_argument("--out", type=Path, default=Path("fuzz-findings"), help="where failing inputs are written")
    p.add_argument("--json", help="also write the summary as JSON here")
    p.add_argument("--progress", action="store_true")
    p.add_argument("--replay", metavar="TARGET:CASE", help="run one case in this process and print its outcome")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker(args)
        return 0
    if args.replay:
        return replay(args)
    if args.minutes is None and args.cases is None and args.per_target is None:
        args.minutes = 5.0
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
