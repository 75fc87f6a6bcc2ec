"""The Python API for a network of your own: ``mnist_edge.export(net, name=..., out=...)``.

It builds the objects the pipeline takes (the contract from ``labels``/``input_size``/``mean``/``std``, the
data, the int8 choice) and runs the same export as the zoo's: every gate, the self-test bundle, the
manifest. With ``search=True`` it then searches the int8 recipe on this machine and exports again with the
winner (the search's evidence is written beside the files as ``int8_recipe.json``).
"""

from __future__ import annotations

from pathlib import Path

from mnist_edge.contract import MNIST_MEAN, MNIST_STD, make_contract
from mnist_edge.errors import GateError


# Keyword-only and one per user-facing choice (the CLI's flags of the same names), hence more than eight.
def export_net(net, *, name: str, out, quantize: bool = True, labels=None, input_size: int = 28,
               mean: float = MNIST_MEAN, std: float = MNIST_STD, data=None, search: bool = False,
               recipe=None, channels: int = 1, architecture: tuple | None = None, progress=None):
    """Export ``net`` (a torch.nn.Module) as model ``name`` into folder ``out``; see :mod:`mnist_edge.exporter`.

    ``data``: None (MNIST), a folder or ``.npz`` (:func:`mnist_edge.data.sources.load_data`), or a
    :class:`mnist_edge.data.dataset.Digits`. Class-folder data names the labels when ``labels`` is None.
    ``recipe``: an int8 recipe file (e.g. a search's ``int8_recipe.json``). Returns the ExportResult.
    """
    from mnist_edge.data.dataset import Digits
    from mnist_edge.data.sources import load_data
    from mnist_edge.exporter.entry import output_lock
    from mnist_edge.exporter.source import from_net

    say = progress or (lambda msg: None)
    digits, data_labels = (data, None) if isinstance(data, Digits) else load_data(data)
    contract = make_contract(labels if labels is not None else data_labels, input_size, mean, std, channels)
    source = from_net(net, name=name, contract=contract, architecture=architecture, say=say)
    # one lock over every export and search below: another writer cannot slip in between them
    with output_lock(out, flag="out"):
        return _export_searched(source, digits, name, Path(out), quantize=quantize, search=search, recipe=recipe,
                                progress=progress)


def _export_searched(source, digits, name: str, out: Path, *, quantize: bool, search: bool, recipe, progress):
    """The exports (and searches) of :func:`export_net` for one source, holding ``out``'s lock."""
    from mnist_edge.exporter.options import ExportOptions, int8_choice
    from mnist_edge.exporter.pipeline import export

    say = progress or (lambda msg: None)
    if quantize and search:  # the fp32 files first: the search quantizes and times them on this machine
        export(source, digits, ExportOptions(), out=out, progress=progress)
        recipe = _search(Path(out), digits, name, say, full=True)
    try:
        return export(source, digits, ExportOptions(int8=int8_choice(name, recipe) if quantize else None), out=out,
                      progress=progress)
    except GateError:
        if not quantize or recipe is not None:
            raise
    # The default int8 recipe failed its gate (a network not trained to a wide margin, say): export fp32,
    # then check the default recipe with the search's fallback, which keeps the layers that lose the most
    # in float until the gate passes, and export again with what passed. A fp32 failure raises as it is.
    say("the default int8 recipe failed its gate: trying it with the fallback (the worst layers in float)")
    export(source, digits, ExportOptions(), out=out, progress=progress)
    recipe = _search(Path(out), digits, name, say, full=False)
    return export(source, digits, ExportOptions(int8=int8_choice(name, recipe)), out=out, progress=progress)


def _search(folder: Path, digits, name: str, say, *, full: bool) -> Path:
    """The int8 recipe for the fp32 file in ``folder``: searched (``full``: every stage, timed on this
    machine) or the default one checked with the accuracy fallback; the recipe file written there."""
    from mnist_edge.int8.quantize import QuantizeOptions
    from mnist_edge.int8.result import RESULT_FILE
    from mnist_edge.int8.settings import SearchSettings
    from mnist_edge.int8.tune import quantize_model

    say("searching the int8 recipe on this machine" if full else "checking the int8 recipe with the fallback")
    quantize_model(folder / "model.onnx", digits, QuantizeOptions(), SearchSettings(search=full), folder, name=name,
                   progress=say)
    return folder / RESULT_FILE
