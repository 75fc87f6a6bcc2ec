"""TorchScript export: the traced EdgeModel, loadable with plain ``torch.jit.load`` (no mnist_edge needed).

torch 2.13 marks ``torch.jit.trace/save/load`` deprecated in favour of ``torch.export``; they still work,
and TorchScript is the format this project promises to C++/LibTorch and mobile users, so the warning is
silenced here (and only here) rather than shown to every user of ``mnist-edge export``.
"""

from __future__ import annotations

import io
import json
import os

from mnist_edge.torchrun import EXTRA_FILE, _no_jit_deprecation, load_torchscript  # noqa: F401 (load_torchscript: public API)


def example_input(batch: int = 2):
    """A deterministic uint8 batch [batch, 1, 28, 28] covering 0..255 (batch >= 2: see export_onnx)."""
    import torch

    return torch.arange(batch * 784, dtype=torch.int64).remainder(256).to(torch.uint8).reshape(batch, 1, 28, 28)


def export_torchscript(edge, path: str | os.PathLike, *, metadata: dict[str, str]) -> None:
    """Trace ``edge`` (an EdgeModel in eval mode) and save it with ``metadata`` as an extra JSON file."""
    import torch

    from mnist_edge.errors import ExportError
    from mnist_edge.errors import first_line

    edge.eval()
    with _no_jit_deprecation(), torch.inference_mode(False), torch.no_grad():
        # check_trace re-runs the trace on the example and compares graphs: catches data-dependent control flow
        try:
            traced = torch.jit.trace(edge, (example_input(3),), check_trace=True)
        except Exception as e:
            raise ExportError(f"torch.jit.trace failed: {type(e).__name__}: {first_line(e)}") from e
        # Saved into memory, then written by Python: on a full disk torch.jit.save's C++ writer aborts the
        # whole process (exit 134); a failed Python write is an OSError we can report.
        buf = io.BytesIO()
        try:
            torch.jit.save(traced, buf, _extra_files={EXTRA_FILE: json.dumps(metadata, sort_keys=True)})
        except RuntimeError as e:
            raise ExportError(f"cannot serialize '{path}': {first_line(e)}") from None
    try:
        with open(path, "wb") as f:
            f.write(strip_debug_info(buf.getvalue()))
    except OSError as e:
        raise ExportError(f"cannot write '{path}': {e.strerror or e}") from None


def strip_debug_info(archive: bytes) -> bytes:
    """The TorchScript archive without its ``*.debug_pkl`` records, rewritten by torch's own zip writer.

    Those records hold the traced Python call stacks: absolute paths of the checkout and the virtualenv.
    ``torch.jit.load`` treats them as optional (they only improve error messages). Writing through a
    buffer also names the archive's top folder ``archive/`` whatever the file is called, so the bytes
    depend only on the model and the versions.
    """
    import torch

    reader = torch._C.PyTorchFileReader(io.BytesIO(archive))
    out = io.BytesIO()
    writer = torch._C.PyTorchFileWriter(out)
    records = reader.get_all_records()
    # torch writes the format version as "version" or (some archives, e.g. with LayerNorm) ".data/version"
    writer.set_min_version(int(reader.get_record("version" if "version" in records else ".data/version")))
    for name in records:
        # the writer adds its own version and serialization id (a hash of what it wrote)
        if name.endswith(".debug_pkl") or name in ("version", ".data/version", ".data/serialization_id"):
            continue
        data = reader.get_record(name)
        writer.write_record(name, data, len(data))
    writer.write_end_of_file()
    del writer
    return out.getvalue()
