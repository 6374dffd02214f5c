#!/usr/bin/env bash
# Builds the CPU SIMT emulator with ThreadSanitizer around a small driver
# (crates/simt/tsan/driver.cpp) that runs the tiled matmul, the
# reductions and the implicit-GEMM convolution, and runs it. Fails on any
# data race or wrong result.
#
#   scripts/simt-tsan.sh              # the kernels in kernels/
#   scripts/simt-tsan.sh DIR          # the kernels in DIR (e.g. a copy with a
#                                     # __syncthreads removed, to see TSan fire)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
kdir="$(cd "${1:-$root/kernels}" && pwd)"
out="${CARGO_TARGET_DIR:-$root/target}/simt-tsan"
mkdir -p "$out"
"${CXX:-g++}" -std=c++17 -O1 -g -fsanitize=thread -fno-strict-aliasing -pthread \
    -Wno-unknown-pragmas \
    -I "$kdir" -I "$root/crates/simt/csrc" \
    "$root/crates/simt/tsan/driver.cpp" "$root/crates/simt/csrc/runtime.cpp" \
    -o "$out/driver"
# exitcode: TSan makes the process fail when it reported anything.
TSAN_OPTIONS="halt_on_error=1 exitcode=66 ${TSAN_OPTIONS:-}" "$out/driver"
