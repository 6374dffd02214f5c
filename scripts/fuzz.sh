#!/usr/bin/env bash
# Fuzzes advgrad's parsers and loaders with cargo-fuzz (libFuzzer + ASan):
# the IDX reader (raw and gzip), the model-file and checkpoint loader, the
# architecture-spec parser and the attack options.
#
#   scripts/fuzz.sh [SECONDS]        each target for SECONDS (default 60)
#   scripts/fuzz.sh --build-only     installs cargo-fuzz and builds the targets
#   FUZZ_TARGETS="idx_raw model_file" scripts/fuzz.sh 600
#
# Each run starts from the committed seeds in fuzz/corpus/TARGET and keeps
# what it finds in fuzz/found/TARGET (ignored by git); a crash, a leak or
# more than 2 GB of memory (-rss_limit_mb=2048) stops it with the input in
# fuzz/artifacts/TARGET. The last lines give executions per second.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"

seconds=${1:-60}
targets=${FUZZ_TARGETS:-"idx_raw idx_gzip model_file arch_spec attack_options"}

if ! rustup toolchain list | grep -q '^nightly'; then
  rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi

cargo +nightly fuzz build
if [ "$seconds" = --build-only ]; then
  exit 0
fi
summary=()
for target in $targets; do
  mkdir -p "found/$target"
  log="found/$target.log"
  echo "== $target: ${seconds} s"
  set +e
  cargo +nightly fuzz run "$target" "found/$target" "corpus/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
    -print_final_stats=1 >"$log" 2>&1
  status=$?
  set -e
  grep -E '^(#[0-9]+ +(INITED|DONE)|==[0-9]+==|SUMMARY|stat::)' "$log" || true
  execs=$(awk '/stat::number_of_executed_units/ {print $2}' "$log")
  rate=$(awk '/stat::average_exec_per_sec/ {print $2}' "$log")
  rss=$(awk '/stat::peak_rss_mb/ {print $2}' "$log")
  summary+=("$target: ${execs:-?} executions, ${rate:-?}/s, peak RSS ${rss:-?} MB, exit $status")
  if [ "$status" -ne 0 ]; then
    printf '%s\n' "${summary[@]}"
    echo "fuzz: $target failed; the input is in fuzz/artifacts/$target" >&2
    exit 1
  fi
done
printf '%s\n' "${summary[@]}"
