//! Launches of `conv.cu`: a 2-D convolution over NCHW batches
//! ([`Conv2dDims`]) as implicit GEMMs on 64×64 block tiles, forward
//! ([`forward`]), input gradient ([`backward_input`]), weight gradient
//! ([`backward_weight`], split over the batch when its tiles alone leave
//! the device idle, then reduced in a fixed order by `matmul_reduce`) and
//! bias gradient ([`backward_bias`], one block per output channel). See
//! `conv.cu` for the math and the tile.

use crate::matmul::{REDUCE, SPLIT_MIN_DEPTH};
use crate::plan::{
    as_i32, blocks_for, buffer, elements, float_kernel, scalar, Access, Cooperation, LaunchPlan,
    Param, PlanError, PlanResult, Scalar, MAX_GRID_YZ,
};
use crate::types::DType;
use crate::{grid_stride, matmul};

/// Threads of one block of every conv kernel.
pub const THREADS: u32 = 256;
/// Rows of the product one block computes.
pub const TILE_ROWS: usize = 64;
/// Columns of the product one block computes.
pub const TILE_COLS: usize = 64;
/// Depth of one shared-memory stage; a split weight gradient's depth
/// ranges are multiples of it.
pub const TILE_DEPTH: usize = 16;
/// Most depth ranges a weight gradient is split into.
pub const MAX_SPLITS: u32 = 16;

/// Base name of the forward product.
pub const FORWARD: &str = "conv2d_fwd";
/// Base name of the input gradient.
pub const BACKWARD_INPUT: &str = "conv2d_dx";
/// Base name of the weight gradient.
pub const BACKWARD_WEIGHT: &str = "conv2d_dw";
/// Base name of the bias gradient.
pub const BACKWARD_BIAS: &str = "conv2d_db";

/// The base names of the kernels in `conv.cu`.
pub const KERNELS: &[&str] = &[FORWARD, BACKWARD_INPUT, BACKWARD_WEIGHT, BACKWARD_BIAS];

/// The sizes of a 2-D convolution over a batch in NCHW layout.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dDims {
    /// Images in the batch (N).
    pub batch: usize,
    /// Input channels (C).
    pub in_channels: usize,
    /// Input height (H).
    pub height: usize,
    /// Input width (W).
    pub width: usize,
    /// Output channels (O).
    pub out_channels: usize,
    /// Kernel height (KH).
    pub kernel_h: usize,
    /// Kernel width (KW).
    pub kernel_w: usize,
    /// Stride s, the same along both axes (at least 1).
    pub stride: usize,
    /// Zero padding on every side, the same along both axes.
    pub padding: usize,
}

impl Conv2dDims {
    /// Output height `OH = ⌊(H + 2·pad − KH)/s⌋ + 1`.
    pub fn out_h(&self) -> usize {
        (self.height + 2 * self.padding - self.kernel_h) / self.stride + 1
    }
    /// Output width `OW = ⌊(W + 2·pad − KW)/s⌋ + 1`.
    pub fn out_w(&self) -> usize {
        (self.width + 2 * self.padding - self.kernel_w) / self.stride + 1
    }
    /// Rows of the unfolded input (one per weight of a filter): `C·KH·KW`.
    pub fn patch_len(&self) -> usize {
        self.in_channels * self.kernel_h * self.kernel_w
    }
    /// Elements of the input `x`: `N·C·H·W`.
    pub fn input_len(&self) -> usize {
        self.batch * self.in_channels * self.height * self.width
    }
    /// Elements of the weight: `O·C·KH·KW`.
    pub fn weight_len(&self) -> usize {
        self.out_channels * self.patch_len()
    }
    /// Elements of the output `y` (and of its gradient): `N·O·OH·OW`.
    pub fn output_len(&self) -> usize {
        self.batch * self.out_channels * self.out_h() * self.out_w()
    }
}

/// Checks what the kernels' `int` arithmetic needs: a stride of at least
/// 1, a kernel that fits the padded input, and every extent and flat index
/// of x, y and the products below `i32::MAX`.
fn geometry(op: &str, d: &Conv2dDims) -> PlanResult<Vec<Param>> {
    if d.stride == 0
        || d.kernel_h == 0
        || d.kernel_w == 0
        || d.kernel_h > d.height + 2 * d.padding
        || d.kernel_w > d.width + 2 * d.padding
    {
        return Err(PlanError(format!(
            "{op}: a {}x{} kernel with stride {} does not fit a {}x{} input padded by {}",
            d.kernel_h, d.kernel_w, d.stride, d.height, d.width, d.padding
        )));
    }
    let (oh, ow) = (d.out_h(), d.out_w());
    // The products' rows, columns and depths, and the planes' pixel counts.
    for (what, v) in [
        ("N·OH·OW", elements(op, d.batch, oh * ow)?),
        ("N·H·W", elements(op, d.batch, d.height * d.width)?),
        ("C·KH·KW", d.patch_len()),
        (
            "O·KH·KW",
            elements(op, d.out_channels, d.kernel_h * d.kernel_w)?,
        ),
        ("O·C·KH·KW", elements(op, d.out_channels, d.patch_len())?),
        ("H + pad", d.height + 2 * d.padding),
        ("W + pad", d.width + 2 * d.padding),
    ] {
        as_i32(op, what, v)?;
    }
    let int = |name, v| Ok(scalar(name, Scalar::I32(as_i32(op, name, v)?)));
    [
        int("n", d.batch),
        int("c", d.in_channels),
        int("h", d.height),
        int("w", d.width),
        int("o", d.out_channels),
        int("kh", d.kernel_h),
        int("kw", d.kernel_w),
        int("stride", d.stride),
        int("pad", d.padding),
        int("oh", oh),
        int("ow", ow),
    ]
    .into_iter()
    .collect()
}

/// A block-tiled product of `rows × cols` over `splits` depth ranges.
fn tiled(
    op: &str,
    dtype: DType,
    rows: usize,
    cols: usize,
    splits: u32,
    params: Vec<Param>,
) -> PlanResult<LaunchPlan> {
    let gy = cols.div_ceil(TILE_COLS).max(1);
    if gy > MAX_GRID_YZ as usize {
        return Err(PlanError(format!(
            "{op}: {cols} columns need {gy} column blocks, more than {MAX_GRID_YZ}"
        )));
    }
    Ok(LaunchPlan {
        kernel: float_kernel(op, dtype)?,
        grid: [blocks_for(op, rows, TILE_ROWS as u32)?, gy as u32, splits],
        block: [THREADS, 1, 1],
        shared_bytes: 0,
        cooperation: Cooperation::Block,
        params,
    })
}

/// `y = conv2d(x, weight) + bias` (`conv2d_fwd`). Parameters:
/// `x, weight, bias, y, n, c, h, w, o, kh, kw, stride, pad, oh, ow`.
pub fn forward(dtype: DType, d: &Conv2dDims) -> PlanResult<LaunchPlan> {
    let op = FORWARD;
    let geometry = geometry(op, d)?;
    let mut params = vec![
        buffer("x", dtype, d.input_len(), Access::Read),
        buffer("weight", dtype, d.weight_len(), Access::Read),
        buffer("bias", dtype, d.out_channels, Access::Read),
        buffer("y", dtype, d.output_len(), Access::Write),
    ];
    params.extend(geometry);
    let rows = d.batch * d.out_h() * d.out_w();
    tiled(op, dtype, rows, d.out_channels, 1, params)
}

/// The input gradient `dx` from `g` (`conv2d_dx`). Parameters:
/// `g, weight, dx, n, c, h, w, o, kh, kw, stride, pad, oh, ow`.
pub fn backward_input(dtype: DType, d: &Conv2dDims) -> PlanResult<LaunchPlan> {
    let op = BACKWARD_INPUT;
    let geometry = geometry(op, d)?;
    let mut params = vec![
        buffer("g", dtype, d.output_len(), Access::Read),
        buffer("weight", dtype, d.weight_len(), Access::Read),
        buffer("dx", dtype, d.input_len(), Access::Write),
    ];
    params.extend(geometry);
    let rows = d.batch * d.height * d.width;
    tiled(op, dtype, rows, d.in_channels, 1, params)
}

/// The launches of a weight gradient: `product` alone, or, when split,
/// `product` writing one partial gradient per depth range to a workspace
/// of [`WeightGradPlan::workspace_len`] elements, then `reduce` into `dw`.
#[derive(Clone, Debug, PartialEq)]
pub struct WeightGradPlan {
    /// Depth ranges (1: not split).
    pub splits: u32,
    /// `conv2d_dw`. Buffers: `g, x, dw` (`dw` the workspace when split).
    pub product: LaunchPlan,
    /// `matmul_reduce` of the slices. Buffers: `partial` (the workspace),
    /// `bias` (not read; any buffer of the type), `dw`.
    pub reduce: Option<LaunchPlan>,
}

impl WeightGradPlan {
    /// Elements of the workspace a split gradient needs (0 when not split).
    pub fn workspace_len(&self) -> usize {
        self.reduce
            .as_ref()
            .and_then(|r| r.buffers().next())
            .map_or(0, |p| p.len)
    }
}

/// Depth ranges of a weight gradient with `blocks` tiles and a depth of
/// `depth` (`N·OH·OW`) on `multiprocessors` SMs: none when the tiles fill
/// the device, else `min(⌈SMs / blocks⌉, ⌊depth / 128⌋, 16)`, as the
/// matmul's split-K; `forced` overrides the rule. Returns the ranges and
/// the depth of each, a multiple of [`TILE_DEPTH`].
pub fn weight_splits(
    blocks: usize,
    depth: usize,
    multiprocessors: u32,
    forced: Option<u32>,
) -> (u32, usize) {
    let sms = multiprocessors.max(1) as usize;
    let wanted = forced.map(|s| s as usize).unwrap_or_else(|| {
        if blocks >= sms {
            1
        } else {
            sms.div_ceil(blocks.max(1))
                .min(depth / SPLIT_MIN_DEPTH)
                .min(MAX_SPLITS as usize)
        }
    });
    let stages = depth.div_ceil(TILE_DEPTH).max(1);
    let wanted = wanted.clamp(1, stages.min(MAX_GRID_YZ as usize));
    if depth == 0 || wanted == 1 {
        return (1, depth);
    }
    let chunk = depth.div_ceil(wanted).next_multiple_of(TILE_DEPTH);
    (depth.div_ceil(chunk) as u32, chunk)
}

/// The weight gradient `dw` from `g` and `x` (`conv2d_dw`, and
/// `matmul_reduce` when split as [`weight_splits`] says for
/// `multiprocessors`, or into `forced_splits` ranges). Parameters of the
/// product: `g, x, dw, n, c, h, w, o, kh, kw, stride, pad, oh, ow, k_chunk`.
pub fn backward_weight(
    dtype: DType,
    d: &Conv2dDims,
    multiprocessors: u32,
    forced_splits: Option<u32>,
) -> PlanResult<WeightGradPlan> {
    let op = BACKWARD_WEIGHT;
    let geometry = geometry(op, d)?;
    let (rows, cols) = (d.patch_len(), d.out_channels);
    let depth = d.batch * d.out_h() * d.out_w();
    let blocks = rows.div_ceil(TILE_ROWS).max(1) * cols.div_ceil(TILE_COLS).max(1);
    let (splits, chunk) = weight_splits(blocks, depth, multiprocessors, forced_splits);
    let len = d.weight_len();
    let out_len = elements(op, len, splits as usize)?;
    let mut params = vec![
        buffer("g", dtype, d.output_len(), Access::Read),
        buffer("x", dtype, d.input_len(), Access::Read),
        buffer("dw", dtype, out_len, Access::Write),
    ];
    params.extend(geometry);
    params.push(scalar(
        "k_chunk",
        Scalar::I32(as_i32(op, "k_chunk", chunk)?),
    ));
    let product = tiled(op, dtype, rows, cols, splits, params)?;
    let reduce = if splits > 1 {
        // dw as an O × C·KH·KW matrix: the reduction adds slice z of every
        // element in the order z = 0, 1, ….
        Some(LaunchPlan {
            kernel: float_kernel(REDUCE, dtype)?,
            grid: [
                blocks_for(REDUCE, len, grid_stride::THREADS)?.min(grid_stride::MAX_BLOCKS),
                1,
                1,
            ],
            block: [grid_stride::THREADS, 1, 1],
            shared_bytes: 0,
            cooperation: Cooperation::Independent,
            params: vec![
                buffer("partial", dtype, out_len, Access::Read),
                buffer("bias", dtype, 0, Access::Read),
                buffer("c", dtype, len, Access::Write),
                scalar("m", Scalar::I32(as_i32(op, "O", cols)?)),
                scalar("n", Scalar::I32(as_i32(op, "C·KH·KW", rows)?)),
                scalar("splits", Scalar::I32(splits as i32)),
                scalar("epilogue", Scalar::I32(matmul::Epilogue::Store.code())),
            ],
        })
    } else {
        None
    };
    Ok(WeightGradPlan {
        splits,
        product,
        reduce,
    })
}

/// The bias gradient `db[o] = Σ_{n,i,j} g[n,o,i,j]` (`conv2d_db`): one
/// block of [`THREADS`] per output channel. Parameters: `g, db, n, o,
/// pixels`.
pub fn backward_bias(dtype: DType, d: &Conv2dDims) -> PlanResult<LaunchPlan> {
    let op = BACKWARD_BIAS;
    geometry(op, d)?;
    let pixels = d.out_h() * d.out_w();
    Ok(LaunchPlan {
        kernel: float_kernel(op, dtype)?,
        grid: [blocks_for(op, d.out_channels, 1)?, 1, 1],
        block: [THREADS, 1, 1],
        shared_bytes: 0,
        cooperation: Cooperation::Block,
        params: vec![
            buffer("g", dtype, d.output_len(), Access::Read),
            buffer("db", dtype, d.out_channels, Access::Write),
            scalar("n", Scalar::I32(as_i32(op, "n", d.batch)?)),
            scalar("o", Scalar::I32(as_i32(op, "o", d.out_channels)?)),
            scalar("pixels", Scalar::I32(as_i32(op, "OH·OW", pixels)?)),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The small CNN's second convolution at batch 128: 16×14×14 in,
    /// 32 filters 5×5, padding 2.
    fn cnn2() -> Conv2dDims {
        Conv2dDims {
            batch: 128,
            in_channels: 16,
            height: 14,
            width: 14,
            out_channels: 32,
            kernel_h: 5,
            kernel_w: 5,
            stride: 1,
            padding: 2,
        }
    }

    #[test]
    fn grids_cover_each_product() {
        let d = Conv2dDims {
            batch: 3,
            in_channels: 5,
            height: 9,
            width: 7,
            out_channels: 70,
            kernel_h: 3,
            kernel_w: 2,
            stride: 2,
            padding: 1,
        };
        assert_eq!((d.out_h(), d.out_w()), (5, 4));
        let f = forward(DType::F32, &d).unwrap();
        // Rows 3·5·4 = 60: one row block; 70 filters: two column blocks.
        assert_eq!(f.grid, [1, 2, 1]);
        assert_eq!(f.kernel, "conv2d_fwd_f32");
        let bufs: Vec<_> = f.buffers().map(|b| (b.name, b.len, b.access)).collect();
        assert_eq!(
            bufs,
            [
                ("x", 3 * 5 * 9 * 7, Access::Read),
                ("weight", 70 * 5 * 6, Access::Read),
                ("bias", 70, Access::Read),
                ("y", 3 * 70 * 20, Access::Write),
            ]
        );
        assert_eq!(f.scalar("oh"), Some(Scalar::I32(5)));
        // dx: rows 3·9·7 = 189 (three blocks), 5 channels.
        let b = backward_input(DType::F64, &d).unwrap();
        assert_eq!(b.grid, [3, 1, 1]);
        assert_eq!(b.buffers().nth(2).unwrap().len, 3 * 5 * 9 * 7);
        let db = backward_bias(DType::F32, &d).unwrap();
        assert_eq!(db.grid, [70, 1, 1]);
        assert_eq!(db.cooperation, Cooperation::Block);
    }

    #[test]
    fn the_weight_gradient_is_split_when_its_tiles_leave_the_device_idle() {
        // 400 × 32: 7 tiles over a depth of 128·196 = 25088, on 132 SMs:
        // min(⌈132/7⌉ = 19, 196, 16) = 16 ranges of 1568.
        let p = backward_weight(DType::F32, &cnn2(), 132, None).unwrap();
        assert_eq!(p.splits, 16);
        assert_eq!(p.product.grid, [7, 1, 16]);
        assert_eq!(p.product.scalar("k_chunk"), Some(Scalar::I32(1568)));
        assert_eq!(p.workspace_len(), 16 * 32 * 400);
        let r = p.reduce.as_ref().unwrap();
        assert_eq!(r.kernel, "matmul_reduce_f32");
        assert_eq!(r.scalar("splits"), Some(Scalar::I32(16)));
        assert_eq!(r.scalar("epilogue"), Some(Scalar::I32(0)));
        assert_eq!(r.buffers().nth(2).unwrap().len, 32 * 400);
        // One SM, or a forced single range: no split, dw written directly.
        let one = backward_weight(DType::F64, &cnn2(), 1, None).unwrap();
        assert!(one.reduce.is_none());
        assert_eq!(one.workspace_len(), 0);
        assert_eq!(one.product.scalar("k_chunk"), Some(Scalar::I32(25088)));
        assert_eq!(one.product.buffers().nth(2).unwrap().len, 32 * 400);
        // A shallow depth is never split below 128 per range.
        assert_eq!(weight_splits(1, 200, 132, None), (1, 200));
        assert_eq!(weight_splits(1, 0, 132, Some(4)), (1, 0));
        // Forced ranges round to whole stages: 100 deep in 3 ranges of 48
        // leaves 3 (48, 48, 4); in 50 it is 7 ranges of one stage.
        assert_eq!(weight_splits(1, 100, 132, Some(3)), (3, 48));
        assert_eq!(weight_splits(1, 100, 132, Some(50)), (7, 16));
    }

    #[test]
    fn impossible_geometries_are_errors() {
        let mut d = cnn2();
        d.stride = 0;
        assert!(forward(DType::F32, &d).is_err());
        let mut d = cnn2();
        d.kernel_h = 19;
        assert!(backward_input(DType::F32, &d).is_err());
        let mut d = cnn2();
        d.batch = 1 << 24;
        assert!(forward(DType::F32, &d).is_err(), "N·OH·OW past i32");
        assert!(forward(DType::U32, &cnn2()).is_err());
    }
}
