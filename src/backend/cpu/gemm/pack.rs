//! Packing: copying a block of `op(A)` or `op(B)` into the panel layout the
//! micro-kernel reads, zero-padded at the edges. Transposed operands are
//! handled here, by the strides, so no transpose is ever materialised.
//!
//! The panel widths are const parameters so that the copies compile to a
//! few vector moves instead of calls to `memcpy`.

use crate::dtype::Float;

/// A matrix view: element `(r, c)` is `data[r * rs + c * cs]`.
#[derive(Debug)]
pub(super) struct View<'a, T> {
    pub data: &'a [T],
    pub rs: usize,
    pub cs: usize,
}

// A view is a borrowed slice and two strides: copyable whatever `T` is.
impl<T> Clone for View<'_, T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for View<'_, T> {}

/// Packs `op(A)[i0..i0+mr, p0..p0+kc]` into `dst` as `kc` columns of `MR`
/// values (`dst[p * MR + i]`), zero past `mr`.
///
/// `rows` packs a full strip when `A` is stored as rows (`a.cs == 1`):
/// [`pack_a_rows`] or a SIMD version of it.
#[inline(always)]
pub(super) fn pack_a<T: Float, const MR: usize>(
    a: View<'_, T>,
    i0: usize,
    mr: usize,
    p0: usize,
    kc: usize,
    dst: &mut [T],
    rows: impl Fn(View<'_, T>, usize, usize, &mut [T]),
) {
    let dst = &mut dst[..kc * MR];
    if a.cs == 1 && mr == MR {
        // Rows of A are contiguous: interleave the MR rows.
        rows(a, i0, p0, dst);
    } else if a.rs == 1 && mr == MR {
        // A stored transposed: each column of op(A) is MR contiguous values.
        for (p, d) in dst.chunks_exact_mut(MR).enumerate() {
            let start = i0 + (p0 + p) * a.cs;
            let src: &[T; MR] = a.data[start..start + MR].try_into().expect("MR values");
            d.copy_from_slice(src);
        }
    } else {
        // Edge strip (or any other strides): zero it, then copy each row of
        // op(A) down its lane.
        if mr < MR {
            dst.fill(T::ZERO);
        }
        for (i, row0) in (i0..i0 + mr).map(|i| i * a.rs + p0 * a.cs).enumerate() {
            for (p, d) in dst.chunks_exact_mut(MR).enumerate() {
                d[i] = a.data[row0 + p * a.cs];
            }
        }
    }
}

/// One full strip of `op(A)` (rows `i0..i0+MR`) when `A` is stored as rows:
/// `dst[p * MR + i] = A[i0 + i, p0 + p]`, walking the rows side by side.
#[inline(always)]
pub(super) fn pack_a_rows<T: Float, const MR: usize>(
    a: View<'_, T>,
    i0: usize,
    p0: usize,
    dst: &mut [T],
) {
    let kc = dst.len() / MR;
    let rows: [&[T]; MR] = std::array::from_fn(|i| &a.data[(i0 + i) * a.rs + p0..][..kc]);
    for (p, d) in dst.chunks_exact_mut(MR).enumerate() {
        for (x, row) in d.iter_mut().zip(&rows) {
            *x = row[p];
        }
    }
}

/// Packs `op(B)[p0..p0+kc, j0..j0+nc]` into `dst` as `nc.div_ceil(NR)`
/// panels, each `kc` rows of `NR` values (`dst[panel][p * NR + j]`), zero
/// past `nc`.
///
/// `transposed` packs one full panel when `B` is stored transposed
/// (`b.rs == 1`), from panel start column `jb`: [`pack_b_transposed`] or a
/// SIMD version of it.
#[inline(always)]
pub(super) fn pack_b<T: Float, const NR: usize>(
    b: View<'_, T>,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    dst: &mut [T],
    transposed: impl Fn(View<'_, T>, usize, usize, &mut [T]),
) {
    let panels = nc.div_ceil(NR);
    let dst = &mut dst[..panels * kc * NR];
    let full = nc / NR;
    if b.cs == 1 {
        // Rows of op(B) are contiguous: in strips of a few rows, read the rows
        // left to right and hand NR values of each to each full panel. (Whole
        // rows at a time would write to every panel at once, and panels a
        // power of two apart evict each other from L1.)
        const STRIP: usize = 8;
        for s in (0..kc).step_by(STRIP) {
            let len = STRIP.min(kc - s);
            for jp in 0..full {
                let out = &mut dst[(jp * kc + s) * NR..][..len * NR];
                for (p, d) in out.chunks_exact_mut(NR).enumerate() {
                    let start = (p0 + s + p) * b.rs + j0 + jp * NR;
                    let src: &[T; NR] = b.data[start..start + NR].try_into().expect("NR values");
                    d.copy_from_slice(src);
                }
            }
        }
    } else if b.rs == 1 {
        // B stored transposed: the panel's NR columns are contiguous runs.
        for (jp, panel) in dst[..full * kc * NR].chunks_exact_mut(kc * NR).enumerate() {
            transposed(b, p0, j0 + jp * NR, panel);
        }
    }
    // The edge panel (every panel, for unusual strides): zero it, then copy
    // its `w` columns of op(B) in.
    let first = if b.cs == 1 || b.rs == 1 { full } else { 0 };
    for (jp, panel) in dst.chunks_exact_mut(kc * NR).enumerate().skip(first) {
        let jb = j0 + jp * NR;
        let w = NR.min(j0 + nc - jb);
        if w < NR {
            panel.fill(T::ZERO);
        }
        if b.cs == 1 {
            for (p, d) in panel.chunks_exact_mut(NR).enumerate() {
                let start = (p0 + p) * b.rs + jb;
                d[..w].copy_from_slice(&b.data[start..start + w]);
            }
        } else if b.rs == 1 {
            transposed_columns::<T, NR>(b, p0, jb, w, panel);
        } else {
            for (j, col0) in (jb..jb + w).map(|j| j * b.cs + p0 * b.rs).enumerate() {
                for (p, d) in panel.chunks_exact_mut(NR).enumerate() {
                    d[j] = b.data[col0 + p * b.rs];
                }
            }
        }
    }
}

/// The first `w` lanes of a panel of `op(B)` when `B` is stored transposed
/// (`b.rs == 1`), from column `jb` on: each column of `op(B)` is a
/// contiguous run of `B`. Goes in strips of `STRIP` rows of the panel, so
/// that its writes stay in a few cache lines while it reads a short stretch
/// of each run (a lane at a time down the whole panel would touch a line
/// per row for every lane).
#[inline(always)]
fn transposed_columns<T: Float, const NR: usize>(
    b: View<'_, T>,
    p0: usize,
    jb: usize,
    w: usize,
    panel: &mut [T],
) {
    const STRIP: usize = 8;
    for (s, strip) in panel.chunks_mut(STRIP * NR).enumerate() {
        let rows = strip.len() / NR;
        for j in 0..w {
            let run = &b.data[(jb + j) * b.cs + p0 + s * STRIP..][..rows];
            for (d, &v) in strip.chunks_exact_mut(NR).zip(run) {
                d[j] = v;
            }
        }
    }
}

/// One full panel of `op(B)` when `B` is stored transposed (`[n, k]`): all
/// `NR` lanes of [`transposed_columns`].
#[inline(always)]
pub(super) fn pack_b_transposed<T: Float, const NR: usize>(
    b: View<'_, T>,
    p0: usize,
    jb: usize,
    panel: &mut [T],
) {
    transposed_columns::<T, NR>(b, p0, jb, NR, panel);
}

/// Rows and columns per block of [`columns_to_rows`], and the most rows
/// it writes per call.
pub(super) const BLOCK: usize = 8;

/// `rows[r][j] = tile[j·w + r0 + r]` for every `r` and `j`: columns
/// `r0..r0 + rows.len()` of a `w`-wide tile, transposed into rows (the copy
/// out of a swapped product's tile), in blocks of `BLOCK × BLOCK`: `BLOCK`
/// reads of contiguous values, then `BLOCK` writes of contiguous values.
///
/// # Panics
///
/// If the rows differ in length, or the tile is too short for them.
pub(super) fn columns_to_rows<T: Copy + Default>(
    tile: &[T],
    w: usize,
    r0: usize,
    rows: &mut [&mut [T]],
) {
    let (rn, h) = (rows.len(), rows.first().map_or(0, |r| r.len()));
    assert!(rn <= BLOCK && rows.iter().all(|r| r.len() == h));
    for j0 in (0..h).step_by(BLOCK) {
        let jn = BLOCK.min(h - j0);
        let mut block = [[T::default(); BLOCK]; BLOCK];
        for (jj, b) in block.iter_mut().enumerate().take(jn) {
            b[..rn].copy_from_slice(&tile[(j0 + jj) * w + r0..][..rn]);
        }
        for (r, row) in rows.iter_mut().enumerate() {
            for (jj, v) in row[j0..j0 + jn].iter_mut().enumerate() {
                *v = block[jj][r];
            }
        }
    }
}
