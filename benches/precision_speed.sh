#!/usr/bin/env bash
# One epoch of `advgrad train` (784-256-256-10, SGD, batch 128, the whole
# training set) in f32, bf16 and f16, interleaved over ROUNDS rounds (one
# timed epoch each per round), under the benchmark lock; prints each
# epoch's seconds, the medians and the ratios to f32 measured in this run.
# Usage: benches/precision_speed.sh [ROUNDS]   (default 7)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
rounds=${1:-7}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
bin=$out/advgrad
cp target/release/advgrad "$bin"
echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); $(grep -o 'amx_bf16\|avx512_bf16\|avx512_fp16' /proc/cpuinfo | sort -u | xargs); $(nproc) threads"
echo "bf16 gemm path: ${ADVGRAD_GEMM_BF16:-auto}"
flock /tmp/advgrad-bench.lock bash -c '
  for r in $(seq '"$rounds"'); do
    for p in f32 bf16 f16; do
      s=$('"$bin"' bench --op epoch --device cpu --repeat 1 --json --precision $p | tail -1 |
          python3 -c "import json,sys; print(json.load(sys.stdin)[\"seconds\"])")
      echo "$p $s"
    done
  done' | tee "$out/times"
python3 - "$out/times" <<'PY'
import statistics, sys
t = {}
for line in open(sys.argv[1]):
    p, s = line.split()
    t.setdefault(p, []).append(float(s))
med = {p: statistics.median(v) for p, v in t.items()}
print("\n| precision | epochs | median s/epoch | min | max | ratio to f32 |")
print("|---|---|---|---|---|---|")
for p in ("f32", "bf16", "f16"):
    print(f"| {p} | {len(t[p])} | {med[p]:.3f} | {min(t[p]):.3f} | {max(t[p]):.3f} | {med[p] / med['f32']:.2f}× |")
PY
