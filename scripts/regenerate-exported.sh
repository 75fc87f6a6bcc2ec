#!/usr/bin/env bash
# Rebuild committed artifact folders from their committed checkpoints with today's code, in the order the
# cards need: export (gated, the registered int8 recipe, the LiteRT files), robustness report, benchmark (every
# runtime file raced), then the cards.
#
#   MNIST_EDGE_DATA=../shared/data/mnist scripts/regenerate-exported.sh bn_cnn cnn      # some models
#   MNIST_EDGE_DATA=../shared/data/mnist scripts/regenerate-exported.sh                 # all of exported/
#
# Set NO_EXPORT=1 to keep the model files and only re-measure (robustness, bench) and redo the cards.
# Benchmarks use 1 thread; run on a quiet machine (the bench report records the load it saw).
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ME=${MNIST_EDGE:-$ROOT/.venv/bin/mnist-edge}
cd "$ROOT"
: "${MNIST_EDGE_DATA:?set MNIST_EDGE_DATA to the MNIST folder}"
models=("$@")
if [ ${#models[@]} -eq 0 ]; then
  for d in exported/*/; do [ -f "$d/checkpoint.pt" ] && models+=("$(basename "$d")"); done
fi
for m in "${models[@]}"; do
  echo "== $m"
  if [ -z "${NO_EXPORT:-}" ]; then
    "$ME" export --model "$m" --checkpoint "exported/$m/checkpoint.pt" --quantize --litert --out "exported/$m"
  fi
  "$ME" robustness "exported/$m" --threads 1 --json "exported/$m/robustness.json" >/dev/null
  "$ME" bench --model "exported/$m" --threads 1 --json "exported/$m/bench.json" --accuracy >/dev/null
done
"$ME" card
