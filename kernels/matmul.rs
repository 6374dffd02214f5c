//! Launches of `matmul.cu`: `C = op(A)·op(B)` with op(A) `m × k` and op(B)
//! `k × n` (A stored `[m, k]`, or `[k, m]` with `a_trans`; B `[k, n]`, or
//! `[n, k]` with `b_trans`), through an [`Epilogue`]: stored, added to C, or
//! a linear layer's `f(op(A)·op(B) + bias)`.
//!
//! [`matmul`] chooses the [`Tiling`] — the block tile and how many depth
//! ranges (split-K) — from the sizes and the device's number of streaming
//! multiprocessors ([`Tuning`]), and returns one launch, or two for a split
//! product: the ranges' partial products into a workspace, then
//! `matmul_reduce`, which adds them in a fixed order and applies the
//! epilogue (no atomics: the bits do not depend on scheduling).

use crate::grid_stride;
use crate::plan::{
    as_i32, blocks_for, buffer, elements, float_kernel, scalar, Access, Cooperation, LaunchPlan,
    PlanError, PlanResult, Scalar, MAX_GRID_YZ,
};
use crate::types::{Activation, DType};

/// Threads of one product block (8 warps).
pub const THREADS: u32 = 256;
/// Base name of the split-K reduction.
pub const REDUCE: &str = "matmul_reduce";
/// Streaming multiprocessors assumed when the device does not say: an
/// H100 SXM or H200 (an A100 has 108).
pub const DEFAULT_MULTIPROCESSORS: u32 = 132;
/// Shallowest depth range a split product gives one block.
pub const SPLIT_MIN_DEPTH: usize = 128;
/// Most depth ranges a product is split into, unless forced.
pub const MAX_SPLITS: u32 = 16;

/// A block tile of C: the rows and columns one 256-thread block computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Tile {
    /// 128×128: 8×8 values per thread; for products that fill the device.
    T128x128,
    /// 64×64: 4×4 values per thread, four times as many blocks.
    T64x64,
}

impl Tile {
    /// Every tile, largest first.
    pub const ALL: [Tile; 2] = [Tile::T128x128, Tile::T64x64];

    /// Rows of C per block.
    pub const fn rows(self) -> usize {
        match self {
            Tile::T128x128 => 128,
            Tile::T64x64 => 64,
        }
    }

    /// Columns of C per block.
    pub const fn cols(self) -> usize {
        match self {
            Tile::T128x128 => 128,
            Tile::T64x64 => 64,
        }
    }

    /// The base name of the kernel, `matmul_128x128` or `matmul_64x64`.
    pub const fn base(self) -> &'static str {
        match self {
            Tile::T128x128 => "matmul_128x128",
            Tile::T64x64 => "matmul_64x64",
        }
    }

    /// Depth of one shared-memory stage: 64 bytes of a row (16 f32, 8 f64,
    /// or 32 bf16 / f16 values for matmul_half.cu). Depth ranges of a split product are multiples of it.
    pub const fn depth(dtype: DType) -> usize {
        64 / dtype.size()
    }

    /// Blocks covering an `m × n` C (at least one).
    pub fn blocks(self, m: usize, n: usize) -> usize {
        m.div_ceil(self.rows()).max(1) * n.div_ceil(self.cols()).max(1)
    }
}

impl std::str::FromStr for Tile {
    type Err = PlanError;

    /// `128x128` or `64x64`.
    fn from_str(s: &str) -> Result<Tile, PlanError> {
        Tile::ALL
            .into_iter()
            .find(|t| t.base().strip_prefix("matmul_") == Some(s))
            .ok_or_else(|| {
                PlanError(format!(
                    "unknown matmul tile `{s}`: expected 128x128 or 64x64"
                ))
            })
    }
}

/// The base names of the kernels in `matmul.cu`.
pub const KERNELS: &[&str] = &[Tile::T128x128.base(), Tile::T64x64.base(), REDUCE];

/// The sizes and operand layouts of one product `C = op(A)·op(B)`.
///
/// `A` is stored row-major as `[m, k]`, or `[k, m]` when `a_trans`; `B` as
/// `[k, n]`, or `[n, k]` when `b_trans`; `C` is `[m, n]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MatmulDims {
    /// Rows of C.
    pub m: usize,
    /// Columns of C.
    pub n: usize,
    /// The contracted dimension.
    pub k: usize,
    /// Whether A is stored transposed.
    pub a_trans: bool,
    /// Whether B is stored transposed.
    pub b_trans: bool,
}

/// What the product `P = op(A)·op(B)` becomes in C.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Epilogue {
    /// `C = P`.
    Store,
    /// `C = C + P`.
    Accumulate,
    /// `C[i, j] = f(P[i, j] + bias[j])`, a linear layer's bias and
    /// activation, with a bias of `n` values.
    BiasAct(Activation),
}

impl Epilogue {
    /// The kernels' code: 0 store, 1 accumulate, 2 + the activation's code.
    pub const fn code(self) -> i32 {
        match self {
            Epilogue::Store => 0,
            Epilogue::Accumulate => 1,
            Epilogue::BiasAct(a) => 2 + a.code(),
        }
    }

    /// Values of the bias buffer the kernels read: `n` with a bias, else 0
    /// (any buffer of the type may be passed; it is not read).
    pub const fn bias_len(self, n: usize) -> usize {
        match self {
            Epilogue::BiasAct(_) => n,
            _ => 0,
        }
    }

    /// How the kernel writing C uses it.
    pub(crate) const fn c_access(self) -> Access {
        match self {
            Epilogue::Accumulate => Access::ReadWrite,
            _ => Access::Write,
        }
    }
}

/// What the tiling may depend on besides the sizes: the device, and
/// overrides for benchmarking and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tuning {
    /// Streaming multiprocessors of the device (132 on H100/H200, 108 on
    /// A100).
    pub multiprocessors: u32,
    /// Forces the block tile.
    pub tile: Option<Tile>,
    /// Forces the number of depth ranges (clamped to `[1, stages]` with
    /// `stages` the product's number of [`Tile::depth`] slices).
    pub splits: Option<u32>,
    /// Forces whether a half product rounds its f32 operands in a pass of
    /// their own first ([`crate::matmul_half::rounds_first`]).
    pub round_first: Option<bool>,
}

impl Tuning {
    /// The rule's choices for a device with `multiprocessors` SMs.
    pub const fn for_device(multiprocessors: u32) -> Tuning {
        Tuning {
            multiprocessors,
            tile: None,
            splits: None,
            round_first: None,
        }
    }
}

impl Default for Tuning {
    fn default() -> Tuning {
        Tuning::for_device(DEFAULT_MULTIPROCESSORS)
    }
}

/// How a product is cut into blocks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    /// The block tile.
    pub tile: Tile,
    /// Depth ranges (1: no split); each block of range `z` contracts
    /// `[z·k_chunk, min(k, (z+1)·k_chunk))`.
    pub splits: u32,
    /// Depth of each range, a multiple of [`Tile::depth`] (`k` itself when
    /// there is one range).
    pub k_chunk: usize,
}

/// The tiling of `d` in `dtype` — the rule, unless `tuning` forces a part:
///
/// - tile: 128×128 when its blocks alone give every SM one (f32; that is
///   4096² and 2048², not 1024² on 132 SMs), else 64×64, which has four
///   times as many blocks; f64 always uses 64×64;
/// - split-K: when even those blocks leave SMs idle, the depth is cut into
///   `min(⌈SMs / blocks⌉, ⌊k / 128⌋)` ranges (at most 16), so that a
///   skinny product with a deep k — the MLP's 128×256 layer with k = 784 —
///   still spreads over the device, and no range is shallower than 128.
pub fn tiling(dtype: DType, d: MatmulDims, tuning: Tuning) -> Tiling {
    let MatmulDims { m, n, k, .. } = d;
    let sms = tuning.multiprocessors.max(1) as usize;
    let tile = tuning.tile.unwrap_or(match dtype {
        DType::F64 => Tile::T64x64,
        _ if Tile::T128x128.blocks(m, n) >= sms => Tile::T128x128,
        _ => Tile::T64x64,
    });
    let depth = Tile::depth(dtype);
    let stages = k.div_ceil(depth).max(1);
    let blocks = tile.blocks(m, n);
    let wanted = tuning.splits.map(|s| s as usize).unwrap_or_else(|| {
        if blocks >= sms {
            1
        } else {
            sms.div_ceil(blocks)
                .min(k / SPLIT_MIN_DEPTH)
                .min(MAX_SPLITS as usize)
        }
    });
    let wanted = wanted.clamp(1, stages.min(MAX_GRID_YZ as usize));
    if k == 0 || wanted == 1 {
        return Tiling {
            tile,
            splits: 1,
            k_chunk: k,
        };
    }
    let k_chunk = k.div_ceil(wanted).next_multiple_of(depth);
    Tiling {
        tile,
        splits: k.div_ceil(k_chunk) as u32,
        k_chunk,
    }
}

/// The launches of one product: `product` alone, or, for a split product,
/// `product` writing the ranges' partial products to a workspace of
/// [`MatmulPlan::workspace_len`] elements, then `reduce` into C.
#[derive(Clone, Debug, PartialEq)]
pub struct MatmulPlan {
    /// The tiling chosen.
    pub tiling: Tiling,
    /// The block-tiled product. Buffers: `a, b, bias, c` (`c` the
    /// workspace when split).
    pub product: LaunchPlan,
    /// The split-K reduction. Buffers: `partial` (the workspace), `bias`,
    /// `c`.
    pub reduce: Option<LaunchPlan>,
}

impl MatmulPlan {
    /// Elements of the workspace a split product needs (0 when not split).
    pub fn workspace_len(&self) -> usize {
        self.reduce
            .as_ref()
            .and_then(|r| r.buffers().next())
            .map_or(0, |p| p.len)
    }
}

/// The launches of `d` in `dtype` through `epilogue`, tiled by [`tiling`].
pub fn matmul(
    dtype: DType,
    d: MatmulDims,
    epilogue: Epilogue,
    tuning: Tuning,
) -> PlanResult<MatmulPlan> {
    let tiling = tiling(dtype, d, tuning);
    let op = tiling.tile.base();
    let product = Product {
        kernel: float_kernel(op, dtype)?,
        threads: THREADS,
        a: dtype,
        b: dtype,
        c: dtype,
    };
    plan(product, d, epilogue, tiling)
}

/// The kernel of a block-tiled product and its buffers' element types.
pub(crate) struct Product {
    /// The entry point.
    pub kernel: String,
    /// Threads per block.
    pub threads: u32,
    /// The element types of A, B and C (also of the bias, and of the
    /// split-K workspace and reduction).
    pub a: DType,
    pub b: DType,
    pub c: DType,
}

/// The launches of `d` through `epilogue` with `tiling`: `product` (with
/// matmul.cu's parameter list), then `matmul_reduce` in C's type for a
/// split product.
pub(crate) fn plan(
    product: Product,
    d: MatmulDims,
    epilogue: Epilogue,
    tiling: Tiling,
) -> PlanResult<MatmulPlan> {
    let MatmulDims { m, n, k, .. } = d;
    let op = tiling.tile.base();
    let (mi, ni, ki) = (
        as_i32(op, "m", m)?,
        as_i32(op, "n", n)?,
        as_i32(op, "k", k)?,
    );
    let gx = n.div_ceil(tiling.tile.cols()).max(1);
    let gy = m.div_ceil(tiling.tile.rows()).max(1);
    if gy > MAX_GRID_YZ as usize {
        return Err(PlanError(format!(
            "{op}: m = {m} needs {gy} row blocks, more than {MAX_GRID_YZ}"
        )));
    }
    let gx = u32::try_from(gx)
        .map_err(|_| PlanError(format!("{op}: n = {n} needs {gx} column blocks")))?;
    let mn = elements(op, m, n)?;
    let bias_len = epilogue.bias_len(n);
    let split = tiling.splits > 1;
    let (c_len, c_access, product_epilogue) = if split {
        let len = elements(op, mn, tiling.splits as usize)?;
        (len, Access::Write, Epilogue::Store)
    } else {
        (mn, epilogue.c_access(), epilogue)
    };
    let dtype = product.c;
    let launch = LaunchPlan {
        kernel: product.kernel,
        grid: [gx, gy as u32, tiling.splits],
        block: [product.threads, 1, 1],
        shared_bytes: 0,
        cooperation: Cooperation::Block,
        params: vec![
            buffer("a", product.a, elements(op, m, k)?, Access::Read),
            buffer("b", product.b, elements(op, k, n)?, Access::Read),
            buffer("bias", dtype, bias_len, Access::Read),
            buffer("c", dtype, c_len, c_access),
            scalar("m", Scalar::I32(mi)),
            scalar("n", Scalar::I32(ni)),
            scalar("k", Scalar::I32(ki)),
            scalar("trans_a", Scalar::I32(d.a_trans.into())),
            scalar("trans_b", Scalar::I32(d.b_trans.into())),
            scalar("epilogue", Scalar::I32(product_epilogue.code())),
            scalar(
                "k_chunk",
                Scalar::I32(as_i32(op, "k_chunk", tiling.k_chunk)?),
            ),
        ],
    };
    let reduce = if split {
        Some(LaunchPlan {
            kernel: float_kernel(REDUCE, dtype)?,
            grid: [
                blocks_for(REDUCE, mn, grid_stride::THREADS)?.min(grid_stride::MAX_BLOCKS),
                1,
                1,
            ],
            block: [grid_stride::THREADS, 1, 1],
            shared_bytes: 0,
            cooperation: Cooperation::Independent,
            params: vec![
                buffer("partial", dtype, c_len, Access::Read),
                buffer("bias", dtype, bias_len, Access::Read),
                buffer("c", dtype, mn, epilogue.c_access()),
                scalar("m", Scalar::I32(mi)),
                scalar("n", Scalar::I32(ni)),
                scalar("splits", Scalar::I32(tiling.splits as i32)),
                scalar("epilogue", Scalar::I32(epilogue.code())),
            ],
        })
    } else {
        None
    };
    Ok(MatmulPlan {
        tiling,
        product: launch,
        reduce,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: &[usize] = &[0, 1, 2, 31, 32, 33, 63, 64, 65, 255, 256, 257, 1000, 4097];

    fn dims(m: usize, n: usize, k: usize) -> MatmulDims {
        MatmulDims {
            m,
            n,
            k,
            a_trans: false,
            b_trans: false,
        }
    }

    #[test]
    fn grid_covers_c_and_the_depth() {
        for tile in Tile::ALL {
            for &m in SIZES {
                for &n in SIZES {
                    for k in [0, 7, 784] {
                        let tuning = Tuning {
                            tile: Some(tile),
                            ..Tuning::default()
                        };
                        let p = matmul(DType::F32, dims(m, n, k), Epilogue::Store, tuning).unwrap();
                        let g = p.product.grid;
                        let rows = g[1] as usize * tile.rows();
                        let cols = g[0] as usize * tile.cols();
                        assert!(rows >= m && cols >= n);
                        // No block lies wholly outside C (but for the one
                        // block of an empty problem).
                        assert!(rows < m + tile.rows() || m == 0);
                        assert!(cols < n + tile.cols() || n == 0);
                        let t = p.tiling;
                        assert_eq!(g[2], t.splits);
                        assert!(t.splits as usize * t.k_chunk >= k);
                        assert!(t.splits == 1 || (t.splits as usize - 1) * t.k_chunk < k);
                    }
                }
            }
        }
    }

    #[test]
    fn the_rule_picks_tiles_and_splits_from_the_sizes_and_the_device() {
        let t = |m, n, k, sms| tiling(DType::F32, dims(m, n, k), Tuning::for_device(sms));
        // Large products: 128×128, no split.
        assert_eq!(t(4096, 4096, 4096, 132).tile, Tile::T128x128);
        assert_eq!(t(4096, 4096, 4096, 132).splits, 1);
        assert_eq!(t(2048, 2048, 2048, 108).tile, Tile::T128x128);
        // 1024² has 64 blocks of 128×128 for 132 SMs: 256 of 64×64.
        assert_eq!(t(1024, 1024, 1024, 132).tile, Tile::T64x64);
        assert_eq!(t(1024, 1024, 1024, 132).splits, 1);
        // The MLP's first layer, 128×256 with k = 784: 8 blocks, split in
        // 6 ranges of 144 (a multiple of 16) on 132 SMs.
        let mlp = t(128, 256, 784, 132);
        assert_eq!((mlp.tile, mlp.splits, mlp.k_chunk), (Tile::T64x64, 6, 144));
        // Its weight gradient, 256×784 with k = 128: 52 blocks, too
        // shallow to split.
        assert_eq!(t(256, 784, 128, 132).splits, 1);
        // k = 0 and tiny products never split.
        assert_eq!(t(5, 3, 0, 132).splits, 1);
        assert_eq!(t(1, 1, 100, 132).splits, 1);
        // f64 always uses 64×64.
        let f = tiling(DType::F64, dims(4096, 4096, 64), Tuning::default());
        assert_eq!(f.tile, Tile::T64x64);
    }

    #[test]
    fn forced_splits_are_clamped_to_the_stages() {
        let force = |k, s| {
            let tuning = Tuning {
                splits: Some(s),
                ..Tuning::default()
            };
            tiling(DType::F32, dims(64, 64, k), tuning)
        };
        assert_eq!(force(100, 3).splits, 3);
        assert_eq!(force(100, 3).k_chunk, 48);
        assert_eq!(force(100, 50).splits, 7, "100 deep is 7 stages of 16");
        assert_eq!(force(0, 4).splits, 1);
        assert_eq!(force(33, 0).splits, 1);
        // A chunk rounded up to 16 can leave fewer ranges than asked.
        assert_eq!(
            force(40, 3),
            Tiling {
                tile: Tile::T64x64,
                splits: 3,
                k_chunk: 16
            }
        );
        assert_eq!(force(34, 3).splits, 3);
        assert_eq!(force(33, 3).splits, 3);
        assert_eq!(force(32, 3).splits, 2);
    }

    #[test]
    fn a_split_product_writes_a_workspace_that_the_reduction_reads() {
        let d = MatmulDims {
            m: 128,
            n: 256,
            k: 784,
            a_trans: false,
            b_trans: true,
        };
        let epi = Epilogue::BiasAct(Activation::Relu);
        let p = matmul(DType::F32, d, epi, Tuning::default()).unwrap();
        assert_eq!(p.tiling.splits, 6);
        assert_eq!(p.workspace_len(), 6 * 128 * 256);
        let bufs: Vec<_> = p
            .product
            .buffers()
            .map(|b| (b.name, b.len, b.access))
            .collect();
        assert_eq!(
            bufs,
            [
                ("a", 128 * 784, Access::Read),
                ("b", 784 * 256, Access::Read),
                ("bias", 256, Access::Read),
                ("c", 6 * 128 * 256, Access::Write),
            ]
        );
        assert_eq!(p.product.scalar("epilogue"), Some(Scalar::I32(0)));
        let r = p.reduce.as_ref().unwrap();
        assert_eq!(r.kernel, "matmul_reduce_f32");
        assert_eq!(r.cooperation, Cooperation::Independent);
        let bufs: Vec<_> = r.buffers().map(|b| (b.name, b.len, b.access)).collect();
        assert_eq!(
            bufs,
            [
                ("partial", 6 * 128 * 256, Access::Read),
                ("bias", 256, Access::Read),
                ("c", 128 * 256, Access::Write),
            ]
        );
        assert_eq!(r.scalar("epilogue"), Some(Scalar::I32(2)));
        assert_eq!(r.scalar("splits"), Some(Scalar::I32(6)));
    }

    #[test]
    fn buffers_follow_the_transposes_and_the_epilogue() {
        let d = MatmulDims {
            m: 5,
            n: 7,
            k: 3,
            a_trans: true,
            b_trans: true,
        };
        let p = matmul(DType::F64, d, Epilogue::Accumulate, Tuning::default()).unwrap();
        assert!(p.reduce.is_none());
        assert_eq!(p.workspace_len(), 0);
        assert_eq!(p.product.kernel, "matmul_64x64_f64");
        let bufs: Vec<_> = p
            .product
            .buffers()
            .map(|b| (b.name, b.dtype, b.len, b.access))
            .collect();
        assert_eq!(bufs[0], ("a", DType::F64, 15, Access::Read));
        assert_eq!(bufs[1], ("b", DType::F64, 21, Access::Read));
        assert_eq!(bufs[2], ("bias", DType::F64, 0, Access::Read));
        assert_eq!(bufs[3], ("c", DType::F64, 35, Access::ReadWrite));
        assert_eq!(p.product.params.len(), 11);
        assert_eq!(p.product.scalar("k_chunk"), Some(Scalar::I32(3)));
        let d = MatmulDims {
            a_trans: false,
            b_trans: false,
            ..d
        };
        let p = matmul(DType::F32, d, Epilogue::Store, Tuning::default()).unwrap();
        assert_eq!(p.product.buffers().nth(3).unwrap().access, Access::Write);
        let big = MatmulDims { m: 1 << 31, ..d };
        assert!(matmul(DType::F32, big, Epilogue::Store, Tuning::default()).is_err());
        assert!(matmul(DType::U32, d, Epilogue::Store, Tuning::default()).is_err());
    }

    #[test]
    fn epilogue_codes_match_matmul_cu() {
        assert_eq!(Epilogue::Store.code(), 0);
        assert_eq!(Epilogue::Accumulate.code(), 1);
        let codes: Vec<_> = Activation::ALL
            .map(|a| Epilogue::BiasAct(a).code())
            .to_vec();
        assert_eq!(codes, [2, 3, 4]);
        assert_eq!("64x64".parse::<Tile>(), Ok(Tile::T64x64));
        assert!("32x32".parse::<Tile>().is_err());
    }
}
