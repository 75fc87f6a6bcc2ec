"""More users' networks: LayerNorm and GELU, a 32x32 input, 26 classes (letters), three input channels."""

import torch.nn as nn


class NormGeluMlp(nn.Module):
    def __init__(self, hidden: int = 64):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(784, hidden), nn.LayerNorm(hidden), nn.GELU(),
                                  nn.Linear(hidden, 10))

    def forward(self, x):
        return self.body(x)


class Net32(nn.Module):
    """Takes 32x32 (as LeNet-5 does): the exported graph pads the 28x28 digit."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 6, 5)  # 32 -> 28
        self.pool = nn.MaxPool2d(4)  # 28 -> 7
        self.fc = nn.Linear(6 * 7 * 7, 10)

    def forward(self, x):
        return self.fc(self.pool(self.conv(x).relu()).flatten(1))


class Letters(nn.Module):
    """26 outputs: one per letter (EMNIST letters style)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 3, stride=2)
        self.fc = nn.Linear(4 * 13 * 13, 26)

    def forward(self, x):
        return self.fc(self.conv(x).relu().flatten(1))


class ThreeChannel(nn.Module):
    """Takes 3 channels (as a colour network would): the exported graph puts the grey digit into each."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, stride=2)
        self.fc = nn.Linear(4 * 13 * 13, 10)

    def forward(self, x):
        return self.fc(self.conv(x).relu().flatten(1))
