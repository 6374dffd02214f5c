#!/usr/bin/env bash
# Builds the GPU bundle: advgrad's GPU test binaries, the `advgrad` binary
# (release, `--features cuda`, debug info stripped), Fashion-MNIST for the
# training and attack benchmarks, run.sh (scripts/gpu-run.sh) and sweep.sh
# (scripts/gpu-sweep.sh, with the lean protocol's lean.py), in one
# folder that runs on a machine with an NVIDIA driver but no Rust and no
# CUDA toolkit (the kernels are embedded as cubins for sm_80 and sm_90 and
# as PTX; libcuda and libcublas are loaded at run time).
#
#   scripts/gpu-bundle.sh                    # build into .gpu-bundle/ and .gpu-bundle.tar.xz
#   scp .gpu-bundle.tar.xz gpu-host: && ssh gpu-host 'tar -xJf .gpu-bundle.tar.xz && .gpu-bundle/run.sh OUT_DIR'
#   # then copy OUT_DIR/gpu-run.json back: the verdict, every test, every bench row
#   ssh gpu-host '.gpu-bundle/sweep.sh SWEEP_DIR'   # then SWEEP_DIR/sweep.jsonl
#
# Every binary embeds every kernel (PTX and two cubins; the matmul's many
# tile, layout and epilogue instantiations are most of it), so the folder
# is large and very repetitive: the archive (xz) is what travels, and the
# size limit applies to it.
#
# Environment:
#   GPU_BUNDLE_DIR             output folder (default .gpu-bundle)
#   GPU_BUNDLE_MAX             size limit of the archive in MiB (default 56: it
#                              travels with the repository, at most 64 MiB together)
#   GPU_BUNDLE_TRAIN_EXAMPLES  training examples carried (default 10000 of
#                              60000, to keep the bundle small; the test set
#                              is carried whole)
#   ADVGRAD_DATA               where Fashion-MNIST is (default
#                              /usr/share/datasets/fashion-mnist)
# Needs NVRTC to build the kernels (runs scripts/cuda-env.sh when
# ADVGRAD_NVRTC_LIB is unset) and python3 (cargo's JSON, the data subset).
set -euo pipefail

cd "$(dirname "$0")/.."
out="${GPU_BUNDLE_DIR:-.gpu-bundle}"
max_mib="${GPU_BUNDLE_MAX:-56}"
train_examples="${GPU_BUNDLE_TRAIN_EXAMPLES:-10000}"
data_src="${ADVGRAD_DATA:-/usr/share/datasets/fashion-mnist}"

if [[ ! -f "$data_src/t10k-images-idx3-ubyte.gz" ]]; then
    echo "gpu-bundle: Fashion-MNIST not found in $data_src (sudo apt-get install dataset-fashion-mnist, or set ADVGRAD_DATA)" >&2
    exit 1
fi
if [[ -z "${ADVGRAD_NVRTC_LIB:-}" ]]; then
    eval "$(scripts/cuda-env.sh)"
fi

# The executables cargo reports, one "<test|bin> <name> <path>" per line:
# test harnesses (the library's is named lib), and the binaries the
# integration tests are built with.
executables() {
    python3 -c '
import json, sys
for line in sys.stdin:
    try:
        m = json.loads(line)
    except ValueError:
        continue
    if m.get("reason") != "compiler-artifact" or not m.get("executable"):
        continue
    kind = m["target"]["kind"][0]
    if m["profile"]["test"]:
        print("test", "lib" if kind == "lib" else m["target"]["name"], m["executable"])
    elif kind == "bin":
        print("bin", m["target"]["name"], m["executable"])'
}

# One build gives the test binaries and, for them, the advgrad binary
# (features cuda and, through the tests' dev-dependency, emu): the same
# build `cargo test --release --features cuda` makes, so CI reuses it.
echo "gpu-bundle: building the test binaries (cuda_parity, half_round_first, the library's) and advgrad ..." >&2
mapfile -t built < <(cargo test -p advgrad --release --features cuda --no-run \
    --lib --test cuda_parity --test half_round_first --message-format=json | executables)
tests=() bins=()
for b in "${built[@]}"; do
    case "$b" in
    "test "*) tests+=("${b#test }") ;;
    "bin advgrad "*) bins+=("${b#bin }") ;;
    esac
done
if ((${#tests[@]} == 0 || ${#bins[@]} == 0)); then
    echo "gpu-bundle: cargo reported no test binaries or no advgrad binary" >&2
    exit 1
fi

rm -rf "$out"
mkdir -p "$out/tests" "$out/data"
for t in "${tests[@]}"; do
    # "<target name> <path>"; the library's unit tests become advgrad-lib.
    name="${t%% *}"
    [[ "$name" == lib ]] && name=advgrad-lib
    cp "${t#* }" "$out/tests/$name"
done
for b in "${bins[@]}"; do
    cp "${b#* }" "$out/${b%% *}"
done
# Strip debug info (the release profile keeps line tables).
find "$out" -type f -perm -u+x -exec strip --strip-debug {} +
cp scripts/gpu-run.sh "$out/run.sh"
cp scripts/gpu-sweep.sh "$out/sweep.sh"
cp benches/peers/lean.py benches/peers/peers.py "$out/"
chmod +x "$out/run.sh" "$out/sweep.sh"

# The test set whole, the first $train_examples training examples.
cp "$data_src"/t10k-images-idx3-ubyte.gz "$data_src"/t10k-labels-idx1-ubyte.gz "$out/data/"
python3 - "$data_src" "$out/data" "$train_examples" <<'PY'
import gzip, struct, sys
src, dst, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
for name, item in (("train-images-idx3-ubyte.gz", 28 * 28), ("train-labels-idx1-ubyte.gz", 1)):
    with gzip.open(f"{src}/{name}", "rb") as f:
        raw = f.read()
    header = 16 if item > 1 else 8
    total = struct.unpack(">I", raw[4:8])[0]
    keep = min(n, total)
    head = raw[:4] + struct.pack(">I", keep) + raw[8:header]
    with gzip.open(f"{dst}/{name}", "wb", compresslevel=9) as f:
        f.write(head + raw[header:header + keep * item])
PY

git_commit="$(git rev-parse HEAD 2>/dev/null || echo unknown)"
git_dirty=false
[[ -n "$(git status --porcelain --untracked-files=no 2>/dev/null)" ]] && git_dirty=true
cat >"$out/bundle.json" <<JSON
{"commit": "$git_commit", "dirty": $git_dirty, "built": "$(date -u +%Y-%m-%dT%H:%M:%SZ)", "rustc": "$(rustc --version)", "nvrtc": "$(basename "$ADVGRAD_NVRTC_LIB")", "cuda_wheels": "${ADVGRAD_CUDA_WHEELS:-==12.9.*}", "cubins": "${ADVGRAD_CUDA_CUBINS:-sm_80,sm_90}", "ptx_arch": "${ADVGRAD_CUDA_ARCH:-compute_80}", "train_examples": $train_examples, "test_examples": 10000}
JSON

archive="$out.tar.xz"
XZ_OPT="-6 -T0" tar -cJf "$archive" "$out"
dir_kib=$(du -sk "$out" | cut -f1)
size_kib=$(du -sk "$archive" | cut -f1)
echo "gpu-bundle: $out is $((dir_kib / 1024)) MiB, $archive $((size_kib / 1024)) MiB (limit ${max_mib} MiB):" >&2
ls -l "$out" "$out/tests" "$out/data" >&2
if ((size_kib > max_mib * 1024)); then
    echo "gpu-bundle: $archive is larger than ${max_mib} MiB" >&2
    exit 1
fi
