#!/usr/bin/env bash
# Installs (once) NVRTC, ptxas, cuobjdump and the CUDA headers the kernels
# include (mma.h, cuda_fp16.h, cuda_bf16.h) from NVIDIA's PyPI wheels into a
# cache folder and prints the `export` lines that let advgrad's build.rs, the
# ptxas check and the cubin check find them. No GPU and no CUDA toolkit are
# needed.
#
#   eval "$(scripts/cuda-env.sh)" && cargo build --features cuda
#
# Environment:
#   ADVGRAD_CUDA_HOME    where to install (default ${XDG_CACHE_HOME:-~/.cache}/advgrad-cuda)
#   ADVGRAD_CUDA_WHEELS  pip version spec suffix, e.g. "==12.4.*" to pin an
#                        older NVRTC whose PTX ISA older drivers accept
#                        (default "==12.9.*"; cuobjdump, which only reads
#                        the cubins, comes from its newest wheel)
#   PYTHON               the python to run pip with (default python3)
#
# Only the export lines go to stdout; progress goes to stderr.
set -euo pipefail

prefix="${ADVGRAD_CUDA_HOME:-${XDG_CACHE_HOME:-$HOME/.cache}/advgrad-cuda}"
spec="${ADVGRAD_CUDA_WHEELS:-==12.9.*}"
py="${PYTHON:-python3}"

find_nvrtc() {
    find "$prefix" -name 'libnvrtc.so.*' -not -name '*builtins*' 2>/dev/null | sort | head -n1
}
find_ptxas() {
    find "$prefix" -type f -name ptxas 2>/dev/null | head -n1
}
find_cuobjdump() {
    find "$prefix" -type f -name cuobjdump 2>/dev/null | head -n1
}
need_python() {
    if ! command -v "$py" >/dev/null 2>&1; then
        echo "cuda-env.sh: $py not found; install Python 3 with pip, or set PYTHON" >&2
        exit 1
    fi
}

find_headers() {
    find "$prefix" -path '*cuda_runtime/include/cuda_bf16.h' 2>/dev/null | head -n1
}

if [[ -z "$(find_nvrtc)" || -z "$(find_ptxas)" || -z "$(find_headers)" ]]; then
    need_python
    echo "cuda-env.sh: installing NVRTC and ptxas wheels into $prefix ..." >&2
    mkdir -p "$prefix"
    "$py" -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
        --target "$prefix" \
        "nvidia-cuda-nvrtc-cu12${spec}" "nvidia-cuda-nvcc-cu12${spec}" \
        "nvidia-cuda-runtime-cu12${spec}" >&2
fi

if [[ -z "$(find_cuobjdump)" ]]; then
    need_python
    echo "cuda-env.sh: installing the cuobjdump wheel into $prefix ..." >&2
    mkdir -p "$prefix"
    "$py" -m pip install --quiet --disable-pip-version-check --no-deps --upgrade \
        --target "$prefix/cuobjdump" nvidia-cuda-cuobjdump >&2
fi

nvrtc="$(find_nvrtc)"
ptxas="$(find_ptxas)"
cuobjdump="$(find_cuobjdump)"
if [[ -z "$nvrtc" || -z "$ptxas" || -z "$cuobjdump" ]]; then
    echo "cuda-env.sh: the wheels in $prefix lack libnvrtc.so, ptxas or cuobjdump" >&2
    exit 1
fi
chmod +x "$ptxas" "$cuobjdump" 2>/dev/null || true
nvrtc_dir="$(dirname "$nvrtc")"
ptxas_dir="$(dirname "$ptxas")"

# cudarc's dynamic loader tries the plain names (libnvrtc.so); the wheel ships
# only the versioned file, so add the unversioned link next to it.
if [[ ! -e "$nvrtc_dir/libnvrtc.so" ]]; then
    ln -sf "$(basename "$nvrtc")" "$nvrtc_dir/libnvrtc.so"
fi

echo "export ADVGRAD_NVRTC_LIB='$nvrtc'"
echo "export ADVGRAD_PTXAS='$ptxas'"
echo "export ADVGRAD_CUOBJDUMP='$cuobjdump'"
# mma.h, cuda_fp16.h and cuda_bf16.h (the runtime wheel), and the crt/
# headers mma.h includes (the nvcc wheel), for NVRTC.
runtime_include="$(dirname "$(find_headers)")"
nvcc_include="$(dirname "$(dirname "$ptxas")")/include"
echo "export ADVGRAD_CUDA_INCLUDE='$runtime_include:$nvcc_include'"
echo "export LD_LIBRARY_PATH='$nvrtc_dir'\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}"
echo "export PATH='$ptxas_dir'\${PATH:+:\$PATH}"
