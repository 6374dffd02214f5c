//! The blocking loops: tiles of `C` as rayon tasks, `k` blocks, packing,
//! and the calls to the micro-kernel.

use std::ops::Range;

use rayon::prelude::*;

use super::buffers::{aligned, PackedElem};
use super::kernel::{APanel, MicroKernel};
use super::pack::{View, BLOCK};

/// One multiply, with `op(A)` and `op(B)` as strided views: operands stored
/// as `SA` and `SB`, `C` as `C` (all one type for the plain gemm; half
/// operands and an f32 `C` for the half-precision one).
pub struct Problem<'a, SA, SB = SA, C = SA> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    /// `op(A)[i, p] = a[i * a_rs + p * a_cs]`.
    pub a: &'a [SA],
    pub a_rs: usize,
    pub a_cs: usize,
    /// `op(B)[p, j] = b[p * b_rs + j * b_cs]`.
    pub b: &'a [SB],
    pub b_rs: usize,
    pub b_cs: usize,
    pub accumulate: bool,
    /// Applied to each finished stretch of a row of `C`, while in cache.
    pub epilogue: Option<&'a Epilogue<'a, C>>,
}

/// Where a product goes: into `C` (a raw pointer, as [`run_raw`] takes it),
/// or block by block to a [`TileStep`].
#[derive(Clone, Copy)]
pub enum Output<'s, T> {
    C(*mut T),
    Step(&'s TileStep<'s, T>),
}

/// `epilogue(i, j, c)` receives `c = C[i, j..j + c.len()]` once its sum is
/// complete, and may rewrite it; every element of `C` is handed over once.
pub type Epilogue<'e, T> = dyn Fn(usize, usize, &mut [T]) + Sync + 'e;

/// `step(i, j, g)` receives a finished block `g` of the product, whose
/// element `(r, c)` is `C[i + r, j + c]`, where `C` is never stored whole
/// (see [`super::gemm_stepping`]); every element of `C` is handed over once.
pub type TileStep<'s, T> = dyn Fn(usize, usize, GradBlock<'_, T>) + Sync + 's;

/// A finished block of a product, `rows × cols` values, rows `ld` apart.
#[derive(Clone, Copy, Debug)]
pub struct GradBlock<'a, T> {
    values: &'a [T],
    ld: usize,
    rows: usize,
    cols: usize,
}

impl<'a, T> GradBlock<'a, T> {
    /// A block of `rows × cols` values, rows `ld` apart, from `values`.
    ///
    /// # Panics
    ///
    /// If `values` is too short for them, or `ld < cols`.
    pub fn new(values: &'a [T], ld: usize, rows: usize, cols: usize) -> Self {
        assert!(ld >= cols && (rows == 0 || values.len() >= (rows - 1) * ld + cols));
        GradBlock {
            values,
            ld,
            rows,
            cols,
        }
    }

    /// How many rows the block has.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// How many columns the block has.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Row `r` of the block (`cols` values).
    ///
    /// # Panics
    ///
    /// If `r ≥ rows`.
    pub fn row(&self, r: usize) -> &'a [T] {
        assert!(r < self.rows, "row {r} of a block of {} rows", self.rows);
        &self.values[r * self.ld..r * self.ld + self.cols]
    }
}

/// From this many multiply-adds on, `C` is cut into a few tiles per thread
/// (the kernel's `TILES_PER_THREAD`) instead of one, so that a thread slowed
/// by other work hands tiles to the others; below it, the extra packing
/// would cost more.
const FINE_WORK: usize = 512 * 512 * 512;

/// ... provided each of those tiles still holds this many elements of `C`:
/// a thinner tile reads its `A` strips for only a few `B` panels (or the
/// other way round), and its operands' reuse drops with it. Measured on an
/// Intel Xeon with two threads (`benches/RESULTS.md`): the MLP's input
/// gradient at batch 128, `128×1024·1024×1024`, took 1.22–1.27 ms in eight
/// tiles of 128 columns and 0.96–1.04 ms in two of 512; the training step
/// of `784-1024-1024-10` at batch 512 was 3–5 % shorter with its
/// `512×1024` products in two tiles instead of eight.
const FINE_TILE_MIN: usize = 512 * 512;

/// A tile of at most this many `MR`-row strips reads full panels of a
/// row-major `B` in place instead of packing them: with so few strips, the
/// packing would cost more than it saves.
const DIRECT_B_MAX_STRIPS: usize = 3;

/// A `B` block of at most this many values is read in place, too: it is
/// small enough to stay in cache as it is.
const DIRECT_B_MAX_BLOCK: usize = 128 * 128;

/// So is every block of a row-major `B` of at most this many values: the
/// whole matrix stays in L2, and packing would only copy it. (Measured on
/// Zen 4: in place is 1–4 % faster for the MLP's weights and at 512², and
/// 9–15 % slower at 1024² and 2048², whose rows then fight over cache sets.)
const DIRECT_B_MAX_MATRIX: usize = 512 * 512;

/// Rows of `A` this many bytes apart (or a multiple of it) fall into the
/// same L1 cache set: a strip of them read in place keeps evicting itself,
/// so it is packed instead where enough panels share the packed copy.
const ALIASING_STRIDE: usize = 4096;

/// The fewest `B` panels in a tile for which an aliasing `A` (see
/// [`ALIASING_STRIDE`]) is packed: packing a strip costs about as much as
/// a few panels' worth of its reads. Measured on an Intel Xeon guest, one
/// thread: 1024³ went from 161–167 to 173–182 GFLOP/s, 2048³ from 150–154
/// to 155–166; with every such `A` packed, the MLP's step at
/// `(H, batch) = (1024, 128)` was 0.7–6 % slower, through its swapped
/// forward products, whose tiles have 4 panels.
const PACK_ALIASED_A_MIN_PANELS: usize = 16;

/// Whether a row-major `A` with rows `row_bytes` apart is read in place by
/// a tile of `panels` panels (else it is packed).
fn a_in_place_pays(row_bytes: usize, panels: usize) -> bool {
    !row_bytes.is_multiple_of(ALIASING_STRIDE) || panels < PACK_ALIASED_A_MIN_PANELS
}

/// A product of at most this many rows with a transposed `B` runs swapped
/// (see [`swap_pays`]).
const SWAP_MAX_M: usize = 128;

/// Whether `p` runs faster as `Cᵀ = op(B)ᵀ·op(A)ᵀ` ([`run_swapped`]): `B`
/// is stored transposed (so it would be packed with a transposing copy),
/// `C` has few rows (so each packed panel would serve few strips) and at
/// least four times as many columns (so that the swapped product's packed
/// operand, `op(A)`, which each thread packs whole, is the smaller one).
///
/// Measured on Zen 4 with two threads, in the training step of the MLP
/// `784-H-H-10` at batch 128: swapping its two `x·Wᵀ` products made the
/// step 4 % shorter at `H = 1024` and 5 % longer at `H = 256`.
pub(super) fn swap_pays<SA, SB, C>(p: &Problem<'_, SA, SB, C>) -> bool {
    p.b_rs == 1 && p.b_cs != 1 && p.m <= SWAP_MAX_M && p.n >= 4 * p.m
}

/// The `k` block length: `k` cut into equal blocks of at most `kc_max`.
///
/// It depends on `k` alone, which is what makes the result independent of
/// the thread count.
pub(super) fn k_block(k: usize, kc_max: usize) -> usize {
    k.div_ceil(k.div_ceil(kc_max))
}

/// A product whose `m` and `n` are both at most this long sums `k` in the
/// kernel's longer blocks ([`MicroKernel::KC_LONG`]; 512 steps for the
/// 12 × 32 f32 kernel and the AMX kernel, against 256): each element of
/// `C` is read and written half as often between blocks, and each packed
/// `A` strip serves twice as many steps per kernel call. The rule looks at the shape alone,
/// so the bits stay independent of the thread count.
///
/// Measured on an Intel Xeon guest with AMX (2 MiB of L2 per core), two
/// threads (`benches/RESULTS.md`): the lean epoch of `784-H-H-10` was
/// 2–4 % shorter at `(H, batch) = (256, 128)`, 0–3 % at `(1024, 128)` and
/// 0–2 % at `(1024, 512)`; for `H = 2048`, blocks of 512 made the `k = 2048`
/// products 8–13 % slower (tiles 1024 columns wide at two threads: a `B`
/// block of 2 MiB), hence the limit.
const LONG_BLOCK_MAX_DIM: usize = 1024;

/// The widest tile of a product summed in long blocks: its packed `B`
/// block then holds at most `KC_LONG × 512` values (1 MiB in f32), as at
/// two threads. Without the cap, one thread's 1024-column tiles made the
/// epoch at `(1024, 512)` 1–3 % slower than with blocks of 256.
const LONG_BLOCK_MAX_COLS: usize = 512;

/// The `k` block length of an `m × n × k` product with kernel `K`: blocks
/// of at most `K::KC_LONG` where `k` is longer than that and neither `m`
/// nor `n` exceeds [`LONG_BLOCK_MAX_DIM`], else of at most `K::KC`.
///
/// It depends on the shape alone (never on the thread count or the tiles),
/// and is symmetric in `m` and `n`, so a swapped product sums each element
/// over the same blocks.
pub(super) fn k_block_of<SA, SB, K: MicroKernel<SA, SB>>(m: usize, n: usize, k: usize) -> usize {
    let long = k > K::KC_LONG && m.max(n) <= LONG_BLOCK_MAX_DIM;
    k_block(k, if long { K::KC_LONG } else { K::KC })
}

/// `C` as a raw pointer that tasks share; each task writes only its tile.
struct CPtr<T>(*mut T);

impl<T> Clone for CPtr<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for CPtr<T> {}

impl<T> CPtr<T> {
    /// The pointer (a method, so that closures capture the `Send` wrapper).
    fn get(self) -> *mut T {
        self.0
    }
}
// SAFETY: the pointer is only dereferenced inside disjoint tiles (one per
// task), so sending it to other threads cannot create overlapping accesses.
unsafe impl<T: Send> Send for CPtr<T> {}
// SAFETY: as above; shared copies never touch the same element.
unsafe impl<T: Send> Sync for CPtr<T> {}

/// Where a tile's sums go: element `(i, j)` of the product at
/// `ptr + (i - origin.0)·ld + (j - origin.1)` (`C` itself, or a tile buffer
/// that holds the tile alone).
struct Target<T> {
    ptr: CPtr<T>,
    ld: usize,
    origin: (usize, usize),
}

impl<T> Clone for Target<T> {
    fn clone(&self) -> Self {
        *self
    }
}
impl<T> Copy for Target<T> {}

impl<T> Target<T> {
    /// The address of element `(i, j)`.
    ///
    /// # Safety
    ///
    /// `(i, j)` must lie in the tile the target holds.
    unsafe fn at(self, i: usize, j: usize) -> *mut T {
        // SAFETY: the caller keeps (i, j) inside the target's tile.
        unsafe {
            self.ptr
                .0
                .add((i - self.origin.0) * self.ld + (j - self.origin.1))
        }
    }
}

/// Computes the problem with kernel `kern` into `c` (`m × n`, row-major).
#[cfg(test)]
pub(super) fn run<SA, SB, K: MicroKernel<SA, SB>>(
    kern: K,
    p: &Problem<'_, SA, SB, K::Out>,
    c: &mut [K::Out],
) where
    SA: Sync,
    SB: Sync,
{
    assert_eq!(c.len(), p.m * p.n);
    // SAFETY: `c` is a live, exclusive slice of exactly `m·n` elements.
    unsafe { run_raw(kern, p, c.as_mut_ptr()) }
}

/// [`run`] on a raw output. Without `p.accumulate`, `C` is only written
/// (the first `k` block stores, later blocks add to what it stored), so it
/// may start uninitialised.
///
/// # Safety
///
/// `c` must be valid for writes (and, with `p.accumulate`, reads of
/// initialised values) of `m·n` elements, and nothing else may access them
/// during the call.
pub(super) unsafe fn run_raw<SA: Sync, SB: Sync, K: MicroKernel<SA, SB>>(
    kern: K,
    p: &Problem<'_, SA, SB, K::Out>,
    c: *mut K::Out,
) {
    let out = Target {
        ptr: CPtr(c),
        ld: p.n,
        origin: (0, 0),
    };
    for_each_tile::<SA, SB, K>((p.m, p.n, p.k), true, |rows, cols| {
        run_tile(kern, p, Sink::Store(out), rows, cols)
    });
}

/// Computes the problem with kernel `kern`, handing each finished
/// `MR × NR` block of `C` to `step` instead of storing `C`: the sums of a
/// block go to a buffer of one block on the stack where `k` is one block,
/// else to the thread's tile buffer (holding the partial sums between
/// blocks), and
/// `step` reads them from there while they are in L1. Every element is
/// summed as by [`run_raw`], so the bits are the same.
pub(super) fn run_stepping<T, K>(kern: K, p: &Problem<'_, T>, step: &TileStep<'_, T>)
where
    T: PackedElem,
    K: MicroKernel<T, T, Out = T>,
{
    let one_block = k_block_of::<T, T, K>(p.m, p.n, p.k) >= p.k;
    for_each_tile::<T, T, K>((p.m, p.n, p.k), true, |rows, cols| {
        if one_block {
            assert!(
                K::MR * K::NR <= BLOCK_SUMS,
                "a kernel block of {} values",
                K::MR * K::NR
            );
            let mut block = BlockSums([T::default(); BLOCK_SUMS]);
            let sums = Target {
                ptr: CPtr(block.0.as_mut_ptr()),
                ld: K::NR,
                origin: (0, 0),
            };
            let sink = Sink::Step {
                sums,
                per_block: true,
                step,
            };
            return run_tile(kern, p, sink, rows, cols);
        }
        T::with_tile(|buf| {
            let (h, w) = (rows.len(), cols.len());
            let buf = aligned(buf, h * w, h * w);
            let sums = Target {
                ptr: CPtr(buf.as_mut_ptr()),
                ld: w,
                origin: (rows.start, cols.start),
            };
            let sink = Sink::Step {
                sums,
                per_block: false,
                step,
            };
            run_tile(kern, p, sink, rows, cols)
        })
    });
}

/// The most values of a kernel's `MR × NR` block (12 × 32 for the f32
/// AVX-512 kernel) that [`run_stepping`] keeps on the stack.
const BLOCK_SUMS: usize = 512;

/// The sums of one kernel block, on a cache line (on the stack, so that a
/// thread's first stepped product allocates nothing).
#[repr(align(64))]
struct BlockSums<T>([T; BLOCK_SUMS]);

/// Where [`run_tile`] puts the sums of each kernel call.
#[derive(Clone, Copy)]
enum Sink<'s, T> {
    /// Into `C` (or a tile buffer), at each element's place.
    Store(Target<T>),
    /// Into `sums`, then, once the last `k` block is summed, to `step`:
    /// with `per_block`, every block's sums start at `sums`' first element
    /// (a buffer of one block); otherwise they lie at their places in a
    /// buffer of the tile.
    Step {
        sums: Target<T>,
        per_block: bool,
        step: &'s TileStep<'s, T>,
    },
}

/// [`run_raw`] as `Cᵀ = op(B)ᵀ·op(A)ᵀ` (the operands swapped), each tile of
/// `Cᵀ` summed in this thread's tile buffer and then written into `C`
/// transposed, where the caller's epilogue sees its rows.
///
/// This is the better order for a product with few rows and a transposed
/// `B` (`x·Wᵀ` at a small batch): `W`'s rows become the swapped product's
/// `A`, read in place, and only the small `op(A)` is packed, instead of
/// every panel of `W` packed transposed for a handful of strips. Every
/// element is summed in the same order, over the same `k` blocks, as by
/// [`run_raw`], so the bits are the same.
///
/// # Safety
///
/// As [`run_raw`].
pub(super) unsafe fn run_swapped<T, K>(kern: K, p: &Problem<'_, T>, c: *mut T)
where
    T: PackedElem,
    K: MicroKernel<T, T, Out = T>,
{
    let swapped = Problem {
        m: p.n,
        n: p.m,
        k: p.k,
        a: p.b,
        a_rs: p.b_cs,
        a_cs: p.b_rs,
        b: p.a,
        b_rs: p.a_cs,
        b_cs: p.a_rs,
        accumulate: p.accumulate,
        epilogue: None,
    };
    let c = CPtr(c);
    // Rows of the swapped tile are columns of C, and the other way round.
    // One tile per thread: each tile packs all of `op(A)` again.
    let size = (swapped.m, swapped.n, swapped.k);
    for_each_tile::<T, T, K>(size, false, |cols, rows| {
        T::with_tile(|tile| {
            let (w, h) = (rows.len(), cols.len());
            let tile = aligned(tile, w * h, w * h);
            // SAFETY: rows `rows` × columns `cols` of C are this task's alone.
            let c_rows = |i: usize| unsafe {
                std::slice::from_raw_parts_mut(c.get().add(i * p.n + cols.start), h)
            };
            if p.accumulate {
                for (r, i) in rows.clone().enumerate() {
                    let row = c_rows(i);
                    for (j, &v) in row.iter().enumerate() {
                        tile[j * w + r] = v;
                    }
                }
            }
            let out = Target {
                ptr: CPtr(tile.as_mut_ptr()),
                ld: w,
                origin: (cols.start, rows.start),
            };
            run_tile(kern, &swapped, Sink::Store(out), cols.clone(), rows.clone());
            // Eight rows of C at a time: from the tile in blocks of 8 × 8,
            // then to the epilogue while they are in L1.
            for r0 in (0..w).step_by(BLOCK) {
                let rn = BLOCK.min(w - r0);
                let mut dst: [&mut [T]; BLOCK] = std::array::from_fn(|r| {
                    if r < rn {
                        c_rows(rows.start + r0 + r)
                    } else {
                        &mut []
                    }
                });
                K::columns_to_rows(tile, w, r0, &mut dst[..rn]);
                if let Some(epilogue) = p.epilogue {
                    for (r, row) in dst[..rn].iter_mut().enumerate() {
                        epilogue(rows.start + r0 + r, cols.start, row);
                    }
                }
            }
        })
    });
}

/// Cuts an `m × n × k` product for kernel `K` into tiles and calls `task`
/// with each tile's rows and columns, on rayon's threads when the product
/// is large enough; with `fine`, into a few tiles per thread when it is
/// large (see [`FINE_WORK`] and [`FINE_TILE_MIN`]).
fn for_each_tile<SA, SB, K: MicroKernel<SA, SB>>(
    (m, n, k): (usize, usize, usize),
    fine: bool,
    task: impl Fn(Range<usize>, Range<usize>) + Sync,
) {
    let threads = rayon::current_num_threads();
    let parallel = threads > 1 && m * n * k >= K::PAR_MIN_WORK;
    let (mt, nt) = (m.div_ceil(K::MR), n.div_ceil(K::NR));
    let fine =
        fine && m * n * k >= FINE_WORK && m * n >= K::TILES_PER_THREAD * threads * FINE_TILE_MIN;
    let tasks = match (parallel, fine) {
        (false, _) => 1,
        (true, false) => threads,
        (true, true) => K::TILES_PER_THREAD * threads,
    };
    // Long `k` blocks make each column of a packed `B` block longer.
    let nc = if k_block_of::<SA, SB, K>(m, n, k) > K::KC {
        LONG_BLOCK_MAX_COLS
    } else {
        K::NC
    };
    let max = (K::MC / K::MR, nc / K::NR);
    let (gm, gn) = grid((mt, nt), (K::MR, K::NR), max, tasks, threads);
    let tile = |t: usize| {
        let (ti, tj) = (t / gn, t % gn);
        // Tile ti holds units [ti·mt/gm, (ti+1)·mt/gm) of MR rows; likewise
        // for columns, so tiles differ by at most one unit.
        let rows = (ti * mt / gm) * K::MR..((ti + 1) * mt / gm * K::MR).min(m);
        let cols = (tj * nt / gn) * K::NR..((tj + 1) * nt / gn * K::NR).min(n);
        task(rows, cols);
    };
    if gm * gn > 1 && parallel {
        (0..gm * gn).into_par_iter().for_each(tile);
    } else {
        (0..gm * gn).for_each(tile);
    }
}

/// How many tiles to cut `C` into, down (`gm`) and across (`gn`), given
/// `mt × nt` units of `mr × nr` elements and tiles of at most `mcu × ncu`
/// units.
///
/// Tiles are made only as many as the cache limits and `tasks` ask for,
/// since each tile packs its own panels; their count is a multiple of
/// `threads` where possible, so that the threads finish together. (How `C`
/// is tiled changes which thread computes an element, never how it is
/// summed.)
fn grid(
    (mt, nt): (usize, usize),
    (mr, nr): (usize, usize),
    (mcu, ncu): (usize, usize),
    tasks: usize,
    threads: usize,
) -> (usize, usize) {
    let (mut gm, mut gn) = (mt.div_ceil(mcu), nt.div_ceil(ncu));
    while gm * gn < tasks || (gm * gn % threads != 0 && gm * gn < 2 * tasks) {
        // Split the dimension whose tiles are longer.
        if (mt / gm) * mr >= (nt / gn) * nr && gm < mt {
            gm += 1;
        } else if gn < nt {
            gn += 1;
        } else if gm < mt {
            gm += 1;
        } else {
            break;
        }
    }
    (gm, gn)
}

/// Computes the tile `C[rows, cols]`, the whole `k` range.
fn run_tile<SA, SB, K: MicroKernel<SA, SB>>(
    kern: K,
    p: &Problem<'_, SA, SB, K::Out>,
    sink: Sink<'_, K::Out>,
    rows: Range<usize>,
    cols: Range<usize>,
) {
    let a = View {
        data: p.a,
        rs: p.a_rs,
        cs: p.a_cs,
    };
    let b = View {
        data: p.b,
        rs: p.b_rs,
        cs: p.b_cs,
    };
    let kb = k_block_of::<SA, SB, K>(p.m, p.n, p.k);
    let panels = cols.len().div_ceil(K::NR);
    K::Packed::with_buffers(|bbuf, abuf| {
        // Grow to the most any call can need (kb ≤ max(KC, KC_LONG),
        // panels · NR ≤ NC), so that each thread allocates once, whatever
        // tiles it gets later.
        let kc_max = K::KC.max(K::KC_LONG);
        let (rows_kb, rows_max) = (K::packed_rows(kb), K::packed_rows(kc_max));
        let bbuf = aligned(bbuf, rows_kb * panels * K::NR, rows_max * K::NC);
        let abuf = aligned(abuf, rows_kb * K::MR, rows_max * K::MR);
        // Full panels of a row-major B read in place, where the kernel can;
        // the edge panel, if any, is still packed (zero-padded).
        let small = rows.len() <= DIRECT_B_MAX_STRIPS * K::MR
            || kb * cols.len() <= DIRECT_B_MAX_BLOCK
            || p.k * p.n <= DIRECT_B_MAX_MATRIX;
        let b_rows = if p.b_cs == 1 && small {
            K::b_in_place(p.b)
        } else {
            None
        };
        let full = if b_rows.is_some() {
            cols.len() / K::NR
        } else {
            0
        };
        // A row-major A is read in place where the kernel can: its strip of
        // `MR` rows stays in L1 across the tile's panels as a packed copy
        // would, and the copy is saved (unless its rows alias in L1).
        let a_row_bytes = p.a_rs * std::mem::size_of::<SA>();
        let a_rows = if p.a_cs == 1 && a_in_place_pays(a_row_bytes, panels) {
            K::a_in_place(p.a)
        } else {
            None
        };
        kern.begin();
        for p0 in (0..p.k).step_by(kb) {
            let kc = kb.min(p.k - p0);
            let krows = K::packed_rows(kc);
            let add = p.accumulate || p0 > 0;
            let last = p0 + kc == p.k;
            let packed_from = cols.start + full * K::NR;
            let bblock = &mut bbuf[..krows * (panels - full) * K::NR];
            K::pack_b(b, p0, kc, packed_from, cols.end - packed_from, bblock);
            let apanel = &mut abuf[..krows * K::MR];
            for i0 in rows.clone().step_by(K::MR) {
                let mr = K::MR.min(rows.end - i0);
                let a_strip = match a_rows {
                    Some(data) => APanel::Rows {
                        data: &data[i0 * p.a_rs + p0..],
                        rs: p.a_rs,
                    },
                    None => {
                        K::pack_a(a, i0, mr, p0, kc, apanel);
                        APanel::Packed(apanel)
                    }
                };
                for jp in 0..panels {
                    let j0 = cols.start + jp * K::NR;
                    let nr = K::NR.min(cols.end - j0);
                    let (bpanel, b_step) = match b_rows {
                        Some(data) if jp < full => (&data[p0 * p.b_rs + j0..], p.b_rs),
                        _ => (&bblock[(jp - full) * krows * K::NR..], K::NR),
                    };
                    // SAFETY: rows i0..i0+mr and columns j0..j0+nr lie in this
                    // task's tile, which no other task touches (or in this
                    // thread's buffer of one block); the caller holds the
                    // target for the whole call.
                    let (ct, ld) = unsafe {
                        let (ct, ld) = match sink {
                            Sink::Store(out) => (out.at(i0, j0), out.ld),
                            Sink::Step {
                                sums,
                                per_block: true,
                                ..
                            } => (sums.ptr.get(), sums.ld),
                            Sink::Step { sums, .. } => (sums.at(i0, j0), sums.ld),
                        };
                        kern.run(kc, a_strip, bpanel, b_step, ct, ld, mr, nr, add);
                        (ct, ld)
                    };
                    if let (Sink::Step { step, .. }, true) = (sink, last) {
                        // SAFETY: the kernel has just written these `mr` rows
                        // of `nr` sums, `ld` apart, into this thread's buffer,
                        // which nothing else touches until the next call.
                        let values = unsafe { std::slice::from_raw_parts(ct, (mr - 1) * ld + nr) };
                        step(i0, j0, GradBlock::new(values, ld, mr, nr));
                    }
                }
                // The strip is finished after the last k block, and its rows
                // across the tile are still in L1/L2.
                let out = match sink {
                    Sink::Store(out) => out,
                    Sink::Step { .. } => continue,
                };
                if let (Some(epilogue), true) = (p.epilogue, last) {
                    for i in i0..i0 + mr {
                        // SAFETY: row i, columns `cols`, lie in this task's
                        // tile, as above.
                        let row = unsafe {
                            std::slice::from_raw_parts_mut(out.at(i, cols.start), cols.len())
                        };
                        epilogue(i, cols.start, row);
                    }
                    // The epilogue is the caller's code, which may have used
                    // the kernel's state (AMX tiles) for work of its own.
                    kern.begin();
                }
            }
        }
        kern.end();
    });
}

#[cfg(test)]
mod tests {
    use super::{a_in_place_pays, grid};

    #[test]
    fn aliasing_rows_of_a_are_packed_for_wide_tiles() {
        assert!(a_in_place_pays(784 * 4, 64));
        assert!(a_in_place_pays(1040 * 4, 32));
        assert!(a_in_place_pays(1024 * 4, 4), "a narrow tile reads in place");
        assert!(!a_in_place_pays(1024 * 4, 16));
        assert!(!a_in_place_pays(2048 * 4, 32));
        assert!(!a_in_place_pays(512 * 8, 16), "f64 rows 4 KiB apart");
    }

    #[test]
    fn grid_gives_each_thread_equal_tiles() {
        for threads in [2, 3, 4] {
            for tasks in [threads, 4 * threads] {
                for (mt, nt) in [(128, 32), (256, 64), (16, 8), (16, 25), (33, 7)] {
                    let (gm, gn) = grid((mt, nt), (8, 32), (512, 64), tasks, threads);
                    assert!(
                        gm * gn >= tasks && (gm * gn) % threads == 0,
                        "{mt}x{nt}: {gm}x{gn}"
                    );
                    assert!(gm <= mt && gn <= nt);
                }
            }
        }
    }
}
