// simt_half.h — the emulator's __half and __nv_bfloat16: the subset of
// cuda_fp16.h and cuda_bf16.h that advgrad's kernels use, with NVRTC's
// semantics: 16-bit storage, conversions from float rounding to nearest
// even (NaN stays NaN, overflow goes to infinity for __half; bf16 keeps
// f32's range), conversions to float exact.
#pragma once
#include <stdint.h>

#include <cstring>

namespace simt {
// float → IEEE binary16 bits, round to nearest even.
inline unsigned short float_to_half_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    const uint32_t sign = (u >> 16) & 0x8000u;
    const uint32_t abs = u & 0x7fffffffu;
    if (abs > 0x7f800000u) return (unsigned short)(sign | 0x7e00u | ((abs >> 13) & 0x3ffu));  // NaN
    if (abs >= 0x477ff000u) return (unsigned short)(sign | 0x7c00u);  // rounds to ±inf
    if (abs < 0x38800000u) {
        // Subnormal half (or zero): the value in units of 2^-24, rounded.
        if (abs < 0x33000000u) return (unsigned short)sign;  // below half of the smallest
        const uint32_t mant = (abs & 0x7fffffu) | 0x800000u;
        const int shift = 126 - (int)(abs >> 23);  // 14..24
        uint32_t q = mant >> shift;
        const uint32_t rem = mant & ((1u << shift) - 1);
        const uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) ++q;
        return (unsigned short)(sign | q);
    }
    uint32_t h = ((abs >> 13) - (112u << 10));  // rebias the exponent
    const uint32_t rem = abs & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (h & 1))) ++h;
    return (unsigned short)(sign | h);
}

// IEEE binary16 bits → float (exact).
inline float half_bits_to_float(unsigned short h) {
    const uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    const uint32_t exp = (h >> 10) & 0x1fu;
    const uint32_t mant = h & 0x3ffu;
    uint32_t u;
    if (exp == 0x1fu) {
        u = sign | 0x7f800000u | (mant << 13);
    } else if (exp != 0) {
        u = sign | ((exp + 112u) << 23) | (mant << 13);
    } else if (mant == 0) {
        u = sign;
    } else {
        const float v = (float)mant * (1.0f / 16777216.0f);  // mant · 2^-24, exact
        memcpy(&u, &v, 4);
        u |= sign;
    }
    float f;
    memcpy(&f, &u, 4);
    return f;
}

// float → bfloat16 bits, round to nearest even (NaN → the quiet NaN 0x7fff
// with the sign, as cuda_bf16.h does).
inline unsigned short float_to_bf16_bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (unsigned short)(((u >> 16) & 0x8000u) | 0x7fffu);
    u += 0x7fffu + ((u >> 16) & 1u);
    return (unsigned short)(u >> 16);
}

// bfloat16 bits → float (exact).
inline float bf16_bits_to_float(unsigned short b) {
    const uint32_t u = (uint32_t)b << 16;
    float f;
    memcpy(&f, &u, 4);
    return f;
}
}  // namespace simt

// A 16-bit IEEE half: constructed from a float by rounding to nearest even,
// read back as a float exactly.
struct __half {
    unsigned short __x;
    __half() = default;
    __half(float f) : __x(simt::float_to_half_bits(f)) {}
    operator float() const { return simt::half_bits_to_float(__x); }
};

// A bfloat16: constructed from a float by rounding to nearest even, read
// back as a float exactly.
struct __nv_bfloat16 {
    unsigned short __x;
    __nv_bfloat16() = default;
    __nv_bfloat16(float f) : __x(simt::float_to_bf16_bits(f)) {}
    operator float() const { return simt::bf16_bits_to_float(__x); }
};

inline __half __float2half(float f) { return __half(f); }
inline __half __float2half_rn(float f) { return __half(f); }
inline float __half2float(__half h) { return (float)h; }
inline __nv_bfloat16 __float2bfloat16(float f) { return __nv_bfloat16(f); }
inline __nv_bfloat16 __float2bfloat16_rn(float f) { return __nv_bfloat16(f); }
inline float __bfloat162float(__nv_bfloat16 b) { return (float)b; }
