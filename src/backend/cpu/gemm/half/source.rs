//! How the packers read an operand of the half-precision gemm: values
//! stored in the half type, or f32 values rounded to it on the way (to
//! nearest, ties to even, exactly as `half`'s `from_f32`), so that no
//! converted copy of a whole f32 operand is ever made.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// A stored element that packing turns into the half type `H`: `H` itself,
/// or `f32` rounded to `H`.
pub trait HalfSource<H>: Copy + Send + Sync + 'static {
    /// The value as `H`, as bits.
    fn half_bits(self) -> u16;

    /// `dst[i] = src[i]` as `H`, widened to f32 (exactly).
    fn widen_run(src: &[Self], dst: &mut [f32]);

    /// Eight values from `src` as `H` bits, each in the low half of a
    /// 32-bit lane (the high half zero).
    ///
    /// # Safety
    ///
    /// `src` must be valid for reads of 8 values; the CPU must have AVX2
    /// (and F16C for `f32` to `f16`). It is inlined into callers compiled
    /// with those features.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8_bits(src: *const Self) -> __m256i;
}

/// The bf16 bits of `x` rounded to nearest, ties to even, quieting a NaN:
/// `half::bf16::from_f32`, written without branches so that it vectorises.
#[inline(always)]
fn bf16_bits_of(x: f32) -> u16 {
    let x = x.to_bits();
    let is_nan = (x & 0x7FFF_FFFF) > 0x7F80_0000;
    let rounded = x.wrapping_add(0x7FFF + ((x >> 16) & 1));
    let bits = if is_nan { x | 0x0040_0000 } else { rounded };
    (bits >> 16) as u16
}

/// [`bf16_bits_of`] on eight lanes: the bf16 bits in the low half of each.
///
/// # Safety
///
/// The CPU must have AVX2 (inlined into callers compiled with it).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn bf16_bits_of8(x: __m256i) -> __m256i {
    // SAFETY: AVX2 is present (the caller's contract).
    unsafe {
        let abs = _mm256_and_si256(x, _mm256_set1_epi32(0x7FFF_FFFF));
        let is_nan = _mm256_cmpgt_epi32(abs, _mm256_set1_epi32(0x7F80_0000));
        let odd = _mm256_and_si256(_mm256_srli_epi32::<16>(x), _mm256_set1_epi32(1));
        let bias = _mm256_add_epi32(odd, _mm256_set1_epi32(0x7FFF));
        let rounded = _mm256_add_epi32(x, bias);
        let quiet = _mm256_or_si256(x, _mm256_set1_epi32(0x0040_0000));
        _mm256_srli_epi32::<16>(_mm256_blendv_epi8(rounded, quiet, is_nan))
    }
}

/// A half type, with the conversions packing needs from itself and from
/// f32; [`HalfSource`] follows for both.
pub trait HalfBits: Copy + Send + Sync + 'static {
    /// The bits of `self`.
    fn bits(self) -> u16;
    /// The bits of `x` rounded to this type (as `from_f32`).
    fn bits_of_f32(x: f32) -> u16;
    /// `dst[i] = src[i]` widened to f32.
    fn widen(src: &[Self], dst: &mut [f32]);
    /// `dst[i] = src[i]` rounded to this type, widened back to f32.
    fn widen_rounded(src: &[f32], dst: &mut [f32]);
    /// [`HalfSource::load8_bits`] for values of this type.
    ///
    /// # Safety
    ///
    /// As [`HalfSource::load8_bits`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8(src: *const Self) -> __m256i;
    /// [`HalfSource::load8_bits`] for f32 values.
    ///
    /// # Safety
    ///
    /// As [`HalfSource::load8_bits`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn load8_rounded(src: *const f32) -> __m256i;
}

impl<H: HalfBits> HalfSource<H> for H {
    #[inline(always)]
    fn half_bits(self) -> u16 {
        self.bits()
    }

    fn widen_run(src: &[H], dst: &mut [f32]) {
        H::widen(src, dst);
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8_bits(src: *const H) -> __m256i {
        // SAFETY: the caller's contract.
        unsafe { H::load8(src) }
    }
}

impl<H: HalfBits> HalfSource<H> for f32 {
    #[inline(always)]
    fn half_bits(self) -> u16 {
        H::bits_of_f32(self)
    }

    fn widen_run(src: &[f32], dst: &mut [f32]) {
        H::widen_rounded(src, dst);
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8_bits(src: *const f32) -> __m256i {
        // SAFETY: the caller's contract.
        unsafe { H::load8_rounded(src) }
    }
}

impl HalfBits for bf16 {
    #[inline(always)]
    fn bits(self) -> u16 {
        self.to_bits()
    }

    #[inline(always)]
    fn bits_of_f32(x: f32) -> u16 {
        bf16_bits_of(x)
    }

    fn widen(src: &[bf16], dst: &mut [f32]) {
        for (d, s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits(u32::from(s.to_bits()) << 16);
        }
    }

    fn widen_rounded(src: &[f32], dst: &mut [f32]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = f32::from_bits(u32::from(bf16_bits_of(s)) << 16);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(src: *const bf16) -> __m256i {
        // SAFETY: 8 values (16 bytes) are readable; AVX2 is present.
        unsafe { _mm256_cvtepu16_epi32(_mm_loadu_si128(src.cast())) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8_rounded(src: *const f32) -> __m256i {
        // SAFETY: 8 values (32 bytes) are readable; AVX2 is present.
        unsafe { bf16_bits_of8(_mm256_loadu_si256(src.cast())) }
    }
}

impl HalfBits for f16 {
    #[inline(always)]
    fn bits(self) -> u16 {
        self.to_bits()
    }

    #[inline(always)]
    fn bits_of_f32(x: f32) -> u16 {
        f16::from_f32(x).to_bits()
    }

    fn widen(src: &[f16], dst: &mut [f32]) {
        src.convert_to_f32_slice(&mut dst[..src.len()]);
    }

    fn widen_rounded(src: &[f32], dst: &mut [f32]) {
        const CHUNK: usize = 64;
        let mut halves = [f16::ZERO; CHUNK];
        for (s, d) in src.chunks(CHUNK).zip(dst.chunks_mut(CHUNK)) {
            let h = &mut halves[..s.len()];
            h.convert_from_f32_slice(s);
            h.convert_to_f32_slice(&mut d[..s.len()]);
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8(src: *const f16) -> __m256i {
        // SAFETY: 8 values (16 bytes) are readable; AVX2 is present.
        unsafe { _mm256_cvtepu16_epi32(_mm_loadu_si128(src.cast())) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load8_rounded(src: *const f32) -> __m256i {
        // SAFETY: 8 values (32 bytes) are readable; AVX2 and F16C are
        // present.
        unsafe {
            let h = _mm256_cvtps_ph::<_MM_FROUND_TO_NEAREST_INT>(_mm256_loadu_ps(src));
            _mm256_cvtepu16_epi32(h)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values where rounding is delicate: ties both ways, the largest
    /// finite values, subnormals, signed zeros, infinities.
    fn delicate() -> Vec<f32> {
        let mut v: Vec<f32> = [
            0.0,
            -0.0,
            1.0,
            f32::MAX,
            f32::MIN,
            f32::MIN_POSITIVE,
            f32::from_bits(1),
            f32::from_bits(0x8000_0001),
            f32::from_bits(0x007F_FFFF),
            f32::INFINITY,
            f32::NEG_INFINITY,
            65504.0,
            65520.0,
            6.0e-8,
            3.0e-8,
        ]
        .to_vec();
        // Exact ties (round bit set, nothing below): even and odd bf16 and
        // f16 results, and one above and below each.
        for base in [0x3F80_0000u32, 0x3F81_0000, 0x4000_2000, 0xC0A1_0000] {
            for off in [0x7FFF, 0x8000, 0x8001, 0x0FFF, 0x1000, 0x1001] {
                v.push(f32::from_bits(base + off));
            }
        }
        let mut s = 0x9E37_79B9u32;
        for _ in 0..2000 {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            v.push(f32::from_bits(s));
        }
        v.retain(|x| !x.is_nan());
        v
    }

    #[test]
    fn rounding_to_bf16_is_halfs() {
        for x in delicate() {
            let want = bf16::from_f32(x);
            assert_eq!(HalfSource::<bf16>::half_bits(x), want.to_bits(), "{x:e}");
            let mut w = [0.0f32];
            <f32 as HalfSource<bf16>>::widen_run(&[x], &mut w);
            assert_eq!(w[0].to_bits(), want.to_f32().to_bits(), "{x:e}");
        }
        // A NaN stays a NaN, quieted as `half` quiets it.
        let nan = f32::from_bits(0x7F80_0001);
        assert_eq!(
            HalfSource::<bf16>::half_bits(nan),
            bf16::from_f32(nan).to_bits()
        );
    }

    #[test]
    fn rounding_to_f16_is_halfs() {
        for x in delicate() {
            let want = f16::from_f32(x);
            assert_eq!(HalfSource::<f16>::half_bits(x), want.to_bits(), "{x:e}");
            let mut w = [0.0f32];
            <f32 as HalfSource<f16>>::widen_run(&[x], &mut w);
            assert_eq!(w[0].to_bits(), want.to_f32().to_bits(), "{x:e}");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    #[cfg_attr(miri, ignore)]
    fn eight_lane_loads_match_the_scalar_rounding() {
        if !(is_x86_feature_detected!("avx2") && is_x86_feature_detected!("f16c")) {
            eprintln!("skipping eight_lane_loads_match_the_scalar_rounding: no AVX2 and F16C");
            return;
        }
        #[target_feature(enable = "avx2,f16c")]
        fn lanes<H, S: HalfSource<H>>(src: &[S; 8]) -> [u32; 8] {
            let mut out = [0u32; 8];
            // SAFETY: 8 readable values, 8 writable lanes; the features are
            // enabled on this function, which only runs behind the check above.
            unsafe {
                let v = S::load8_bits(src.as_ptr());
                _mm256_storeu_si256(out.as_mut_ptr().cast(), v);
            }
            out
        }
        let mut vals = delicate();
        vals.push(f32::NAN);
        vals.push(f32::from_bits(0xFFC0_1234));
        for chunk in vals.chunks_exact(8) {
            let src: [f32; 8] = chunk.try_into().expect("8 values");
            // SAFETY: AVX2 and F16C were detected above.
            let (b, h) = unsafe { (lanes::<bf16, f32>(&src), lanes::<f16, f32>(&src)) };
            for (i, &x) in src.iter().enumerate() {
                assert_eq!(b[i], u32::from(HalfSource::<bf16>::half_bits(x)), "{x:e}");
                if !x.is_nan() {
                    assert_eq!(h[i], u32::from(HalfSource::<f16>::half_bits(x)), "{x:e}");
                }
            }
            let stored: [bf16; 8] = src.map(bf16::from_f32);
            // SAFETY: as above.
            let s = unsafe { lanes::<bf16, bf16>(&stored) };
            assert_eq!(s, stored.map(|v| u32::from(v.to_bits())));
        }
    }
}
