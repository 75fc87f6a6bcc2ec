"""The oracle an export is gated against: PyTorch for a network (the EdgeModel: the network with the
contract's preprocessing), or, for a float ONNX file made elsewhere, that file as it was given, run by
onnxruntime on the same preprocessing done in numpy. Both answer logits for raw uint8 images."""

from __future__ import annotations

import numpy as np


class TorchReference:
    """PyTorch eager on the EdgeModel, one thread (the gates' and the self-test bundle's reference)."""

    name = "pytorch"  # the key of its outputs in the manifest
    label = "PyTorch"

    def __init__(self, edge):
        self.edge = edge

    @property
    def temperature(self) -> float:
        return self.edge.temperature

    @temperature.setter
    def temperature(self, t: float) -> None:
        self.edge.temperature = t  # the graphs carry it: set before they are written

    def logits(self, images: np.ndarray, batch: int) -> np.ndarray:
        from mnist_edge.torchrun import torch_logits, torch_threads

        with torch_threads(1):
            return torch_logits(self.edge, images, batch)


class OnnxReference:
    """The user's own float ONNX file run by onnxruntime (1 thread): input [N, 1, S, S] normalized float32."""

    name = "source.onnx"
    label = "your ONNX file (onnxruntime)"

    def __init__(self, model_bytes: bytes, input_name: str, contract, source: str):
        from mnist_edge.runtime.session import create_session

        self.session, _, _ = create_session(model_bytes, source=source, threads=1)
        self.input_name, self.contract, self.temperature = input_name, contract, 1.0

    def prepare(self, images: np.ndarray) -> np.ndarray:
        """uint8 [N, 1, 28, 28] -> what the network takes, computed as the wrapped graph does (float32)."""
        c = self.contract
        x = images.astype(np.float32) / np.float32(255)
        if c.pad:
            x = np.pad(x, ((0, 0), (0, 0), (c.pad, c.pad), (c.pad, c.pad)))
        if c.channels != 1:
            x = np.repeat(x, c.channels, axis=1)
        return (x - np.float32(c.mean)) / np.float32(c.std)

    def logits(self, images: np.ndarray, batch: int) -> np.ndarray:
        parts = [self.session.run(None, {self.input_name: self.prepare(images[i:i + batch])})[0]
                 for i in range(0, len(images), batch)]
        return np.concatenate(parts).astype(np.float32, copy=False)
