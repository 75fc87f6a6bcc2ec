"""Building an export's objects in tests: the checkpoint's network, the data (loaded once per folder), options."""

from __future__ import annotations

import functools

from mnist_edge.exporter import ExportOptions, Int8Choice, export, from_checkpoint, int8_choice


@functools.lru_cache(maxsize=2)
def digits(data_dir):
    from mnist_edge.data.dataset import load_digits

    return load_digits(data_dir)


def export_checkpoint(checkpoint, out, data_dir, *, quantize=False, quantize_options=None, recipe=None, **options):
    """``export`` of a zoo checkpoint with ``ExportOptions(**options)``: int8 (``quantize``) from ``recipe``
    (else the model's registered one), or exactly ``quantize_options`` when given."""
    source = from_checkpoint(checkpoint)
    int8 = None
    if quantize:
        int8 = int8_choice(source.name, recipe)
        if quantize_options is not None:
            int8 = Int8Choice(quantize_options.validate(), int8.recipe)
    return export(source, digits(str(data_dir)), ExportOptions(int8=int8, **options), out=out)
