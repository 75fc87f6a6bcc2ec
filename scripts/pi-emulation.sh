#!/usr/bin/env bash
# The Raspberry Pi path without a Pi: run the runtime-only install, `verify --self-test`, `predict` and a
# short `bench` inside an arm64 Debian chroot under qemu-user, and compare its fp32 and int8 outputs with
# this (x86-64) machine's. Opt-in (not part of the test run); needs root, apt and network access to the
# Debian mirror and PyPI. Takes ~20-30 minutes the first time (debootstrap under emulation), a few minutes
# once the chroot exists. Timings under emulation mean nothing: only the outputs are compared.
#
# usage: sudo scripts/pi-emulation.sh [ARTIFACT_DIR...]   (default: exported/bn_cnn; each needs selftest.bin)
#        sudo scripts/pi-emulation.sh --export NAME...    (first export fresh copies of the committed
#                                                          checkpoints into $PI_OUT/artifacts/, on this host)
#        sudo scripts/pi-emulation.sh --chroot-only       (build the chroot and its runtime venv, then stop)
# MNIST_EDGE_DATA must name the MNIST folder (the test images are compared on both machines).
# env:   PI_CHROOT  where the chroot lives (default /var/tmp/mnist-edge-pi-arm64; reused between runs)
#        PI_OUT     where reports go (default runs/pi-emulation)
#        PYTHON     the host Python with mnist-edge installed (default .venv/bin/python)
#        PI_MIRROR  Debian mirror (default: the first deb.debian.org-style URI in /etc/apt/sources.list*)
set -euo pipefail

cd "$(dirname "$0")/.."
REPO=$(pwd)
CHROOT=${PI_CHROOT:-/var/tmp/mnist-edge-pi-arm64}
OUT=${PI_OUT:-$REPO/runs/pi-emulation}
PYTHON=${PYTHON:-$REPO/.venv/bin/python}
CHROOT_ONLY=0
EXPORT=0
COMPARE_IMAGES=${PI_COMPARE_IMAGES:-2000}
case "${1:-}" in
  --chroot-only) CHROOT_ONLY=1; shift ;;
  --export) EXPORT=1; shift ;;
  -h|--help) sed -n 2,20p "$0"; exit 0 ;;
esac
ARTIFACTS=("$@")
[ ${#ARTIFACTS[@]} -gt 0 ] || ARTIFACTS=(exported/bn_cnn)

log() { printf '[pi-emulation %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { printf 'pi-emulation: %s\n' "$*" >&2; exit 1; }

[ "$(id -u)" = 0 ] || die "needs root (apt-get, debootstrap, chroot, mount)"
[ "$(uname -m)" = x86_64 ] || die "meant for an x86-64 host; this is $(uname -m)"

mirror() {
  if [ -n "${PI_MIRROR:-}" ]; then echo "$PI_MIRROR"; return; fi
  # deb822 (URIs: ...) or one-line (deb URI suite ...) sources; the first plain Debian one
  local u
  u=$(grep -hE '^(URIs:|deb )' /etc/apt/sources.list /etc/apt/sources.list.d/* 2>/dev/null \
      | sed -E 's/^URIs:[[:space:]]*//; s/^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?//; s/[[:space:]].*//' \
      | grep -E '/debian/?$' | head -n1 || true)
  echo "${u:-http://deb.debian.org/debian}"
}

host_tools() {
  local missing=()
  command -v debootstrap >/dev/null || missing+=(debootstrap)
  [ -x /usr/bin/qemu-aarch64-static ] || missing+=(qemu-user-static)
  command -v update-binfmts >/dev/null || missing+=(binfmt-support)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
  # containers often start without binfmt_misc mounted; without it the kernel cannot run arm64 binaries
  if [ ! -e /proc/sys/fs/binfmt_misc/register ]; then
    mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc || die "cannot mount binfmt_misc"
  fi
  if [ ! -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ]; then
    update-binfmts --enable qemu-aarch64 2>/dev/null || update-binfmts --import qemu-aarch64 || true
  fi
  [ -e /proc/sys/fs/binfmt_misc/qemu-aarch64 ] || die "qemu-aarch64 is not registered with binfmt_misc"
}

# /proc and /dev only. Not /sys: with the host's (x86) sysfs visible, onnxruntime 1.31.1's cpuinfo crashes
# `import onnxruntime` under qemu-user 7.2 (SIGSEGV, with every -cpu model tried: max, cortex-a72, cortex-a76).
# Without it, cpuinfo warns that it cannot read the processor lists, which is harmless.
mounts() {
  for d in proc dev; do mountpoint -q "$CHROOT/$d" || mount --rbind "/$d" "$CHROOT/$d"; done
}
unmounts() {
  for d in dev sys proc; do mountpoint -q "$CHROOT/$d" && umount -R "$CHROOT/$d" 2>/dev/null || true; done
}

build_chroot() {
  if [ ! -e "$CHROOT/.mnist-edge-base" ]; then
    local m; m=$(mirror)
    log "debootstrap bookworm arm64 minbase from $m into $CHROOT (the slow part: ~20 min under emulation)"
    rm -rf "$CHROOT"
    debootstrap --arch=arm64 --variant=minbase --include=python3,python3-venv,ca-certificates \
      bookworm "$CHROOT" "$m" >"$OUT/debootstrap.log" 2>&1 || die "debootstrap failed, see $OUT/debootstrap.log"
    touch "$CHROOT/.mnist-edge-base"
  fi
  # pip in the chroot must trust the same extra CA certificates as the host (TLS-intercepting proxies)
  if [ -d /usr/local/share/ca-certificates ]; then
    mkdir -p "$CHROOT/usr/local/share/ca-certificates"
    cp -r /usr/local/share/ca-certificates/. "$CHROOT/usr/local/share/ca-certificates/"
    chroot "$CHROOT" update-ca-certificates >/dev/null 2>&1 || true
  fi
  cp /etc/resolv.conf "$CHROOT/etc/resolv.conf" 2>/dev/null || true
}

# the runtime-only install: numpy + onnxruntime (+ Pillow, the `images` extra, for `predict` on PNGs, and
# ai-edge-litert, the `litert-runtime` extra, for the .tflite files: its aarch64 wheel is
# ai_edge_litert-2.3.0-cp311-cp311-manylinux_2_27_aarch64.whl); the checkout goes in with --no-deps so
# nothing else can sneak in
install_runtime() {
  mounts
  if [ ! -x "$CHROOT/opt/venv/bin/python" ]; then
    log "venv + pip install numpy onnxruntime pillow ai-edge-litert (aarch64 wheels)"
    chroot "$CHROOT" /usr/bin/env -u PIP_FIND_LINKS PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
      /bin/sh -c 'python3 -m venv /opt/venv && /opt/venv/bin/pip install -q numpy onnxruntime pillow ai-edge-litert' \
      || die "pip install in the chroot failed"
  fi
  log "installing this checkout (pip install --no-deps)"
  rm -rf "$CHROOT/opt/mnist-edge"
  mkdir -p "$CHROOT/opt/mnist-edge"
  git ls-files -z --cached --others --exclude-standard -- pyproject.toml README.md mnist_edge \
    | tar --null -T - -cf - | tar -xf - -C "$CHROOT/opt/mnist-edge"
  chroot "$CHROOT" /usr/bin/env -u PIP_FIND_LINKS /opt/venv/bin/pip install -q --no-deps --no-build-isolation /opt/mnist-edge \
    >/dev/null 2>&1 || chroot "$CHROOT" /usr/bin/env -u PIP_FIND_LINKS /opt/venv/bin/pip install -q --no-deps /opt/mnist-edge \
    || die "pip install --no-deps of the checkout failed"
  chroot "$CHROOT" /opt/venv/bin/python -c 'import sys; import mnist_edge.runtime; assert "torch" not in sys.modules' \
    || die "the runtime does not import inside the chroot"
}

mkdir -p "$OUT"
trap unmounts EXIT
host_tools
build_chroot
install_runtime
if [ "$CHROOT_ONLY" = 1 ]; then log "chroot ready at $CHROOT"; exit 0; fi
[ -n "${MNIST_EDGE_DATA:-}" ] || die "set MNIST_EDGE_DATA to the MNIST folder"

# logits of the first N test images through the runtime classifier, saved as .npy (run on both machines)
DUMP='import sys, numpy as np
from mnist_edge.data.mnist import load_mnist
from mnist_edge.runtime import load
folder, n, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
x, _ = load_mnist("test", data_dir=sys.argv[4])
for precision in ("fp32", "int8"):
    clf = load(folder, precision=precision, threads=1)
    np.save(f"{out}.{precision}.npy", clf.predict(x[:n]).logits)'

folders=()
for a in "${ARTIFACTS[@]}"; do
  if [ "$EXPORT" = 1 ]; then
    log "exporting $a from its committed checkpoint into $OUT/artifacts/$a (host, x86-64)"
    "$PYTHON" -m mnist_edge export --model "$a" --quantize --litert --out "$OUT/artifacts/$a" \
      --checkpoint "exported/$a/checkpoint.pt" >"$OUT/export-$a.log" 2>&1 || die "export of $a failed, see $OUT/export-$a.log"
    folders+=("$OUT/artifacts/$a")
  else
    grep -q '"selftest.bin"' "$a/manifest.json" 2>/dev/null || die "$a has no selftest.bin (exported before self-tests?): re-export it or use --export"
    folders+=("$a")
  fi
done

mkdir -p "$CHROOT/opt/data" "$CHROOT/opt/out"
cp "$MNIST_EDGE_DATA"/t10k-* "$CHROOT/opt/data/"
# ten digits as PNG files (the first of each class in the first bundle) for `predict`
"$PYTHON" - "${folders[0]}" "$OUT/digits" <<'PY'
import sys
from pathlib import Path
from PIL import Image
from mnist_edge.evaluate.bundle import read_bundle
header, arrays, _ = read_bundle(sys.argv[1])
out = Path(sys.argv[2]); out.mkdir(parents=True, exist_ok=True)
for c in range(10):
    i = int((arrays["labels"] == c).nonzero()[0][0])
    Image.fromarray(arrays["images"][i, 0]).save(out / f"digit{c}.png")
PY
rm -rf "$CHROOT/opt/digits"; cp -r "$OUT/digits" "$CHROOT/opt/digits"

in_chroot() { chroot "$CHROOT" /usr/bin/env -u PIP_FIND_LINKS HOME=/root PATH=/opt/venv/bin:/usr/bin:/bin "$@"; }
in_chroot python -c 'import platform, numpy, onnxruntime; print("chroot:", platform.machine(), "python", platform.python_version(), "numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__)' | tee "$OUT/versions-arm64.txt"
"$PYTHON" -c 'import platform, numpy, onnxruntime; print("host:", platform.machine(), "python", platform.python_version(), "numpy", numpy.__version__, "onnxruntime", onnxruntime.__version__)' | tee "$OUT/versions-x86_64.txt"

status=0
for f in "${folders[@]}"; do
  name=$(basename "$f")
  rm -rf "$CHROOT/opt/artifacts/$name"; mkdir -p "$CHROOT/opt/artifacts"; cp -r "$f" "$CHROOT/opt/artifacts/$name"
  rm -f "$CHROOT/opt/artifacts/$name/checkpoint.pt" "$CHROOT/opt/artifacts/$name/model.pt"  # a Pi gets the ONNX files
  log "$name: verify --self-test (arm64)"
  in_chroot mnist-edge verify --self-test "/opt/artifacts/$name" --json - 2>/dev/null >"$OUT/selftest-$name-arm64.json" || status=1
  in_chroot mnist-edge verify --self-test "/opt/artifacts/$name" 2>&1 | grep -v cpuinfo | tee "$OUT/selftest-$name-arm64.txt" || true
  "$PYTHON" -m mnist_edge verify --self-test "$f" --json - >"$OUT/selftest-$name-x86_64.json" || status=1
  log "$name: predict (arm64 and x86-64)"
  for p in model.int8.onnx model.onnx model.int8.tflite model.tflite; do
    [ -f "$f/$p" ] || continue
    in_chroot mnist-edge predict --json --model "/opt/artifacts/$name/$p" /opt/digits/digit{0..9}.png 2>/dev/null >"$OUT/predict-$name-$p-arm64.json" || status=1
    "$PYTHON" -m mnist_edge predict --json --model "$f/$p" "$OUT"/digits/digit{0..9}.png >"$OUT/predict-$name-$p-x86_64.json" || status=1
  done
  log "$name: bench (arm64; emulated timings mean nothing)"
  in_chroot mnist-edge bench --model "/opt/artifacts/$name" --formats onnx int8 tflite tflite-int8 --batch-sizes 1 --threads 1 \
    --runs 20 --warmup 2 --no-progress --json "/opt/out/bench-$name-arm64.json" 2>/dev/null >"$OUT/bench-$name-arm64.txt" || status=1
  cp "$CHROOT/opt/out/bench-$name-arm64.json" "$OUT/" 2>/dev/null || true
  log "$name: logits of the first $COMPARE_IMAGES test images on both machines"
  in_chroot python -c "$DUMP" "/opt/artifacts/$name" "$COMPARE_IMAGES" "/opt/out/logits-$name-arm64" /opt/data 2>/dev/null || status=1
  cp "$CHROOT/opt/out/logits-$name-arm64".*.npy "$OUT/" || status=1
  "$PYTHON" -c "$DUMP" "$f" "$COMPARE_IMAGES" "$OUT/logits-$name-x86_64" "$MNIST_EDGE_DATA" || status=1
done

# the comparison: per model and precision, how far arm64's logits are from x86-64's
"$PYTHON" - "$OUT" "${folders[@]}" <<'PY' | tee "$OUT/summary.md"
import json, sys
from pathlib import Path
import numpy as np
out = Path(sys.argv[1])
print("| model | file | self-test arm64 | max abs diff vs reference (arm64 / x86-64) | moved images | "
      "predict labels equal | logits arm64 vs x86-64 on test images: max abs diff, rows differing, labels differing |")
print("|---|---|---|---|---|---|---|")
for folder in map(Path, sys.argv[2:]):
    name = folder.name
    def rows(arch):
        try:
            return {r["file"]: r for r in json.loads((out / f"selftest-{name}-{arch}.json").read_text())["rows"]}
        except (OSError, ValueError, KeyError):
            return {}
    arm, x86 = rows("arm64"), rows("x86_64")
    for file, precision in (("model.onnx", "fp32"), ("model.int8.onnx", "int8"), ("model.tflite", None),
                            ("model.int8.tflite", None)):  # LiteRT: self-test and predict (no logits dump)
        if precision is None and file not in arm and file not in x86:
            continue
        a, x = arm.get(file, {}), x86.get(file, {})
        try:
            pa = [r["label"] for r in json.loads((out / f"predict-{name}-{file}-arm64.json").read_text())["results"]]
            px = [r["label"] for r in json.loads((out / f"predict-{name}-{file}-x86_64.json").read_text())["results"]]
            same = "yes" if pa == px else f"NO ({pa} vs {px})"
        except (OSError, ValueError, KeyError):
            same = "-"
        try:
            if precision is None:
                raise OSError
            la, lx = (np.load(out / f"logits-{name}-{arch}.{precision}.npy") for arch in ("arm64", "x86_64"))
            d = np.abs(la - lx)
            logits = f"{d.max():.3g}, {(d.max(1) > 0).sum()} of {len(d)}, {(la.argmax(1) != lx.argmax(1)).sum()}"
        except OSError:
            logits = "-"
        fmt = lambda r: "-" if r.get("max_abs_diff") is None else f"{r['max_abs_diff']:.3g}"
        print(f"| {name} | {file} | {a.get('status', 'failed')}{' (bit-identical)' if a.get('exact') else ''} | "
              f"{fmt(a)} / {fmt(x)} | {a.get('moved_images', '-')} | {same} | {logits} |")
PY
log "done: $OUT/summary.md (exit $status)"
exit $status
