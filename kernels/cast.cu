// cast.cu — y = x rounded from f32 to bf16 or f16 (to nearest even, with
// half.cuh's to_half, as the tensor-core products round while staging),
// grid-stride over n elements (cast.rs: 256 threads, grid capped).
//
// A large product with an f32 operand rounds it here first
// (src/backend/cuda/ops.rs, matmul_half.rs's rounds_first): the product
// then stages half operands with cp.async and runs two 128×128 blocks an
// SM, where an f32 operand's slices would wait in registers and hold it to
// one (matmul_half.cu).
#include "common.cuh"
#include "half.cuh"

namespace adv {

template <typename H>
__device__ __forceinline__ void cast_f32(const float* __restrict__ x, H* __restrict__ y, u64 n) {
    ADV_FOR_EACH(i, n) y[i] = to_half<H>(x[i]);
}

}  // namespace adv

extern "C" __global__ void cast_f32_bf16(const float* __restrict__ x,
                                         __nv_bfloat16* __restrict__ y, u64 n) {
    adv::cast_f32(x, y, n);
}
extern "C" __global__ void cast_f32_f16(const float* __restrict__ x, __half* __restrict__ y,
                                        u64 n) {
    adv::cast_f32(x, y, n);
}
