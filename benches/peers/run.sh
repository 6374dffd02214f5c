#!/usr/bin/env bash
# advgrad beside JAX, PyTorch and NumPy on the CPU: the same MLP, data, batch
# size and attacks in each, on the same threads; prints one table of times and
# ratios (advgrad time / peer time) and writes benches/peers/results.json.
#
#   benches/peers/run.sh [--frameworks advgrad,jax,torch,torch-compile,numpy]
#   (also: advgrad-bf16 and torch-bf16, the same protocol in bf16 mixed precision)
#                        [--ops epoch,train_step,fgsm,pgd] [--threads N]
#                        [--skip-build] [--update]
#
#   --update       install the newest jax[cpu], torch and numpy from PyPI and
#                  rewrite requirements.txt with their pins
#   --skip-build   use target/release/advgrad as it is
#
# Environment: PYTHON (default python3.11), ADVGRAD_DATA (default
# /usr/share/datasets/fashion-mnist), PEERS_VENV (default benches/peers/.venv).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${PEERS_VENV:-$HERE/.venv}"
PY="${PYTHON:-python3.11}"
DATA="${ADVGRAD_DATA:-/usr/share/datasets/fashion-mnist}"
REQ="$HERE/requirements.txt"
FRAMEWORKS="advgrad,jax,torch,torch-compile,numpy"
OPS="epoch,train_step,fgsm,pgd"
THREADS=2
BUILD=1
UPDATE=0

while [ $# -gt 0 ]; do
  case "$1" in
    --frameworks) FRAMEWORKS="$2"; shift 2 ;;
    --ops) OPS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --skip-build) BUILD=0; shift ;;
    --update) UPDATE=1; shift ;;
    -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "run.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done

log() { echo "[peers] $*" >&2; }

for f in train-images-idx3-ubyte.gz train-labels-idx1-ubyte.gz t10k-images-idx3-ubyte.gz t10k-labels-idx1-ubyte.gz; do
  [ -f "$DATA/$f" ] || { echo "run.sh: $DATA/$f is missing (set ADVGRAD_DATA)" >&2; exit 1; }
done

# ---- the virtualenv ------------------------------------------------------
needs_python=0
case ",$FRAMEWORKS," in *,jax,*|*,torch,*|*,torch-compile,*|*,torch-bf16,*|*,numpy,*) needs_python=1 ;; esac

# shellcheck source=venv.sh
. "$HERE/venv.sh"
peers_venv_create "$VENV" "$PY"
VPY="$VENV/bin/python"

if [ "$UPDATE" = 1 ]; then
  log "installing the newest jax[cpu], torch, numpy from PyPI"
  # PyPI's Linux torch wheel is the CUDA build and pulls the CUDA libraries
  # (~3 GB); it runs on the CPU all the same. PyPI has no CPU-only torch.
  "$VPY" -m pip install --upgrade --only-binary :all: 'jax[cpu]' torch numpy >&2
  {
    echo "# Pinned by benches/peers/run.sh --update on $(date -u +%F) ($("$VPY" --version))."
    echo "# PyPI's torch for Linux is the CUDA build: it pulls the nvidia-* wheels below."
    "$VPY" -m pip freeze --all --exclude-editable | grep -v -i '^pip=='
  } > "$REQ"
  sha256sum "$REQ" | cut -d' ' -f1 > "$VENV/.requirements.sha256"
elif [ "$needs_python" = 1 ]; then
  peers_venv_install "$VENV" "$REQ"
fi

# ---- advgrad ---------------------------------------------------------------
BIN="$ROOT/target/release/advgrad"
case ",$FRAMEWORKS," in
  *,advgrad,*)
    if [ "$BUILD" = 1 ]; then
      log "cargo build --release"
      (cd "$ROOT" && cargo build --release --quiet)
    fi
    [ -x "$BIN" ] || { echo "run.sh: $BIN is missing (build it or drop --skip-build)" >&2; exit 1; }
    ;;
esac

# ---- the same threads everywhere -------------------------------------------
export OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS" OPENBLAS_NUM_THREADS="$THREADS"
export RAYON_NUM_THREADS="$THREADS"
export XLA_FLAGS="--xla_cpu_multi_thread_eigen=true intra_op_parallelism_threads=$THREADS ${XLA_FLAGS:-}"
export JAX_PLATFORMS=cpu
export TF_CPP_MIN_LOG_LEVEL=2
export ADVGRAD_DATA="$DATA"

load_before="$(cut -d' ' -f1 /proc/loadavg)"
if awk -v l="$load_before" 'BEGIN { exit !(l > 1.0) }'; then
  log "warning: load average $load_before: timings are only meaningful on an idle machine"
  log "  (PyTorch's OpenMP threads spin-wait and slow down 10-100x when the cores are shared)"
fi

RAW="$(mktemp "${TMPDIR:-/tmp}/advgrad-peers.XXXXXX.jsonl")"
trap 'rm -f "$RAW"' EXIT

IFS=',' read -r -a fws <<< "$FRAMEWORKS"
for fw in "${fws[@]}"; do
  log "running $fw ($OPS)"
  start=$(date +%s)
  if [ "$fw" = advgrad ] || [ "$fw" = advgrad-bf16 ]; then
    "$VPY" "$HERE/peers.py" run --framework "$fw" --bin "$BIN" --data "$DATA" \
      --threads "$THREADS" --ops "$OPS" >> "$RAW" \
      || echo "{\"framework\": \"$fw\", \"op\": \"all\", \"error\": \"exit $?\"}" >> "$RAW"
  else
    "$VPY" "$HERE/peers.py" run --framework "$fw" --data "$DATA" \
      --threads "$THREADS" --ops "$OPS" >> "$RAW" \
      || echo "{\"framework\": \"$fw\", \"op\": \"all\", \"error\": \"exit $?\"}" >> "$RAW"
  fi
  log "$fw done in $(( $(date +%s) - start )) s"
done

cpu="$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
grep -q avx512f /proc/cpuinfo && cpu="$cpu (AVX-512)"
cores="$(nproc)"
machine=$("$VPY" -c 'import json, sys; print(json.dumps(dict(zip(["date", "cpu", "cores", "threads", "kernel", "load_before", "load_after"], sys.argv[1:]))))' \
  "$(date -u '+%F %H:%M UTC')" "$cpu" "$cores" "$THREADS" "$(uname -sr)" "$load_before" "$(cut -d' ' -f1 /proc/loadavg)")
status=0
"$VPY" "$HERE/peers.py" report "$RAW" --json "$HERE/results.json" --machine "$machine" || status=$?
log "wrote $HERE/results.json"
exit "$status"
