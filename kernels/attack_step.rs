//! Launches of `attack_step.cu`: APGD's step (L∞ grid-stride, L2 a group
//! of lanes per row), FAB's step (a warp per row, in double) and the
//! in-place update of listed rows. See that file for the math.

use crate::plan::{as_i32, buffer, elements, scalar, Access, LaunchPlan, PlanResult, Scalar, WARP};
use crate::robust_loss::{row_groups, strided};
use crate::softmax_xent::lanes_per_row;
use crate::types::DType;

/// Base name of APGD's L∞ step.
pub const APGD_LINF: &str = "apgd_linf_step";
/// Base name of APGD's L2 step.
pub const APGD_L2: &str = "apgd_l2_step";
/// Base name of FAB's step.
pub const FAB: &str = "fab_step";
/// Base name of the in-place update of listed rows.
pub const LERP_ROWS: &str = "lerp_rows";

/// The base names of the kernels in `attack_step.cu`.
pub const KERNELS: &[&str] = &[APGD_LINF, APGD_L2, FAB, LERP_ROWS];

/// The settings of one APGD step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ApgdStep {
    /// The radius of the ball around the clean input.
    pub eps: f64,
    /// The momentum α.
    pub momentum: f64,
    /// L2 (else L∞).
    pub l2: bool,
}

/// APGD's step over `rows × cols` pixels with one step size per row.
/// Parameters: `x, prev, g, center, step, out, eps, momentum`, then `n,
/// cols` (L∞) or `rows, cols, group` (L2).
pub fn apgd(dtype: DType, rows: usize, cols: usize, s: ApgdStep) -> PlanResult<LaunchPlan> {
    let base = if s.l2 { APGD_L2 } else { APGD_LINF };
    let n = elements(base, rows, cols)?;
    let mut params = vec![
        buffer("x", dtype, n, Access::Read),
        buffer("prev", dtype, n, Access::Read),
        buffer("g", dtype, n, Access::Read),
        buffer("center", dtype, n, Access::Read),
        buffer("step", dtype, rows, Access::Read),
        buffer("out", dtype, n, Access::Write),
        scalar("eps", Scalar::float(dtype, s.eps)),
        scalar("momentum", Scalar::float(dtype, s.momentum)),
    ];
    if !s.l2 {
        params.push(scalar("n", Scalar::U64(n as u64)));
        params.push(scalar("cols", Scalar::U64(cols.max(1) as u64)));
        return strided(base, dtype, n, params);
    }
    let group = lanes_per_row(cols);
    params.extend([
        scalar("rows", Scalar::I32(as_i32(base, "rows", rows)?)),
        scalar("cols", Scalar::I32(as_i32(base, "cols", cols)?)),
        scalar("group", Scalar::I32(group as i32)),
    ]);
    row_groups(base, dtype, rows, group, params)
}

/// The settings of one FAB step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct FabStep {
    /// The overshoot η.
    pub eta: f64,
    /// The largest weight of the step from the clean input.
    pub alpha_max: f64,
    /// L∞ (else L2).
    pub linf: bool,
}

/// FAB's step over `rows × cols` pixels, a warp per row. Parameters: `x,
/// x0, w, f, out, dist, eta, alpha_max, rows, cols, linf`.
pub fn fab(dtype: DType, rows: usize, cols: usize, s: FabStep) -> PlanResult<LaunchPlan> {
    let n = elements(FAB, rows, cols)?;
    let params = vec![
        buffer("x", dtype, n, Access::Read),
        buffer("x0", dtype, n, Access::Read),
        buffer("w", dtype, n, Access::Read),
        buffer("f", dtype, rows, Access::Read),
        buffer("out", dtype, n, Access::Write),
        buffer("dist", dtype, rows, Access::Write),
        scalar("eta", Scalar::F64(s.eta)),
        scalar("alpha_max", Scalar::F64(s.alpha_max)),
        scalar("rows", Scalar::I32(as_i32(FAB, "rows", rows)?)),
        scalar("cols", Scalar::I32(as_i32(FAB, "cols", cols)?)),
        scalar("linf", Scalar::I32(s.linf.into())),
    ];
    row_groups(FAB, dtype, rows, WARP, params)
}

/// In place on a buffer of `rows × cols`: the `listed` rows named by a u32
/// index buffer, `x ← src + t·(x − src)`. Parameters: `x, src, index, t,
/// n, cols` with `n = listed·cols`.
pub fn lerp_rows(
    dtype: DType,
    rows: usize,
    cols: usize,
    listed: usize,
    t: f64,
) -> PlanResult<LaunchPlan> {
    let len = elements(LERP_ROWS, rows, cols)?;
    let n = elements(LERP_ROWS, listed, cols)?;
    let params = vec![
        buffer("x", dtype, len, Access::ReadWrite),
        buffer("src", dtype, len, Access::Read),
        buffer("index", DType::U32, listed, Access::Read),
        scalar("t", Scalar::float(dtype, t)),
        scalar("n", Scalar::U64(n as u64)),
        scalar("cols", Scalar::U64(cols.max(1) as u64)),
    ];
    strided(LERP_ROWS, dtype, n, params)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Cooperation;

    #[test]
    fn each_norm_takes_its_kernel() {
        let s = ApgdStep {
            eps: 0.1,
            momentum: 0.75,
            l2: false,
        };
        let p = apgd(DType::F32, 3, 784, s).unwrap();
        assert_eq!(p.kernel, "apgd_linf_step_f32");
        assert_eq!(p.cooperation, Cooperation::Independent);
        assert_eq!(p.scalar("n"), Some(Scalar::U64(3 * 784)));
        let p = apgd(DType::F64, 3, 784, ApgdStep { l2: true, ..s }).unwrap();
        assert_eq!(p.kernel, "apgd_l2_step_f64");
        assert_eq!(p.scalar("group"), Some(Scalar::I32(32)));
        assert_eq!(p.scalar("momentum"), Some(Scalar::F64(0.75)));
    }

    #[test]
    fn fab_gives_each_row_a_warp() {
        let s = FabStep {
            eta: 1.05,
            alpha_max: 0.1,
            linf: true,
        };
        for rows in [1, 8, 9, 100] {
            let p = fab(DType::F32, rows, 7, s).unwrap();
            assert!(p.blocks() * p.threads_per_block() >= 32 * rows as u64);
            assert!(p.blocks() * p.threads_per_block() < 32 * rows as u64 + 256);
        }
    }

    #[test]
    fn lerp_touches_the_listed_rows() {
        let p = lerp_rows(DType::F32, 10, 4, 3, 0.5).unwrap();
        let lens: Vec<_> = p.buffers().map(|b| (b.name, b.len, b.access)).collect();
        assert_eq!(
            lens,
            [
                ("x", 40, Access::ReadWrite),
                ("src", 40, Access::Read),
                ("index", 3, Access::Read)
            ]
        );
        assert_eq!(p.scalar("n"), Some(Scalar::U64(12)));
    }
}
