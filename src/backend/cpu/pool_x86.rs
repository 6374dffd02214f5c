//! The 2×2 max-pooling of f32 in AVX-512F: sixteen windows per step.
//!
//! A pair of input rows `top`, `bottom` (`2·OW` values each) holds the
//! windows `[a, b; c, d] = [top[2j], top[2j+1]; bottom[2j], bottom[2j+1]]`.
//! Each step loads 32 values of each row, splits them into the four places
//! `a`, `b`, `c`, `d` of 16 windows with two-source permutes, and picks the
//! first maximum in row-major order with the portable loop's rule (a NaN
//! counts as a maximum, the last NaN wins):
//!
//! `t_b = b > a ∨ b ≠ b`, `m = t_b ? b : a`, then `c` and `d` likewise
//! against the running maximum `m`.
//!
//! The same comparisons in the same order give the portable loop's bits
//! (`conv.rs` tests both). A row whose windows do not fill the last step
//! is finished with masked loads and stores.

use std::arch::x86_64::*;

/// Lane masks of the last step: its windows, the first 16 values of each
/// row pair it covers, and the next 16.
struct StepMasks {
    windows: __mmask16,
    low: __mmask16,
    high: __mmask16,
}

/// The masks for a step over `n ≤ 16` windows.
fn step_masks(n: usize) -> StepMasks {
    let lanes = |k: usize| -> __mmask16 { ((1u32 << k.min(16)) - 1) as __mmask16 };
    StepMasks {
        windows: lanes(n),
        low: lanes(2 * n),
        high: lanes((2 * n).saturating_sub(16)),
    }
}

/// The four places `[a, b]` of 16 windows from 32 values of one row
/// (`a` from the even values, `b` from the odd ones).
///
/// # Safety
///
/// AVX-512F must be available; `row` must hold every value the masks
/// select from `row[0..32]`.
#[target_feature(enable = "avx512f")]
unsafe fn split_row(row: *const f32, m: &StepMasks) -> (__m512, __m512) {
    let even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
    let odd = _mm512_add_epi32(even, _mm512_set1_epi32(1));
    // SAFETY: the caller's contract; the masked-off lanes are not read,
    // and the pointer of the second half is only formed, not used, when
    // its mask is empty.
    let (lo, hi) = unsafe {
        (
            _mm512_maskz_loadu_ps(m.low, row),
            _mm512_maskz_loadu_ps(m.high, row.wrapping_add(16)),
        )
    };
    (
        _mm512_permutex2var_ps(lo, even, hi),
        _mm512_permutex2var_ps(lo, odd, hi),
    )
}

/// Writes `[a[0], b[0], a[1], b[1], …]` for the windows of the step to
/// `row[0..2n]`.
///
/// # Safety
///
/// AVX-512F must be available; `row` must be valid for writes of every
/// value the masks select from `row[0..32]`.
#[target_feature(enable = "avx512f")]
unsafe fn weave_row(row: *mut f32, a: __m512, b: __m512, m: &StepMasks) {
    let low = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
    let high = _mm512_add_epi32(low, _mm512_set1_epi32(8));
    // SAFETY: the caller's contract, as in `split_row`.
    unsafe {
        _mm512_mask_storeu_ps(row, m.low, _mm512_permutex2var_ps(a, low, b));
        _mm512_mask_storeu_ps(
            row.wrapping_add(16),
            m.high,
            _mm512_permutex2var_ps(a, high, b),
        );
    }
}

/// `take(v, best) = v > best ∨ v ≠ v`: whether `v` replaces the running
/// maximum.
#[target_feature(enable = "avx512f")]
fn takes(v: __m512, best: __m512) -> __mmask16 {
    _mm512_cmp_ps_mask::<_CMP_GT_OQ>(v, best) | _mm512_cmp_ps_mask::<_CMP_UNORD_Q>(v, v)
}

/// One step of a row pair: the flags `t_b`, `t_c`, `t_d` of its 16
/// windows and their maxima.
///
/// # Safety
///
/// AVX-512F must be available; `top` and `bottom` must hold the values
/// the masks select.
#[target_feature(enable = "avx512f")]
unsafe fn step_max(top: *const f32, bottom: *const f32, m: &StepMasks) -> ([__mmask16; 3], __m512) {
    // SAFETY: the caller's contract.
    let ((a, b), (c, d)) = unsafe { (split_row(top, m), split_row(bottom, m)) };
    let tb = takes(b, a);
    let best = _mm512_mask_blend_ps(tb, a, b);
    let tc = takes(c, best);
    let best = _mm512_mask_blend_ps(tc, best, c);
    let td = takes(d, best);
    ([tb, tc, td], _mm512_mask_blend_ps(td, best, d))
}

/// Checks the lengths of one row pair of `ow` windows.
fn check_rows(top: &[f32], bottom: &[f32], ow: usize) {
    assert!(
        top.len() >= 2 * ow && bottom.len() >= 2 * ow,
        "a row pair of {ow} windows needs {} values per row",
        2 * ow
    );
}

/// `out[j]` = the maximum of window `j` of the row pair (`out.len()`
/// windows).
///
/// # Safety
///
/// AVX-512F must be available.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pool2_rows(top: &[f32], bottom: &[f32], out: &mut [f32]) {
    check_rows(top, bottom, out.len());
    for j0 in (0..out.len()).step_by(16) {
        let m = step_masks(out.len() - j0);
        // SAFETY: AVX-512F as the caller promised; the masks select
        // values `2·j0 .. 2·(j0 + n)` of each row and `j0 .. j0 + n` of
        // `out`, all in bounds (checked above).
        unsafe {
            let (_, best) = step_max(top.as_ptr().add(2 * j0), bottom.as_ptr().add(2 * j0), &m);
            _mm512_mask_storeu_ps(out.as_mut_ptr().add(j0), m.windows, best);
        }
    }
}

/// The input gradient of [`pool2_rows`]: `grads[j]` to the place of the
/// first maximum of window `j` in `dx_top`/`dx_bottom`, 0 to its other
/// three places.
///
/// # Safety
///
/// AVX-512F must be available.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn pool2_rows_backward(
    top: &[f32],
    bottom: &[f32],
    grads: &[f32],
    dx_top: &mut [f32],
    dx_bottom: &mut [f32],
) {
    let ow = grads.len();
    check_rows(top, bottom, ow);
    check_rows(dx_top, dx_bottom, ow);
    for j0 in (0..ow).step_by(16) {
        let m = step_masks(ow - j0);
        // SAFETY: as in `pool2_rows`; the gradient rows are as long as
        // the input rows (checked above).
        unsafe {
            let ([tb, tc, td], _) =
                step_max(top.as_ptr().add(2 * j0), bottom.as_ptr().add(2 * j0), &m);
            let g = _mm512_maskz_loadu_ps(m.windows, grads.as_ptr().add(j0));
            // The first maximum is d if d took it, else c if c did, …
            let later_c = !td;
            let later_b = later_c & !tc;
            let ga = _mm512_maskz_mov_ps(later_b & !tb, g);
            let gb = _mm512_maskz_mov_ps(later_b & tb, g);
            let gc = _mm512_maskz_mov_ps(later_c & tc, g);
            let gd = _mm512_maskz_mov_ps(td, g);
            weave_row(dx_top.as_mut_ptr().add(2 * j0), ga, gb, &m);
            weave_row(dx_bottom.as_mut_ptr().add(2 * j0), gc, gd, &m);
        }
    }
}
