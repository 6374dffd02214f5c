#!/usr/bin/env bash
# The GPU bundle's sweep.sh (scripts/gpu-bundle.sh copies it, with
# benches/peers/lean.py and peers.py, into the bundle): the comparisons a
# GPU run makes beside run.sh's tests and benchmarks.
#
#   sweep.sh [OUT_DIR]     # default: ./gpu-sweep (beside sweep.sh)
#
# Writes OUT_DIR/sweep.jsonl, one JSON object per measurement, each tagged
# with "sweep" (what was varied) and "setting"; logs in OUT_DIR/logs/:
# - tensor-core products (bf16, f16) from the MLP's sizes to 8192 beside
#   cuBLAS GemmEx, with f32 operands rounded first or while staged as the
#   rule picks and forced each way (ADVGRAD_MATMUL_ROUND_FIRST);
# - the f32 matmul's tile and split-K alternatives (ADVGRAD_MATMUL_TILE,
#   ADVGRAD_MATMUL_SPLITS) on the shapes training uses, beside cuBLAS;
# - the lean epoch (`bench --op epoch --synthetic`) at the four
#   configurations of benches/peers/lean.py, and JAX's on the same GPU
#   (lean.py jax --platform cuda) where python3 imports jax.
# Exits 0 when every command succeeded.
#
# Environment: GPU_SWEEP_TIMEOUT (seconds per command, default 120);
# GPU_SWEEP_PARTS, a comma-separated subset of tensor_core, f32_tiling and
# lean_epoch (default all three), for a lease too short for the whole sweep.
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/gpu-sweep}"
mkdir -p "$out/logs" || exit 2
jsonl="$out/sweep.jsonl"
: >"$jsonl"
adv="$here/advgrad"
limit="${GPU_SWEEP_TIMEOUT:-120}"
failures=0
parts=",${GPU_SWEEP_PARTS:-tensor_core,f32_tiling,lean_epoch},"
for part in ${parts//,/ }; do
    case "$part" in
    tensor_core | f32_tiling | lean_epoch) ;;
    *)
        echo "sweep.sh: GPU_SWEEP_PARTS names $part; the parts are tensor_core, f32_tiling and lean_epoch" >&2
        exit 2
        ;;
    esac
done
# Whether the sweep runs part $1.
wanted() { [[ $parts == *",$1,"* ]]; }

# measure SWEEP SETTING CMD...: runs CMD, appends its JSON lines tagged.
measure() {
    local sweep=$1 setting=$2 log rc
    shift 2
    log="$out/logs/$sweep-${setting//[^A-Za-z0-9_.-]/_}.log"
    echo "sweep.sh: $sweep $setting: $*" >&2
    timeout "$limit" "$@" >"$log.out" 2>"$log"
    rc=$?
    grep '^{.*}$' "$log.out" | grep -v '"op":"machine"' |
        sed "s/^{/{\"sweep\":\"$sweep\",\"setting\":\"$setting\",/" >>"$jsonl"
    cat "$log.out" >>"$log"
    rm -f "$log.out"
    if ((rc != 0)); then
        failures=$((failures + 1))
        echo "sweep.sh: $sweep $setting failed ($rc): $(tail -n 2 "$log")" >&2
    fi
}

wanted tensor_core && for p in bf16 f16; do
    for first in auto 0 1; do
        env=()
        [[ $first != auto ]] && env+=("ADVGRAD_MATMUL_ROUND_FIRST=$first")
        measure tensor_core "$p round_first=$first" env "${env[@]}" "$adv" bench --op matmul \
            --device cuda --json --precision "$p" --sizes mlp,512x784x1024,1024,2048,4096,8192
    done
done

shapes=mlp,1024,4096,512x784x1024,1024x512x1024,256x2048x2048,2048x256x2048
wanted f32_tiling && for tile in auto 128x128 64x64; do
    for splits in auto 1; do
        env=()
        [[ $tile != auto ]] && env+=("ADVGRAD_MATMUL_TILE=$tile")
        [[ $splits != auto ]] && env+=("ADVGRAD_MATMUL_SPLITS=$splits")
        measure f32_tiling "tile=$tile,splits=$splits" env "${env[@]}" "$adv" bench --op matmul \
            --device cuda --json --sizes "$shapes"
    done
done

configs=("784-256-256-10 128" "784-1024-1024-10 128" "784-1024-1024-10 512" "784-2048-2048-10 256")
wanted lean_epoch && for c in "${configs[@]}"; do
    read -r arch batch <<<"$c"
    measure lean_epoch "advgrad $arch $batch" "$adv" bench --op epoch --synthetic --device cuda \
        --json --arch "$arch" --batch "$batch" --repeat 5
done
if ! wanted lean_epoch; then
    :
elif python3 -c 'import jax' 2>/dev/null; then
    for c in "${configs[@]}"; do
        read -r arch batch <<<"$c"
        measure lean_epoch "jax $arch $batch" python3 "$here/lean.py" jax --platform cuda \
            --arch "$arch" --batch "$batch" --repeat 5
    done
else
    echo "sweep.sh: python3 has no jax; the JAX side of the lean epoch is left out" >&2
    failures=$((failures + 1))
fi

echo "sweep.sh: $(wc -l <"$jsonl") rows in $jsonl, $failures commands failed" >&2
((failures == 0))
