#!/usr/bin/env bash
# Builds advgrad's GPU test binaries and the `advgrad` binary with
# `--features cuda` (release) into one folder, .gpu-bundle/, with a run.sh
# that runs them on a machine that has an NVIDIA driver but no Rust
# toolchain (and no CUDA toolkit: the PTX is embedded, libcuda is loaded at
# run time).
#
#   scripts/gpu-bundle.sh            # build into .gpu-bundle/
#   scp -r .gpu-bundle gpu-host: && ssh gpu-host .gpu-bundle/run.sh
#
# Environment:
#   GPU_BUNDLE_DIR   output folder (default .gpu-bundle)
#   GPU_BUNDLE_MAX   size limit in MiB (default 64)
# Needs NVRTC to build the PTX: runs scripts/cuda-env.sh when
# ADVGRAD_NVRTC_LIB is unset. Needs python3 to read cargo's output.
set -euo pipefail

cd "$(dirname "$0")/.."
out="${GPU_BUNDLE_DIR:-.gpu-bundle}"
max_mib="${GPU_BUNDLE_MAX:-64}"

if [[ -z "${ADVGRAD_NVRTC_LIB:-}" ]]; then
    eval "$(scripts/cuda-env.sh)"
fi

# The executables cargo reports, one per line: with `test`, only test
# harnesses (cargo also reports the binaries integration tests use).
executables() {
    python3 -c '
import json, sys
want_test = sys.argv[1] == "test"
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    if m["profile"]["test"] != want_test:
        continue
    kind = m["target"]["kind"][0]
    print(("lib" if kind == "lib" else m["target"]["name"]) + " " + m["executable"])' "$1"
}

echo "gpu-bundle: building test binaries (cuda_parity, lib) ..." >&2
mapfile -t tests < <(cargo test --release --features cuda --no-run \
    --lib --test cuda_parity --message-format=json | executables test)
echo "gpu-bundle: building the advgrad binary ..." >&2
mapfile -t bins < <(cargo build --release --features cuda --bin advgrad \
    --message-format=json | executables bin)

rm -rf "$out"
mkdir -p "$out/tests"
for t in "${tests[@]}"; do
    # "<target name> <path>"; the library's unit tests become advgrad-lib.
    name="${t%% *}"
    [[ "$name" == lib ]] && name=advgrad-lib
    cp "${t#* }" "$out/tests/$name"
done
for b in "${bins[@]}"; do
    cp "${b#* }" "$out/${b%% *}"
done
if ((${#tests[@]} == 0)); then
    echo "gpu-bundle: cargo reported no test binaries" >&2
    exit 1
fi
# Strip debug info (the release profile keeps line tables).
find "$out" -type f -perm -u+x -exec strip --strip-debug {} +

cat >"$out/run.sh" <<'RUN'
#!/usr/bin/env bash
# Runs advgrad's GPU parity tests, then `advgrad bench`, on this machine's
# GPU. Needs the NVIDIA driver (libcuda.so); no Rust, no CUDA toolkit.
# cuBLAS (for the bench's comparison) is looked up in the usual CUDA
# folders and in Python environments' nvidia/cublas/lib.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
# This machine is expected to have a GPU: a missing one fails the parity
# tests (with the reason) instead of skipping them.
export ADVGRAD_REQUIRE_GPU=1

for d in /usr/local/cuda/lib64 /usr/local/cuda/targets/x86_64-linux/lib \
         /usr/lib/x86_64-linux-gnu /opt/conda/lib \
         $(python3 -c 'import site, sys; print(" ".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null); do
    for lib in "$d" "$d/nvidia/cublas/lib"; do
        if compgen -G "$lib/libcublas.so*" >/dev/null; then
            export LD_LIBRARY_PATH="$lib${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
            echo "run.sh: cuBLAS in $lib"
            break 2
        fi
    done
done
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv

status=0
for t in "$here"/tests/*; do
    echo "== $(basename "$t")"
    # One test thread: the tests share one GPU.
    # --nocapture shows why a test skipped (no GPU) and what ran.
    "$t" --test-threads=1 --nocapture || status=1
done
if [[ -x "$here/advgrad" ]]; then
    for op in matmul relu softmax_cross_entropy train_step; do
        echo "== advgrad bench --op $op --device cuda"
        "$here/advgrad" bench --op "$op" --sizes 256,1024,4096 --device cuda || status=1
    done
fi
exit $status
RUN
chmod +x "$out/run.sh"

size_kib=$(du -sk "$out" | cut -f1)
echo "gpu-bundle: $out is $((size_kib / 1024)) MiB:" >&2
ls -l "$out" "$out/tests" >&2
if ((size_kib > max_mib * 1024)); then
    echo "gpu-bundle: $out is larger than ${max_mib} MiB" >&2
    exit 1
fi
