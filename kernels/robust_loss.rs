//! Launches of `robust_loss.cu`: the row-wise losses of robustness
//! evaluation and training (log-softmax, KL divergence, DLR; a group of
//! lanes per row), one pick per row, and `exp`/`ln` (grid-stride). See
//! that file for the math.

use crate::grid_stride::{input, output, GridStride, Slot, MAX_BLOCKS, THREADS as STRIDE_THREADS};
use crate::plan::{
    as_i32, blocks_for, buffer, elements, float_kernel, scalar, Access, Cooperation, LaunchPlan,
    Param, PlanResult, Scalar,
};
use crate::softmax_xent::lanes_per_row;
use crate::types::DType;

/// Threads of one block of the row-wise kernels.
pub const THREADS: u32 = 256;

/// Base name of the row-wise log-softmax.
pub const LOG_SOFTMAX: &str = "log_softmax_fwd";
/// Base name of its backward.
pub const LOG_SOFTMAX_BACKWARD: &str = "log_softmax_bwd";
/// Base name of the per-row KL divergence.
pub const KL_DIV: &str = "kl_div_fwd";
/// Base name of its backward (both inputs' gradients).
pub const KL_DIV_BACKWARD: &str = "kl_div_bwd";
/// Base name of the per-row DLR loss (untargeted or targeted).
pub const DLR: &str = "dlr_fwd";
/// Base name of its backward.
pub const DLR_BACKWARD: &str = "dlr_bwd";
/// Base name of the one-entry-per-row pick.
pub const PICK: &str = "pick_fwd";
/// Base name of its backward.
pub const PICK_BACKWARD: &str = "pick_bwd";

/// `y = eˣ` elementwise.
pub const EXP: GridStride = GridStride {
    base: "exp_map",
    slots: &[input("x"), output("y"), Slot::Count],
};

/// `y = ln x` elementwise.
pub const LN: GridStride = GridStride {
    base: "ln_map",
    slots: &[input("x"), output("y"), Slot::Count],
};

/// The base names of the kernels in `robust_loss.cu`.
pub const KERNELS: &[&str] = &[
    LOG_SOFTMAX,
    LOG_SOFTMAX_BACKWARD,
    KL_DIV,
    KL_DIV_BACKWARD,
    DLR,
    DLR_BACKWARD,
    PICK,
    PICK_BACKWARD,
    EXP.base,
    LN.base,
];

/// A launch that gives each of `rows` rows a group of `group` lanes
/// (blocks of [`THREADS`]); `params` are the kernel's parameters in order.
pub(crate) fn row_groups(
    base: &str,
    dtype: DType,
    rows: usize,
    group: u32,
    params: Vec<Param>,
) -> PlanResult<LaunchPlan> {
    Ok(LaunchPlan {
        kernel: float_kernel(base, dtype)?,
        grid: [blocks_for(base, rows, THREADS / group)?, 1, 1],
        block: [THREADS, 1, 1],
        shared_bytes: 0,
        cooperation: Cooperation::Block,
        params,
    })
}

/// A grid-stride launch over `n` items of independent threads (the
/// blocks and cap of [`GridStride`]), for kernels whose buffers are not
/// all `n` long.
pub(crate) fn strided(
    base: &str,
    dtype: DType,
    n: usize,
    params: Vec<Param>,
) -> PlanResult<LaunchPlan> {
    Ok(LaunchPlan {
        kernel: float_kernel(base, dtype)?,
        grid: [blocks_for(base, n, STRIDE_THREADS)?.min(MAX_BLOCKS), 1, 1],
        block: [STRIDE_THREADS, 1, 1],
        shared_bytes: 0,
        cooperation: Cooperation::Independent,
        params,
    })
}

/// `rows`, `cols` and `group` ([`lanes_per_row`]) as the kernels' `int`s.
fn shape(op: &str, rows: usize, cols: usize) -> PlanResult<(u32, [Param; 3])> {
    let group = lanes_per_row(cols);
    Ok((
        group,
        [
            scalar("rows", Scalar::I32(as_i32(op, "rows", rows)?)),
            scalar("cols", Scalar::I32(as_i32(op, "cols", cols)?)),
            scalar("group", Scalar::I32(group as i32)),
        ],
    ))
}

/// [`LOG_SOFTMAX`] of `rows × cols` logits. Parameters: `x, y, rows, cols,
/// group`.
pub fn log_softmax(dtype: DType, rows: usize, cols: usize) -> PlanResult<LaunchPlan> {
    let n = elements(LOG_SOFTMAX, rows, cols)?;
    let (group, shape) = shape(LOG_SOFTMAX, rows, cols)?;
    let mut params = vec![
        buffer("x", dtype, n, Access::Read),
        buffer("y", dtype, n, Access::Write),
    ];
    params.extend(shape);
    row_groups(LOG_SOFTMAX, dtype, rows, group, params)
}

/// [`LOG_SOFTMAX_BACKWARD`] from the upstream gradient and the forward's
/// output. Parameters: `g, y, dx, rows, cols, group`.
pub fn log_softmax_backward(dtype: DType, rows: usize, cols: usize) -> PlanResult<LaunchPlan> {
    let op = LOG_SOFTMAX_BACKWARD;
    let n = elements(op, rows, cols)?;
    let (group, shape) = shape(op, rows, cols)?;
    let mut params = vec![
        buffer("g", dtype, n, Access::Read),
        buffer("y", dtype, n, Access::Read),
        buffer("dx", dtype, n, Access::Write),
    ];
    params.extend(shape);
    row_groups(op, dtype, rows, group, params)
}

/// [`KL_DIV`] of two `rows × cols` logit matrices, one value per row.
/// Parameters: `a, b, kl, rows, cols, group`.
pub fn kl_div(dtype: DType, rows: usize, cols: usize) -> PlanResult<LaunchPlan> {
    let n = elements(KL_DIV, rows, cols)?;
    let (group, shape) = shape(KL_DIV, rows, cols)?;
    let mut params = vec![
        buffer("a", dtype, n, Access::Read),
        buffer("b", dtype, n, Access::Read),
        buffer("kl", dtype, rows, Access::Write),
    ];
    params.extend(shape);
    row_groups(KL_DIV, dtype, rows, group, params)
}

/// [`KL_DIV_BACKWARD`] with one upstream gradient per row. Parameters:
/// `a, b, g, da, db, rows, cols, group`.
pub fn kl_div_backward(dtype: DType, rows: usize, cols: usize) -> PlanResult<LaunchPlan> {
    let op = KL_DIV_BACKWARD;
    let n = elements(op, rows, cols)?;
    let (group, shape) = shape(op, rows, cols)?;
    let mut params = vec![
        buffer("a", dtype, n, Access::Read),
        buffer("b", dtype, n, Access::Read),
        buffer("g", dtype, rows, Access::Read),
        buffer("da", dtype, n, Access::Write),
        buffer("db", dtype, n, Access::Write),
    ];
    params.extend(shape);
    row_groups(op, dtype, rows, group, params)
}

/// [`DLR`] of `rows × cols` logits with u32 labels and targets (read only
/// when `targeted`). Parameters: `z, labels, targets, out, rows, cols,
/// group, targeted`.
pub fn dlr(dtype: DType, rows: usize, cols: usize, targeted: bool) -> PlanResult<LaunchPlan> {
    let n = elements(DLR, rows, cols)?;
    let (group, shape) = shape(DLR, rows, cols)?;
    let mut params = vec![
        buffer("z", dtype, n, Access::Read),
        buffer("labels", DType::U32, rows, Access::Read),
        buffer("targets", DType::U32, rows, Access::Read),
        buffer("out", dtype, rows, Access::Write),
    ];
    params.extend(shape);
    params.push(scalar("targeted", Scalar::I32(targeted.into())));
    row_groups(DLR, dtype, rows, group, params)
}

/// [`DLR_BACKWARD`] with one upstream gradient per row. Parameters: `z,
/// labels, targets, g, dz, rows, cols, group, targeted`.
pub fn dlr_backward(
    dtype: DType,
    rows: usize,
    cols: usize,
    targeted: bool,
) -> PlanResult<LaunchPlan> {
    let op = DLR_BACKWARD;
    let n = elements(op, rows, cols)?;
    let (group, shape) = shape(op, rows, cols)?;
    let mut params = vec![
        buffer("z", dtype, n, Access::Read),
        buffer("labels", DType::U32, rows, Access::Read),
        buffer("targets", DType::U32, rows, Access::Read),
        buffer("g", dtype, rows, Access::Read),
        buffer("dz", dtype, n, Access::Write),
    ];
    params.extend(shape);
    params.push(scalar("targeted", Scalar::I32(targeted.into())));
    row_groups(op, dtype, rows, group, params)
}

/// [`PICK`]: `y[r] = x[r, index[r]]`, grid-stride over the rows.
/// Parameters: `x, index, y, rows, cols`.
pub fn pick(dtype: DType, rows: usize, cols: usize) -> PlanResult<LaunchPlan> {
    let n = elements(PICK, rows, cols)?;
    let params = vec![
        buffer("x", dtype, n, Access::Read),
        buffer("index", DType::U32, rows, Access::Read),
        buffer("y", dtype, rows, Access::Write),
        scalar("rows", Scalar::U64(rows as u64)),
        scalar("cols", Scalar::U64(cols.max(1) as u64)),
    ];
    strided(PICK, dtype, rows, params)
}

/// [`PICK_BACKWARD`]: the upstream row gradients scattered into a zero
/// `rows × cols` matrix, grid-stride over its elements. Parameters: `g,
/// index, dx, n, cols`.
pub fn pick_backward(dtype: DType, rows: usize, cols: usize) -> PlanResult<LaunchPlan> {
    let op = PICK_BACKWARD;
    let n = elements(op, rows, cols)?;
    let params = vec![
        buffer("g", dtype, rows, Access::Read),
        buffer("index", DType::U32, rows, Access::Read),
        buffer("dx", dtype, n, Access::Write),
        scalar("n", Scalar::U64(n as u64)),
        scalar("cols", Scalar::U64(cols.max(1) as u64)),
    ];
    strided(op, dtype, n, params)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn row_groups_cover_the_rows() {
        for cols in [3, 10, 100, 784, 1000] {
            for rows in [0, 1, 7, 64, 65, 1000] {
                let p = dlr(DType::F32, rows, cols, true).unwrap();
                assert_eq!(p.kernel, "dlr_fwd_f32");
                let group = lanes_per_row(cols);
                assert_eq!(p.scalar("group"), Some(Scalar::I32(group as i32)));
                let per_block = u64::from(THREADS / group);
                let covered = p.blocks() * per_block;
                assert!(covered >= rows as u64);
                assert!(covered < rows as u64 + per_block || rows == 0);
                assert_eq!(p.scalar("targeted"), Some(Scalar::I32(1)));
            }
        }
    }

    #[test]
    fn buffers_have_the_lengths_the_kernels_touch() {
        let lens = |p: LaunchPlan| p.buffers().map(|b| (b.name, b.len)).collect::<Vec<_>>();
        assert_eq!(
            lens(kl_div_backward(DType::F64, 3, 5).unwrap()),
            [("a", 15), ("b", 15), ("g", 3), ("da", 15), ("db", 15)]
        );
        assert_eq!(
            lens(pick(DType::F32, 3, 5).unwrap()),
            [("x", 15), ("index", 3), ("y", 3)]
        );
        let p = pick_backward(DType::F32, 3, 5).unwrap();
        assert_eq!(p.scalar("n"), Some(Scalar::U64(15)));
        assert_eq!(lens(p), [("g", 3), ("index", 3), ("dx", 15)]);
        assert!(log_softmax(DType::U32, 3, 5).is_err());
    }
}
