"""onnxruntime sessions: provider choice with no silent fallback, and session options tuned for latency.

Providers. onnxruntime on its own never refuses a provider. Asking for ``CUDAExecutionProvider`` in the
CPU build only warns and runs on the CPU. In the CUDA build (checked with onnxruntime-gpu 1.31.1 on a
machine without the CUDA libraries) the session is still created: it logs "Failed to create
CUDAExecutionProvider. Require cuDNN 9.* and CUDA 13.*" and ``get_providers()`` is
``['CPUExecutionProvider']``, with or without ``enable_fallback``; and when a provider raises, the
default ``enable_fallback`` prints "Falling back to ['CPUExecutionProvider']" and retries. So we ask
only for providers the build has, pass ``enable_fallback=0``, and after creating the session read
``get_providers()`` (what really runs): ``device="cuda"`` that does not end up on CUDAExecutionProvider
is a DeviceError naming the providers, never a CPU run. ``device="auto"`` takes CUDA when it really
initialises and otherwise the CPU, and says which and why. CUDA libraries installed from pip
(``onnxruntime-gpu[cuda,cudnn]``) are found only after ``onnxruntime.preload_dlls()``, which we call.

int8 QDQ models on CUDA (onnxruntime 1.31; checked against its docs and kernel registry, see below).
A QDQ model is a float graph with QuantizeLinear/DequantizeLinear pairs around each Conv/Gemm. On the
CPU provider, onnxruntime's QDQ transformers fuse DQ -> Conv -> Q into real int8 kernels (QLinearConv,
QGemm), which is where the int8 speed comes from. The CUDA provider has no int8 Conv/Gemm kernels
(docs/OperatorKernels.md lists Conv, Gemm and MatMul on CUDA for float types only; QLinearConv is
CPU-only), so on CUDA the model runs as *simulated* quantization: Q and DQ run as CUDA kernels
(QuantizeLinear/DequantizeLinear are registered for int8/uint8 there) and Conv/Gemm compute in float32
on the dequantized values; any node without a CUDA kernel is placed on the CPU with copies in between.
The labels agree with the CPU int8 result up to float rounding, but there is no int8 speed-up and often
a slow-down. onnxruntime's quantization guide says GPU int8 goes through the TensorRT provider
("ONNX Runtime leverages the TensorRT Execution Provider for quantization on GPU"), which we do not use.
Hence our advice, repeated in ``Classifier.notes``: on CUDA load the fp32 ``model.onnx``.

Session options (why each):
- ``session.intra_op.allow_spinning = 0``: by default onnxruntime's worker threads spin after each run
  waiting for the next, keeping every intra-op core busy for a while after a single call. For the
  one-image-at-a-time use of an edge classifier that burns CPU (and battery on a Pi) for nothing; a
  tight loop over many small batches loses a little latency. ``spinning=True`` restores the default.
- ``ORT_SEQUENTIAL`` execution and one inter-op thread: our graphs are a single chain, parallel
  execution of branches has nothing to run in parallel and only adds scheduling.
- ``ORT_ENABLE_ALL`` graph optimisation (the default, stated): needed for the QDQ -> int8 kernel fusion.
- ``intra_op_num_threads``: ``threads`` if given, else onnxruntime's default (one per physical core).
- log severity "error": onnxruntime's own warnings would otherwise print on stderr of every caller.

Strict placement (``strict=True``): even on CUDA, onnxruntime assigns a node with no CUDA kernel to the CPU
and says so only in a silenced log (count them with ``mnist_edge.runtime.placement``). ``strict`` sets its
``session.disable_cpu_ep_fallback``: the CPU provider is then left out of the list and creating the session
fails ("This session contains graph nodes that are assigned to the default CPU EP, but fallback to CPU EP
has been explicitly disabled by the user") when any node would run there, which we turn into a DeviceError.
onnxruntime refuses that option together with an explicit CPU provider, so ``strict`` on ``device="cpu"``
changes nothing (every node runs on the CPU by definition); with ``device="auto"`` it applies to the
CUDA attempt.
"""

from __future__ import annotations

import re

from mnist_edge.system.devices import parse_device
from mnist_edge.errors import ArtifactError, DeviceError, UsageError, first_line

CPU, CUDA = "CPUExecutionProvider", "CUDAExecutionProvider"
CUDA_HELP = ("install the CUDA build of onnxruntime with its CUDA libraries: `pip uninstall onnxruntime && "
             "pip install 'onnxruntime-gpu[cuda,cudnn]'` (onnxruntime-gpu 1.31 needs CUDA 13.x and cuDNN 9.x)")


def _ort():
    import onnxruntime

    return onnxruntime


def session_options(threads: int | None = None, spinning: bool = False, strict: bool = False,
                    profile_prefix: str | None = None):
    """The latency-tuned SessionOptions described in this module's docstring (``strict``: no CPU fallback;
    ``profile_prefix``: profile runs into that path prefix, see mnist_edge.runtime.placement)."""
    ort = _ort()
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
        raise UsageError(f"threads must be a positive integer or None (onnxruntime's default), got {threads!r}")
    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.inter_op_num_threads = 1
    so.intra_op_num_threads = threads or 0
    so.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
    so.log_severity_level = 3
    if strict:
        so.add_session_config_entry("session.disable_cpu_ep_fallback", "1")
        so.log_severity_level = 4  # its refusal is logged as an error too; we raise a DeviceError instead
    if profile_prefix:
        so.enable_profiling = True
        so.profile_file_prefix = profile_prefix
    return so


_IR_RE = re.compile(r"Unsupported model IR version: (\d+), max supported IR version: (\d+)")


def _load_failure(err: Exception, source: str, ir_version: int, opset: int | None) -> ArtifactError:
    """Translate onnxruntime's load error into ours, quoting model and runtime versions where it is one."""
    ort_version = _ort().__version__
    text = str(err)
    m = _IR_RE.search(text)
    if m:
        return ArtifactError(
            f"{source} has ONNX IR version {m.group(1)}, newer than onnxruntime {ort_version} reads (at most IR "
            f"{m.group(2)}): re-export it with an older IR version or upgrade onnxruntime")
    if "opset" in text.lower():
        m = re.search(r"till opset (\d+)", text) or re.search(r"supported (?:opset|version)\D{0,20}(\d+)", text)
        limit = f"at most opset {m.group(1)}" if m else "an older opset"
        return ArtifactError(
            f"{source} uses ONNX opset {opset}, newer than onnxruntime {ort_version} supports ({limit}): "
            "re-export it with `mnist-edge export --opset N` for a lower N, or upgrade onnxruntime")
    first = first_line(err)
    first = re.sub(r"^\[ONNXRuntimeError\] : \d+ : \w+ : (\S+:\d+ )?", "", first)[:300]
    return ArtifactError(f"onnxruntime {ort_version} cannot load {source} (IR {ir_version}, opset {opset}): "
                         f"{first}")


def _create(data: bytes, providers: list, provider_options: list, so):
    ort = _ort()
    return ort.InferenceSession(data, sess_options=so, providers=providers, provider_options=provider_options,
                                enable_fallback=0)


def create_session(data: bytes, *, source: str, device: str = "cpu", threads: int | None = None,
                   spinning: bool = False, ir_version: int = 0, opset: int | None = None, strict: bool = False,
                   profile_prefix: str | None = None):
    """An InferenceSession for the model bytes ``data`` on ``device``; returns (session, device, note).

    ``device`` is the device really used ("cpu" or "cuda:N"); ``note`` says why, for ``auto``.
    ``strict``: fail when any node would fall back to the CPU (module docstring).
    """
    kind, index = parse_device(device)
    so = session_options(threads, spinning, strict=strict and kind != "cpu", profile_prefix=profile_prefix)
    available = _ort().get_available_providers()
    note = ""
    if kind in ("cuda", "auto"):
        if CUDA not in available:
            if kind == "cuda":
                raise DeviceError(
                    f"device {device!r} needs {CUDA}, which this onnxruntime {_ort().__version__} does not have "
                    f"(providers present: {', '.join(available)}); {CUDA_HELP}")
            note = f"auto: CPU, because {CUDA} is not in this onnxruntime (providers: {', '.join(available)})"
        else:
            preload_log = _preload_cuda_libraries()
            cuda_failure = None
            try:
                if strict:  # onnxruntime refuses disable_cpu_ep_fallback next to an explicit CPU provider
                    sess = _create(data, [CUDA], [{"device_id": index}], so)
                else:
                    sess = _create(data, [CUDA, CPU], [{"device_id": index}, {}], so)
            except Exception as e:  # noqa: BLE001 - onnxruntime raises many classes; all are translated
                if strict and _is_cpu_fallback_refusal(e):
                    raise strict_refusal(e, source, device) from None
                if not _mentions_cuda(e):
                    raise _load_failure(e, source, ir_version, opset) from None
                cuda_failure = first_line(e, 200)
            else:
                if sess.get_providers()[0] == CUDA:
                    return sess, f"cuda:{index}", ("auto: CUDA" if kind == "auto" else "")
                cuda_failure = f"the session runs on {sess.get_providers()} only"
            if preload_log:
                cuda_failure += f"; preloading pip's CUDA libraries said: {preload_log}"
            if kind == "cuda":
                raise DeviceError(
                    f"device {device!r}: {CUDA} is in this onnxruntime but did not initialise ({cuda_failure}); "
                    "onnxruntime's log on stderr names the library it could not load. Check that a GPU is "
                    f"visible (nvidia-smi) at index {index} and that the CUDA/cuDNN libraries are installed: "
                    f"{CUDA_HELP}")
            note = f"auto: CPU, because {CUDA} did not initialise ({cuda_failure})"
    if strict and kind == "auto":
        so = session_options(threads, spinning, profile_prefix=profile_prefix)  # the CPU itself is no fallback
    try:
        sess = _create(data, [CPU], [{}], so)
    except Exception as e:  # noqa: BLE001 - onnxruntime raises many classes; all are translated
        raise _load_failure(e, source, ir_version, opset) from None
    if sess.get_providers()[0] != CPU:  # cannot happen with [CPU] alone; checked, not assumed
        raise DeviceError(f"asked for {CPU}, onnxruntime runs {sess.get_providers()}")
    return sess, "cpu", note


def _is_cpu_fallback_refusal(err: Exception) -> bool:
    return "fallback to CPU EP has been explicitly disabled" in str(err)


def strict_refusal(err: Exception, source: str, device: str) -> DeviceError:
    """The DeviceError for onnxruntime's refusal of a strict session (some node would run on the CPU)."""
    return DeviceError(f"{source} on {device!r} with strict placement: onnxruntime would run some nodes on the "
                       "CPU (no kernel for them on the device, or the device's provider did not initialise at all), "
                       "and strict mode forbids that; run without strict to see the nodes counted per provider "
                       "(bench and predict --json report them), or use device 'cpu'")


def _mentions_cuda(err: Exception) -> bool:
    text = str(err).lower()
    return any(w in text for w in ("cuda", "cudnn", "cublas", "gpu", "provider"))


def _preload_cuda_libraries() -> str:
    """Load CUDA/cuDNN from pip's ``nvidia-*`` packages when they are installed; returns what it printed.

    onnxruntime-gpu finds pip-installed CUDA libraries only after ``onnxruntime.preload_dlls()`` (or an
    ``import torch``, which this runtime never does). It prints its progress on stdout, which would
    corrupt ``--json`` output, so that is captured and returned instead.
    """
    import contextlib
    import importlib.util
    import io

    ort = _ort()
    if not hasattr(ort, "preload_dlls") or importlib.util.find_spec("nvidia") is None:
        return ""
    buf = io.StringIO()
    try:
        with contextlib.redirect_stdout(buf):
            ort.preload_dlls()
    except Exception as e:  # noqa: BLE001 - never fatal: the provider check after creation decides
        buf.write(f"{type(e).__name__}: {e}")
    return " ".join(buf.getvalue().split())[:300]
