"""The benchmark report as typed objects: :class:`BenchReport` with ``to_json``/``from_json``, every field
checked when read, so the tables, ``--compare``, the advice and the cards read attributes they can trust.

Schema ``mnist-edge-bench/1`` (a JSON object; times in milliseconds, sizes in bytes, RSS in MiB):

- ``schema``: "mnist-edge-bench/1". A reader accepts the same major version; fields may be added to
  version 1, never removed or renamed (that makes version 2). Keys a reader does not know are kept.
- ``created_utc``, ``command``: when, and the command line that produced it.
- ``model``: ``name`` (the manifest's model name), ``folder``.
- ``settings``: ``formats``, ``batch_sizes``, ``threads`` (resolved counts), ``threads_requested``,
  ``runs`` or ``seconds`` (the other null), ``warmup``, ``device``, ``accuracy``, ``isolate`` (one process
  per format), ``input``.
- ``environment``: ``cpu`` {model, core (ARM core name), arch, family (x86|arm), flags {name: bool},
  flags_source ("/proc/cpuinfo", "AT_HWCAP/AT_HWCAP2" on 64-bit ARM Linux, "sysctl" or null),
  int8_instructions (bool|null), int8_note, emulated (bool: /proc/cpuinfo describes another architecture,
  as under qemu-user; the timings then mean nothing), emulation_note, host_cpu (the emulating host's CPU
  or null), logical_cores, usable_cores}; ``os`` {system, release, platform, pointer_bits, message (32-bit
  ARM warning or null)}; ``memory_mb``; ``load_average`` (1, 5, 15 min at the start); ``raspberry_pi``
  {model, throttled {raw, value, flags}, cpufreq {governor, cur_mhz, max_mhz}} or null; ``cpufreq``;
  ``versions`` {python, numpy, onnxruntime, torch, mnist_edge} (the libraries the workers really loaded);
  ``torch_importable``.
- ``environment_end``: ``load_average`` and ``throttled`` after the run.
- ``formats``: one object per requested format: ``format`` (eager|torchscript|onnx|int8), ``label``,
  ``status`` ("ok" | "not available" | "failed"), ``reason`` (why not, else null), ``file``; when ok also
  ``size_bytes``, ``sha256``, ``verified`` (hash-checked against the folder's manifest.json before
  loading; false when there is none), ``import_ms`` (importing torch/onnxruntime in a fresh process),
  ``peak_rss_mb`` (the worker's peak resident memory, measured before the accuracy pass), ``rss_scope``
  ("format" or "cumulative"), ``providers``, ``notes``, ``library`` {name, version}, ``accuracy``
  (percent on the test set, or null), ``accuracy_images``, ``torch_loaded``.
- ``results``: one object per (format, batch, threads): ``runs``, ``warmup``, ``p50_ms``, ``p90_ms``,
  ``p99_ms``, ``mean_ms``, ``std_ms``, ``min_ms``, ``max_ms``, ``throughput_ips`` (images/s =
  batch / mean), ``throughput_p50_ips`` (batch / p50: what the tables show, the advice's statistic),
  ``p50_ci_ms`` ([low, high], a 95% interval of the p50; both added in 1.x, absent from older reports),
  ``load_ms`` (model/session load), ``first_ms`` (first inference), ``cold_start_ms``
  (their sum), ``provider``, ``device``; ONNX formats add ``predict_p50_ms`` (Classifier.predict, the
  public path with its input checks) and ``placement`` (nodes per onnxruntime provider, from its
  profiling record: {"nodes": {provider: count}, "ops", "total", "device", "provider"}; null for torch).
- ``int8_vs_fp32`` (added in 1.x; null when onnx or int8 did not run): {``method``, ``rows``: one per
  (threads, batch): ``batch``, ``threads``, ``ratio`` (int8 p50 / fp32 p50), ``low``, ``high`` (95% bootstrap
  interval), ``verdict`` ("faster" | "slower" | "undetermined", for int8), ``repeats``, ``calls``, ``p50_ms``,
  ``reference_p50_ms``} or {``method``, ``error``}. Both files timed interleaved in one process, as the int8
  search times them; the per-format ``results`` rows come from separate processes run one after the other.
- ``warnings``: list of strings (busy machine, throttling, too few runs for p99, ...).
- ``advice``: {int8_pays (null: undetermined or unknown), ship, basis ("measured" from ``int8_vs_fp32`` or,
  in older reports, from the two p50s; "accuracy", "device", "emulation", "cpu flags"), int8_speedup
  {batch, threads, value, interval ([low, high] or null)} or null, line}.

Every number read is finite, timings lie between 1 ns and 11 days (so every ratio of two is finite),
percentiles are in order and file names hold no NUL: a malformed report is an ArtifactError naming the
file and the field, never a traceback or a nan or inf in a table or a card.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mnist_edge.documents import SCHEMAS, load_json
from mnist_edge.documents.fields import (FLAG, MS, MS0, NONNEG, PATH, PERCENT, POSITIVE, RATIO, TEXT, Where, between,
                                         count, dict_of, dump, extra_field, interval, list_of, one_of, optional, parse,
                                         record, spec)

SCHEMA = SCHEMAS["bench"]
STATUSES = ("ok", "not available", "failed")
VERDICTS = ("faster", "slower", "undetermined")
OPT_TEXT = optional(TEXT)
BATCH, THREADS = count(1, 1_000_000), count(1, 65_536)
IPS = between(1e-6, 1e15, "images per second")  # batch / time, within the bounds of both
MIB = between(0, 1e9, "a size in MiB")


@dataclass
class BenchModel:
    name: str = spec(TEXT, required=True)
    folder: str = spec(TEXT, required=True)
    extra: dict = extra_field()


@dataclass
class Settings:
    """What was asked for, resolved (thread counts, the run budget)."""

    formats: list = spec(list_of(TEXT), factory=list)
    batch_sizes: list = spec(list_of(count(1)), factory=list)
    threads: list = spec(list_of(count(1)), factory=list)
    threads_requested: list = spec(list_of(TEXT), factory=list)
    runs: int | None = spec(optional(count(1)))
    seconds: float | None = spec(optional(POSITIVE))
    warmup: int | None = spec(optional(count(0)))
    device: str = spec(TEXT, default="cpu")
    accuracy: bool = spec(FLAG, default=False)
    isolate: bool = spec(FLAG, default=True)
    input: str | None = spec(OPT_TEXT)
    extra: dict = extra_field()


@dataclass
class Cpu:
    model: str | None = spec(OPT_TEXT)
    core: str | None = spec(OPT_TEXT)
    arch: str | None = spec(OPT_TEXT)
    family: str | None = spec(OPT_TEXT)
    flags: dict = spec(dict_of(FLAG), factory=dict)  # {flag: present}
    flags_source: str | None = spec(OPT_TEXT)
    int8_instructions: bool | None = spec(optional(FLAG))
    int8_note: str | None = spec(OPT_TEXT)
    emulated: bool = spec(FLAG, default=False)
    emulation_note: str | None = spec(OPT_TEXT)
    host_cpu: str | None = spec(OPT_TEXT)
    logical_cores: int | None = spec(optional(count(1)))
    usable_cores: int | None = spec(optional(count(1)))
    extra: dict = extra_field()


@dataclass
class OsInfo:
    system: str | None = spec(OPT_TEXT)
    release: str | None = spec(OPT_TEXT)
    platform: str | None = spec(OPT_TEXT)
    pointer_bits: int | None = spec(optional(count(1)))
    message: str | None = spec(OPT_TEXT)  # the 32-bit ARM warning
    extra: dict = extra_field()


@dataclass
class RaspberryPi:
    model: str | None = spec(OPT_TEXT)
    throttled: dict | None = spec(optional(record()))  # {raw, value, flags} or {raw, error}
    cpufreq: dict | None = spec(optional(record()))  # {governor, cur_mhz, max_mhz}
    extra: dict = extra_field()


@dataclass
class Environment:
    """The machine, as :func:`mnist_edge.system.machine.collect_environment` describes it."""

    cpu: Cpu = spec(Cpu, required=True)
    os: OsInfo = spec(OsInfo, required=True)
    memory_mb: float | None = spec(optional(NONNEG))
    load_average: list | None = spec(optional(list_of(NONNEG)))
    raspberry_pi: RaspberryPi | None = spec(RaspberryPi)
    cpufreq: dict | None = spec(optional(record()))
    versions: dict = spec(dict_of(OPT_TEXT), factory=dict)  # {library: version or null}
    torch_importable: bool | None = spec(optional(FLAG))
    extra: dict = extra_field()

    @classmethod
    def from_dict(cls, env: dict, source="environment") -> "Environment":
        return parse(cls, env, Where(source))


@dataclass
class EnvironmentEnd:
    load_average: list | None = spec(optional(list_of(NONNEG)))
    throttled: dict | None = spec(optional(record()))
    extra: dict = extra_field()


MEASURED = ("size_bytes", "sha256", "verified", "import_ms", "peak_rss_mb", "providers", "notes", "library",
            "accuracy", "accuracy_images", "torch_loaded", "rss_scope")


@dataclass
class FormatEntry:
    """One requested format: ok (with what its worker measured), not available or failed (with the reason)."""

    format: str = spec(TEXT, required=True)
    label: str | None = spec(OPT_TEXT)
    status: str = spec(one_of(*STATUSES), required=True)
    reason: str | None = spec(OPT_TEXT)
    file: str | None = spec(optional(PATH))
    size_bytes: int | None = spec(optional(count(0)))
    sha256: str | None = spec(OPT_TEXT)
    verified: bool | None = spec(optional(FLAG))
    import_ms: float | None = spec(optional(MS0))
    peak_rss_mb: float | None = spec(optional(MIB))
    providers: list | None = spec(optional(list_of(TEXT)))
    notes: list = spec(list_of(TEXT), factory=list)
    library: dict | None = spec(optional(record(2)))
    accuracy: float | None = spec(optional(PERCENT))
    accuracy_images: int | None = spec(optional(count(1)))
    torch_loaded: bool | None = spec(optional(FLAG))
    rss_scope: str | None = spec(optional(one_of("format", "cumulative")))
    extra: dict = extra_field()

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def omitted(self) -> tuple:
        return () if self.ok else MEASURED  # a format that did not run has no measurements to write


@dataclass
class Placement:
    """Nodes per onnxruntime provider (mnist_edge.runtime.placement), measured after the clock stopped."""

    nodes: dict = spec(dict_of(count(0)), factory=dict)  # {provider: nodes}
    ops: dict = spec(dict_of(dict_of(count(0))), factory=dict)  # {provider: {op type: nodes}}
    total: int | None = spec(optional(count(0)))
    device: str | None = spec(OPT_TEXT)
    provider: str | None = spec(OPT_TEXT)
    extra: dict = extra_field()


@dataclass
class ResultRow:
    """One (format, batch, threads) case."""

    format: str = spec(TEXT, required=True)
    batch: int = spec(BATCH, required=True)
    threads: int = spec(THREADS, required=True)
    warmup: int | None = spec(optional(count(0)))
    load_ms: float = spec(MS0, required=True)
    first_ms: float = spec(MS0, required=True)
    cold_start_ms: float = spec(MS0, required=True)
    runs: int = spec(count(1), required=True)
    p50_ms: float = spec(MS, required=True)
    p90_ms: float = spec(MS, required=True)
    p99_ms: float = spec(MS, required=True)
    mean_ms: float = spec(MS, required=True)
    std_ms: float = spec(MS0, required=True)
    min_ms: float = spec(MS, required=True)
    max_ms: float = spec(MS, required=True)
    throughput_ips: float | None = spec(optional(IPS), required=True)
    throughput_p50_ips: float | None = spec(optional(IPS), omit_none=True)  # added in 1.x
    p50_ci_ms: list | None = spec(optional(interval(MS)), omit_none=True)  # added in 1.x
    provider: str = spec(TEXT, required=True)
    device: str | None = spec(OPT_TEXT)
    predict_p50_ms: float | None = spec(optional(MS), omit_none=True)  # ONNX formats only
    placement: Placement | None = spec(Placement)
    extra: dict = extra_field()

    def validate(self, where: Where) -> None:
        if not (self.min_ms <= self.p50_ms <= self.p90_ms <= self.p99_ms <= self.max_ms):
            raise where.fail(f"has percentiles out of order (min {self.min_ms}, p50 {self.p50_ms}, p90 "
                             f"{self.p90_ms}, p99 {self.p99_ms}, max {self.max_ms})")

    @property
    def key(self) -> tuple[str, int, int]:
        return self.format, self.batch, self.threads

    @property
    def images_per_s(self) -> float:
        """Images/s at the p50 (the advice's statistic); batch / p50 for reports that lack it."""
        return self.throughput_p50_ips if self.throughput_p50_ips is not None else self.batch * 1000.0 / self.p50_ms


def _ordered(low: float, high: float, where: Where) -> None:
    """A row's 95% interval [low, high] must have its low end first."""
    if low > high:
        raise where.fail(f"has an interval [{low}, {high}] whose low end is above its high end")


@dataclass
class PairRow:
    """int8 against fp32 timed interleaved in one process (mnist_edge.bench.ratio)."""

    batch: int = spec(BATCH, required=True)
    threads: int = spec(THREADS, required=True)
    ratio: float = spec(RATIO, required=True)  # int8 p50 / fp32 p50
    low: float = spec(RATIO, required=True)
    high: float = spec(RATIO, required=True)
    verdict: str = spec(one_of(*VERDICTS), required=True)
    repeats: int | None = spec(optional(count(1)))
    calls: int | None = spec(optional(count(1)))
    p50_ms: float | None = spec(optional(MS))
    reference_p50_ms: float | None = spec(optional(MS))
    extra: dict = extra_field()

    def validate(self, where: Where) -> None:
        _ordered(self.low, self.high, where)


@dataclass
class Pair:
    method: str = spec(TEXT, required=True)
    rows: list | None = spec(PairRow, many=True, omit_none=True)
    error: str | None = spec(OPT_TEXT, omit_none=True)
    extra: dict = extra_field()


@dataclass
class RaceRow:
    """One file in the cross-runtime race (mnist_edge.bench.race): its p50 against the fastest's."""

    batch: int = spec(BATCH, required=True)
    threads: int = spec(THREADS, required=True)
    file: str = spec(TEXT, required=True)
    p50_ms: float = spec(MS, required=True)
    ratio: float = spec(RATIO, required=True)  # its p50 / the fastest file's p50 (1 for the fastest)
    low: float = spec(RATIO, required=True)
    high: float = spec(RATIO, required=True)
    extra: dict = extra_field()

    def validate(self, where: Where) -> None:
        _ordered(self.low, self.high, where)


@dataclass
class Race:
    """Every runtime file (ONNX Runtime and LiteRT, fp32 and int8) timed interleaved in one process."""

    method: str = spec(TEXT, required=True)
    rows: list | None = spec(RaceRow, many=True, omit_none=True)
    error: str | None = spec(OPT_TEXT, omit_none=True)
    extra: dict = extra_field()


@dataclass
class Fastest:
    """The advice's pick at one batch size: the fastest file and how far the runner-up is behind."""

    batch: int = spec(BATCH, required=True)
    threads: int = spec(THREADS, required=True)
    file: str = spec(TEXT, required=True)
    runner_up: str | None = spec(OPT_TEXT)
    margin: list | None = spec(optional(interval(RATIO)))  # runner-up p50 / fastest p50: [low, high]
    ratio: float | None = spec(optional(RATIO))
    extra: dict = extra_field()


@dataclass
class Speedup:
    batch: int = spec(BATCH, required=True)
    threads: int = spec(THREADS, required=True)
    value: float = spec(RATIO, required=True)  # fp32 p50 / int8 p50
    interval: list | None = spec(optional(interval(RATIO)))
    extra: dict = extra_field()


@dataclass
class Advice:
    """Does int8 pay here, which file to ship, and the one line that says so (mnist_edge.bench.advice)."""

    int8_pays: bool | None = spec(optional(FLAG))
    ship: str | None = spec(OPT_TEXT)
    basis: str | None = spec(OPT_TEXT)
    int8_speedup: Speedup | None = spec(Speedup)
    fastest: list | None = spec(Fastest, many=True, omit_none=True)  # per batch size, from the race
    line: str = spec(TEXT, required=True)
    extra: dict = extra_field()


@dataclass
class BenchReport:
    """A ``mnist-edge bench`` report (see the module docstring for every field)."""

    schema: str = spec(one_of(SCHEMA), required=True)
    created_utc: str = spec(TEXT, required=True)
    command: str | None = spec(OPT_TEXT)
    model: BenchModel = spec(BenchModel, required=True)
    settings: Settings = spec(Settings, required=True)
    environment: Environment = spec(Environment, required=True)
    environment_end: EnvironmentEnd | None = spec(EnvironmentEnd)
    formats: list = spec(FormatEntry, many=True, required=True)
    results: list = spec(ResultRow, many=True, required=True)
    int8_vs_fp32: Pair | None = spec(Pair)
    race: Race | None = spec(Race, omit_none=True)  # every runtime file interleaved (with LiteRT files)
    warnings: list = spec(list_of(TEXT), required=True)
    advice: Advice | None = spec(Advice, required=True)  # None only while run_bench builds the report
    extra: dict = extra_field()

    @classmethod
    def from_json(cls, path) -> "BenchReport":
        """The report in file ``path``, read by the one bounded loader and checked field by field;
        ArtifactError naming the file and the field otherwise."""
        return cls.from_dict(load_json(path, kind="bench"), path)

    @classmethod
    def from_dict(cls, obj, source="bench report") -> "BenchReport":
        return parse(cls, obj, Where(source))

    def to_json(self) -> dict:
        return dump(self)

    def write(self, path) -> Path:
        from mnist_edge.files import write_text_atomic

        write_text_atomic(path, json.dumps(self.to_json(), indent=2) + "\n")
        return Path(path)

    def entry(self, fmt: str) -> FormatEntry | None:
        return next((e for e in self.formats if e.format == fmt), None)

    def row(self, fmt: str, batch: int, threads: int = 1) -> ResultRow | None:
        return next((r for r in self.results if r.key == (fmt, batch, threads)), None)

    def p50s(self, fmt: str) -> dict[tuple[int, int], float]:
        """{(batch, threads): p50 ms} of one format."""
        return {(r.batch, r.threads): r.p50_ms for r in self.results if r.format == fmt}

    @property
    def paired_rows(self) -> list:
        return (self.int8_vs_fp32.rows or []) if self.int8_vs_fp32 else []

