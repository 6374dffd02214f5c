//! SIMD packing for the x86-64 kernels: the transposing copies (a full `A`
//! strip stored as rows, a full `B` panel stored transposed) done as small
//! in-register transposes instead of one value at a time.
//!
//! These functions use AVX and are `#[inline(always)]` into the packing
//! functions of the AVX2 and AVX-512 kernels, which are compiled with those
//! features and only run behind a token that proves them.

use std::arch::x86_64::*;

use super::pack::{self, View};
use crate::dtype::Float;

/// Interleaves `W` runs of f32 into `panel` (`panel[p * W + r] =
/// data[(first + r) * stride + p0 + p]`) in 8 × 8 in-register transposes:
/// the packing of a full `A` strip stored as rows, or of a full `B` panel
/// stored transposed.
///
/// Must only run on a CPU with AVX (every caller holds an AVX2 or AVX-512
/// token, and is compiled with those features, so this inlines into it).
#[inline(always)]
fn interleave_f32<const W: usize>(
    data: &[f32],
    stride: usize,
    first: usize,
    p0: usize,
    panel: &mut [f32],
) {
    const { assert!(W.is_multiple_of(8)) };
    let kc = panel.len() / W;
    let full = kc - kc % 8;
    // Every read below is data[(first + r) * stride + p0 + p] with r < W, p < kc.
    assert!((first + W - 1) * stride + p0 + kc <= data.len());
    let src = data.as_ptr();
    for p in (0..full).step_by(8) {
        for rg in (0..W).step_by(8) {
            // SAFETY: the reads are in bounds (asserted above); the writes go
            // to panel[(p + t) * W + rg ..][..8] with p + t < kc, rg + 8 ≤ W;
            // AVX is present (see the doc comment).
            unsafe {
                let out = transposed_runs(src.add((first + rg) * stride + p0 + p), stride);
                let dst = panel.as_mut_ptr();
                for (t, v) in out.into_iter().enumerate() {
                    _mm256_storeu_ps(dst.add((p + t) * W + rg), v);
                }
            }
        }
    }
    for p in full..kc {
        for (r, x) in panel[p * W..][..W].iter_mut().enumerate() {
            *x = data[(first + r) * stride + p0 + p];
        }
    }
}

/// Eight runs of eight f32, `stride` apart, transposed: `out[t][r] =
/// src[r·stride + t]`.
///
/// # Safety
///
/// `src[r·stride..][..8]` must be readable for every `r < 8`, and the CPU
/// must have AVX (callers are compiled with it, so this inlines into them).
#[inline(always)]
unsafe fn transposed_runs(src: *const f32, stride: usize) -> [__m256; 8] {
    // SAFETY: the caller vouches for the reads and for AVX.
    let mut runs = unsafe { [_mm256_setzero_ps(); 8] };
    for (r, run) in runs.iter_mut().enumerate() {
        // SAFETY: as above.
        *run = unsafe { _mm256_loadu_ps(src.add(r * stride)) };
    }
    transpose_8x8(runs)
}

/// Transposes 8 × 8 lanes of 32 bits: `out[t][r] = rows[r][t]` (the bits
/// move as they are, so integer data may pass through it cast).
///
/// Must only run on a CPU with AVX (inlined into callers compiled with it).
#[inline(always)]
pub(super) fn transpose_8x8(r: [__m256; 8]) -> [__m256; 8] {
    // SAFETY: AVX is present (see the doc comment).
    unsafe {
        let (t0, t1) = (
            _mm256_unpacklo_ps(r[0], r[1]),
            _mm256_unpackhi_ps(r[0], r[1]),
        );
        let (t2, t3) = (
            _mm256_unpacklo_ps(r[2], r[3]),
            _mm256_unpackhi_ps(r[2], r[3]),
        );
        let (t4, t5) = (
            _mm256_unpacklo_ps(r[4], r[5]),
            _mm256_unpackhi_ps(r[4], r[5]),
        );
        let (t6, t7) = (
            _mm256_unpacklo_ps(r[6], r[7]),
            _mm256_unpackhi_ps(r[6], r[7]),
        );
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }
}

/// A full `B` panel stored transposed, for f32: see [`interleave_f32`].
#[inline(always)]
pub(super) fn transposed_panel_f32<const NR: usize>(
    b: View<'_, f32>,
    p0: usize,
    jb: usize,
    panel: &mut [f32],
) {
    interleave_f32::<NR>(b.data, b.cs, jb, p0, panel);
}

/// [`pack::columns_to_rows`] for f32: eight rows at a time in 8 × 8
/// in-register transposes, the edges as the generic copy does them.
///
/// Must only run on a CPU with AVX (see [`interleave_f32`]).
#[inline(always)]
pub(super) fn columns_to_rows_f32(tile: &[f32], w: usize, r0: usize, rows: &mut [&mut [f32]]) {
    if rows.len() != 8 {
        return pack::columns_to_rows(tile, w, r0, rows);
    }
    let h = rows[0].len();
    let full = h - h % 8;
    assert!(rows.iter().all(|r| r.len() == h));
    // Every read below is tile[(j0 + jj) * w + r0 + t] with j0 + jj < full, t < 8.
    assert!(full == 0 || (full - 1) * w + r0 + 8 <= tile.len());
    let src = tile.as_ptr();
    for j0 in (0..full).step_by(8) {
        // SAFETY: the reads are in bounds (asserted above); the writes go to
        // rows[r][j0..j0 + 8], j0 + 8 ≤ full ≤ h; AVX is present (see the
        // doc comment).
        unsafe {
            let out = transposed_runs(src.add(j0 * w + r0), w);
            for (row, v) in rows.iter_mut().zip(out) {
                _mm256_storeu_ps(row.as_mut_ptr().add(j0), v);
            }
        }
    }
    if full < h {
        let mut edge: [&mut [f32]; 8] = std::array::from_fn(|_| &mut [][..]);
        for (e, row) in edge.iter_mut().zip(rows.iter_mut()) {
            *e = &mut row[full..];
        }
        pack::columns_to_rows(&tile[full * w..], w, r0, &mut edge);
    }
}

/// A full `A` strip stored as rows, for f32 with `MR = 8`: see
/// [`interleave_f32`].
#[inline(always)]
pub(super) fn row_strip_f32<const MR: usize>(
    a: View<'_, f32>,
    i0: usize,
    p0: usize,
    strip: &mut [f32],
) {
    interleave_f32::<MR>(a.data, a.rs, i0, p0, strip);
}

/// [`interleave_f32`] for f64, in 4 × 4 in-register transposes.
///
/// Must only run on a CPU with AVX (see [`interleave_f32`]).
#[inline(always)]
fn interleave_f64<const W: usize>(
    data: &[f64],
    stride: usize,
    first: usize,
    p0: usize,
    panel: &mut [f64],
) {
    const { assert!(W.is_multiple_of(4)) };
    let kc = panel.len() / W;
    let full = kc - kc % 4;
    // Every read below is data[(first + r) * stride + p0 + p] with r < W, p < kc.
    assert!((first + W - 1) * stride + p0 + kc <= data.len());
    let src = data.as_ptr();
    for p in (0..full).step_by(4) {
        for rg in (0..W).step_by(4) {
            // SAFETY: the reads are in bounds (asserted above); the writes go
            // to panel[(p + t) * W + rg ..][..4] with p + t < kc, rg + 4 ≤ W;
            // AVX is present (see the doc comment).
            unsafe {
                let run = |r: usize| _mm256_loadu_pd(src.add((first + rg + r) * stride + p0 + p));
                let (r0, r1, r2, r3) = (run(0), run(1), run(2), run(3));
                let (t0, t1) = (_mm256_unpacklo_pd(r0, r1), _mm256_unpackhi_pd(r0, r1));
                let (t2, t3) = (_mm256_unpacklo_pd(r2, r3), _mm256_unpackhi_pd(r2, r3));
                let out = [
                    _mm256_permute2f128_pd::<0x20>(t0, t2),
                    _mm256_permute2f128_pd::<0x20>(t1, t3),
                    _mm256_permute2f128_pd::<0x31>(t0, t2),
                    _mm256_permute2f128_pd::<0x31>(t1, t3),
                ];
                let dst = panel.as_mut_ptr();
                for (t, v) in out.into_iter().enumerate() {
                    _mm256_storeu_pd(dst.add((p + t) * W + rg), v);
                }
            }
        }
    }
    for p in full..kc {
        for (r, x) in panel[p * W..][..W].iter_mut().enumerate() {
            *x = data[(first + r) * stride + p0 + p];
        }
    }
}

/// A full `B` panel stored transposed, for f64: see [`interleave_f64`].
#[inline(always)]
pub(super) fn transposed_panel_f64<const NR: usize>(
    b: View<'_, f64>,
    p0: usize,
    jb: usize,
    panel: &mut [f64],
) {
    interleave_f64::<NR>(b.data, b.cs, jb, p0, panel);
}

/// A full `A` strip stored as rows, for f64 with `MR = 8`: see
/// [`interleave_f64`].
#[inline(always)]
pub(super) fn row_strip_f64<const MR: usize>(
    a: View<'_, f64>,
    i0: usize,
    p0: usize,
    strip: &mut [f64],
) {
    interleave_f64::<MR>(a.data, a.rs, i0, p0, strip);
}

/// The portable strip packing, for the kernels whose `MR` is no multiple of
/// the transpose size.
#[inline(always)]
pub(super) fn row_strip_any<T: Float, const MR: usize>(
    a: View<'_, T>,
    i0: usize,
    p0: usize,
    strip: &mut [T],
) {
    pack::pack_a_rows::<T, MR>(a, i0, p0, strip);
}

/// [`row_strip_any`] for f32 (`MR` = 6 is no multiple of 8).
#[inline(always)]
pub(super) fn row_strip_f32_any<const MR: usize>(
    a: View<'_, f32>,
    i0: usize,
    p0: usize,
    strip: &mut [f32],
) {
    row_strip_any::<f32, MR>(a, i0, p0, strip);
}

/// [`row_strip_any`] for f64.
#[inline(always)]
pub(super) fn row_strip_f64_any<const MR: usize>(
    a: View<'_, f64>,
    i0: usize,
    p0: usize,
    strip: &mut [f64],
) {
    row_strip_any::<f64, MR>(a, i0, p0, strip);
}
