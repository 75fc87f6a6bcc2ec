"""Pictures, written atomically as PNG: training curves, confusion matrices, misclassified digits, the zoo.

matplotlib (the ``train`` extra) is imported inside each function, with the Agg backend (no display).
"""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np

GALLERY_MAX = 60  # misclassified digits shown per gallery (the least confident first would hide the worst)
FORMAT_STYLE = {"ONNX fp32": ("tab:blue", "o"), "ONNX int8": ("tab:orange", "s")}


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path, dpi=100) -> Path:
    from mnist_edge.files import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi)
    _pyplot().close(fig)
    return Path(path)


def plot_history(history: list[dict], path: str | Path, title: str = "") -> Path:
    """Loss and accuracy per epoch (train, val, test where recorded); whole-epoch ticks, values labelled
    when there are only a few epochs (one epoch is one point, not an empty frame)."""
    from matplotlib.ticker import MaxNLocator

    plt = _pyplot()
    epochs = [h["epoch"] for h in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4))
    for split in ("train", "val", "test"):
        if f"{split}_loss" not in history[0]:
            continue
        for ax, key, fmt in ((ax_loss, f"{split}_loss", "{:.3f}"), (ax_acc, f"{split}_acc", "{:.2f}%")):
            values = [h[key] for h in history]
            ax.plot(epochs, values, marker="o", label=split)
            if len(history) <= 3:
                for e, v in zip(epochs, values):
                    ax.annotate(fmt.format(v), (e, v), textcoords="offset points", xytext=(6, 4), fontsize=8)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy loss", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (ax_loss, ax_acc):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        if len(epochs) == 1:  # one point in the middle, its tick alone
            ax.set_xlim(epochs[0] - 1, epochs[0] + 1)
            ax.set_xticks(epochs)
        if len(history) <= 3:
            ax.margins(y=0.15)  # room for the value labels
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def confusion_matrix(truth: np.ndarray, predicted: np.ndarray, classes: int = 10) -> np.ndarray:
    """int64 [classes, classes]: row = true class, column = predicted class."""
    m = np.zeros((classes, classes), np.int64)
    np.add.at(m, (np.asarray(truth, np.int64), np.asarray(predicted, np.int64)), 1)
    return m


def plot_confusion(matrices: dict[str, np.ndarray], path: str | Path, title: str = "") -> Path:
    """One panel per precision ({"fp32": matrix, ...}): counts in every cell, errors coloured on their own
    scale (the diagonal, ~1,000 per class, would wash out the few dozen errors), the diagonal grey."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(matrices), figsize=(5.2 * len(matrices), 5), squeeze=False)
    for ax, (name, m) in zip(axes[0], matrices.items()):
        off = m.astype(float).copy()
        np.fill_diagonal(off, np.nan)
        vmax = max(1.0, float(np.nanmax(off)))
        ax.imshow(off, cmap="Reds", vmin=0, vmax=vmax)
        errors = int(m.sum() - np.trace(m))
        for i in range(m.shape[0]):
            ax.add_patch(plt.Rectangle((i - 0.5, i - 0.5), 1, 1, color="0.85"))
            for j in range(m.shape[1]):
                if m[i, j] or i == j:
                    dark = i != j and m[i, j] > 0.6 * vmax
                    ax.text(j, i, str(m[i, j]), ha="center", va="center", fontsize=7 if i == j else 8,
                            color="white" if dark else "black")
        ax.set(xticks=range(10), yticks=range(10), xlabel="predicted", ylabel="true",
               title=f"{name}: {errors} errors in {int(m.sum()):,} test images")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    return _save(fig, path)


def plot_gallery(images: np.ndarray, captions: list[str], path: str | Path, title: str, columns: int = 10) -> Path:
    """A grid of 28x28 digits (ink dark on white, as people write) with a caption under each."""
    plt = _pyplot()
    n = max(1, len(images))
    columns = max(4, min(columns, n))
    rows = -(-n // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(columns * 1.15, rows * 1.3 + 0.6), squeeze=False)
    for k, ax in enumerate(axes.ravel()):
        ax.axis("off")
        if k < len(images):
            ax.imshow(255 - images[k], cmap="gray", vmin=0, vmax=255)
            ax.set_title(captions[k], fontsize=7, pad=2)
    if not len(images):
        axes[0, 0].text(0, 0.5, "none", fontsize=10)
    fig.suptitle(textwrap.fill(title, 12 * columns), fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    return _save(fig, path)


def plot_zoo(points: list[dict], path: str | Path, title: str = "") -> Path:
    """Accuracy against batch-1 latency, one point per model and format; the marker's area is the file size.

    points: {"model", "format" (a FORMAT_STYLE key), "latency_ms", "accuracy", "size_bytes"}.
    """
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 6))
    biggest = max(p["size_bytes"] for p in points)
    area = lambda size: 40 + 1400 * size / biggest  # noqa: E731 (points^2, proportional above a visible floor)
    by_model: dict[str, list[dict]] = {}
    for p in points:
        by_model.setdefault(p["model"], []).append(p)
    for model, ps in by_model.items():
        ps = sorted(ps, key=lambda p: p["format"])
        ax.plot([p["latency_ms"] for p in ps], [p["accuracy"] for p in ps], color="0.7", lw=0.8, zorder=1)
        top = max(ps, key=lambda p: area(p["size_bytes"]))
        lift = 4 + 0.5 * np.sqrt(area(top["size_bytes"]))  # above the marker's edge (area is in points^2)
        ax.annotate(model, (top["latency_ms"], top["accuracy"]), textcoords="offset points", xytext=(0, lift),
                    ha="center", fontsize=8)
    for fmt, (color, marker) in FORMAT_STYLE.items():
        ps = [p for p in points if p["format"] == fmt]
        if ps:
            ax.scatter([p["latency_ms"] for p in ps], [p["accuracy"] for p in ps],
                       s=[area(p["size_bytes"]) for p in ps], c=color, marker=marker, alpha=0.6, edgecolors="black", linewidths=0.5, zorder=2)
    from matplotlib.lines import Line2D
    from matplotlib.ticker import FormatStrFormatter

    from mnist_edge.files import format_size

    formats = [Line2D([], [], ls="", marker=m, ms=8, mfc=c, alpha=0.6, mec="black", label=f)
               for f, (c, m) in FORMAT_STYLE.items()]
    sizes = [ax.scatter([], [], s=area(s), c="white", edgecolors="black", label=format_size(int(s)))
             for s in (biggest / 10, biggest / 2, biggest)]
    first = ax.legend(handles=formats, loc="upper left", fontsize=8, title="format", title_fontsize=8)
    ax.add_artist(first)
    ax.legend(handles=sizes, loc="lower right", labelspacing=2.2, borderpad=1.4, handletextpad=1.6, fontsize=8,
              title="file size", title_fontsize=8)
    ax.set_xscale("log")
    for axis in (ax.xaxis,):
        axis.set_major_formatter(FormatStrFormatter("%g"))
        axis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.tick_params(axis="x", which="both", labelsize=8)
    ax.margins(x=0.12, y=0.12)
    ax.set(xlabel="batch-1 latency, p50 (ms, 1 thread, log scale)", ylabel="test accuracy (%)", title=title)
    ax.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return _save(fig, path)
