"""Writers that cannot mix or lose: one writer per output folder (a second stops naming the first), scratch
files in the run's own folder (never beside the source model, gone after Ctrl-C, SIGTERM or a kill), a
search's files and its registry entry written as one set, and readers that meet a folder mid-swap.

Fast: the lock holders and killed runs are small Python processes; the real quantize runs are the mlp's
single-recipe checks on 100 test images.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from mnist_edge.cli import main
from mnist_edge.errors import ArtifactError, UsageError, WriteError

EXPORTED = Path(__file__).resolve().parents[1] / "exported"
ROOT = Path(__file__).resolve().parents[1]


def _python(code: str, *args, env=None) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env=env)


HOLDER = ("import sys, time\n"
          "from mnist_edge.system.lock import hold\n"
          "held = hold(sys.argv[1]); held.__enter__()\n"
          "print('held', flush=True)\n"
          "time.sleep(60)\n")


@pytest.fixture
def holder():
    """Start a process holding the lock of a path; yields a function (path -> Popen), kills it at the end."""
    procs = []

    def start(path):
        proc = _python(HOLDER, path)
        procs.append(proc)
        assert proc.stdout.readline().strip() == "held", proc.stderr.read()
        return proc

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


# --- one writer per output folder (B9) ------------------------------------------------------------------------

def test_a_second_export_or_search_into_a_folder_stops_naming_the_first(holder, tmp_path, mnist_dir, capsys):
    out = tmp_path / "D"
    proc = holder(out)
    t0 = time.monotonic()
    code = main(["export", "--model", "mlp", "--checkpoint", str(EXPORTED / "mlp" / "checkpoint.pt"), "--out",
                 str(out), "--data", str(mnist_dir), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and time.monotonic() - t0 < 10  # at once, not after an export
    assert err.count("\n") == 0 and f"'{out}' is being written by pid {proc.pid} (" in err
    assert "-c" in err and ", since 20" in err and "s ago); nothing was changed" in err and not out.exists()
    code = main(["quantize", "--model", "mlp", "--onnx", str(EXPORTED / "mlp" / "model.onnx"), "--out", str(out),
                 "--data", str(mnist_dir), "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and f"is being written by pid {proc.pid}" in err and "choose another --out" in err
    # the holder killed: its lock went with it, and the next writer takes it at once (and removes the file after)
    proc.kill()
    proc.wait()
    from mnist_edge.system.lock import hold, lock_path

    with hold(out):
        assert lock_path(out).exists()
    assert not lock_path(out).exists()


def test_a_lock_is_reentrant_in_one_run_and_the_registry_waits_then_names_its_holder(holder, tmp_path):
    from mnist_edge.system.lock import hold

    with hold(tmp_path / "D"):
        with hold(tmp_path / "D"):  # export_net runs a search on its own folder
            pass
        assert (tmp_path / ".D.lock").exists()
    registry = tmp_path / "registry.json"
    proc = holder(registry)
    said = []
    t0 = time.monotonic()
    with pytest.raises(WriteError, match=rf"'{registry}' is being written by pid {proc.pid} .*another --register"):
        with hold(registry, wait_s=0.5, flag="--register", say=said.append):
            pass
    assert time.monotonic() - t0 >= 0.5 and len(said) == 1 and said[0].startswith(f"waiting for pid {proc.pid}")


# --- scratch files (B6, B8) -------------------------------------------------------------------------------------

def _quantize_args(src, out, mnist_dir):
    return ["quantize", "--model", "mlp", "--onnx", str(src), "--out", str(out), "--eval-limit", "100",
            "--data", str(mnist_dir), "--quiet"]


def test_quantize_writes_nothing_beside_its_source_and_leaves_no_scratch(tmp_path, mnist_dir, monkeypatch, capsys):
    src = tmp_path / "src"
    src.mkdir()
    shutil.copy(EXPORTED / "mlp" / "model.onnx", src)
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    before = os.stat(src).st_mtime_ns
    src.chmod(0o555)  # read-only (root writes anyway: the folder's mtime tells whether anything was)
    try:
        assert main(_quantize_args(src / "model.onnx", tmp_path / "o", mnist_dir)) == 0, capsys.readouterr().err
    finally:
        src.chmod(0o755)
    # onnxruntime wrote "model-inferred.onnx" beside the file it was given: it is given a copy in the scratch
    assert os.stat(src).st_mtime_ns == before and os.listdir(src) == ["model.onnx"]
    assert os.listdir(temp) == []  # the scratch folder, with onnxruntime's ort.quant.* inside it, is gone
    assert sorted(os.listdir(tmp_path / "o")) == ["int8_recipe.json", "int8_search.png"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o", "src", "temp"]  # no lock file left either


QUANTIZE_RUNS = ("import sys\n"
                 "from pathlib import Path\n"
                 "import numpy as np\n"
                 "from mnist_edge.int8.quantize import QuantizeOptions, custom_source, quantize_int8\n"
                 "from mnist_edge.system.scratch import run_scratch\n"
                 "import onnxruntime.quantization\n"
                 "def runs(src, out):\n"
                 "    images = np.random.default_rng(0).integers(0, 256, (20, 28, 28), dtype=np.uint8)\n"
                 "    options = QuantizeOptions(calibration_samples=20)\n"
                 "    with run_scratch():\n"
                 "        for i in range(4):\n"
                 "            quantize_int8(src, Path(out) / f'{i}.onnx', images, options, source=custom_source(images))\n"
                 "if __name__ == '__main__':\n"
                 "    print('ready', flush=True)\n"
                 "    runs(sys.argv[1], sys.argv[2])\n")


def test_two_runs_on_one_source_do_not_collide(tmp_path, monkeypatch):
    """Both used to write (and delete) "model-inferred.onnx" beside the one source file: this process and
    another quantize the same file at the same time."""
    src = tmp_path / "model.onnx"
    shutil.copy(EXPORTED / "mlp" / "model.onnx", src)
    temp = tmp_path / "temp"
    temp.mkdir()
    outs = [tmp_path / f"o{i}" for i in range(2)]
    for out in outs:
        out.mkdir()
    proc = _python(QUANTIZE_RUNS, src, outs[0], env=dict(os.environ, TMPDIR=str(temp), OMP_NUM_THREADS="1"))
    assert proc.stdout.readline().strip() == "ready", proc.stderr.read()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    scope: dict = {}
    exec(QUANTIZE_RUNS, scope)
    scope["runs"](src, outs[1])
    assert proc.wait(timeout=120) == 0, proc.stderr.read()[-2000:]
    assert [sorted(os.listdir(out)) for out in outs] == [[f"{i}.onnx" for i in range(4)]] * 2
    # ".ses": onnxruntime's native library keeps a small session-id file in $TMPDIR (not scratch, not ours)
    assert [n for n in os.listdir(temp) if n != ".ses"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.onnx", "o0", "o1", "temp"]


SCRATCH_RUN = ("import signal, sys, tempfile, time\n"
               "from mnist_edge.system.scratch import run_scratch\n"
               "signal.signal(signal.SIGINT, signal.default_int_handler)\n"  # even where the test run ignores it
               "with run_scratch() as s:\n"
               "    tempfile.mkdtemp(prefix='ort.quant.')\n"  # what onnxruntime's quantizer makes
               "    print(s, flush=True)\n"
               "    time.sleep(60)\n")


@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM, signal.SIGINT])
def test_a_killed_runs_scratch_is_removed_by_it_or_by_the_next_run(tmp_path, monkeypatch, sig):
    from mnist_edge.system.scratch import LEGACY_AGE_S, run_scratch

    temp = tmp_path / "temp"
    temp.mkdir()
    legacy = temp / "mnist-edge-int8-search-abcd1234"  # what earlier versions left
    legacy.mkdir()
    os.utime(legacy, (time.time() - LEGACY_AGE_S - 10,) * 2)
    proc = _python(SCRATCH_RUN, env=dict(os.environ, TMPDIR=str(temp)))
    scratch = Path(proc.stdout.readline().strip())
    assert scratch.parent == temp and scratch.name.startswith(f"mnist-edge-scratch-{proc.pid}-")
    assert [p.name[:10] for p in scratch.iterdir()] == ["ort.quant."]
    proc.send_signal(sig)
    rc = proc.wait(timeout=10)
    assert rc == {signal.SIGKILL: -signal.SIGKILL, signal.SIGTERM: 128 + signal.SIGTERM}.get(sig, rc) != 0
    assert scratch.exists() == (sig == signal.SIGKILL)  # Ctrl-C, SIGTERM: removed by the run itself
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    with run_scratch() as mine:  # the next run
        assert sorted(temp.iterdir()) == [mine]
    assert list(temp.iterdir()) == []


# --- a search's files and its registry entry as one set (B7) --------------------------------------------------

def _result(model="mlp", verdict="does not pay"):
    from mnist_edge.int8.quantize import QuantizeOptions
    from mnist_edge.int8.result import Machine, SearchInfo, SearchResult, Timing, Trial

    options = QuantizeOptions(keep_float=("Gemm[0]",) if verdict == "pays" else ())
    trial = Trial("base", "base", options, passed=True, agreement=100.0, accuracy=99.0, accuracy_drop_pp=0.0)
    info = SearchInfo("search", 1, 1.0, "model.onnx", 10, [1], {"agreement_pct": 99.5}, Timing([1], 2, 1, 6), {})
    return SearchResult(model=model, options=options, verdict=verdict,
                        recommended="model.int8.onnx" if verdict == "pays" else "model.onnx", summary=verdict,
                        chosen=trial, machine=Machine("cpu", "x86_64", None, 2, None, None, 1), search=info,
                        trials=[trial])


CNN = {"schema": "mnist-edge/int8-recipe/1", "options": {}, "recommended": "model.onnx", "verdict": None,
       "summary": None}  # another model's entry


def _set_up(tmp_path):
    """An out folder and a registry holding an earlier search's files (old), and the new search's (new)."""
    out, reg = tmp_path / "out", tmp_path / "zoo" / "registry.json"
    out.mkdir()
    reg.parent.mkdir()
    old, new = _result(), _result(verdict="pays")
    (out / "int8_recipe.json").write_bytes(_json(old.to_json()))
    (out / "int8_search.png").write_bytes(b"old png")
    reg.write_bytes(_json({"cnn": CNN, "mlp": _entry(old)}))
    contents = {out / "int8_recipe.json": _json(new.to_json()), out / "int8_search.png": b"new png",
                out / "int8_report.json": b"{}\n"}
    return out, reg, new, contents


def _json(document) -> bytes:
    return json.dumps(document, indent=2, sort_keys=True).encode() + b"\n"


def _entry(result):
    from mnist_edge.int8.recipes import registry_entry

    return registry_entry(result)


def _state(out, reg) -> str:
    """"old" or "new" when the folder and the registry agree; anything else is a mix."""
    recipe = json.loads((out / "int8_recipe.json").read_text())["verdict"]
    png = (out / "int8_search.png").read_bytes()
    report = (out / "int8_report.json").exists()
    entries = json.loads(reg.read_text())
    entry = entries["mlp"]["verdict"]
    assert entries["cnn"] == CNN  # another model's entry is always kept
    states = {recipe == "pays", png == b"new png", report, entry == "pays"}
    return "mix" if len(states) > 1 else ("new" if states == {True} else "old")


def _leftovers(*folders) -> list[str]:
    return sorted(p.name for f in folders for p in f.iterdir() if p.name.startswith("."))


def test_a_full_disk_at_any_step_leaves_folder_and_registry_agreeing_and_names_the_file(tmp_path, monkeypatch):
    from mnist_edge.int8 import tune

    real = {name: getattr(os, name) for name in ("write", "replace", "link")}
    for name in real:
        step = 0
        while True:
            case = tmp_path / f"{name}{step}"
            case.mkdir()
            out, reg, new, contents = _set_up(case)
            calls = []

            def failing(*args, _name=name, _step=step, **kwargs):
                calls.append(1)
                if len(calls) - 1 == _step:
                    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
                return real[_name](*args, **kwargs)

            monkeypatch.setattr(os, name, failing)
            try:
                tune.write_results(contents, reg, "mlp", new, print)
                failed = None
            except WriteError as e:
                failed = str(e)
            finally:
                monkeypatch.setattr(os, name, real[name])
            if failed is None:  # no step left to fail (a failed link falls back to a copy): the set was written
                assert _state(out, reg) == "new" and step >= (name != "link")
                break
            assert _state(out, reg) == "old", (name, step, failed)
            assert "No space left on device; nothing was replaced (the search result and its registry entry: " \
                in failed and failed.startswith(("cannot write '", "cannot replace '"))
            assert any(f"'{p}': No space" in failed for p in (*contents, reg, out, reg.parent)), failed
            assert _leftovers(out, reg.parent) == [], (name, step)
            step += 1


def test_a_read_only_registry_is_refused_before_the_search_and_the_folder_is_unchanged(tmp_path, monkeypatch):
    from mnist_edge.int8 import tune

    out, reg, new, contents = _set_up(tmp_path)
    reg.chmod(0o444)
    with pytest.raises(WriteError, match=rf"registry '{reg}' is read-only \(mode -r--r--r--\); nothing was searched"):
        tune.check_registry_writable(reg)
    reg.chmod(0o644)
    real = tempfile.mkstemp

    def read_only_folder(*args, dir=None, **kwargs):  # noqa: A002 (mkstemp's own name)
        if Path(dir) == reg.parent:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), os.fspath(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", read_only_folder)
    with pytest.raises(WriteError, match=rf"cannot write '{reg}': Read-only file system; nothing was replaced \(the "
                                         "search result and its registry entry: "):
        tune.write_results(contents, reg, "mlp", new, print)
    with pytest.raises(WriteError, match=rf"cannot write registry '{reg}': Read-only file system"):
        tune.check_registry_writable(reg)
    assert _state(out, reg) == "old" and _leftovers(out, reg.parent) == []


def test_quantize_register_on_a_full_disk_leaves_the_folder_and_registry_agreeing(tmp_path, monkeypatch):
    """Through ``quantize_model`` (its search replaced by a finished result): the registry's rename fails."""
    from mnist_edge.int8 import search
    from mnist_edge.int8.quantize import QuantizeOptions
    from mnist_edge.int8.settings import SearchSettings
    from mnist_edge.int8.tune import quantize_model

    out, reg, new, _ = _set_up(tmp_path)
    (out / "int8_report.json").write_bytes(b"{}\n")  # this run writes no report: the old one stays either way
    monkeypatch.setattr(search, "search_int8", lambda *a, **k: new)
    monkeypatch.setattr(search, "plot_search", lambda *a, **k: None)  # as without matplotlib
    real = os.replace

    def full(src, dst, *args, **kwargs):
        if Path(dst) == reg:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", full)
    with pytest.raises(WriteError) as e:
        quantize_model(EXPORTED / "mlp" / "model.onnx", None, QuantizeOptions(), SearchSettings(register=reg), out,
                       name="mlp")
    assert str(e.value).startswith(f"cannot replace '{reg}': No space left on device; nothing was replaced")
    assert json.loads((out / "int8_recipe.json").read_text())["verdict"] == "does not pay"  # the old one
    assert json.loads(reg.read_text())["mlp"]["verdict"] == "does not pay"
    monkeypatch.setattr(os, "replace", real)
    quantize_model(EXPORTED / "mlp" / "model.onnx", None, QuantizeOptions(), SearchSettings(register=reg), out,
                   name="mlp")
    assert json.loads((out / "int8_recipe.json").read_text())["verdict"] == "pays"
    assert json.loads(reg.read_text()) == {"cnn": CNN, "mlp": _entry(new)} and _leftovers(out, reg.parent) == []


KILLED_SET = ("import json, os, signal, sys\n"
              "from pathlib import Path\n"
              "from mnist_edge.system import fileset\n"
              "name, step = sys.argv[1], int(sys.argv[2])\n"
              "contents = {Path(k): v.encode('latin-1') for k, v in json.loads(sys.argv[3]).items()}\n"
              "real, calls = getattr(os, name), []\n"
              "def dying(*a, **k):\n"
              "    calls.append(1)\n"
              "    if len(calls) - 1 == step:\n"
              "        os.kill(os.getpid(), signal.SIGKILL)\n"
              "    return real(*a, **k)\n"
              "setattr(os, name, dying)\n"
              "fileset.write_set(contents)\n")


# os.write: the four files, then the journal in each of the two folders; os.replace: the four renames
@pytest.mark.parametrize("name, steps", [("replace", 5), ("write", 7)])
def test_a_set_killed_at_any_step_is_all_old_or_all_new_after_the_next_run(tmp_path, name, steps):
    from mnist_edge.system.fileset import recover

    for step in range(steps):
        case = tmp_path / f"{name}{step}"
        case.mkdir()
        out, reg, new, contents = _set_up(case)
        entries = json.loads(reg.read_text())
        contents[reg] = json.dumps(dict(entries, mlp=_entry(new))).encode()
        text = json.dumps({os.fspath(k): v.decode("latin-1") for k, v in contents.items()})
        proc = _python(KILLED_SET, name, step, text)
        rc = proc.wait(timeout=30)
        assert rc == (0 if step == steps - 1 else -signal.SIGKILL), proc.stderr.read()
        first, second = (out, reg.parent) if step % 2 else (reg.parent, out)
        recover(first)  # the next run, through either folder
        state = _state(out, reg)
        # killed while renaming: the journal was complete, the set is finished; killed before a journal was
        # complete: nothing was replaced (step 5 completed one of the two journals: either outcome is whole)
        want = {"replace": "new", "write": "old" if step < 5 else state}[name] if rc else "new"
        assert state == want, (name, step, state)
        recover(second)
        assert _state(out, reg) in ("old", "new") and (state == "old" or _state(out, reg) == "new")
        assert not [p for p in _leftovers(out, reg.parent) if p.endswith(".json")]  # no journal left


def test_a_journal_naming_other_paths_is_ignored(tmp_path):
    """Recovery renames only a set's own ``.NAME.set-*.new`` files over NAME beside them."""
    from mnist_edge.system.fileset import recover

    victim, other = tmp_path / "victim.json", tmp_path / "elsewhere.new"
    victim.write_text("kept")
    other.write_text("planted")
    journal = tmp_path / ".mnist-edge-set.abcd1234.json"
    journal.write_text(json.dumps([{"final": str(victim), "new": str(other), "old": None}]))
    assert recover(tmp_path) == [] and victim.read_text() == "kept" and other.exists() and not journal.exists()


# --- readers meeting a folder mid-swap (B10) ------------------------------------------------------------------

def _two_versions(tmp_path):
    """Folder ``D`` (mlp's files) and ``B`` (lenet5's): what an export swaps in."""
    names = ("manifest.json", "model.onnx", "model.int8.onnx")
    d, b = tmp_path / "D", tmp_path / "B"
    for folder, model in ((d, "mlp"), (b, "lenet5")):
        folder.mkdir()
        for n in names:
            shutil.copy(EXPORTED / model / n, folder / n)
    return d, b


def _swap(a: Path, b: Path) -> None:
    spare = a.with_name("spare")
    os.rename(a, spare)
    os.rename(b, a)
    os.rename(spare, b)


@pytest.mark.parametrize("where", ["before the model is read", "before the hash check"])
def test_a_folder_swapped_between_manifest_and_model_is_read_again(tmp_path, monkeypatch, where):
    from mnist_edge import manifest as mf
    from mnist_edge.runtime import hashcheck, load

    d, b = _two_versions(tmp_path)
    target, attr = (hashcheck, "_read_bytes") if where.endswith("read") else (mf, "sha256_file")
    real, calls = getattr(target, attr), []

    def swapping(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            _swap(d, b)  # the export's rename lands between our reading the manifest and reading the model
        return real(*args, **kwargs)

    monkeypatch.setattr(target, attr, swapping)
    clf = load(d, precision="fp32")
    assert clf.model == "lenet5" and len(calls) >= 2  # read again, all of it from the new version


def test_a_folder_swapped_on_every_read_says_changed_while_reading_and_tampering_still_fails(tmp_path,
                                                                                            monkeypatch):
    from mnist_edge import manifest as mf
    from mnist_edge.runtime import hashcheck, load

    d, b = _two_versions(tmp_path)
    real = hashcheck._read_bytes

    def swapping(path):
        _swap(d, b)
        return real(path)

    monkeypatch.setattr(hashcheck, "_read_bytes", swapping)
    with pytest.raises(mf.FolderChangedError) as e:
        load(d, precision="fp32")
    assert f"'{d}' changed while reading (another export replaced it" in str(e.value)
    assert "hash check" not in str(e.value) and "\n" not in str(e.value)
    monkeypatch.setattr(hashcheck, "_read_bytes", real)
    model = d / "model.onnx"
    model.write_bytes(model.read_bytes()[:-1] + b"\0")  # same size, other bytes: damage, not a swap
    with pytest.raises(ArtifactError, match=rf"'{d}' fails its hash check: model.onnx: SHA-256") as e:
        load(d, precision="fp32")
    assert not isinstance(e.value, mf.FolderChangedError)


# --- a recipe naming a node the graph does not have ------------------------------------------------------------

def test_a_recipe_naming_a_missing_node_is_a_usage_error_before_any_quantization(tmp_path, mnist_dir, monkeypatch,
                                                                                capsys):
    from mnist_edge.int8 import quantize
    from mnist_edge.int8.result import SCHEMA

    recipe = tmp_path / "recipe.json"
    recipe.write_text(json.dumps({"schema": SCHEMA, "options": {"keep_float": ["Conv[7]", "Gemm[0]"]}}))
    monkeypatch.setattr(quantize, "quantize_int8", lambda *a, **k: pytest.fail("quantized"))
    code = main(["quantize", "--model", str(EXPORTED / "mlp"), "--recipe", str(recipe), "--out", str(tmp_path / "o"),
                 "--eval-limit", "100", "--data", str(mnist_dir), "--quiet"])
    captured = capsys.readouterr()
    assert code == 1 and captured.out == "" and not (tmp_path / "o").exists()
    err = captured.err.strip()
    assert err.count("\n") == 0 and "no int8 recipe passed" not in err
    assert f"the recipe does not fit '{EXPORTED / 'mlp' / 'model.onnx'}': keep_float Conv[7] matches no node" in err
    assert "its nodes are: Cast[0], Reshape[0], Gemm[0]," in err  # the input scaling is folded into Gemm[0]
    assert quantize.some([f"N[{i}]" for i in range(30)]) == ", ".join(f"N[{i}]" for i in range(12)) + ", … (30 in all)"
    with pytest.raises(UsageError, match=r"relu_before_pool MaxPool\[0\] is not a MaxPool followed only by a Relu"):
        quantize.check_selectors(EXPORTED / "mlp" / "model.onnx",
                                 quantize.QuantizeOptions(relu_before_pool=("MaxPool[0]",)), tmp_path)
