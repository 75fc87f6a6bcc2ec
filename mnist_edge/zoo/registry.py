"""The model zoo: one plain dict of every model the seed documents describe, with its recipe.

Importing this module does not import torch: a spec names its network class in ``mnist_edge.zoo.networks``
and its constructor arguments, and ``build_model`` imports torch only when asked to build.
"""

from __future__ import annotations

import difflib
from dataclasses import asdict, dataclass, field

from mnist_edge.contract import MNIST_MEAN, MNIST_STD, Contract
from mnist_edge.errors import UnknownModelError


@dataclass(frozen=True)
class Recipe:
    """How a seed trains its model. Fields the seed does not state are our documented choice."""

    optimizer: str  # "sgd" | "adam"
    lr: float
    batch_size: int
    epochs: int
    momentum: float = 0.0
    step_size: int | None = None  # StepLR step (epochs); None: constant learning rate
    gamma: float = 0.1
    schedule: str = "step"  # "step": StepLR when step_size is set; "onecycle": OneCycleLR peaking at lr
    warmup: float = 0.25  # onecycle: share of the steps spent rising to lr
    weight_decay: float = 0.0
    nesterov: bool = False
    label_smoothing: float = 0.0
    channels_last: bool = False  # NHWC activations (oneDNN's faster layout for these convolutions)
    bf16: bool = False  # forward and backward under bfloat16 autocast where the device has it in hardware
    ema: float = 0.0  # > 0: the model is the exponential moving average of the weights (this decay per step)
    augment: str | None = None  # name in mnist_edge.training.augment.AUGMENTATIONS
    augment_tail: int = 0  # the final epochs augment only a share of the images ...
    augment_tail_share: float = 0.0  # ... this share (0: train on the digits as they are)
    augment_tail_with: str | None = None  # ... with this augmentation instead of ``augment`` (None: the same)
    val_size: int = 0  # images held out of the 60k training set for validation
    split_seed: int | None = None  # seed of that split; None: the training seed (then every seed holds out others)
    select: str = "final"  # "final" epoch, or "val_loss": checkpoint with the lowest validation loss
    reestimate_bn: bool = False  # then: batch-norm statistics re-estimated on the clean training images
    notes: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ModelSpec:
    name: str
    seed_file: str
    description: str
    net: str  # class name in mnist_edge.zoo.networks
    kwargs: dict = field(default_factory=dict)
    documented_accuracy: float | None = None  # percent, on the 10k test set
    documented_params: int | None = None
    param_tolerance: float = 0.0  # relative; 0 means the count must match exactly
    input_size: int = 28  # 32: the graph pads the 28x28 image by 2 pixels each side
    mean: float = MNIST_MEAN
    std: float = MNIST_STD
    recipe: Recipe = None  # type: ignore[assignment]
    reading: str = ""  # how we read a seed where it is ambiguous
    # What torch counts on the built network (mnist_edge.zoo.networks.count_params / count_macs; a test keeps
    # these equal), stored so `mnist-edge list` shows them where torch is not installed.
    params: int = 0  # trainable parameters
    macs: int = 0  # multiply-accumulates per image of the convolutions and linear layers

    def to_dict(self) -> dict:
        d = asdict(self)
        d["recipe"] = self.recipe.to_dict()
        return d

    @property
    def contract(self) -> Contract:
        """The input/output contract of this model's exported files."""
        return Contract(input_size=self.input_size, mean=self.mean, std=self.std)


_ADAM_001 = dict(optimizer="adam", lr=1e-3)
# Seed 004 holds out 12k of the 60k training images and keeps the epoch with the lowest validation loss.
_SEED4 = Recipe(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=20, epochs=20, val_size=12_000,
                select="val_loss",
                notes="seed: 20 epochs, 48k/12k split, dropout 0.2; its notebook uses batch 20, ToTensor() only "
                      "(pixels in [0,1]) and keeps the lowest-validation-loss model; SGD 0.01 momentum 0.9 is ours")

# Seed 000 states batch 32 and 10 epochs; the constant-rate Adam of its course reached 98.82% (final
# epoch, full 60k), short of the seed's ">99% with the full dataset", so we added one step decay.
_SEED0 = Recipe(**_ADAM_001, batch_size=32, epochs=10, step_size=6, gamma=0.1,
                notes="seed: batch 32, 10 epochs, pixels scaled to [0,1]; Adam 1e-3 is the course's optimizer. "
                      "Our change: StepLR(6, 0.1); without it the final epoch reached 98.82%, below the seed's "
                      ">99% (full 60k training set)")

MODELS: dict[str, ModelSpec] = {
    s.name: s
    for s in [
        ModelSpec(
            name="cnn_small", seed_file="000_944f530ba93fd2b3.txt",
            params=30_840, macs=799_500,
            description="conv 1-10 k5 p1, maxpool, conv 10-20 k5 p1, maxpool, FC 500-50-10",
            net="CnnSmall", kwargs={"convs": 2}, documented_accuracy=99.0, documented_params=30_840,
            mean=0.0, std=1.0,
            recipe=_SEED0,
        ),
        ModelSpec(
            name="cnn_small_1conv", seed_file="000_944f530ba93fd2b3.txt",
            params=85_320, macs=254_000,
            description="seed 000 with conv2 commented out: conv 1-10 k5 p1, maxpool, FC 1690-50-10",
            net="CnnSmall", kwargs={"convs": 1}, mean=0.0, std=1.0,
            recipe=_SEED0,
            reading="Removing conv2 and maxpool2 leaves 10 maps of 13x13 after maxpool1, so fc1 takes "
                    "1690 inputs (the 'what else needs to change' of the seed's exercise): 85,320 parameters.",
        ),
        ModelSpec(
            name="mlp", seed_file="001_7203c5966efc06a5.txt",
            params=109_386, macs=109_184, description="MLP 784-128-64-10, ReLU",
            net="Mlp", kwargs={"hidden": (128, 64), "dropout": 0.0}, documented_accuracy=97.42,
            documented_params=109_386,
            recipe=Recipe(**_ADAM_001, batch_size=64, epochs=5, notes="seed: Adam 1e-3, batch 64, 5 epochs"),
        ),
        ModelSpec(
            name="cnn", seed_file="001_7203c5966efc06a5.txt",
            params=429_258, macs=4_248_704,
            description="conv 1-32 k3 p1, pool, conv 32-64 k3 p1, pool, FC 3136-128-64-10",
            net="ConvPoolFc", kwargs={"channels": (32, 64), "dropout": 0.0}, documented_accuracy=98.88,
            documented_params=429_258,
            recipe=Recipe(**_ADAM_001, batch_size=64, epochs=5, notes="seed: Adam 1e-3, batch 64, 5 epochs"),
        ),
        ModelSpec(
            name="bn_cnn", seed_file="002_9266c06796001910.txt",
            params=19_856, macs=3_652_352,
            description="conv-BN-ReLU blocks, dropout 0.1, two maxpools, 1x1 reductions, no FC",
            net="BnCnn", kwargs={"channels": (16, 32, 16, 20, 20, 16, 32), "dropout": 0.1},
            documented_accuracy=99.4, documented_params=19_865, param_tolerance=0.05,
            recipe=Recipe(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=128, epochs=20, step_size=15,
                          gamma=0.1, augment="seed002",
                          notes="seed: SGD 0.01 momentum 0.9, StepLR(15, 0.1), 20 epochs, rotation/resize/"
                                "crop augmentation; batch 128 is ours"),
            reading="Channels 16,32 | pool | 1x1->16, 20, 20 | pool | 1x1->16, 32, 10 (3x3 convs, no bias, "
                    "BN after each but the last) give feature maps 26,24,12,12,12,10,5,5,3,1 and 19,856 "
                    "parameters (seed: 19,865).",
        ),
        ModelSpec(
            name="lenet5", seed_file="003_a7901b0c1cf9c3e4.txt",
            params=61_706, macs=416_520,
            description="LeNet-5: conv 6 k5, avgpool, conv 16 k5, avgpool, FC 400-120-84-10, tanh; 32x32 input",
            net="LeNet5", kwargs={}, documented_accuracy=97.0, documented_params=61_706, input_size=32,
            recipe=Recipe(**_ADAM_001, batch_size=600, epochs=6,
                          notes="seed: batch 600, 6 epochs; Adam 1e-3 is ours"),
            reading="Classic LeNet-5 (tanh, 2x2 average pooling, full C3 connections); the 28x28 image is "
                    "zero-padded to 32x32 inside the model.",
        ),
        ModelSpec(
            name="lenet5_mod", seed_file="003_a7901b0c1cf9c3e4.txt",
            params=91_756, macs=2_157_240,
            description="modified LeNet: four convs (6, 16, 120, 50 maps), tanh, maxpool, FC 200-84-10",
            net="LeNet5Mod", kwargs={}, documented_accuracy=98.49, input_size=32,
            recipe=Recipe(**_ADAM_001, batch_size=600, epochs=6,
                          notes="seed: batch 600, 6 epochs (as the initial model); Adam 1e-3 is ours"),
            reading="conv 1-6 k5 (28), maxpool (14), conv 6-16 k5 (10), maxpool (5), conv 16-120 k3 p1 (5), "
                    "the added fourth conv 120-50 k3 p1 (5), maxpool (2), then two FC layers 200-84-10 "
                    "instead of LeNet's three; tanh throughout and max pooling instead of average pooling.",
        ),
        ModelSpec(
            name="mlp_wide", seed_file="004_3902f4c7642bc978.txt",
            params=535_818, macs=535_040, description="MLP 784-512-256-10, dropout 0.2",
            net="Mlp", kwargs={"hidden": (512, 256), "dropout": 0.2}, documented_accuracy=98.0,
            documented_params=535_818, mean=0.0, std=1.0, recipe=_SEED4,
        ),
        ModelSpec(
            name="cnn_dropout", seed_file="004_3902f4c7642bc978.txt",
            params=214_538, macs=1_225_600,
            description="conv 1-16 k3 p1, pool, conv 16-32 k3 p1, pool, FC 1568-128-64-10, dropout 0.2",
            net="ConvPoolFc", kwargs={"channels": (16, 32), "dropout": 0.2}, documented_accuracy=99.0,
            documented_params=214_538, mean=0.0, std=1.0, recipe=_SEED4,
        ),
        ModelSpec(
            name="edge_cnn", seed_file="",
            params=19_138, macs=2_399_440,
            description="ours (no seed): padded conv-BN-ReLU 8, 16 with stride 2 | 24, 24 | pool | 40, global "
                        "average pool, FC 40-10; trained on warped, re-stroked and noisy digits",
            net="EdgeNet", kwargs={"channels": (8, 16, 24, 24, 40), "first_down": "stride"},
            recipe=Recipe(optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True, weight_decay=5e-4,
                          schedule="onecycle", warmup=0.2, batch_size=128, epochs=80, label_smoothing=0.05,
                          augment="edge", augment_tail=13, augment_tail_share=0.5, channels_last=True,
                          val_size=5_000, split_seed=0, ema=0.999, reestimate_bn=True,
                          notes="ours: SGD Nesterov one-cycle peaking at 0.1, batch 128, 80 epochs, label "
                                "smoothing 0.05, the 'edge' augmentation (on half of the images in the last "
                                "13 epochs), the model is the moving average of the weights (decay 0.999) "
                                "after the final epoch, its batch-norm statistics then re-estimated on the "
                                "clean training images; 5,000 training images held out (never trained on, the "
                                "same ones for every seed) for choosing between runs and for the temperature"),
            reading="Padded convolutions keep a moved digit whole and global average pooling makes the head "
                    "indifferent to where a feature fires, so shifts cost little; training on warped (rotation "
                    "±15°, scale 0.85-1.15, shift ±2 px), thinned, thickened and noisy digits covers the rest. "
                    "Under 20,000 parameters and two thirds of bn_cnn's multiply-accumulates, so it fits where bn_cnn "
                    "fits; 5,000 held-out training images give it a temperature that transfers.",
        ),
    ]
}


def get_spec(name: str) -> ModelSpec:
    """The registry entry for ``name`` (case-insensitive: ``BN_CNN`` is ``bn_cnn``), or an error listing the
    valid names and the closest match."""
    try:
        return MODELS[name] if name in MODELS else MODELS[str(name).lower()]
    except KeyError:
        close = difflib.get_close_matches(str(name).lower(), MODELS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise UnknownModelError(
            f"unknown model '{name}'.{hint} Valid models: {', '.join(MODELS)}"
        ) from None
