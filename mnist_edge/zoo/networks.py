"""The networks of the zoo (torch), and the wrapper that gives each one the exported input contract.

Every network takes normalized float32 [N, 1, S, S] (S = 28, or 32 for LeNet) and returns logits [N, 10].
``EdgeModel`` wraps a network so it takes the contract's uint8 [N, 1, 28, 28] and returns (logits,
probabilities); training uses the same ``EdgeModel.prepare`` so the exported graph and the trained
network see identical pixels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mnist_edge.zoo.registry import ModelSpec, get_spec


class CnnSmall(nn.Module):
    """Seed 000: conv 10 k5 p1 -> pool [-> conv 20 k5 p1 -> pool] -> FC 50 -> 10."""

    def __init__(self, convs: int = 2):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 10, 5, padding=1)  # 28 -> 26, pool -> 13
        self.conv2 = nn.Conv2d(10, 20, 5, padding=1) if convs == 2 else None  # 13 -> 11, pool -> 5
        self.fc1 = nn.Linear(500 if convs == 2 else 1690, 50)
        self.fc2 = nn.Linear(50, 10)

    def forward(self, x):
        x = F.relu(F.max_pool2d(self.conv1(x), 2))
        if self.conv2 is not None:
            x = F.relu(F.max_pool2d(self.conv2(x), 2))
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


class Mlp(nn.Module):
    """Seeds 001/004: 784 -> hidden... -> 10, ReLU, optional dropout after each hidden layer."""

    def __init__(self, hidden=(128, 64), dropout: float = 0.0):
        super().__init__()
        layers, width = [], 784
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU()] + ([nn.Dropout(dropout)] if dropout else [])
            width = h
        self.body = nn.Sequential(*layers, nn.Linear(width, 10))

    def forward(self, x):
        return self.body(x.flatten(1))


class ConvPoolFc(nn.Module):
    """Seeds 001/004: two (conv k3 p1, ReLU, pool 2) stages, then FC c2*7*7 -> 128 -> 64 -> 10."""

    def __init__(self, channels=(32, 64), dropout: float = 0.0):
        super().__init__()
        c1, c2 = channels
        self.conv1 = nn.Conv2d(1, c1, 3, padding=1)  # 28 -> 28, pool -> 14
        self.conv2 = nn.Conv2d(c1, c2, 3, padding=1)  # 14 -> 14, pool -> 7
        self.fc1, self.fc2, self.fc3 = nn.Linear(c2 * 49, 128), nn.Linear(128, 64), nn.Linear(64, 10)
        self.drop = nn.Dropout(dropout) if dropout else nn.Identity()

    def forward(self, x):
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = self.drop(x.flatten(1))
        x = self.drop(F.relu(self.fc1(x)))
        x = self.drop(F.relu(self.fc2(x)))
        return self.fc3(x)


def _cbr(cin: int, cout: int, k: int, pad: int = 0, dropout: float = 0.0, stride: int = 1) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, k, stride=stride, padding=pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU()]
    return nn.Sequential(*layers, *([nn.Dropout(dropout)] if dropout else []))


class BnCnn(nn.Module):
    """Seed 002's layer table; comments give the feature-map size after each block."""

    def __init__(self, channels=(16, 32, 16, 20, 20, 16, 32), dropout: float = 0.1):
        super().__init__()
        c1, c2, c3, c4, c5, c6, c7 = channels
        self.features = nn.Sequential(
            _cbr(1, c1, 3, dropout=dropout),  # 26
            _cbr(c1, c2, 3, dropout=dropout),  # 24
            nn.MaxPool2d(2),  # 12
            _cbr(c2, c3, 1),  # 12 (1x1 channel reduction)
            _cbr(c3, c4, 3, pad=1),  # 12
            _cbr(c4, c5, 3),  # 10
            nn.MaxPool2d(2),  # 5
            _cbr(c5, c6, 1),  # 5 (1x1 channel reduction)
            _cbr(c6, c7, 3),  # 3
            nn.Conv2d(c7, 10, 3, bias=False),  # 1, no activation
        )

    def forward(self, x):
        return self.features(x).flatten(1)


class LeNet5(nn.Module):
    """Classic LeNet-5 on 32x32: C1 6@28, S2 avgpool 14, C3 16@10, S4 5, FC 120-84-10, tanh."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)
        self.fc1, self.fc2, self.fc3 = nn.Linear(400, 120), nn.Linear(120, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = F.avg_pool2d(torch.tanh(self.conv1(x)), 2)
        x = F.avg_pool2d(torch.tanh(self.conv2(x)), 2)
        x = torch.tanh(self.fc1(x.flatten(1)))
        return self.fc3(torch.tanh(self.fc2(x)))


class LeNet5Mod(nn.Module):
    """Seed 003's modified LeNet (our reading, see the registry): four convs, tanh, maxpool, two FC."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = nn.Conv2d(1, 6, 5), nn.Conv2d(6, 16, 5)  # 32->28->14, 14->10->5
        self.conv3 = nn.Conv2d(16, 120, 3, padding=1)  # 5
        self.conv4 = nn.Conv2d(120, 50, 3, padding=1)  # 5, pool -> 2
        self.fc1, self.fc2 = nn.Linear(200, 84), nn.Linear(84, 10)

    def forward(self, x):
        x = F.max_pool2d(torch.tanh(self.conv1(x)), 2)
        x = F.max_pool2d(torch.tanh(self.conv2(x)), 2)
        x = torch.tanh(self.conv3(x))
        x = F.max_pool2d(torch.tanh(self.conv4(x)), 2)
        return self.fc2(torch.tanh(self.fc1(x.flatten(1))))


class EdgeNet(nn.Module):
    """Our own edge model (no seed): padded 3x3 conv-BN-ReLU blocks keep every border pixel; a stride-2 conv
    (``first_down="stride"``, or conv + max-pool) then a max-pool bring 28x28 to 7x7, and global average
    pooling makes a digit moved by a few pixels give nearly the same features."""

    def __init__(self, channels=(8, 16, 24, 24, 40), first_down: str = "pool"):
        super().__init__()
        c1, c2, c3, c4, c5 = channels
        if first_down == "pool":  # conv at 28x28, then max-pool
            stage1 = [_cbr(1, c1, 3, pad=1), _cbr(c1, c2, 3, pad=1), nn.MaxPool2d(2)]
        elif first_down == "stride":  # the second conv computes only every other pixel: a quarter of its work
            stage1 = [_cbr(1, c1, 3, pad=1), _cbr(c1, c2, 3, pad=1, stride=2)]
        else:
            raise ValueError(f"first_down {first_down!r}: 'pool' or 'stride'")
        self.features = nn.Sequential(
            *stage1,  # 28 -> 14
            _cbr(c2, c3, 3, pad=1), _cbr(c3, c4, 3, pad=1), nn.MaxPool2d(2),  # 14 -> 7
            _cbr(c4, c5, 3, pad=1),  # 7
        )
        self.head = nn.Linear(c5, 10)

    def forward(self, x):
        return self.head(self.features(x).mean((2, 3)))


NETS = {cls.__name__: cls for cls in (CnnSmall, Mlp, ConvPoolFc, BnCnn, LeNet5, LeNet5Mod, EdgeNet)}


class EdgeModel(nn.Module):
    """The exported contract: uint8 image [N, 1, 28, 28] -> (logits, probabilities), float32 [N, 10].

    ``temperature`` T (fitted at export by :mod:`mnist_edge.exporter.temperature`, never on test images) makes
    probabilities = softmax(logits / T); the logits are the network's, unchanged. A plain float: tracing
    and the ONNX exporter bake it into the graph as a constant.
    """

    def __init__(self, net: nn.Module, mean: float, std: float, input_size: int = 28, temperature: float = 1.0,
                 channels: int = 1):
        super().__init__()
        self.net = net
        self.mean, self.std, self.pad = float(mean), float(std), (input_size - 28) // 2
        self.temperature = float(temperature)
        self.channels = int(channels)  # > 1: a network that takes C channels gets the grey digit in each

    @classmethod
    def of(cls, net: nn.Module, contract, temperature: float = 1.0) -> "EdgeModel":
        """``net`` wrapped in ``contract`` (a :class:`mnist_edge.contract.Contract`)."""
        return cls(net, contract.mean, contract.std, contract.input_size, temperature, contract.channels)

    def prepare(self, x01: torch.Tensor) -> torch.Tensor:
        """Float pixels in [0, 1], [N, 1, 28, 28] -> the network's normalized input [N, C, S, S]."""
        if self.pad:
            x01 = F.pad(x01, (self.pad,) * 4)  # zero = background, before normalizing
        if self.channels != 1:
            x01 = x01.expand(-1, self.channels, -1, -1)
        return (x01 - self.mean) / self.std

    def forward(self, image: torch.Tensor):
        logits = self.net(self.prepare(image.to(torch.float32) / 255.0))
        scaled = logits / self.temperature if self.temperature != 1.0 else logits  # T = 1: the graph as before
        return logits, torch.softmax(scaled, dim=1)


def build_net(name: str) -> nn.Module:
    """A freshly initialised network for registry entry ``name``."""
    spec = get_spec(name)
    return NETS[spec.net](**spec.kwargs)


def build_edge_model(spec: ModelSpec, net: nn.Module | None = None, temperature: float = 1.0) -> EdgeModel:
    """Wrap ``net`` (or a fresh one) in the contract for ``spec``, its probabilities at ``temperature``."""
    return EdgeModel(net if net is not None else NETS[spec.net](**spec.kwargs), spec.mean, spec.std,
                     spec.input_size, temperature)


def count_params(net: nn.Module) -> int:
    """Trainable parameters (what torchsummary and the seeds count)."""
    return sum(p.numel() for p in net.parameters() if p.requires_grad)


def count_macs(net: nn.Module, input_size: int = 28) -> int:
    """Multiply-accumulates per image of the convolutions and linear layers."""
    macs = 0

    def hook(mod, inp, out):
        nonlocal macs
        if isinstance(mod, nn.Conv2d):
            macs += out.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, nn.Linear):
            macs += out.numel() * mod.in_features

    handles = [m.register_forward_hook(hook) for m in net.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        was_training = net.training
        net.eval()
        with torch.no_grad():
            net(torch.zeros(1, 1, input_size, input_size))
        net.train(was_training)
    finally:
        for h in handles:
            h.remove()
    return macs
