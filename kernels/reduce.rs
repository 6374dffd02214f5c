//! Launches of `reduce.cu`: deterministic sums (two passes with a grid fixed
//! by the element count alone, so the bits never depend on the device),
//! column sums and row-wise argmax.

use crate::plan::{
    as_i32, blocks_for, buffer, elements, float_kernel, scalar, Access, Cooperation, LaunchPlan,
    PlanError, PlanResult, Scalar, WARP,
};
use crate::types::DType;

/// Threads per block of the sum reductions.
pub const THREADS: u32 = 256;
/// Elements each thread of pass 1 of a sum reduces, at least.
pub const ITEMS_PER_THREAD: u32 = 4;
/// Most blocks (and so partial sums) pass 1 of a sum uses.
pub const MAX_BLOCKS: u32 = 1024;
/// Columns summed by one `sum_rows` block.
pub const SUM_ROWS_COLS: u32 = 32;
/// Row groups of one `sum_rows` block.
pub const SUM_ROWS_GROUPS: u32 = 8;
/// Rows handled by one argmax block (one warp per row).
pub const ARGMAX_ROWS_PER_BLOCK: u32 = 8;

/// Base name of pass 1 of a sum.
pub const SUM_PARTIAL: &str = "sum_partial";
/// Base name of pass 2 of a sum.
pub const SUM_FINAL: &str = "sum_final";
/// Base name of the column sums.
pub const SUM_ROWS: &str = "sum_rows";
/// Base name of the row-wise argmax.
pub const ARGMAX_ROWS: &str = "argmax_rows";

/// The base names of the kernels in `reduce.cu`.
pub const KERNELS: &[&str] = &[SUM_PARTIAL, SUM_FINAL, SUM_ROWS, ARGMAX_ROWS];

/// Number of partial sums (blocks of pass 1) a sum over `n` elements uses.
/// It depends on `n` only, which makes the result bitwise reproducible.
pub fn partials(n: usize) -> u32 {
    let per_block = u64::from(THREADS * ITEMS_PER_THREAD);
    (n as u64)
        .div_ceil(per_block)
        .clamp(1, u64::from(MAX_BLOCKS)) as u32
}

/// Pass 1 of a sum: `partials[b]` = sum of block b's grid-stride share of
/// `x`. Parameters: `x, partials, n`.
pub fn sum_partial(dtype: DType, n: usize) -> PlanResult<LaunchPlan> {
    let blocks = partials(n);
    Ok(LaunchPlan {
        kernel: float_kernel(SUM_PARTIAL, dtype)?,
        grid: [blocks, 1, 1],
        block: [THREADS, 1, 1],
        shared_bytes: WARP * dtype.size() as u32,
        cooperation: Cooperation::Block,
        params: vec![
            buffer("x", dtype, n, Access::Read),
            buffer("partials", dtype, blocks as usize, Access::Write),
            scalar("n", Scalar::U64(n as u64)),
        ],
    })
}

/// Pass 2 of a sum: `out[0] = scale·Σ partials` (`scale = 1/n` for a mean).
/// Parameters: `partials, out, scale, count`.
pub fn sum_final(dtype: DType, count: u32, scale: f64) -> PlanResult<LaunchPlan> {
    Ok(LaunchPlan {
        kernel: float_kernel(SUM_FINAL, dtype)?,
        grid: [1, 1, 1],
        block: [THREADS, 1, 1],
        shared_bytes: WARP * dtype.size() as u32,
        cooperation: Cooperation::Block,
        params: vec![
            buffer("partials", dtype, count as usize, Access::Read),
            buffer("out", dtype, 1, Access::Write),
            scalar("scale", Scalar::float(dtype, scale)),
            scalar("count", Scalar::U32(count)),
        ],
    })
}

/// Both passes of the sum (or, with `mean`, the mean) of `n` elements; the
/// caller provides a temporary of [`partials`]`(n)` elements.
pub fn sum(dtype: DType, n: usize, mean: bool) -> PlanResult<[LaunchPlan; 2]> {
    let scale = if mean { 1.0 / n.max(1) as f64 } else { 1.0 };
    Ok([
        sum_partial(dtype, n)?,
        sum_final(dtype, partials(n), scale)?,
    ])
}

/// Column sums of a `rows × cols` matrix (the bias gradient):
/// `out[c] = Σ_r x[r, c]`. Parameters: `x, out, rows, cols`.
pub fn sum_rows(dtype: DType, rows: usize, cols: usize) -> PlanResult<LaunchPlan> {
    let op = SUM_ROWS;
    Ok(LaunchPlan {
        kernel: float_kernel(op, dtype)?,
        grid: [blocks_for(op, cols, SUM_ROWS_COLS)?, 1, 1],
        block: [SUM_ROWS_COLS * SUM_ROWS_GROUPS, 1, 1],
        shared_bytes: 0,
        cooperation: Cooperation::Block,
        params: vec![
            buffer("x", dtype, elements(op, rows, cols)?, Access::Read),
            buffer("out", dtype, cols, Access::Write),
            scalar("rows", Scalar::I32(as_i32(op, "rows", rows)?)),
            scalar("cols", Scalar::I32(as_i32(op, "cols", cols)?)),
        ],
    })
}

/// Index of the largest value of each row (first on ties, NaN largest).
/// Parameters: `x, out, rows, cols`.
pub fn argmax_rows(dtype: DType, rows: usize, cols: usize) -> PlanResult<LaunchPlan> {
    let op = ARGMAX_ROWS;
    if cols == 0 && rows > 0 {
        return Err(PlanError(format!("{op}: {rows} rows of no columns")));
    }
    Ok(LaunchPlan {
        kernel: float_kernel(op, dtype)?,
        grid: [blocks_for(op, rows, ARGMAX_ROWS_PER_BLOCK)?, 1, 1],
        block: [ARGMAX_ROWS_PER_BLOCK * WARP, 1, 1],
        shared_bytes: 0,
        cooperation: Cooperation::Block,
        params: vec![
            buffer("x", dtype, elements(op, rows, cols)?, Access::Read),
            buffer("out", DType::U32, rows, Access::Write),
            scalar("rows", Scalar::I32(as_i32(op, "rows", rows)?)),
            scalar("cols", Scalar::I32(as_i32(op, "cols", cols)?)),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: &[usize] = &[
        0,
        1,
        2,
        31,
        32,
        33,
        255,
        256,
        257,
        1000,
        4097,
        1 << 20,
        1 << 28,
    ];

    #[test]
    fn sum_uses_a_fixed_number_of_partials() {
        for &n in SIZES {
            let [p1, p2] = sum(DType::F32, n, false).unwrap();
            let blocks = partials(n);
            assert_eq!(p1.grid[0], blocks);
            assert!((1..=MAX_BLOCKS).contains(&blocks));
            assert_eq!(p1.buffers().nth(1).unwrap().len, blocks as usize);
            assert_eq!(p2.buffers().next().unwrap().len, blocks as usize);
            assert_eq!(p2.grid, [1, 1, 1]);
            assert_eq!(p1.shared_bytes, 32 * 4);
        }
        let [_, p2] = sum(DType::F64, 8, true).unwrap();
        assert_eq!(p2.scalar("scale"), Some(Scalar::F64(0.125)));
    }

    #[test]
    fn sum_rows_covers_columns() {
        for &cols in &SIZES[..11] {
            let p = sum_rows(DType::F32, 3, cols).unwrap();
            assert!(u64::from(p.grid[0] * SUM_ROWS_COLS) >= cols as u64);
            assert_eq!(
                p.threads_per_block(),
                u64::from(SUM_ROWS_COLS * SUM_ROWS_GROUPS)
            );
        }
    }

    #[test]
    fn argmax_has_one_warp_per_row() {
        for &rows in &SIZES[..11] {
            let p = argmax_rows(DType::F64, rows, 10).unwrap();
            let warps = p.blocks() * p.threads_per_block() / u64::from(WARP);
            assert!(warps >= rows as u64);
            assert!(warps < rows as u64 + u64::from(ARGMAX_ROWS_PER_BLOCK) || rows == 0);
        }
        assert!(argmax_rows(DType::F32, 3, 0).is_err());
    }
}
