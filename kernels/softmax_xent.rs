//! Launches of `softmax_xent.cu`: the fused softmax cross-entropy forward
//! (one warp per row) and its backward (grid-stride).

use crate::grid_stride::{input, output, scalar_input, GridStride, Slot};
use crate::plan::{
    as_i32, blocks_for, buffer, elements, float_kernel, scalar, Access, Cooperation, LaunchPlan,
    PlanResult, Scalar, WARP,
};
use crate::types::DType;

/// Rows handled by one forward block (one warp per row).
pub const ROWS_PER_BLOCK: u32 = 8;

/// Base name of the forward kernel.
pub const FORWARD: &str = "softmax_xent_fwd";

/// The backward for the mean loss over a `rows × cols` extent: with
/// `gs = g[0]/rows`, `dlogits = p·gs − onehot·gs` (the CPU backend's
/// formula).
pub const BACKWARD: GridStride = GridStride {
    base: "softmax_xent_bwd",
    slots: &[
        input("probs"),
        Slot::Labels("labels"),
        scalar_input("g"),
        output("dlogits"),
        Slot::RowsAsFloat,
        Slot::Count,
        Slot::Cols,
    ],
};

/// The base names of the kernels in `softmax_xent.cu`.
pub const KERNELS: &[&str] = &[FORWARD, BACKWARD.base];

/// The forward over `rows × cols` logits: per-row losses and the
/// probabilities. Parameters: `logits, labels, loss, probs, rows, cols`.
pub fn forward(dtype: DType, rows: usize, cols: usize) -> PlanResult<LaunchPlan> {
    let op = FORWARD;
    let n = elements(op, rows, cols)?;
    Ok(LaunchPlan {
        kernel: float_kernel(op, dtype)?,
        grid: [blocks_for(op, rows, ROWS_PER_BLOCK)?, 1, 1],
        block: [ROWS_PER_BLOCK * WARP, 1, 1],
        shared_bytes: 0,
        cooperation: Cooperation::Block,
        params: vec![
            buffer("logits", dtype, n, Access::Read),
            buffer("labels", DType::U32, rows, Access::Read),
            buffer("loss", dtype, rows, Access::Write),
            buffer("probs", dtype, n, Access::Write),
            scalar("rows", Scalar::I32(as_i32(op, "rows", rows)?)),
            scalar("cols", Scalar::I32(as_i32(op, "cols", cols)?)),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_warp_per_row() {
        for rows in [0, 1, 7, 8, 9, 1000] {
            let p = forward(DType::F32, rows, 10).unwrap();
            let warps = p.blocks() * p.threads_per_block() / u64::from(WARP);
            assert!(warps >= rows as u64);
            assert!(warps < rows as u64 + u64::from(ROWS_PER_BLOCK) || rows == 0);
        }
    }
}
