#!/usr/bin/env bash
# Fails if a release binary calls a `core::arch` SIMD intrinsic as a
# function. An intrinsic is inlined only into code compiled with its target
# features; one left in a helper or closure compiled without them (a closure
# passed to `array::from_fn` in a SIMD packer, once) becomes a call per
# instruction, and the kernel runs several times slower with the same bits,
# which no test would see. std's own feature detection (`std_detect`) may
# call `xgetbv`.
# Usage: scripts/check-inlined-intrinsics.sh [BINARY]   (default target/release/advgrad)
set -euo pipefail
cd "$(dirname "$0")/.."
bin=${1:-target/release/advgrad}
if ! command -v objdump >/dev/null; then
  SUDO=$(command -v sudo || true)
  $SUDO apt-get install -y -qq binutils >/dev/null
fi
calls=$(objdump -d --no-show-raw-insn "$bin" |
  awk '/^[0-9a-f]+ <.*>:$/ { fn = $2 } /call.*core9core_arch/ { print fn " -> " $NF }' |
  grep -v 'std_detect' || true)
if [ -n "$calls" ]; then
  echo "$bin calls core::arch intrinsics out of line (caller -> intrinsic):" >&2
  echo "$calls" | sort | uniq -c | sort -rn | head -20 >&2
  exit 1
fi
echo "$bin: every core::arch intrinsic is inlined"
