#!/usr/bin/env bash
# The Raspberry Pi path without a Pi: run the runtime-only install, `verify --self-test`, `predict` and a
# short `bench` inside an arm64 Debian chroot under qemu-user, and compare its fp32 and int8 outputs with
# this (x86-64) machine's. Opt-in (not part of the test run); needs root, apt and network access to the
# Debian mirror and PyPI. Takes ~20-30 minutes the first time (debootstrap under emulation), a few minutes
# once the chroot exists. Timings under emulation mean nothing: only the outputs are compared.
#
# usage: sudo scripts/pi-emulation.sh [ARTIFACT_DIR]      (default: exported/bn_cnn)
#        sudo scripts/pi-emulation.sh --chroot-only       (build the chroot and its runtime venv, then stop)
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
ARTIFACT=exported/bn_cnn
case "${1:-}" in
  --chroot-only) CHROOT_ONLY=1 ;;
  -h|--help) sed -n 2,15p "$0"; exit 0 ;;
  "") ;;
  *) ARTIFACT=$1 ;;
esac

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

mounts() {
  for d in proc sys dev; do mountpoint -q "$CHROOT/$d" || mount --rbind "/$d" "$CHROOT/$d"; done
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

# the runtime-only install: numpy + onnxruntime (+ Pillow, the `images` extra, for `predict` on PNGs);
# the checkout goes in with --no-deps so nothing else can sneak in
install_runtime() {
  mounts
  if [ ! -x "$CHROOT/opt/venv/bin/python" ]; then
    log "venv + pip install numpy onnxruntime pillow (aarch64 wheels)"
    chroot "$CHROOT" /usr/bin/env -u PIP_FIND_LINKS PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
      /bin/sh -c 'python3 -m venv /opt/venv && /opt/venv/bin/pip install -q numpy onnxruntime pillow' \
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
[ "$CHROOT_ONLY" = 1 ] && { log "chroot ready at $CHROOT"; exit 0; }
