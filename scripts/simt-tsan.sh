#!/usr/bin/env bash
# Builds the CPU SIMT emulator with ThreadSanitizer around a small driver
# (crates/simt/tsan/driver.cpp) that runs the tiled matmul, the
# reductions and the implicit-GEMM convolution, and runs it. Fails on any
# data race or wrong result, with the x86-64 fiber switch and with the
# portable one (swapcontext). Then checks the check: the same driver over a
# copy of the kernels whose matmul lacks the barrier before a shared tile
# is refilled must make ThreadSanitizer report a race.
#
#   scripts/simt-tsan.sh              # the kernels in kernels/, then the planted race
#   scripts/simt-tsan.sh DIR          # the kernels in DIR only (e.g. a copy with a
#                                     # __syncthreads removed, to see TSan fire)
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
out="${CARGO_TARGET_DIR:-$root/target}/simt-tsan"
mkdir -p "$out"

# Builds the driver over the kernels in $1 as $out/$2 (further compiler
# options after those) and runs it; the exit code is the driver's, 66 when
# TSan reported anything.
tsan_run() {
    local kdir name
    kdir="$(cd "$1" && pwd)"
    name="$2"
    shift 2
    "${CXX:-g++}" -std=c++17 -O1 -g -fsanitize=thread -fno-strict-aliasing -pthread \
        -Wno-unknown-pragmas "$@" \
        -I "$kdir" -I "$root/crates/simt/csrc" \
        "$root/crates/simt/tsan/driver.cpp" "$root/crates/simt/csrc/runtime.cpp" \
        -o "$out/$name"
    # exitcode: TSan makes the process fail when it reported anything.
    TSAN_OPTIONS="halt_on_error=1 exitcode=66 ${TSAN_OPTIONS:-}" "$out/$name"
}

if [[ $# -ge 1 ]]; then
    tsan_run "$1" driver
    exit 0
fi
tsan_run "$root/kernels" driver
# The same with the portable fiber switch (swapcontext) that platforms
# other than x86-64 Linux use.
echo "simt-tsan: again with the portable fiber switch (SIMT_UCONTEXT)"
tsan_run "$root/kernels" driver-ucontext -DSIMT_UCONTEXT

planted="$out/planted-kernels"
rm -rf "$planted"
cp -r "$root/kernels" "$planted"
marker='it is the one to refill.'
awk -v m="$marker" '
    armed && /__syncthreads\(\);/ { sub(/__syncthreads\(\);/, "/* barrier removed */"); armed = 0; done = 1 }
    index($0, m) { armed = 1 }
    { print }
    END { exit done ? 0 : 1 }
' "$root/kernels/matmul.cu" >"$planted/matmul.cu" || {
    echo "simt-tsan: no __syncthreads after \"$marker\" in kernels/matmul.cu to remove" >&2
    exit 1
}
set +e
tsan_run "$planted" driver-planted >"$out/planted.log" 2>&1
status=$?
set -e
if [[ $status -ne 66 ]] || ! grep -q 'ThreadSanitizer: data race' "$out/planted.log"; then
    cat "$out/planted.log"
    echo "simt-tsan: without the matmul's refill barrier ThreadSanitizer reported no race (exit $status)" >&2
    exit 1
fi
echo "simt-tsan: without the matmul's refill barrier ThreadSanitizer reports $(grep -m1 '^SUMMARY' "$out/planted.log")"
