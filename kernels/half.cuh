// half.cuh — f32 rounded to the half types the tensor-core products run in
// (bf16, f16), to nearest even: the one rounding shared by the products'
// staging of f32 operands (matmul_half.cu) and the cast that rounds an
// operand ahead of a large product (cast.cu), so the two paths give the
// same bits.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>

namespace adv {

// x rounded to H (to nearest even).
template <typename H>
__device__ __forceinline__ H to_half(float x);
template <>
__device__ __forceinline__ __half to_half<__half>(float x) {
    return __float2half_rn(x);
}
template <>
__device__ __forceinline__ __nv_bfloat16 to_half<__nv_bfloat16>(float x) {
    return __float2bfloat16_rn(x);
}

}  // namespace adv
