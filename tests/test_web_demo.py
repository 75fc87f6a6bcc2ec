"""`mnist-edge demo` in a real browser: headless Chromium draws digits on the page and reads the labels.

``tests/web/drive.mjs`` (playwright-core, Debian's /usr/bin/chromium) opens the page served by the real
command, draws 1, 0, 7 and 4 with mouse strokes, reads the label, the bars and the latency under fp32 and
int8, and saves a screenshot (its path is printed). The model is the real ``exported/bn_cnn`` when
exported, else the test session's artifact. Chromium, Node.js and ``npm ci`` in examples/web are install
steps of ``.ci/run``; without them these tests fail (never skip) and say so.
"""

import json
import os
import queue
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from mnist_edge.cli import main
from mnist_edge.demo import PAGE_FILES, DemoSetupError, create_server

ROOT = Path(__file__).resolve().parents[1]
WEB_DIR = ROOT / "examples" / "web"
DRIVE = ROOT / "tests" / "web" / "drive.mjs"
CHROMIUM = os.environ.get("MNIST_EDGE_CHROMIUM", "/usr/bin/chromium")
DIGITS = [1, 0, 7, 4]  # drawn by drive.mjs, in this order
INSTALL = ("run the install steps of .ci/run (apt-get install -y chromium; Node.js 18+; `npm ci` in "
           "examples/web)")


@pytest.fixture(scope="module")
def browser_tools():
    node = shutil.which("node")
    if node is None:
        pytest.fail(f"node is not on PATH: {INSTALL}")
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: {INSTALL}")
    for package in ("onnxruntime-web", "playwright-core"):
        if not (WEB_DIR / "node_modules" / package / "package.json").is_file():
            pytest.fail(f"examples/web/node_modules/{package} is missing: {INSTALL}")
    return node


@pytest.fixture(scope="module")
def demo_url(model_dir, browser_tools):
    """`mnist-edge demo --port 0` as a user runs it; yields the address it prints."""
    proc = subprocess.Popen([sys.executable, "-m", "mnist_edge", "demo", "--port", "0", "--model", str(model_dir)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        lines = queue.Queue()
        threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()
        try:
            first = lines.get(timeout=120)  # it checks both models with the runtime before binding
        except queue.Empty:
            first = ""
        match = re.match(r"mnist-edge demo: serving (http://127\.0\.0\.1:\d+/)$", first.strip())
        if not match:
            proc.kill()
            pytest.fail(f"mnist-edge demo did not print its address: {first!r}\n{proc.communicate()[1]}")
        yield match.group(1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def drive(demo_url, browser_tools, tmp_path_factory):
    shot = tmp_path_factory.mktemp("web") / "demo.png"
    proc = subprocess.run([browser_tools, str(DRIVE), "--url", demo_url, "--screenshot", str(shot),
                           "--chromium", CHROMIUM], capture_output=True, text=True, timeout=180)
    try:
        result = json.loads(proc.stdout)
    except json.JSONDecodeError:
        pytest.fail(f"drive.mjs printed no JSON (exit {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    assert proc.returncode == 0 and not result.get("error"), result.get("error") or proc.stderr
    return result


def test_drawn_digits_are_recognized_with_fp32_and_int8(drive):
    got = [(d["digit"], d["fp32"]["label"], d["int8"]["label"]) for d in drive["digits"]]
    assert got == [(d, str(d), str(d)) for d in DIGITS], f"(drawn, fp32 label, int8 label): {got}"
    for d in drive["digits"]:
        for precision in ("fp32", "int8"):
            seen = d[precision]
            # the page's state, the bar chart and the switch all say the same thing
            assert seen["state_label"] == d["digit"] and seen["state_precision"] == precision
            assert seen["precision_checked"] == precision
            assert seen["top_bar"] == d["digit"] and max(seen["bars"]) == seen["bars"][d["digit"]]
            assert sum(seen["bars"]) == pytest.approx(1.0, abs=1e-4)
            assert re.fullmatch(rf"\d+\.\d% · {precision} · \d+\.\d\d ms", seen["confidence"]), seen["confidence"]
        # the label updates while drawing, not only when the stroke ends
        assert d["inferences_while_drawing"] >= 2, d["inferences_while_drawing"]


def test_both_latencies_are_shown(drive):
    for precision in ("fp32", "int8"):
        lat = drive["final"]["latency"][precision]
        assert re.fullmatch(r"\d+\.\d\d ms", lat["text"]), lat
        assert 0 < lat["median_ms"] < 1000
        assert lat["note"].startswith("median of 100 runs · last "), lat  # after the compare button
    assert drive["initial"]["label"] == "–"  # nothing drawn yet: no label
    assert drive["cross_origin_isolated"] is True  # fine-grained performance.now() for sub-ms timings


def test_everything_is_loaded_from_the_demo_server_and_nothing_fails(drive, demo_url, model_dir):
    assert drive["requests"], "no requests recorded"
    foreign = [u for u in drive["requests"] if not u.startswith(demo_url)]
    assert not foreign, f"the page loaded from elsewhere: {foreign}"
    assert any(u.endswith("/ort/ort-wasm-simd-threaded.wasm") for u in drive["requests"])
    assert drive["console_errors"] == [] and drive["page_errors"] == []
    assert drive["status"].startswith("ready")
    if "selftest.bin" in json.loads((model_dir / "manifest.json").read_text())["files"]:  # exports since issue 15
        assert "self-test passed (100 images, 2 files)" in drive["status"]
    assert "onnxruntime-web" in drive["about"] and "1 thread" in drive["about"]


def test_screenshot_is_saved(drive, capsys):
    shot = Path(drive["screenshot"])
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 10_000
    with capsys.disabled():
        print(f"\n[web demo] screenshot: {shot}")


# --- the server itself: clear errors, nothing served beyond the demo's files -----------------------------

def test_missing_node_modules_says_to_run_npm_ci(model_dir, tmp_path, capsys):
    for name in PAGE_FILES:
        shutil.copy(WEB_DIR / name, tmp_path / name)
    with pytest.raises(DemoSetupError, match=r"run `npm ci` in .*"):
        create_server(port=0, model=model_dir, web_dir=tmp_path)
    assert main(["demo", "--port", "0", "--model", str(model_dir), "--web-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "npm ci" in err and str(tmp_path) in err


def test_missing_model_names_the_export_command(tmp_path, capsys, browser_tools):
    assert main(["demo", "--port", "0", "--model", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "mnist-edge export --model bn_cnn --quantize" in err and str(tmp_path) in err


def test_server_serves_only_the_demo(model_dir, browser_tools):
    server = create_server(port=0, model=model_dir)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        def get(path):
            try:
                with urllib.request.urlopen(server.url + path, timeout=10) as r:
                    return r.status, r.headers["Content-Type"], r.read()
            except urllib.error.HTTPError as e:
                return e.code, None, b""

        status, ctype, body = get("ort/ort-wasm-simd-threaded.wasm")
        assert status == 200 and ctype == "application/wasm" and body[:4] == b"\0asm"
        status, ctype, body = get("models/index.json")
        index = json.loads(body)
        assert status == 200 and set(index["files"]) == {"fp32", "int8"}
        assert index["files"]["int8"]["bytes"] == (model_dir / "model.int8.onnx").stat().st_size
        assert get("models/model.onnx")[2] == (model_dir / "model.onnx").read_bytes()
        assert get("")[0] == 200 and get("digit.mjs")[1].startswith("text/javascript")
        for path in ("package.json", "node_modules/onnxruntime-web/package.json", "ort/../package.json",
                     "models/../index.html", "ort/ort.min.js", "..%2fpackage.json", "models/train.log"):
            assert get(path)[0] == 404, path
    finally:
        server.shutdown()
        server.server_close()
