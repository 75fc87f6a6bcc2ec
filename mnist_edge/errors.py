"""The project's exception classes: every user-facing failure is one of these."""


class MnistEdgeError(Exception):
    """Base class; the CLI prints its message on one line and exits non-zero."""


class UsageError(MnistEdgeError):
    """A bad option or argument value (names the value and the valid choices)."""


class UnknownModelError(UsageError):
    """A model name that is not in the registry."""


class MissingExtraError(MnistEdgeError):
    """A command needs an optional extra that is not installed (names the pip install)."""


class DataError(MnistEdgeError):
    """MNIST files missing, malformed or failing their checksum."""


class DataNotFoundError(DataError):
    """The MNIST files are not where we looked (says where to put them)."""


class IdxFormatError(DataError):
    """An IDX file whose header or body is not what MNIST's format requires."""


class ChecksumError(DataError):
    """A file whose SHA-256 differs from the known value."""


class DownloadError(DataError):
    """A download that failed, was truncated or oversized."""


class CheckpointError(MnistEdgeError):
    """A checkpoint that is missing, not weights-only or not ours."""


class TrainingError(MnistEdgeError):
    """Training that cannot give a usable model (e.g. the loss became NaN or infinite)."""


class WriteError(MnistEdgeError):
    """A file that could not be written (disk full, read-only, I/O error); the previous file is unchanged."""


class ExportError(MnistEdgeError):
    """An export step that failed."""


class GateError(ExportError):
    """A parity gate that failed: lists every check that did not pass."""


class ArtifactError(MnistEdgeError):
    """An exported artifact (ONNX, manifest) that is missing, tampered or not loadable."""


class ContractError(ArtifactError):
    """A model whose input/output contract or metadata differs from ours."""


class InputError(MnistEdgeError):
    """An input array or image file that the runtime cannot classify."""


class DeviceError(MnistEdgeError):
    """A requested device/provider that is not available."""


class SelfTestError(ArtifactError):
    """An artifact whose outputs on its own self-test images moved beyond the stated tolerance."""


def first_line(e: BaseException, limit: int | None = None) -> str:
    """The first line of an exception's text (at most ``limit`` characters), or its class name when empty:
    what a one-line error quotes from a library's own exception."""
    text = str(e).strip()
    return text.splitlines()[0][:limit] if text else type(e).__name__
