#!/usr/bin/env bash
# AutoAttack in advgrad beside torchattacks' AutoAttack, on the same model
# file, the same images and the same threads: robust accuracy and seconds.
#
#   benches/peers/autoattack.sh [--model FILE] [--seeds 0,1,2] [--limit 1000]
#                               [--eps 0.1] [--threads 2] [--skip-build]
#
# Without --model it trains the issue's model first:
# `advgrad train --adv fgsm-rs --eps 0.1` (784-256-256-10, 5 epochs, seed 0).
# Per seed, one after the other and each under `flock /tmp/advgrad-bench.lock`
# (so no other benchmark overlaps it), it runs:
#   - advgrad PGD-20 (eps 0.1, step 2.5·eps/20, no random start),
#   - advgrad AutoAttack standard (the reference settings: APGD and FAB 100
#     steps, Square 5000 queries on the reference's p schedule),
#   - advgrad AutoAttack with torchattacks' settings (--steps 10
#     --rescale-schedule),
#   - torchattacks.AutoAttack(version='standard') (torchattacks_autoattack.py),
# and prints one table with the medians over the seeds. The peers
# virtualenv (benches/peers/.venv, requirements.txt) gets torchattacks 3.5.1
# from PyPI (without its dependency pins: it needs only torch, numpy, scipy).
#
# Environment: PYTHON (default python3.11), ADVGRAD_DATA (default
# /usr/share/datasets/fashion-mnist), PEERS_VENV (default benches/peers/.venv).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
VENV="${PEERS_VENV:-$HERE/.venv}"
PY="${PYTHON:-python3.11}"
DATA="${ADVGRAD_DATA:-/usr/share/datasets/fashion-mnist}"
MODEL=""
SEEDS="0,1,2"
LIMIT=1000
EPS=0.1
THREADS=2
BUILD=1

while [ $# -gt 0 ]; do
  case "$1" in
    --model) MODEL="$2"; shift 2 ;;
    --seeds) SEEDS="$2"; shift 2 ;;
    --limit) LIMIT="$2"; shift 2 ;;
    --eps) EPS="$2"; shift 2 ;;
    --threads) THREADS="$2"; shift 2 ;;
    --skip-build) BUILD=0; shift ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "autoattack.sh: unknown option $1 (try --help)" >&2; exit 2 ;;
  esac
done

log() { echo "[autoattack] $*" >&2; }

# shellcheck source=venv.sh
. "$HERE/venv.sh"
peers_venv_create "$VENV" "$PY"
peers_venv_install "$VENV" "$HERE/requirements.txt"
VPY="$VENV/bin/python"
if ! "$VPY" -c 'import torchattacks' 2>/dev/null; then
  log "installing torchattacks 3.5.1 from PyPI"
  "$VPY" -m pip install --no-deps 'torchattacks==3.5.1' >&2
fi

BIN="$ROOT/target/release/advgrad"
if [ "$BUILD" = 1 ]; then
  log "cargo build --release"
  (cd "$ROOT" && cargo build --release --quiet)
fi
[ -x "$BIN" ] || { echo "autoattack.sh: $BIN is missing" >&2; exit 1; }

export RAYON_NUM_THREADS="$THREADS" OMP_NUM_THREADS="$THREADS" MKL_NUM_THREADS="$THREADS"
export ADVGRAD_DATA="$DATA"
WORK="$(mktemp -d "${TMPDIR:-/tmp}/advgrad-autoattack.XXXXXX")"
trap 'rm -rf "$WORK"' EXIT
if [ -z "$MODEL" ]; then
  MODEL="$WORK/fgsm-rs.safetensors"
  log "training the model: advgrad train --adv fgsm-rs --eps 0.1"
  "$BIN" train --adv fgsm-rs --eps 0.1 --out "$MODEL" --quiet >&2
fi

RAW="$WORK/raw.jsonl"
locked() { flock /tmp/advgrad-bench.lock "$@"; }
advgrad_run() { # label, seed, extra arguments
  local label="$1" seed="$2"; shift 2
  local start end
  start=$(date +%s.%N)
  locked "$BIN" attack --model "$MODEL" --eps "$EPS" --limit "$LIMIT" --batch "$LIMIT" \
    --seed "$seed" --json --quiet "$@" > "$WORK/out.json"
  end=$(date +%s.%N)
  "$VPY" - "$WORK/out.json" "$label" "$seed" "$start" "$end" >> "$RAW" <<'PY'
import json, sys
report = json.load(open(sys.argv[1]))
r = report["results"][0]
print(json.dumps({"run": sys.argv[2], "seed": int(sys.argv[3]),
                  "clean_accuracy": report["clean_accuracy"],
                  "robust_accuracy": r["robust_accuracy"], "seconds": r["seconds"],
                  "wall_seconds": float(sys.argv[5]) - float(sys.argv[4])}))
PY
}

IFS=',' read -r -a seeds <<< "$SEEDS"
for seed in "${seeds[@]}"; do
  log "seed $seed: advgrad PGD-20"
  advgrad_run "advgrad PGD-20" "$seed" --attack pgd --steps 20
  log "seed $seed: advgrad AutoAttack (reference settings)"
  advgrad_run "advgrad AutoAttack standard" "$seed" --attack autoattack
  log "seed $seed: advgrad AutoAttack (torchattacks' settings)"
  advgrad_run "advgrad AutoAttack, torchattacks' settings" "$seed" --attack autoattack \
    --steps 10 --rescale-schedule
  log "seed $seed: torchattacks AutoAttack"
  locked "$VPY" "$HERE/torchattacks_autoattack.py" --model "$MODEL" --data "$DATA" \
    --limit "$LIMIT" --eps "$EPS" --seed "$seed" --threads "$THREADS" \
    | "$VPY" -c 'import json, sys
r = json.loads(sys.stdin.read())
print(json.dumps({"run": "torchattacks AutoAttack standard", "seed": r["seed"],
                  "clean_accuracy": r["clean_accuracy"], "robust_accuracy": r["robust_accuracy"],
                  "seconds": r["seconds"], "versions": "torch " + r["torch"] + ", torchattacks " + r["torchattacks"]}))' >> "$RAW"
done

cpu="$(lscpu | sed -n 's/^Model name: *//p' | head -1)"
"$VPY" - "$RAW" "$cpu" "$THREADS" "$LIMIT" "$EPS" <<'PY'
import collections, json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
runs = collections.OrderedDict()
for r in rows:
    runs.setdefault(r["run"], []).append(r)
print(f"AutoAttack, first {sys.argv[4]} test images, eps {sys.argv[5]}, {sys.argv[3]} threads, {sys.argv[2]}")
print(f"{'run':48} {'robust accuracy per seed':>28} {'median s':>9} {'s per seed':>28}")
tt = statistics.median(r["seconds"] for r in runs.get("torchattacks AutoAttack standard", [{"seconds": float("nan")}]))
for name, rs in runs.items():
    accs = " ".join(f"{100 * r['robust_accuracy']:.1f}%" for r in rs)
    secs = [r["seconds"] for r in rs]
    med = statistics.median(secs)
    print(f"{name:48} {accs:>28} {med:9.1f} {' '.join(f'{s:.1f}' for s in secs):>28}  ({med / tt:.2f}× torchattacks)")
PY
