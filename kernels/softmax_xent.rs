//! Launches of `softmax_xent.cu`: the fused softmax cross-entropy forward
//! (a group of lanes per row) and its backward (grid-stride).

use crate::grid_stride::{input, output, scalar_input, GridStride, Slot};
use crate::plan::{
    as_i32, blocks_for, buffer, elements, float_kernel, scalar, Access, Cooperation, LaunchPlan,
    PlanResult, Scalar, WARP,
};
use crate::types::DType;

/// Threads of one forward block.
pub const THREADS: u32 = 256;

/// Base name of the forward for rows of up to [`NARROW_CLASSES`]: each lane
/// holds up to 4 values of its row in registers (32 registers in f32).
pub const FORWARD: &str = "softmax_xent_fwd";
/// Base name of the forward for longer rows, one warp per row: each lane
/// holds up to 16 values (rows of up to 512 are read once, each exponential
/// computed once); longer rows take the online softmax's two reads.
pub const WIDE_FORWARD: &str = "softmax_xent_wide_fwd";
/// The most classes [`FORWARD`] takes: 4 values on each of 32 lanes.
pub const NARROW_CLASSES: usize = 128;

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
pub const KERNELS: &[&str] = &[FORWARD, WIDE_FORWARD, BACKWARD.base];

/// Lanes that share one row of `cols` logits in the forward: a power of two
/// from 1 to 32 giving each at most 4 values (1 lane for up to 4 classes,
/// 4 for the 10 of Fashion-MNIST, a whole warp from 65 on).
pub fn lanes_per_row(cols: usize) -> u32 {
    cols.div_ceil(4).next_power_of_two().min(WARP as usize) as u32
}

/// The forward over `rows × cols` logits: per-row losses and the
/// probabilities, [`lanes_per_row`] lanes per row, by [`FORWARD`] up to
/// [`NARROW_CLASSES`] and [`WIDE_FORWARD`] beyond. Parameters: `logits,
/// labels, loss, probs, rows, cols, group`.
pub fn forward(dtype: DType, rows: usize, cols: usize) -> PlanResult<LaunchPlan> {
    let op = if cols <= NARROW_CLASSES {
        FORWARD
    } else {
        WIDE_FORWARD
    };
    let n = elements(op, rows, cols)?;
    let group = lanes_per_row(cols);
    Ok(LaunchPlan {
        kernel: float_kernel(op, dtype)?,
        grid: [blocks_for(op, rows, THREADS / group)?, 1, 1],
        block: [THREADS, 1, 1],
        shared_bytes: 0,
        cooperation: Cooperation::Block,
        params: vec![
            buffer("logits", dtype, n, Access::Read),
            buffer("labels", DType::U32, rows, Access::Read),
            buffer("loss", dtype, rows, Access::Write),
            buffer("probs", dtype, n, Access::Write),
            scalar("rows", Scalar::I32(as_i32(op, "rows", rows)?)),
            scalar("cols", Scalar::I32(as_i32(op, "cols", cols)?)),
            scalar("group", Scalar::I32(group as i32)),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_of_lanes_cover_the_rows() {
        let lanes: Vec<_> = [0, 1, 4, 5, 10, 16, 17, 64, 65, 512, 10_000]
            .map(lanes_per_row)
            .to_vec();
        assert_eq!(lanes, [1, 1, 1, 2, 4, 4, 8, 16, 32, 32, 32]);
        for cols in [1, 10, 100, 128, 129, 1000] {
            for rows in [0, 1, 7, 8, 9, 1000] {
                let p = forward(DType::F32, rows, cols).unwrap();
                let narrow = cols <= NARROW_CLASSES;
                let base = if narrow { FORWARD } else { WIDE_FORWARD };
                assert_eq!(p.kernel, format!("{base}_f32"));
                let group = lanes_per_row(cols);
                assert_eq!(p.scalar("group"), Some(Scalar::I32(group as i32)));
                let per_block = u64::from(THREADS / group);
                let covered = p.blocks() * per_block;
                assert!(covered >= rows as u64);
                assert!(covered < rows as u64 + per_block || rows == 0);
            }
        }
    }
}
