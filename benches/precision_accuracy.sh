#!/usr/bin/env bash
# Test accuracy of `advgrad train` in f32, bf16 and f16 over seeds 0-4:
# SGD 5 epochs (lr 0.1) and Adam 10 epochs (lr 1e-3), default arch
# 784-256-256-10, batch 128, Fashion-MNIST. One JSON line per run on
# stdout, then the table of means and standard deviations.
# Usage: benches/precision_accuracy.sh [SEEDS...] > runs.jsonl
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet
seeds=("${@:-0 1 2 3 4}")
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# A copy: a rebuild during the runs does not change the binary under them.
bin=$out/advgrad
cp target/release/advgrad "$bin"
for seed in ${seeds[*]}; do
  for run in "sgd 5 0.1" "adam 10 0.001"; do
    set -- $run
    for precision in f32 bf16 f16; do
      line=$("$bin" train --device cpu --optim "$1" --epochs "$2" --lr "$3" \
        --seed "$seed" --precision "$precision" --out "$out/m.safetensors" --json | tail -1)
      echo "{\"optim\":\"$1\",\"epochs\":$2,\"lr\":$3,\"seed\":$seed,\"precision\":\"$precision\",\"run\":$line}"
    done
  done
done | tee "$out/runs.jsonl"
python3 - "$out/runs.jsonl" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1])]
print("\n| optimiser | precision | runs | mean test accuracy | std | Δ vs f32 (points) |")
print("|---|---|---|---|---|---|")
for optim in ("sgd", "adam"):
    base = None
    for p in ("f32", "bf16", "f16"):
        acc = [100 * r["run"]["test_accuracy"] for r in runs if r["optim"] == optim and r["precision"] == p]
        if not acc:
            continue
        mean = statistics.mean(acc)
        std = statistics.stdev(acc) if len(acc) > 1 else float("nan")
        base = mean if p == "f32" else base
        delta = "" if p == "f32" else f"{mean - base:+.2f}"
        print(f"| {optim} | {p} | {len(acc)} | {mean:.2f}% | {std:.2f} | {delta} |")
PY
