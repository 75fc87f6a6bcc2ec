"""How one training run goes (seed, device, output, how much it reports) and what it gives back.

What is trained and how (the network, the recipe, the data, the contract) are :func:`mnist_edge.training.loop.train`'s
arguments; this dataclass holds only the settings of the run. Values are checked when it is made, so a bad
``--threads`` is a UsageError before any data is touched. Torch-free.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from mnist_edge.errors import UsageError


@dataclass(frozen=True)
class TrainOptions:
    """The settings of one run; the defaults train on the CPU and write nothing.

    ``out``: the checkpoint path to write (None: nothing is written), with the curves PNG beside it when
    ``plot``. ``limit_train``: train on the first N images of the (shuffled) training split only.
    ``test_each_epoch``: score the test set after every epoch for the curves (it never chooses the model);
    False scores it once, at the end. ``progress`` receives one-line messages: what is starting, the
    precision, whether other processes kept the machine busy, and one line per epoch unless ``bar``
    draws a tqdm bar per epoch (on stderr, where tqdm is installed). ``recipe_name``: the recipe's name in
    the registry (``seed``, ``fast``), recorded in the checkpoint's metrics; None for a recipe of one's own.
    """

    seed: int = 0
    device: str = "cpu"  # cpu, cuda or cuda:N; an absent CUDA is an error, never a silent CPU run
    out: Path | None = None
    limit_train: int | None = None
    plot: bool = True
    threads: int | None = None  # torch CPU threads; None: torch's choice
    test_each_epoch: bool = True
    progress: Callable[[str], None] | None = None
    bar: bool = False
    recipe_name: str | None = None

    def __post_init__(self):
        for flag, value in (("--threads", self.threads), ("--limit-train", self.limit_train)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise UsageError(f"{flag} must be a positive integer, got {value!r}")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise UsageError(f"--seed must be an integer from 0 to 2**63-1, got {self.seed!r}")
        if self.progress is not None and not callable(self.progress):
            raise UsageError(f"progress must be a callable taking a message, or None; got {self.progress!r}")
        if self.out is not None:
            object.__setattr__(self, "out", Path(self.out))

    def say(self, message: str) -> None:
        """Hand ``message`` to ``progress`` (nothing when it is None)."""
        if self.progress is not None:
            self.progress(message)


@dataclass
class TrainResult:
    net: object  # the selected torch.nn.Module, in eval mode, on the CPU (with EMA: the average, not the input)
    checkpoint: Path | None
    history: list  # one dict per epoch: epoch, lr, train_loss, train_acc, seconds [, val_*, test_*]
    test_accuracy: float  # percent, full test set, selected model
    selected: str  # "final" or "val_loss@<epoch>"
    seconds: float
    other_load_cores: float | None = None  # CPUs other processes kept busy meanwhile (None: unknown, or GPU)
