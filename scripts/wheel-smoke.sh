#!/usr/bin/env bash
# The Raspberry Pi user's first five minutes, on this machine: build the wheel with a standard front end
# (python -m build), install it into a fresh venv with no extras (numpy + onnxruntime only), and from a
# folder outside the checkout run list, verify, bench and predict of the model the wheel carries; then add
# the 'images' extra and classify a PNG, and bring another exported folder over with --model.
#
#   MNIST_EDGE_DATA=../shared/data/mnist scripts/wheel-smoke.sh
#
# MNIST_EDGE_DATA: the MNIST folder (verify's accuracy check and the test digit). PYTHON: the interpreter
# that has `build` (default: the checkout's .venv, where the dev extra installs it). pip must be able to
# install numpy, onnxruntime and pillow (from PyPI or the local index pip is configured with). Exits
# non-zero at the first check that fails; everything it makes lives in a temporary folder, removed at exit.
set -euo pipefail
umask 022
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=${PYTHON:-$ROOT/.venv/bin/python}
DATA=$(cd "${MNIST_EDGE_DATA:?set MNIST_EDGE_DATA to the MNIST folder}" && pwd)  # absolute: we leave the checkout
WORK=$(mktemp -d "${TMPDIR:-/tmp}/mnist-edge-wheel.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
START=$SECONDS
step() { printf '\n== [%3ds] %s\n' $((SECONDS - START)) "$*"; }
fail() { printf 'wheel-smoke: FAILED: %s\n' "$*" >&2; exit 1; }

step "build: python -m build (the sdist, then the wheel from it, so only what the sdist carries can go in)"
"$PY" -m build --outdir "$WORK/dist" "$ROOT" >"$WORK/build.log" 2>&1 || { cat "$WORK/build.log"; fail "build"; }
WHEEL=$(ls "$WORK"/dist/*.whl)
echo "$(basename "$WHEEL"): $(stat -c %s "$WHEEL") bytes"  # exact: tests/test_install.py checks docs/install.md's figure
"$PY" - "$WHEEL" <<'EOF' || fail "wheel contents"
import sys, zipfile
names = set(zipfile.ZipFile(sys.argv[1]).namelist())
model = {f"mnist_edge/models_data/bn_cnn/{n}" for n in ("manifest.json", "model.onnx", "model.int8.onnx")}
missing = model - names
extra = [n for n in names if n.endswith((".pt", ".png")) or n.startswith(("tests/", "exported/"))]
print("default model in the wheel:", "missing " + ", ".join(sorted(missing)) if missing else "yes")
print("checkpoints, TorchScript, tests in the wheel:", ", ".join(extra) or "none")
sys.exit(1 if missing or extra else 0)
EOF

step "fresh venv, the wheel with no extras"
mkdir "$WORK/outside" && cd "$WORK/outside"  # no exported/ here and no checkout above: only the wheel's model
"$PY" -m venv "$WORK/venv"
VPY="$WORK/venv/bin/python"
"$VPY" -m pip install --quiet --disable-pip-version-check "$WHEEL" || fail "pip install of the wheel"
"$VPY" - <<'EOF' || fail "a runtime-only install must not bring torch, onnx or Pillow"
import importlib.metadata as md, importlib.util, sys
present = [m for m in ("torch", "onnx", "onnxscript", "PIL", "matplotlib") if importlib.util.find_spec(m)]
print("installed:", ", ".join(sorted(d.metadata["Name"] for d in md.distributions())))
print("torch, onnx, onnxscript, Pillow, matplotlib:", ", ".join(present) or "none, as intended")
sys.exit(1 if present else 0)
EOF
ME="$WORK/venv/bin/mnist-edge"

step "mnist-edge --help marks the commands that need an extra"
"$ME" --help >help.txt
grep -q "needs the 'train' extra" help.txt && grep -q "needs the 'images' extra" help.txt || { cat help.txt; fail "--help"; }
grep -E "^    (train|predict|demo) " help.txt

step "mnist-edge list (parameter and MAC counts without torch)"
"$ME" list | tee list.txt
grep -q "(torch)" list.txt && fail "list shows (torch) placeholders"
grep -Eq "^bn_cnn +002 +19,856 +3,652,352 " list.txt || fail "list: bn_cnn's counts"

step "mnist-edge verify (the packaged default model: hashes, contract, accuracy on the test set)"
"$ME" verify --data "$DATA" | tee verify.txt
grep -q "models_data/bn_cnn/" verify.txt || fail "verify did not check the packaged model"
grep -Eq "^model.int8.onnx .* ok$" verify.txt && grep -Eq "^model.onnx .* ok$" verify.txt || fail "verify"

if "$VPY" -c "import json, sys; from mnist_edge import packaged as p
sys.exit('selftest.bin' not in json.loads((p.PACKAGED_ROOT / 'bn_cnn' / 'manifest.json').read_text())['files'])"; then
  step "mnist-edge verify --self-test (the bundle the wheel carries: no MNIST files, no torch)"
  "$ME" verify --self-test || fail "verify --self-test"
else
  echo "(the committed exported/bn_cnn has no selftest.bin yet: verify --self-test not run)"
fi

step "mnist-edge bench (short: 20 runs, batch 1, 1 thread)"
"$ME" bench --runs 20 --warmup 2 --batch-sizes 1 --threads 1 --no-progress --json bench.json --markdown bench.md \
  | tee bench.txt
grep -q "not available" bench.txt || fail "bench: the torch formats should be listed as not available"
[ "$(stat -c %a bench.json)" = 644 ] && [ "$(stat -c %a bench.md)" = 644 ] || fail "bench files are not 0644"

step "mnist-edge predict without the 'images' extra: one line naming it"
if "$ME" predict digit.png 2>err.txt; then fail "predict without Pillow should stop"; fi
cat err.txt
[ "$(wc -l <err.txt)" = 1 ] && grep -q "needs pillow.*whl\[images\]" err.txt || fail "predict's message"

step "add the 'images' extra (Pillow) from the same wheel, classify an MNIST test digit written as PNG"
"$VPY" -m pip install --quiet --disable-pip-version-check "$WHEEL[images]" || fail "pip install of [images]"
"$VPY" -c "import torch" 2>/dev/null && fail "the images extra brought torch"
"$VPY" - "$DATA" <<'EOF'
import sys
from PIL import Image
from mnist_edge.data.mnist import load_mnist
x, y = load_mnist("test", data_dir=sys.argv[1])
Image.fromarray(x[0]).save("digit.png")
print(f"digit.png: MNIST test image 0, label {y[0]}")
EOF
"$ME" predict digit.png | tee predict.txt
grep -q "^digit.png: 7 " predict.txt || fail "predict: expected 7"

step "another exported folder, copied over as a user would (scp -r), given with --model"
cp -r "$ROOT/exported/cnn_small" .
"$ME" verify cnn_small --hashes-only >/dev/null || fail "verify of a copied folder"
"$ME" predict --model cnn_small digit.png | tee predict2.txt
grep -q "^digit.png: 7 " predict2.txt || fail "predict --model cnn_small: expected 7"

step "wheel smoke test passed in $((SECONDS - START)) s"
