#!/usr/bin/env bash
# Runs the unit tests of advgrad's unsafe CPU code under Miri (nightly), which
# reports undefined behaviour: out-of-bounds or misaligned accesses, uses of
# uninitialised memory, aliasing violations, data races.
#
#   scripts/miri.sh            the gemm (packing, driver, portable kernel) and the buffer pool
#   scripts/miri.sh FILTER...  other unit tests, by name
#
# Under Miri no SIMD feature is detected, so the gemm runs its portable
# micro-kernel; the AVX-512 and AVX2+FMA kernels (x86.rs, x86_pack.rs) use
# intrinsics Miri cannot run and are not covered. The tests use smaller
# sizes under Miri (cfg(miri)) that still span several k blocks, partial
# tiles, every transpose and several threads.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! cargo +nightly miri --version >/dev/null 2>&1; then
  rustup toolchain install nightly --profile minimal --component miri,rust-src
fi
# Tree Borrows, Miri's newer aliasing model: the first gemm call starts
# rayon's thread pool, whose scheduler (crossbeam-epoch) breaks the rules of
# Stacked Borrows, the default model, but not those of Tree Borrows
# (crossbeam's own CI runs Miri with -Zmiri-tree-borrows; rayon-rs/rayon#1185).
#
# -Zmiri-ignore-leaks: the gemm's larger test products run on rayon's
# global thread pool, whose threads live as long as the process; without the
# flag Miri fails every such test at exit ("the main thread terminated
# without waiting for all remaining threads") after the test has passed.
export MIRIFLAGS="${MIRIFLAGS:-} -Zmiri-tree-borrows -Zmiri-ignore-leaks"
if [ $# -eq 0 ]; then
  set -- backend::cpu::gemm backend::pool
fi
cargo +nightly miri test --lib -- "$@"
