#!/usr/bin/env bash
# Everything the project and its tests need, installed from the project's own files: the package with its
# dev extra in .venv, Debian's Chromium (browser test), Node.js and the npm packages locked in examples/.
# Idempotent and quick when nothing is missing: each step leaves a stamp (a hash of what it installed
# from) and is skipped while the stamp still matches. README command 1 and .ci/run call it.
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf 'setup: %s\n' "$*" >&2; }
stamp_of() { cat "$@" | sha256sum | cut -c1-16; }
as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }
apt_updated=""
apt_install() {
  [ -n "$apt_updated" ] || { as_root apt-get update -qq; apt_updated=1; }
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "$@" >/dev/null
}

# 1. Python: .venv with the package (editable) and its dev extra (torch CPU wheel, onnx, pytest, ...).
[ -x .venv/bin/python ] || { say "creating .venv"; python3 -m venv .venv; }
want=$(stamp_of pyproject.toml)
if [ "$(cat .venv/.setup-stamp 2>/dev/null)" != "$want" ] || [ ! -x .venv/bin/mnist-edge ]; then
  say "installing mnist-edge[dev] into .venv"
  .venv/bin/pip install --quiet --disable-pip-version-check -e ".[dev]"
  echo "$want" > .venv/.setup-stamp
fi

# 2. Chromium for tests/test_web_demo.py (Debian's package; Playwright's own browser download is offline here).
if [ ! -x /usr/bin/chromium ]; then say "installing chromium"; apt_install chromium; fi

# 3. Node.js and the npm packages of the embedding examples. onnxruntime-node's install script would
#    download CUDA binaries (offline here): skip it, its CPU binaries ship in the package.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then say "installing nodejs, npm"; apt_install nodejs npm; fi
for dir in examples/node examples/web; do
  want=$(stamp_of "$dir/package-lock.json")
  if [ "$(cat "$dir/node_modules/.setup-stamp" 2>/dev/null)" != "$want" ]; then
    say "npm ci in $dir"
    (cd "$dir" && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund --loglevel=error)
    echo "$want" > "$dir/node_modules/.setup-stamp"
  fi
done
say "done"
