#!/usr/bin/env bash
# The GPU bundle's run.sh (scripts/gpu-bundle.sh copies it into the bundle):
# runs advgrad's GPU parity tests and `advgrad bench` on this machine's GPU
# and writes everything it measured to one JSON file.
#
#   run.sh [OUT_DIR]     # default: ./gpu-run (beside run.sh)
#
# Writes OUT_DIR/gpu-run.json and OUT_DIR/logs/ (one log per test and per
# bench command). Exits 0 only if every test passed and every bench command
# succeeded; the JSON's "verdict" and "reasons" say the same, and why.
#
# Needs the NVIDIA driver (libcuda.so); no Rust, no CUDA toolkit. Every
# other tool (nvidia-smi, python3, timeout) is used only if present. cuBLAS,
# for the matmul comparison, is looked up in $ADVGRAD_CUBLAS_DIR, the usual
# CUDA folders, and Python environments (nvidia/cublas/lib, torch/lib).
#
# Environment: GPU_RUN_TEST_TIMEOUT (seconds per test, default 600),
# GPU_RUN_BENCH_TIMEOUT (seconds per bench command, default 600).
set -uo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
out="${1:-$here/gpu-run}"
mkdir -p "$out/logs" || exit 2
out="$(cd "$out" && pwd)"
json="$out/gpu-run.json"
started_epoch=$(date +%s)
started="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
adv="$here/advgrad"
data="$here/data"

# This machine is expected to have a GPU: a missing one fails the parity
# tests, with the reason, instead of skipping them.
export ADVGRAD_REQUIRE_GPU=1
# The parity tests run on the GPU only: CI runs them on the emulated device
# on every change, and device time is scarce.
export ADVGRAD_PARITY_EMU=0

have() { command -v "$1" >/dev/null 2>&1; }
log() { echo "run.sh: $*" >&2; }

# A JSON string of $1: backslash, quote and the usual control characters
# escaped, other control characters (terminal colours) dropped.
json_str() {
    local s=$1
    s=${s//\\/\\\\}
    s=${s//\"/\\\"}
    s=${s//$'\t'/\\t}
    s=${s//$'\r'/\\r}
    s=${s//$'\n'/\\n}
    s=$(printf '%s' "$s" | LC_ALL=C tr -d '\000-\010\013\014\016-\037')
    printf '"%s"' "$s"
}

# Runs "$@" under `timeout $1` when timeout exists.
with_timeout() {
    local t=$1
    shift
    if have timeout; then timeout "$t" "$@"; else "$@"; fi
}

reasons=()

# ---------------------------------------------------------------- the machine
host_json="{\"hostname\": $(json_str "$(hostname 2>/dev/null || echo unknown)"), \"kernel\": $(json_str "$(uname -sr)")}"

smi_json=null
if have nvidia-smi; then
    smi_log="$out/logs/nvidia-smi.log"
    if nvidia-smi --query-gpu=name,driver_version,compute_cap,memory.total --format=csv,noheader >"$smi_log" 2>&1 ||
        nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader >"$smi_log" 2>&1; then
        first="$(head -n1 "$smi_log")"
        IFS=',' read -r -a f <<<"$first"
        trim() { local v="$1"; v="${v#"${v%%[![:space:]]*}"}"; printf '%s' "${v%"${v##*[![:space:]]}"}"; }
        if ((${#f[@]} >= 4)); then
            smi_json="{\"name\": $(json_str "$(trim "${f[0]}")"), \"driver_version\": $(json_str "$(trim "${f[1]}")"), \"compute_capability\": $(json_str "$(trim "${f[2]}")"), \"memory\": $(json_str "$(trim "${f[3]}")"), \"gpus\": $(grep -c . "$smi_log")}"
        else
            smi_json="{\"name\": $(json_str "$(trim "${f[0]}")"), \"driver_version\": $(json_str "$(trim "${f[1]:-}")"), \"memory\": $(json_str "$(trim "${f[2]:-}")"), \"gpus\": $(grep -c . "$smi_log")}"
        fi
        log "GPU (nvidia-smi): $first"
    else
        smi_json="{\"error\": $(json_str "$(cat "$smi_log")")}"
    fi
else
    smi_json="{\"error\": \"nvidia-smi not found\"}"
fi

# ------------------------------------------------------------------- cuBLAS
# Python environments' site-packages, for pip's nvidia-cublas and torch.
site_dirs() {
    if have python3; then
        python3 -c 'import site; print("\n".join(site.getsitepackages() + [site.getusersitepackages()]))' 2>/dev/null
    fi
    compgen -G '/usr/local/lib/python3*/dist-packages' || true
    compgen -G '/usr/lib/python3*/dist-packages' || true
    compgen -G '/opt/conda/lib/python3*/site-packages' || true
    compgen -G "$HOME/.local/lib/python3*/site-packages" || true
}
cublas_dirs() {
    [[ -n "${ADVGRAD_CUBLAS_DIR:-}" ]] && echo "$ADVGRAD_CUBLAS_DIR"
    echo /usr/local/cuda/lib64
    echo /usr/local/cuda/targets/x86_64-linux/lib
    compgen -G '/usr/local/cuda-*/lib64' || true
    echo /usr/lib/x86_64-linux-gnu
    echo /opt/conda/lib
    site_dirs | while read -r d; do
        [[ -n "$d" ]] && printf '%s\n' "$d/nvidia/cublas/lib" "$d/nvidia/cu13/lib" "$d/torch/lib"
    done
}
cublas_json=null
cublas_file=""
while read -r d; do
    for f in "$d/libcublas.so.12" "$d/libcublas.so" "$d"/libcublas.so.1[0-9]; do
        if [[ -e "$f" ]]; then
            cublas_file="$f"
            break 2
        fi
    done
done < <(cublas_dirs | awk '!seen[$0]++')
if [[ -n "$cublas_file" ]]; then
    dir="$(dirname "$cublas_file")"
    export LD_LIBRARY_PATH="$dir${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
    case "$(basename "$cublas_file")" in
    libcublas.so.12 | libcublas.so) ;;
    *)
        # advgrad's loader asks for libcublas.so, .so.12 and older names:
        # offer this major version under the plain name.
        mkdir -p "$out/lib"
        ln -sf "$cublas_file" "$out/lib/libcublas.so"
        export LD_LIBRARY_PATH="$out/lib:$LD_LIBRARY_PATH"
        ;;
    esac
    cublas_json="{\"file\": $(json_str "$cublas_file")}"
    log "cuBLAS: $cublas_file"
else
    cublas_json="{\"error\": \"libcublas not found in ADVGRAD_CUBLAS_DIR, /usr/local/cuda*, /usr/lib/x86_64-linux-gnu, /opt/conda/lib or a Python environment's nvidia/cublas/lib or torch/lib; advgrad bench reports matmul without cuBLAS\"}"
    log "cuBLAS not found; the matmul rows will say so"
fi

# -------------------------------------------------------------------- tests
# The message of a failed test: its panic message, else the log's end.
failure_message() {
    local log=$1 msg
    msg="$(awk '/panicked at/ { on = 1 } /^(stack backtrace:|note: )/ { on = 0 } on' "$log" | head -n 40)"
    [[ -z "$msg" ]] && msg="$(tail -n 20 "$log")"
    printf '%s' "$msg"
}

tests_json=()
passed=0
failed=0
run_tests() { # binary label [filter]
    local bin=$1 label=$2 filter=${3:-} name log rc t0 status msg
    if [[ ! -x "$bin" ]]; then
        reasons+=("test binary $label missing from the bundle")
        return
    fi
    local names=()
    mapfile -t names < <("$bin" --list --format terse ${filter:+"$filter"} 2>/dev/null | sed -n 's/: test$//p')
    if ((${#names[@]} == 0)); then
        reasons+=("$label lists no tests")
        return
    fi
    for name in "${names[@]}"; do
        log="$out/logs/test-$label-${name//[^A-Za-z0-9_]/_}.log"
        t0=$(date +%s.%N)
        with_timeout "${GPU_RUN_TEST_TIMEOUT:-600}" "$bin" --exact "$name" --test-threads=1 --nocapture >"$log" 2>&1
        rc=$?
        local secs
        secs=$(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN { printf "%.3f", b - a }')
        if ((rc == 0)); then
            status=pass msg=""
            passed=$((passed + 1))
        else
            status=fail
            msg="$(failure_message "$log")"
            ((rc == 124)) && msg="timed out after ${GPU_RUN_TEST_TIMEOUT:-600} s"$'\n'"$msg"
            failed=$((failed + 1))
            reasons+=("$label::$name: $(printf '%s' "$msg" | grep -v 'panicked at' | grep -m1 .)")
        fi
        log "$status $label::$name (${secs} s)"
        tests_json+=("{\"binary\": $(json_str "$label"), \"name\": $(json_str "$name"), \"status\": \"$status\", \"exit_code\": $rc, \"seconds\": $secs, \"message\": $(json_str "$msg"), \"log\": $(json_str "logs/$(basename "$log")")}")
    done
}
run_tests "$here/tests/cuda_parity" cuda_parity
run_tests "$here/tests/half_round_first" half_round_first
# The library's own GPU tests: the driver, the image choice, the launcher.
run_tests "$here/tests/advgrad-lib" advgrad-lib backend::cuda

# ------------------------------------------------------------------- bench
machine_json=null
bench_json=()
bench_errors=()
if [[ -x "$adv" ]]; then
    if line="$("$adv" bench --op machine --device cuda --json 2>"$out/logs/machine.log" | grep -m1 '^{.*"op":"machine".*}$')"; then
        machine_json="$line"
    else
        reasons+=("advgrad bench --op machine failed: $(tail -n 3 "$out/logs/machine.log")")
    fi
    mapfile -t ops < <("$adv" bench --list-ops 2>/dev/null | grep -vx machine)
    ((${#ops[@]} == 0)) && reasons+=("advgrad bench --list-ops printed no ops")
    # Every op on the GPU; the training ops also on this machine's CPU, for
    # the GPU-to-CPU comparison on one machine.
    runs=()
    for op in "${ops[@]}"; do runs+=("$op cuda"); done
    for op in train_step epoch; do
        printf '%s\n' "${ops[@]}" | grep -qx "$op" && runs+=("$op cpu")
    done
    # The tensor-core matmul (bf16 and f16 operands, f32 sums) beside
    # cuBLAS's cublasGemmEx in the same types at 4096 (and the MLP's
    # shape), each row naming its precision and cuBLAS routine.
    for p in bf16 f16; do runs+=("matmul cuda $p"); done
    for r in "${runs[@]}"; do
        read -r op device precision <<<"$r"
        args=(bench --op "$op" --device "$device" --json --data "$data")
        case "$op" in epoch) args+=(--repeat 3) ;; esac
        blog="$out/logs/bench-$op-$device.log"
        if [[ -n "$precision" ]]; then
            args+=(--precision "$precision" --sizes "4096,mlp")
            blog="$out/logs/bench-$op-$device-$precision.log"
        fi
        log "advgrad ${args[*]}"
        with_timeout "${GPU_RUN_BENCH_TIMEOUT:-600}" "$adv" "${args[@]}" >"$blog.out" 2>"$blog"
        rc=$?
        while read -r row; do
            bench_json+=("$row")
        done < <(grep '^{.*}$' "$blog.out" | grep -v '"op":"machine"')
        cat "$blog.out" >>"$blog"
        rm -f "$blog.out"
        if ((rc != 0)); then
            err="$(grep -v '^{' "$blog" | tail -n 5)"
            bench_errors+=("{\"op\": $(json_str "$op"), \"device\": \"$device\", \"exit_code\": $rc, \"error\": $(json_str "$err")}")
            reasons+=("advgrad bench --op $op --device $device: $(printf '%s' "$err" | grep -m1 .)")
        fi
    done
else
    reasons+=("the advgrad binary is missing from the bundle")
fi

# -------------------------------------------------------------------- report
((passed + failed == 0)) && reasons+=("no test ran")
verdict=pass
summary="$passed tests passed, $failed failed; ${#bench_json[@]} bench rows, ${#bench_errors[@]} bench commands failed"
if ((${#reasons[@]} > 0)); then
    verdict=fail
    summary="$summary; first: ${reasons[0]}"
fi

join() { # separator items...
    local sep=$1 first=1 item
    shift
    for item in "$@"; do
        ((first)) || printf '%s' "$sep"
        printf '%s' "$item"
        first=0
    done
}
reasons_json=()
for r in "${reasons[@]}"; do reasons_json+=("$(json_str "$r")"); done
bundle_json=null
[[ -s "$here/bundle.json" ]] && bundle_json="$(tr -d '\n' <"$here/bundle.json")"

{
    echo "{"
    echo "  \"schema\": \"advgrad-gpu-run/1\","
    echo "  \"verdict\": \"$verdict\","
    echo "  \"summary\": $(json_str "$summary"),"
    echo "  \"reasons\": [$(join ', ' "${reasons_json[@]}")],"
    echo "  \"started\": \"$started\","
    echo "  \"seconds\": $(($(date +%s) - started_epoch)),"
    echo "  \"bundle\": $bundle_json,"
    echo "  \"host\": $host_json,"
    echo "  \"nvidia_smi\": $smi_json,"
    echo "  \"machine\": $machine_json,"
    echo "  \"cublas\": $cublas_json,"
    echo "  \"tests_passed\": $passed,"
    echo "  \"tests_failed\": $failed,"
    echo "  \"tests\": ["
    join $',\n' "${tests_json[@]/#/    }"
    echo
    echo "  ],"
    echo "  \"bench\": ["
    join $',\n' "${bench_json[@]/#/    }"
    echo
    echo "  ],"
    echo "  \"bench_errors\": [$(join ', ' "${bench_errors[@]}")]"
    echo "}"
} >"$json"

log "verdict: $verdict ($summary); $json"
for r in "${reasons[@]}"; do log "  $r"; done
[[ "$verdict" == pass ]]
