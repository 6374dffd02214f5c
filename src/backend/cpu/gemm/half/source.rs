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

    /// The values of `src` at the lanes of `mask` (of 16) as `H` bits, each
    /// in the low half of a 32-bit lane (the rest zero).
    ///
    /// # Safety
    ///
    /// `src` must be valid for reads at the lanes of `mask`; the CPU must
    /// have AVX-512F, BW and VL. It is inlined into callers compiled with
    /// those features.
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16_bits(src: *const Self, mask: __mmask16) -> __m512i;

    /// `src` as f32 values, where the operand holds f32 (to be rounded);
    /// `None` for values stored in the half type.
    #[inline(always)]
    fn as_f32(_src: *const Self) -> Option<*const f32> {
        None
    }

    /// The 32 values at `src` as 16 pairs of `H` bits (lane `i`: value
    /// `2i` in the low half, `2i + 1` in the high half), loaded as they are
    /// where the operand holds `H` (its memory already is that layout);
    /// `None` where the values are to be rounded.
    ///
    /// # Safety
    ///
    /// `src` must be valid for reads of 32 values; the CPU must have
    /// AVX-512F (the function is inlined into callers compiled with it).
    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load_pairs(_src: *const Self) -> Option<__m512i> {
        None
    }
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

/// `dst[i]` = `src[i]` rounded to bf16 (the bits of `half::bf16::from_f32`:
/// to nearest, ties to even, a NaN quieted) over the shorter of the two, in
/// the widest vectors the CPU has (`half` converts to bf16 one value at a
/// time).
pub(crate) fn round_to_bf16(src: &[f32], dst: &mut [bf16]) {
    #[inline(always)]
    fn run(src: &[f32], dst: &mut [bf16]) {
        for (d, &s) in dst.iter_mut().zip(src) {
            *d = bf16::from_bits(bf16_bits_of(s));
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f,avx512bw")]
        fn avx512(src: &[f32], dst: &mut [bf16]) {
            run(src, dst)
        }
        if is_x86_feature_detected!("avx512f") && is_x86_feature_detected!("avx512bw") {
            // SAFETY: the CPU has AVX-512F and BW (checked above).
            return unsafe { avx512(src, dst) };
        }
    }
    run(src, dst)
}

/// [`bf16_bits_of`] on 16 lanes: the bf16 bits in the low half of each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
#[inline]
fn bf16_bits_of16(x: __m512i) -> __m512i {
    {
        let abs = _mm512_and_si512(x, _mm512_set1_epi32(0x7FFF_FFFF));
        let is_nan = _mm512_cmpgt_epi32_mask(abs, _mm512_set1_epi32(0x7F80_0000));
        let odd = _mm512_and_si512(_mm512_srli_epi32::<16>(x), _mm512_set1_epi32(1));
        let bias = _mm512_add_epi32(odd, _mm512_set1_epi32(0x7FFF));
        let rounded = _mm512_add_epi32(x, bias);
        let quiet = _mm512_or_si512(x, _mm512_set1_epi32(0x0040_0000));
        _mm512_srli_epi32::<16>(_mm512_mask_blend_epi32(is_nan, rounded, quiet))
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
    /// [`HalfSource::load16_bits`] for values of this type.
    ///
    /// # Safety
    ///
    /// As [`HalfSource::load16_bits`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16(src: *const Self, mask: __mmask16) -> __m512i;
    /// [`HalfSource::load16_bits`] for f32 values.
    ///
    /// # Safety
    ///
    /// As [`HalfSource::load16_bits`].
    #[cfg(target_arch = "x86_64")]
    unsafe fn load16_rounded(src: *const f32, mask: __mmask16) -> __m512i;
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
    unsafe fn load16_bits(src: *const H, mask: __mmask16) -> __m512i {
        // SAFETY: the caller's contract.
        unsafe { H::load16(src, mask) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load_pairs(src: *const H) -> Option<__m512i> {
        // SAFETY: 32 readable 16-bit values (the caller's contract).
        Some(unsafe { _mm512_loadu_si512(src.cast()) })
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
    unsafe fn load16_bits(src: *const f32, mask: __mmask16) -> __m512i {
        // SAFETY: the caller's contract.
        unsafe { H::load16_rounded(src, mask) }
    }

    #[inline(always)]
    fn as_f32(src: *const f32) -> Option<*const f32> {
        Some(src)
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
    unsafe fn load16(src: *const bf16, mask: __mmask16) -> __m512i {
        // SAFETY: the masked lanes are readable; the features are present.
        unsafe { _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, src.cast())) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16_rounded(src: *const f32, mask: __mmask16) -> __m512i {
        // SAFETY: the masked lanes are readable; the features are present.
        unsafe { bf16_bits_of16(_mm512_castps_si512(_mm512_maskz_loadu_ps(mask, src))) }
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
        let dst = &mut dst[..src.len()];
        #[cfg(target_arch = "x86_64")]
        if avx512_halves() {
            // SAFETY: `avx512_halves` checked the features.
            return unsafe { f16_avx512::widen(src, dst) };
        }
        src.convert_to_f32_slice(dst);
    }

    fn widen_rounded(src: &[f32], dst: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if avx512_halves() {
            // SAFETY: `avx512_halves` checked the features.
            return unsafe { f16_avx512::widen_rounded(src, &mut dst[..src.len()]) };
        }
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
    unsafe fn load16(src: *const f16, mask: __mmask16) -> __m512i {
        // SAFETY: the masked lanes are readable; the features are present.
        unsafe { _mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, src.cast())) }
    }

    #[cfg(target_arch = "x86_64")]
    #[inline(always)]
    unsafe fn load16_rounded(src: *const f32, mask: __mmask16) -> __m512i {
        // SAFETY: the masked lanes are readable; the features are present.
        unsafe {
            let x = _mm512_maskz_loadu_ps(mask, src);
            let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
            _mm512_cvtepu16_epi32(h)
        }
    }
}

/// Whether the f16 conversions of the widening path run 16 lanes per
/// AVX-512 instruction (`vcvtph2ps`, `vcvtps2ph`) rather than through
/// `half`'s slices: when the f32 gemm runs its AVX-512 kernel (so
/// `ADVGRAD_GEMM=avx2|portable` forces `half`'s conversions too) and the
/// CPU has AVX-512BW and VL for the masked 16-bit loads. Both round to
/// nearest, ties to even, and quiet a NaN the same way: the bits agree.
#[cfg(target_arch = "x86_64")]
fn avx512_halves() -> bool {
    use crate::backend::cpu::gemm::select::F32Kernel;
    use std::sync::OnceLock;
    static CELL: OnceLock<bool> = OnceLock::new();
    *CELL.get_or_init(|| {
        !cfg!(miri)
            && F32Kernel::selected().is_ok_and(F32Kernel::is_avx512)
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl")
    })
}

/// f16 ↔ f32 conversions on 16 lanes, masked at the tail.
#[cfg(target_arch = "x86_64")]
mod f16_avx512 {
    use half::f16;
    use std::arch::x86_64::*;

    /// The lanes of a chunk of `len ≤ 16` values.
    fn mask(len: usize) -> __mmask16 {
        (((1u32 << len) - 1) & 0xFFFF) as __mmask16
    }

    /// `dst[i] = src[i]` widened (exactly); `dst.len() == src.len()`.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn widen(src: &[f16], dst: &mut [f32]) {
        for (s, d) in src.chunks(16).zip(dst.chunks_mut(16)) {
            let m = mask(s.len());
            // SAFETY: lanes `m` of `s` and `d` are in bounds (`d` is as long as `s`).
            unsafe {
                let h = _mm256_maskz_loadu_epi16(m, s.as_ptr().cast());
                _mm512_mask_storeu_ps(d.as_mut_ptr(), m, _mm512_cvtph_ps(h));
            }
        }
    }

    /// `dst[i] = src[i]` rounded to f16 (to nearest, ties to even) and
    /// widened back; `dst.len() == src.len()`.
    ///
    /// # Safety
    ///
    /// The CPU must have AVX-512F, BW and VL.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
    pub(super) unsafe fn widen_rounded(src: &[f32], dst: &mut [f32]) {
        for (s, d) in src.chunks(16).zip(dst.chunks_mut(16)) {
            let m = mask(s.len());
            // SAFETY: lanes `m` of `s` and `d` are in bounds (`d` is as long as `s`).
            unsafe {
                let x = _mm512_maskz_loadu_ps(m, s.as_ptr());
                let h = _mm512_cvtps_ph::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(x);
                _mm512_mask_storeu_ps(d.as_mut_ptr(), m, _mm512_cvtph_ps(h));
            }
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

    /// Runs of every length up to three vectors and a tail, at every
    /// offset of the delicate values (NaNs included): the widening path's
    /// f16 conversions, whichever the CPU runs, give `half`'s bits.
    #[test]
    fn f16_runs_widen_as_half_does() {
        let mut values = delicate();
        values.extend([f32::NAN, -f32::NAN, f32::from_bits(0x7F80_0001)]);
        let step = if cfg!(miri) { 97 } else { 1 };
        for len in (0..=50).step_by(if cfg!(miri) { 7 } else { 1 }) {
            for start in (0..values.len() - len).step_by(step * 37) {
                let src = &values[start..start + len];
                let halves: Vec<f16> = src.iter().map(|&x| f16::from_f32(x)).collect();
                let want: Vec<u32> = halves.iter().map(|h| h.to_f32().to_bits()).collect();
                let mut got = vec![0.0f32; len + 3];
                <f32 as HalfSource<f16>>::widen_run(src, &mut got);
                let bits: Vec<u32> = got[..len].iter().map(|v| v.to_bits()).collect();
                assert_eq!(bits, want, "rounded, {len} from {start}");
                assert!(got[len..].iter().all(|&v| v == 0.0), "wrote past the run");
                let mut got = vec![0.0f32; len];
                <f16 as HalfSource<f16>>::widen_run(&halves, &mut got);
                let bits: Vec<u32> = got.iter().map(|v| v.to_bits()).collect();
                assert_eq!(bits, want, "stored, {len} from {start}");
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    #[cfg_attr(miri, ignore)]
    fn sixteen_lane_loads_match_the_scalar_rounding() {
        let features = ["avx512f", "avx512bw", "avx512vl"];
        if !(is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("avx512vl"))
        {
            eprintln!("skipping sixteen_lane_loads_match_the_scalar_rounding: no {features:?}");
            return;
        }
        #[target_feature(enable = "avx512f,avx512bw,avx512vl")]
        fn lanes<H, S: HalfSource<H>>(src: &[S; 16], mask: __mmask16) -> [u32; 16] {
            let mut out = [0u32; 16];
            // SAFETY: 16 readable values, 16 writable lanes; the features are
            // enabled on this function, which only runs behind the check above.
            unsafe {
                let v = S::load16_bits(src.as_ptr(), mask);
                _mm512_storeu_si512(out.as_mut_ptr().cast(), v);
            }
            out
        }
        let mut vals = delicate();
        vals.push(f32::NAN);
        vals.push(f32::from_bits(0xFFC0_1234));
        for (c, chunk) in vals.chunks_exact(16).enumerate() {
            let src: [f32; 16] = chunk.try_into().expect("16 values");
            let mask = if c % 3 == 0 { 0x3FFF } else { 0xFFFF };
            let on = |i: usize| mask & (1 << i) != 0;
            // SAFETY: the features were detected above.
            let (b, h) = unsafe {
                (
                    lanes::<bf16, f32>(&src, mask),
                    lanes::<f16, f32>(&src, mask),
                )
            };
            for (i, &x) in src.iter().enumerate() {
                let want = |bits: u16| if on(i) { u32::from(bits) } else { 0 };
                assert_eq!(b[i], want(HalfSource::<bf16>::half_bits(x)), "{x:e}");
                if !x.is_nan() {
                    assert_eq!(h[i], want(HalfSource::<f16>::half_bits(x)), "{x:e}");
                }
            }
            let stored: [bf16; 16] = src.map(bf16::from_f32);
            // SAFETY: as above.
            let s = unsafe { lanes::<bf16, bf16>(&stored, mask) };
            for (i, v) in stored.iter().enumerate() {
                assert_eq!(s[i], if on(i) { u32::from(v.to_bits()) } else { 0 });
            }
        }
    }
}
