"""A user's own network, written as a user would: conv + BN, a residual Add, a depthwise conv, adaptive pooling."""

import torch
import torch.nn as nn


class ResidualNet(nn.Module):
    def __init__(self, width: int = 8, classes: int = 10):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU())
        self.depthwise = nn.Conv2d(width, width, 3, padding=1, groups=width)
        self.pointwise = nn.Conv2d(width, width, 1)
        self.pool = nn.AdaptiveAvgPool2d(4)
        self.head = nn.Linear(width * 16, classes)

    def forward(self, x):
        x = self.stem(x)
        x = x + torch.relu(self.pointwise(self.depthwise(x)))  # residual Add
        return self.head(self.pool(x).flatten(1))
