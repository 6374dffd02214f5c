//! The micro-kernel contract, and the portable kernel every CPU can run.

use super::buffers::PackedElem;
use super::pack::{self, View};
use crate::dtype::Float;

/// The `A` operand of one kernel call.
#[derive(Clone, Copy, Debug)]
pub(super) enum APanel<'a, T> {
    /// Packed: `kc` columns of `MR` values, `A[i, p] = a[p·MR + i]`,
    /// zero-padded past the matrix edge.
    Packed(&'a [T]),
    /// The tile's rows of a row-major `A`, read in place:
    /// `A[i, p] = data[i·rs + p]` for `i < mr`.
    Rows {
        /// From `A[0, 0]` of the call on.
        data: &'a [T],
        /// The row stride.
        rs: usize,
    },
}

impl<T: Copy> APanel<'_, T> {
    /// Whether every `A[i, p]` a call reads is in bounds: `i < MR` for a
    /// packed panel, `i < mr` for rows read in place, `p < kc`.
    pub(super) fn holds<const MR: usize>(&self, kc: usize, mr: usize) -> bool {
        match *self {
            APanel::Packed(a) => a.len() >= kc * MR,
            APanel::Rows { data, rs } => kc == 0 || mr == 0 || data.len() >= (mr - 1) * rs + kc,
        }
    }
}

/// A threshold of `side³` multiply-adds for [`MicroKernel::PAR_MIN_WORK`];
/// under Miri (`scripts/miri.sh`), which runs hundreds of times slower,
/// 16³ for every kernel, so that products small enough for it still take
/// the threaded path.
pub(super) const fn par_min_work(side: usize) -> usize {
    if cfg!(miri) {
        16 * 16 * 16
    } else {
        side * side * side
    }
}

/// A register-tiled kernel: `C[0..mr, 0..nr] (+)= Apanel · Bpanel` over `kc`,
/// from operands stored as `SA` and `SB`.
///
/// `A` comes packed as `kc` columns of `MR` values (`a[p * MR + i]`) or as
/// rows read in place (see [`APanel`]), `B` as `kc` rows of `NR` values
/// (`b[p * NR + j]`), zero-padded past the matrix edge. The kernel sums `p`
/// in order `0..kc`, one product at a time, into a zeroed accumulator, then
/// stores it into `C` or adds it to `C`. (Kernels whose packed element holds
/// several steps of `k` say how they lay them out and sum them.)
///
/// The blocking sizes live beside the kernel because they are tuned for it.
/// A value of a kernel type is a proof that the CPU supports it.
pub(super) trait MicroKernel<SA, SB = SA>: Copy + Send + Sync {
    /// The element of the packed panels.
    type Packed: PackedElem;
    /// The element of `C`, and of the accumulators.
    type Out: Copy + Send + Default;

    /// Rows of `C` per kernel call.
    const MR: usize;
    /// Columns of `C` per kernel call.
    const NR: usize;
    /// Most `k` per block (a packed `A` panel is `MR × KC`, kept in L1).
    const KC: usize;
    /// Most `k` per block for a product whose `k` exceeds it and whose `C`
    /// is small (see [`super::driver::k_block_of`]): fewer passes over `C`
    /// and fewer kernel calls, where the longer `B` block still fits L2.
    /// `KC` unless a kernel was measured to gain from more.
    const KC_LONG: usize = Self::KC;
    /// Most columns per tile (a packed `B` block is `KC × NC`, kept in L2).
    const NC: usize;
    /// Most rows per tile.
    const MC: usize;
    /// Below this many multiply-adds a call stays on the calling thread:
    /// splitting a product wakes another thread and moves the operands and
    /// `C` between cores, which a small product does not win back.
    const PAR_MIN_WORK: usize = par_min_work(96);
    /// Tiles per thread for a large product: more even out threads slowed
    /// by other work; fewer pack each operand fewer times (each tile packs
    /// the blocks it reads).
    const TILES_PER_THREAD: usize = 4;

    /// How many packed rows (of `MR` or `NR` elements) hold `kc` steps of
    /// `k`: `kc`, unless a packed element holds several steps.
    fn packed_rows(kc: usize) -> usize {
        kc
    }

    /// A row-major `A`, viewed as packed elements to be read in place
    /// ([`APanel::Rows`]), where the kernel can; `None` makes it packed.
    fn a_in_place(_a: &[SA]) -> Option<&[Self::Packed]> {
        None
    }

    /// A row-major `B`, viewed as packed elements whose full panels are read
    /// in place, where the kernel can; `None` makes it packed.
    fn b_in_place(_b: &[SB]) -> Option<&[Self::Packed]> {
        None
    }

    /// Packs `op(A)[i0..i0+mr, p0..p0+kc]` as an `MR`-wide panel.
    fn pack_a(
        a: View<'_, SA>,
        i0: usize,
        mr: usize,
        p0: usize,
        kc: usize,
        dst: &mut [Self::Packed],
    );

    /// Packs `op(B)[p0..p0+kc, j0..j0+nc]` as `NR`-wide panels.
    fn pack_b(
        b: View<'_, SB>,
        p0: usize,
        kc: usize,
        j0: usize,
        nc: usize,
        dst: &mut [Self::Packed],
    );

    /// `rows[r][j] = tile[j·w + r0 + r]`: the copy of a swapped product's
    /// tile into `C` (see [`pack::columns_to_rows`]); kernels with SIMD
    /// registers transpose in them.
    fn columns_to_rows(tile: &[Self::Out], w: usize, r0: usize, rows: &mut [&mut [Self::Out]]) {
        pack::columns_to_rows(tile, w, r0, rows);
    }

    /// Prepares this thread for a run of kernel calls (AMX loads its tile
    /// configuration here); the driver calls it again after running the
    /// caller's epilogue.
    fn begin(self) {}

    /// Ends a run of kernel calls begun by [`MicroKernel::begin`].
    fn end(self) {}

    /// Multiplies one `A` panel by one `B` panel into `C`.
    ///
    /// `B` row `p` starts at `b[p * b_step]`: `b_step` is `NR` for a packed
    /// panel, or the row stride of `B` when the kernel reads a full panel of
    /// a row-major `B` in place. Panics if `a` or `b` does not hold `kc`
    /// steps or the tile is larger than `MR × NR`.
    ///
    /// # Safety
    ///
    /// `c` must be valid for reads and writes of `mr` rows of `nr` elements
    /// each, the rows `ldc` elements apart, and no other thread may touch
    /// those elements during the call.
    #[allow(clippy::too_many_arguments)]
    unsafe fn run(
        self,
        kc: usize,
        a: APanel<'_, Self::Packed>,
        b: &[Self::Packed],
        b_step: usize,
        c: *mut Self::Out,
        ldc: usize,
        mr: usize,
        nr: usize,
        add: bool,
    );
}

/// The portable kernel: plain Rust the compiler may vectorise.
#[derive(Clone, Copy, Debug)]
pub(super) struct Portable;

const PMR: usize = 4;
const PNR: usize = 8;

impl<T: Float + PackedElem> MicroKernel<T> for Portable {
    type Packed = T;
    type Out = T;

    const MR: usize = PMR;
    const NR: usize = PNR;
    const KC: usize = 256;
    const NC: usize = 512;
    const MC: usize = 4096;

    fn a_in_place(a: &[T]) -> Option<&[T]> {
        Some(a)
    }

    fn b_in_place(b: &[T]) -> Option<&[T]> {
        Some(b)
    }

    fn pack_a(a: View<'_, T>, i0: usize, mr: usize, p0: usize, kc: usize, dst: &mut [T]) {
        pack::pack_a::<T, PMR>(a, i0, mr, p0, kc, dst, pack::pack_a_rows::<T, PMR>);
    }

    fn pack_b(b: View<'_, T>, p0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [T]) {
        pack::pack_b::<T, PNR>(b, p0, kc, j0, nc, dst, pack::pack_b_transposed::<T, PNR>);
    }

    unsafe fn run(
        self,
        kc: usize,
        a: APanel<'_, T>,
        b: &[T],
        b_step: usize,
        c: *mut T,
        ldc: usize,
        mr: usize,
        nr: usize,
        add: bool,
    ) {
        assert!(a.holds::<PMR>(kc, mr) && mr <= PMR && nr <= PNR);
        let a_at = |i: usize, p: usize| match a {
            APanel::Packed(a) => a[p * PMR + i],
            APanel::Rows { data, rs } if i < mr => data[i * rs + p],
            APanel::Rows { .. } => T::ZERO,
        };
        let mut acc = [[T::ZERO; PNR]; PMR];
        for p in 0..kc {
            let bp = &b[p * b_step..][..PNR];
            for (i, row) in acc.iter_mut().enumerate() {
                let av = a_at(i, p);
                for (cv, &bv) in row.iter_mut().zip(bp) {
                    *cv += av * bv;
                }
            }
        }
        for (i, row) in acc.iter().enumerate().take(mr) {
            for (j, &v) in row.iter().enumerate().take(nr) {
                // SAFETY: i < mr and j < nr, inside the tile the caller vouches for.
                unsafe {
                    let dst = c.add(i * ldc + j);
                    *dst = if add { *dst + v } else { v };
                }
            }
        }
    }
}
