//! Launches of `tally.cu`: a training or attack loop's running loss sum and
//! correct count, accumulated on the device (read back by the host only
//! when it reports progress).

use crate::plan::{
    as_i32, buffer, elements, float_kernel, scalar, Access, Cooperation, LaunchPlan, PlanError,
    PlanResult, Scalar,
};
use crate::types::DType;

/// Threads of the one block of `tally_step`.
pub const THREADS: u32 = 256;
/// Elements of a tally: `[loss sum, correct count]`, in f64.
pub const LEN: usize = 2;

/// Base name of the step tally.
pub const TALLY_STEP: &str = "tally_step";

/// The base names of the kernels in `tally.cu`.
pub const KERNELS: &[&str] = &[TALLY_STEP];

/// `tally[0] += loss[0]·rows`, `tally[1] += #{r : argmax logits[r] = labels[r]}`
/// for `rows × cols` logits of `dtype` (the tally is f64 whatever `dtype`).
/// Parameters: `loss, logits, labels, tally, rows, cols`.
pub fn tally_step(dtype: DType, rows: usize, cols: usize) -> PlanResult<LaunchPlan> {
    let op = TALLY_STEP;
    if cols == 0 && rows > 0 {
        return Err(PlanError(format!("{op}: {rows} rows of no columns")));
    }
    Ok(LaunchPlan {
        kernel: float_kernel(op, dtype)?,
        grid: [1, 1, 1],
        block: [THREADS, 1, 1],
        shared_bytes: 0,
        cooperation: Cooperation::Block,
        params: vec![
            buffer("loss", dtype, 1, Access::Read),
            buffer("logits", dtype, elements(op, rows, cols)?, Access::Read),
            buffer("labels", DType::U32, rows, Access::Read),
            buffer("tally", DType::F64, LEN, Access::ReadWrite),
            scalar("rows", Scalar::I32(as_i32(op, "rows", rows)?)),
            scalar("cols", Scalar::I32(as_i32(op, "cols", cols)?)),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_block_accumulates_in_place() {
        let p = tally_step(DType::F32, 1000, 10).unwrap();
        assert_eq!((p.blocks(), p.threads_per_block()), (1, u64::from(THREADS)));
        let tally = p.buffers().nth(3).unwrap();
        assert_eq!(
            (tally.dtype, tally.len, tally.access),
            (DType::F64, LEN, Access::ReadWrite)
        );
        assert_eq!(p.kernel, "tally_step_f32");
        assert!(tally_step(DType::F64, 3, 0).is_err());
        assert!(tally_step(DType::U32, 3, 2).is_err());
    }
}
