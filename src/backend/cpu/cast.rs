//! Conversions between element types.
//!
//! Between float types each value is rounded once, to nearest with ties to
//! even, as IEEE 754 says: a value beyond the target's largest finite
//! value by half an ulp or more becomes infinite, ±0, infinities and
//! subnormals are kept where the target can hold them (smaller values
//! round to a subnormal or to a signed zero), NaN stays NaN (quiet, same
//! sign). Widening (half → f32 → f64) is exact. To u32 a value is truncated
//! towards zero (negative and NaN become 0, large ones saturate); from u32
//! it is rounded like any other.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use super::gemm::half::round_to_bf16;
use super::CpuStorage;
use crate::backend::{pool, BackendStorage};
use crate::dtype::DType;

/// `x` rounded to f32 towards zero, with the last bit set if that lost
/// anything ("round to odd"): rounding this to a type of at most 22
/// significant bits to nearest even gives the same as rounding `x` itself
/// once (Boldo and Melquiond). `half`'s own f64 conversions round the
/// bf16 ties of values just above a midpoint the wrong way.
fn f64_to_f32_odd(x: f64) -> f32 {
    let r = x as f32;
    if !r.is_finite() || f64::from(r) == x {
        return r;
    }
    let mut bits = r.to_bits();
    if f64::from(r).abs() > x.abs() {
        bits -= 1;
    }
    f32::from_bits(bits | 1)
}

/// `x` as bf16, rounded once to nearest even.
pub(crate) fn bf16_from_f64(x: f64) -> bf16 {
    bf16::from_f32(f64_to_f32_odd(x))
}

/// `x` as f16, rounded once to nearest even.
pub(crate) fn f16_from_f64(x: f64) -> f16 {
    f16::from_f32(f64_to_f32_odd(x))
}

/// `src` converted by `f`, element by element.
fn map<A: Copy, B>(src: &[A], f: impl Fn(A) -> B) -> Vec<B> {
    src.iter().map(|&x| f(x)).collect()
}

/// A half buffer from f32 values, each rounded by `round` (which fills
/// its second argument from its first), in a recycled buffer where one
/// fits.
fn f32_to_half<H: Copy + Default + 'static>(
    src: &[f32],
    round: impl Fn(&[f32], &mut [H]),
) -> Vec<H> {
    let mut out = pool::filled(src.len(), H::default());
    round(src, &mut out);
    out
}

/// f32 values from a half buffer (exact; vectorised where `half` can), in
/// a recycled buffer where one fits.
fn half_to_f32<H: Copy>(src: &[H]) -> Vec<f32>
where
    [H]: HalfFloatSliceExt,
{
    let mut out = pool::filled(src.len(), 0.0f32);
    src.convert_to_f32_slice(&mut out);
    out
}

impl CpuStorage {
    /// The buffer converted to `dtype`, each value rounded once to nearest
    /// with ties to even (widening is exact); a copy when it already is
    /// `dtype`.
    pub fn cast(&self, dtype: DType) -> CpuStorage {
        use CpuStorage as S;
        match (self, dtype) {
            (s, d) if s.dtype() == d => s.clone(),
            (S::F32(v), DType::F64) => S::F64(map(v, f64::from)),
            // `half` rounds f16 with F16C where it can, bf16 one value at a time.
            (S::F32(v), DType::F16) => S::F16(f32_to_half(v, |s, d| d.convert_from_f32_slice(s))),
            (S::F32(v), DType::BF16) => S::BF16(f32_to_half(v, round_to_bf16)),
            (S::F64(v), DType::F32) => S::F32(map(v, |x| x as f32)),
            (S::F64(v), DType::F16) => S::F16(map(v, f16_from_f64)),
            (S::F64(v), DType::BF16) => S::BF16(map(v, bf16_from_f64)),
            (S::F16(v), DType::F32) => S::F32(half_to_f32(v)),
            (S::BF16(v), DType::F32) => S::F32(half_to_f32(v)),
            (S::F16(v), DType::BF16) => S::BF16(map(v, |x| bf16::from_f32(x.to_f32()))),
            (S::BF16(v), DType::F16) => S::F16(map(v, |x| f16::from_f32(x.to_f32()))),
            (s, d) => CpuStorage::from_f64_slice(&s.to_f64_vec(), d),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of `bits` in a float format with `exp_bits` exponent and
    /// `frac_bits` fraction bits (IEEE layout), as f64.
    fn decode(bits: u32, exp_bits: u32, frac_bits: u32) -> f64 {
        let sign = if bits >> (exp_bits + frac_bits) & 1 == 1 {
            -1.0
        } else {
            1.0
        };
        let e = (bits >> frac_bits) & ((1 << exp_bits) - 1);
        let f = f64::from(bits & ((1 << frac_bits) - 1));
        let bias = (1 << (exp_bits - 1)) - 1;
        let scale = |p: i32| 2f64.powi(p);
        sign * match e {
            0 => f * scale(1 - bias - frac_bits as i32),
            e if e == (1 << exp_bits) - 1 => {
                if f == 0.0 {
                    f64::INFINITY
                } else {
                    f64::NAN
                }
            }
            e => (1.0 + f * scale(-(frac_bits as i32))) * scale(e as i32 - bias),
        }
    }

    /// Round-to-nearest-even of a finite `x` to the format, by search over
    /// its finite values `values` (sorted by value, one per value): the
    /// reference the conversions are checked against.
    fn nearest_even(x: f64, values: &[(f64, u16)], max: f64, ulp_at_max: f64) -> f64 {
        if x.abs() >= max + ulp_at_max / 2.0 {
            return x.signum() * f64::INFINITY;
        }
        let i = values.partition_point(|&(v, _)| v < x);
        let hi = values[i.min(values.len() - 1)];
        let lo = values[i.saturating_sub(1)];
        let (dl, dh) = (x - lo.0, hi.0 - x);
        let pick = if dl < dh {
            lo
        } else if dh < dl {
            hi
        } else if lo.1 & 1 == 0 {
            lo
        } else {
            hi
        };
        pick.0
    }

    /// Every bit pattern of a 16-bit format: to f32 and back gives the
    /// same bits (NaN: a NaN of the same sign), f32 → f64 → half too, and
    /// the widening equals the decoded value exactly.
    fn round_trips<H: Copy>(
        exp_bits: u32,
        from_bits: fn(u16) -> H,
        dtype: DType,
        wrap: fn(Vec<H>) -> CpuStorage,
    ) {
        let all: Vec<H> = (0..=u16::MAX).map(from_bits).collect();
        let wide = wrap(all).cast(DType::F32);
        let CpuStorage::F32(w) = &wide else {
            unreachable!()
        };
        for (bits, &x) in (0..=u16::MAX).zip(w) {
            let exact = decode(u32::from(bits), exp_bits, 15 - exp_bits);
            assert!(
                (exact.is_nan() && x.is_nan()) || exact == f64::from(x),
                "{dtype} {bits:#06x} widens to {x}, not {exact}"
            );
        }
        for back in [wide.cast(dtype), wide.cast(DType::F64).cast(dtype)] {
            let v: Vec<u16> = match back {
                CpuStorage::F16(v) => v.iter().map(|x| x.to_bits()).collect(),
                CpuStorage::BF16(v) => v.iter().map(|x| x.to_bits()).collect(),
                _ => unreachable!(),
            };
            for (bits, got) in (0..=u16::MAX).zip(v) {
                let nan = |b: u16| (b & 0x7fff) > (0x7fff ^ ((1 << (15 - exp_bits)) - 1));
                if nan(bits) {
                    assert!(
                        nan(got) && got >> 15 == bits >> 15,
                        "{dtype} NaN {bits:#06x} → {got:#06x}"
                    );
                } else {
                    assert_eq!(got, bits, "{dtype} {bits:#06x} does not round-trip");
                }
            }
        }
    }

    #[test]
    fn every_bf16_and_f16_bit_pattern_round_trips() {
        round_trips(8, bf16::from_bits, DType::BF16, CpuStorage::BF16);
        round_trips(5, f16::from_bits, DType::F16, CpuStorage::F16);
    }

    /// f32 values at, between and around every pair of neighbouring
    /// finite half values (the midpoints are the ties), plus values past
    /// the largest and below the smallest subnormal: each rounds to the
    /// nearest half value, ties to the even one, from f32 and from f64.
    fn rounds_to_nearest_even(exp_bits: u32, dtype: DType) {
        let frac = 15 - exp_bits;
        let mut values: Vec<(f64, u16)> = (0..=u16::MAX)
            .map(|b| (decode(u32::from(b), exp_bits, frac), b))
            .filter(|(v, b)| v.is_finite() && *b != 0x8000)
            .collect();
        values.sort_by(|a, b| a.0.total_cmp(&b.0));
        let max = values.last().unwrap().0;
        let ulp_at_max = max - values[values.len() - 2].0;
        let mut probes: Vec<f32> = Vec::new();
        for w in values.windows(2) {
            let (a, b) = (w[0].0, w[1].0);
            let mid = (a + b) / 2.0;
            for x in [a, mid, b] {
                // The midpoints of bf16 and f16 neighbours are f32 values.
                probes.push(x as f32);
            }
            let mid32 = mid as f32;
            probes.push(f32::from_bits(mid32.to_bits().wrapping_add(1)));
            probes.push(f32::from_bits(mid32.to_bits().wrapping_sub(1)));
        }
        probes.extend([
            (max + ulp_at_max / 2.0) as f32,
            f32::from_bits(((max + ulp_at_max / 2.0) as f32).to_bits() - 1),
            f32::MAX,
            -f32::MAX,
            f32::MIN_POSITIVE / 3.0,
            1e-30,
        ]);
        probes.retain(|x| x.is_finite());
        let narrow = |s: CpuStorage| -> Vec<f64> {
            match s {
                CpuStorage::F16(v) => v.iter().map(|x| x.to_f64()).collect(),
                CpuStorage::BF16(v) => v.iter().map(|x| x.to_f64()).collect(),
                _ => unreachable!(),
            }
        };
        let from_f32 = narrow(CpuStorage::F32(probes.clone()).cast(dtype));
        let from_f64 = narrow(CpuStorage::F32(probes.clone()).cast(DType::F64).cast(dtype));
        let mut ties = 0;
        for (i, &x) in probes.iter().enumerate() {
            let want = nearest_even(f64::from(x), &values, max, ulp_at_max);
            assert_eq!(
                from_f32[i], want,
                "{dtype}: f32 {x:e} rounds to {}",
                from_f32[i]
            );
            assert_eq!(
                from_f64[i], want,
                "{dtype}: f64 {x:e} rounds to {}",
                from_f64[i]
            );
            let i = values.partition_point(|&(v, _)| v < f64::from(x));
            if i > 0
                && i < values.len()
                && f64::from(x) - values[i - 1].0 == values[i].0 - f64::from(x)
            {
                ties += 1;
            }
        }
        assert!(ties > 60_000, "{dtype}: only {ties} ties were probed");
    }

    #[test]
    fn f32_and_f64_round_to_nearest_even() {
        rounds_to_nearest_even(8, DType::BF16);
        rounds_to_nearest_even(5, DType::F16);
    }

    #[test]
    fn half_types_convert_to_each_other_and_to_u32() {
        let x = CpuStorage::F32(vec![1.0, -2.5, 65504.0, 1e-6, f32::NAN]);
        let CpuStorage::BF16(b) = x.cast(DType::F16).cast(DType::BF16) else {
            unreachable!()
        };
        assert_eq!(b[0].to_f32(), 1.0);
        assert_eq!(b[1].to_f32(), -2.5);
        assert_eq!(b[2].to_f32(), 65536.0); // 65504 rounds to 2¹⁶ in bf16
        assert!(b[4].is_nan());
        let CpuStorage::U32(u) = x.cast(DType::F16).cast(DType::U32) else {
            unreachable!()
        };
        assert_eq!(&u[..3], &[1, 0, 65504]);
    }
}
