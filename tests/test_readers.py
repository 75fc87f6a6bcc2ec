"""One reader discipline: every reader of a file the tool reads is listed (mnist_edge.documents.readers), has a
fuzz target in tests/test_fuzz.py and scripts/fuzz.py, and refuses a FIFO or a device in place of its file
with a typed one-line error at once (no hang, no read until memory runs out)."""

from __future__ import annotations

import importlib
import importlib.util
import json
import os
import re
import shutil
import signal
from contextlib import contextmanager
from pathlib import Path

import pytest

from mnist_edge.cli import main
from mnist_edge.documents.readers import READERS
from mnist_edge.errors import MnistEdgeError

from fuzz_targets import CARD_FILES, REPO, Targets
from test_fuzz import EXAMPLES


def _resolve(dotted: str):
    module, _, name = dotted.partition(":")
    obj = importlib.import_module(module)
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


def _fuzz_script():
    spec = importlib.util.spec_from_file_location("fuzz_script", REPO / "scripts" / "fuzz.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", list(READERS))
def test_every_reader_names_a_function_that_exists(name):
    assert callable(_resolve(READERS[name].function)), READERS[name]


def test_every_reader_has_a_fuzz_target_in_the_tests_and_in_the_long_run():
    readers = set(READERS)
    assert readers <= set(Targets.NAMES), f"no fuzz target (tests/fuzz_targets.py) for {readers - set(Targets.NAMES)}"
    assert readers <= set(EXAMPLES), f"tests/test_fuzz.py's EXAMPLES lack {readers - set(EXAMPLES)}"
    targets = set(_fuzz_script().TARGETS)
    assert readers <= targets, f"scripts/fuzz.py does not fuzz {readers - targets}"
    assert set(Targets.NAMES) == set(EXAMPLES), "every fuzz target runs in the default tests"


@pytest.fixture(scope="module")
def targets():
    t = Targets()
    yield t
    t.close()


@contextmanager
def _deadline(seconds: int):
    """Fail the test instead of hanging on a FIFO that a reader opened for reading."""
    def expired(signum, frame):
        raise TimeoutError(f"no answer in {seconds} s: the reader blocked")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def _place(path: Path, what: str) -> None:
    path.unlink(missing_ok=True)
    if what == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to("/dev/zero")  # st_size 0 and no end: a reader that trusts stat reads forever


CASES = [(t, k, w) for t in Targets.NAMES if t != "card" for k in [None] for w in ("fifo", "device")]
CASES += [("card", name, w) for name in CARD_FILES for w in ("fifo", "device")]


@pytest.mark.parametrize("target,kind,what", CASES, ids=[f"{t}-{k or ''}-{w}".replace("--", "-") for t, k, w in CASES])
def test_a_fifo_or_a_device_in_place_of_the_file_is_a_typed_error_at_once(targets, target, kind, what):
    kind = kind or targets.seeds(target)[0][0]
    path = targets.path(target, kind)
    targets._restore(target, kind)
    _place(path, what)
    with _deadline(20), pytest.raises(MnistEdgeError) as e:
        targets.read(target, kind, path)
    message = str(e.value)
    assert "\n" not in message and path.name in message
    assert any(w in message for w in ("FIFO", "device", "not a regular file", "missing")), message


# --- each reader's deep checks, through the commands a user runs -------------------------------------------

BN_CNN = REPO / "exported" / "bn_cnn"
NOT_FINITE = ("nan", "inf")


def _one_line(code: int, capsys) -> str:
    out, err = capsys.readouterr()
    assert code == 1 and "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    return err


def _bench(edit) -> dict:
    doc = json.loads((BN_CNN / "bench.json").read_text())
    edit(doc)
    return doc


@pytest.mark.parametrize("edit, field", [
    (lambda d: d["results"][0].update(p99_ms=[None]), "results[0].p99_ms is [None]"),
    (lambda d: d["results"][0].update(format={"a": 1}), "results[0].format is {'a': 1}"),
    (lambda d: d["results"][1].update(p50_ms=0), "results[1].p50_ms is 0"),
    (lambda d: d["results"][1].update(p50_ms=-2.5), "results[1].p50_ms is -2.5"),
    (lambda d: d["results"][0].update(p50_ms=1e-300, min_ms=1e-300), "results[0].p50_ms is 1e-300"),
    (lambda d: d["results"][0].update(p50_ms=1e308, p90_ms=1e308, p99_ms=1e308, max_ms=1e308),
     "results[0].p50_ms is 1e+308"),
    (lambda d: d["results"][0].update(batch=10**19), "results[0].batch is 10000000000000000000"),
    (lambda d: d["formats"][0].update(file="model\0.onnx"), "formats[0].file is 'model\\x00.onnx'"),
    (lambda d: d["formats"][0].update(file="m" * 256), "formats[0].file is 'mmmmmmm"),
    (lambda d: d["advice"].update(int8_speedup={"batch": 1, "threads": 1, "value": 1e300}),
     "advice.int8_speedup.value is 1e+300"),
    (lambda d: d.update(advice={}), "advice.line is missing"),
    (lambda d: d.pop("results"), "results is missing"),
])
def test_bench_compare_refuses_a_malformed_report_in_one_line_naming_the_field(tmp_path, capsys, edit, field):
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps(_bench(edit)))
    err = _one_line(main(["bench", "--compare", str(BN_CNN / "bench.json"), str(bad)]), capsys)
    assert f"'{bad}': {field}" in err


@pytest.mark.parametrize("text", ['{"p50_ms": NaN}', '{"p50_ms": 1e400}', "[" * 50 + "]" * 50,
                                  "[" * 100_000 + "]" * 100_000])
def test_bench_compare_refuses_what_is_not_strict_json_in_one_line(tmp_path, capsys, text):
    bad = tmp_path / "b.json"
    bad.write_text(text)
    assert f"'{bad}' is not valid JSON" in _one_line(main(["bench", "--compare", str(bad), str(bad)]), capsys)


def test_bench_compare_of_two_valid_reports_shows_no_nan_or_inf(capsys):
    assert main(["bench", "--compare", str(BN_CNN / "bench.json"), str(BN_CNN / "bench.json")]) == 0
    words = capsys.readouterr().out.lower().replace(",", " ").split()
    assert not set(words) & set(NOT_FINITE)


def _recipe(tmp_path, **options) -> Path:
    entry = json.loads((REPO / "mnist_edge" / "zoo" / "int8_recipes.json").read_text())["mlp"]
    entry["options"].update(options)
    path = tmp_path / "recipe.json"
    path.write_text(json.dumps(entry))
    return path


@pytest.mark.parametrize("option, value, message", [
    ("keep_float", 5, "keep_float 5 must be a list of node selectors"),
    ("keep_float", "Conv[0]", "keep_float 'Conv[0]' must be a list of node selectors"),
    ("op_types", 5, "op_types 5 must be a list of ONNX op types"),
    ("pad_channels", {"a": 1}, "pad_channels {'a': 1} must be a list of Conv selectors"),
    ("seed", "abc", "seed 'abc' must be an integer >= 0"),
    ("seed", -1, "seed -1 must be an integer >= 0"),
    ("seed", 1.5, "seed 1.5 must be an integer >= 0"),
    ("seed", True, "seed True must be an integer >= 0"),
])
def test_a_recipe_with_a_bad_option_is_one_line_naming_the_file_and_the_option(tmp_path, capsys, option, value,
                                                                               message):
    path = _recipe(tmp_path, **{option: value})
    for argv in (["quantize", "--model", "mlp", "--recipe", str(path)],
                 ["export", "--model", "mlp", "--quantize", "--recipe", str(path), "--out", str(tmp_path / "out")]):
        err = _one_line(main(argv), capsys)
        assert f"{path}: options: {message}" in err
    assert not (tmp_path / "out").exists()


def test_a_recipe_file_nested_deeply_or_holding_1e400_is_one_line(tmp_path, capsys):
    path = tmp_path / "recipe.json"
    for text in ("[" * 100_000 + "]" * 100_000, '{"x": ' + "[" * 40 + "]" * 40 + "}", '{"seed": 1e400}'):
        path.write_text(text)
        err = _one_line(main(["quantize", "--model", "mlp", "--recipe", str(path)]), capsys)
        assert f"'{path}' is not valid JSON" in err


def _search(edit) -> dict:
    doc = json.loads((BN_CNN / "int8_recipe.json").read_text())
    edit(doc)
    return doc


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["chosen"]["ratios"].update({"\u00b2": d["chosen"]["ratios"]["1"]}),
     "field chosen.ratios must be keyed by batch size (digits), got '\u00b2'"),
    (lambda d: d["chosen"]["ratios"]["1"].update(ratio=1e308), "field chosen.ratios.1.ratio must be a ratio"),
    (lambda d: d["chosen"]["ratios"]["1"].update(low=2.0, high=1.0), "field chosen.ratios.1.low must be at most high"),
    (lambda d: d["trials"][0]["ratios"].update({"1": {"ratio": 1}}), "field trials[0].ratios.1.low must be a ratio"),
    (lambda d: d["options"].update(keep_float=5), "keep_float 5 must be a list of node selectors"),
])
def test_a_search_result_with_a_bad_field_is_a_typed_error_naming_it(tmp_path, edit, message):
    from mnist_edge.errors import ArtifactError
    from mnist_edge.int8.result import SearchResult

    path = tmp_path / "int8_recipe.json"
    path.write_text(json.dumps(_search(edit)))
    with pytest.raises(ArtifactError, match=re.escape(message)):
        SearchResult.from_json(path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["profile"].update(x=d["profile"]["1"]), "profile is 'x', expected keys that are batch sizes"),
    (lambda d: d["profile"]["1"]["int8"].update(ms_per_call=1e308), "profile.1.int8 is {"),
    (lambda d: d["profile"]["1"]["fp32"]["ops"][0].update(ms=-1), "profile.1.fp32.ops[0] is {"),
    (lambda d: d.update(left_after_optimization={"Q": -1}), "left_after_optimization is {'Q': -1}"),
])
def test_an_int8_report_with_a_bad_field_is_a_typed_error_naming_it(tmp_path, edit, message):
    from mnist_edge.cards.folder import load_int8_report
    from mnist_edge.errors import ArtifactError

    doc = json.loads((BN_CNN / "int8_report.json").read_text())
    edit(doc)
    path = tmp_path / "int8_report.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=re.escape(f"'{path}': {message}")):
        load_int8_report(path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["files"][0]["accuracy"].update(clean=-1), "files[0].accuracy.clean is -1, expected a percentage"),
    (lambda d: d["files"][0]["accuracy"].pop("noise"), "files[0].accuracy lacks the condition(s) noise"),
    (lambda d: d["files"][1].update(file="a\0b"), "files[1].file is 'a\\x00b', expected a file name"),
    (lambda d: d["files"][1].update(file="x" * 256), "files[1].file is 'xxxxxxxxx"),  # ENAMETOOLONG in stale_files
    (lambda d: d["files"][1].update(file="\ud800"), "files[1].file is '\\ud800', expected a file name"),
    (lambda d: d["files"][0]["rejection_transformed"][2].pop("errors_rejected_pct"),
     "files[0].rejection_transformed[2].errors_rejected_pct is missing"),
    (lambda d: d["files"][0]["rejection_transformed"][0].update(errors="many"),
     "files[0].rejection_transformed[0].errors is 'many'"),
    (lambda d: d["settings"].pop("noise_sigma"), "settings.noise_sigma is missing"),
    (lambda d: d["conditions"][0].pop("description"), "conditions[0].description is missing"),
    (lambda d: d.update(images=0), "images is 0, expected an integer from 1 to 10,000,000"),
    (lambda d: d.update(files=[]), "files is empty"),
])
def test_a_robustness_report_with_a_bad_field_is_a_typed_error_naming_it(tmp_path, edit, message):
    from mnist_edge.errors import ArtifactError
    from mnist_edge.evaluate.robustness import read_report

    doc = json.loads((BN_CNN / "robustness.json").read_text())
    edit(doc)
    path = tmp_path / "robustness.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(ArtifactError, match=re.escape(f"'{path}': {message}")):
        read_report(path)


# --- cards: a report that would show nan, inf or a traceback is refused by name ------------------------------

@pytest.fixture
def card_folder(tmp_path) -> Path:
    folder = tmp_path / "bn_cnn"
    shutil.copytree(BN_CNN, folder, ignore=shutil.ignore_patterns("README.md", "*.png"))
    return folder


def _edit_json(path: Path, edit, seal: bool = False) -> None:
    from mnist_edge.manifest import seal as reseal

    doc = json.loads(path.read_text())
    edit(doc)
    path.write_text(json.dumps(reseal(doc) if seal else doc))


@pytest.mark.parametrize("name, edit, message", [
    ("bench.json", lambda d: d["results"][0].update(p50_ms=1e308, p90_ms=1e308, p99_ms=1e308, max_ms=1e308),
     "results[0].p50_ms is 1e+308"),
    ("int8_recipe.json", lambda d: d["chosen"]["ratios"]["1"].update(ratio=1e300), "chosen.ratios.1.ratio"),
    ("int8_report.json", lambda d: d["profile"]["1"]["fp32"].update(ms_per_call=1e300), "profile.1.fp32"),
    ("robustness.json", lambda d: d["files"][0]["accuracy"].update(clean=1e300), "files[0].accuracy.clean"),
    ("manifest.json", lambda d: d.update(int8_recipe=[1]), "int8_recipe is [1], expected a JSON object"),
    ("manifest.json", lambda d: d["settings"]["quantization"].pop("calibration_source"),
     "settings.quantization.calibration_source is missing"),
    ("manifest.json", lambda d: d["files"]["model.int8.onnx"]["quantization"].update(quant_format=["qdq"]),
     "files.model.int8.onnx.quantization.quant_format is ['qdq']"),
])
def test_a_card_refuses_a_file_that_would_show_inf_or_break_it_in_one_line(card_folder, capsys, name, edit, message):
    _edit_json(card_folder / name, edit, seal=name == "manifest.json")
    err = _one_line(main(["card", "--folder", str(card_folder)]), capsys)
    assert "cannot make the card of" in err and message in err and not (card_folder / "README.md").exists()


def test_a_card_from_a_robustness_report_without_versions_is_written(card_folder, capsys):
    _edit_json(card_folder / "robustness.json", lambda d: d.pop("versions"))
    assert main(["card", "--folder", str(card_folder)]) == 0
    card = (card_folder / "README.md").read_text()
    assert "## Robustness" in card
    assert not set(card.lower().replace("|", " ").split()) & set(NOT_FINITE)
