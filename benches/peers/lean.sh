#!/usr/bin/env bash
# The lean protocol: advgrad's epoch beside a lean JAX loop (jit step, batches
# already sliced on the device, synthetic data of MNIST's shape) for the MLP
# 784-H-H-10 at (H, batch) = (256, 128), (1024, 128), (1024, 512), (2048, 256),
# on the same threads; the two alternate, configuration by configuration, for
# --rounds rounds of --repeat epochs each; prints the ratio table with the CPU
# model and writes benches/peers/lean-results.json. See lean.py.
#
#   benches/peers/lean.sh [--rounds N] [--repeat N] [--threads N]
#                         [--configs 256x128,1024x128,...] [--skip-build]
#
# It installs only JAX's pins from requirements.txt, in its own virtualenv.
# Environment: PYTHON (default python3.11), LEAN_VENV (default
# benches/peers/.venv-lean).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${LEAN_VENV:-$HERE/.venv-lean}"
PY="${PYTHON:-python3.11}"
ROUNDS=2
REPEAT=3
THREADS=2
CONFIGS="256x128,1024x128,1024x512,2048x256"
BUILD=1

while [ $# -gt 0 ]; do
  case "$1" in
    --rounds) ROUNDS="$2"; shift 2 ;;
    --repeat) REPEAT="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --configs) CONFIGS="$2"; shift 2 ;;
    --skip-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "lean.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done

log() { echo "[lean] $*" >&2; }

# shellcheck source=venv.sh
. "$HERE/venv.sh"
peers_venv_create "$VENV" "$PY"
REQ="$VENV/requirements-jax.txt"
grep -E '^(jax|jaxlib|ml_dtypes|numpy|opt_einsum|scipy)==' "$HERE/requirements.txt" > "$REQ.new"
mv "$REQ.new" "$REQ"
peers_venv_install "$VENV" "$REQ"
VPY="$VENV/bin/python"

BIN="$ROOT/target/release/advgrad"
if [ "$BUILD" = 1 ]; then
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet)
fi
[ -x "$BIN" ] || { echo "lean.sh: $BIN is missing (build it or drop --skip-build)" >&2; exit 1; }

export OMP_NUM_THREADS="$THREADS" RAYON_NUM_THREADS="$THREADS"
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads=$THREADS ${XLA_FLAGS:-}"
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=2

load_before="$(cut -d' ' -f1 /proc/loadavg)"
RAW="$(mktemp "${TMPDIR:-/tmp}/advgrad-lean.XXXXXX.jsonl")"
trap 'rm -f "$RAW"' EXIT

IFS=',' read -r -a configs <<< "$CONFIGS"
for round in $(seq 1 "$ROUNDS"); do
  for cfg in "${configs[@]}"; do
    h="${cfg%x*}" batch="${cfg#*x}" arch="784-${cfg%x*}-${cfg%x*}-10"
    # Alternate which side goes first, so neither always meets the other's
    # leftovers (caches, frequency).
    if [ $(( round % 2 )) = 1 ]; then order="jax advgrad"; else order="advgrad jax"; fi
    for fw in $order; do
      log "round $round/$ROUNDS: $fw H=$h batch=$batch"
      if [ "$fw" = jax ]; then
        "$VPY" "$HERE/lean.py" jax --arch "$arch" --batch "$batch" --repeat "$REPEAT" >> "$RAW" \
          || echo "{\"framework\": \"jax\", \"arch\": \"$arch\", \"batch\": $batch, \"error\": \"exit $?\"}" >> "$RAW"
      else
        "$VPY" "$HERE/lean.py" advgrad --bin "$BIN" --arch "$arch" --batch "$batch" --repeat "$REPEAT" >> "$RAW"
      fi
    done
  done
done

cpu="$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
grep -q avx512f /proc/cpuinfo && cpu="$cpu (AVX-512)"
machine=$("$VPY" -c 'import json, sys; print(json.dumps(dict(zip(["date", "cpu", "cores", "threads", "kernel", "git", "load_before", "load_after"], sys.argv[1:]))))' \
  "$(date -u '+%F %H:%M UTC')" "$cpu" "$(nproc)" "$THREADS" "$(uname -sr)" \
  "$(git -C "$ROOT" describe --always --dirty)" "$load_before" "$(cut -d' ' -f1 /proc/loadavg)")
"$VPY" "$HERE/lean.py" report "$RAW" --json "$HERE/lean-results.json" --machine "$machine"
