//! Launches of `cast.cu`: `y = x` rounded from f32 to bf16 or f16 (to
//! nearest even, as the tensor-core products round while they stage an f32
//! operand), grid-stride over `n` elements. A large half product rounds an
//! f32 operand with it first ([`crate::matmul_half::rounds_first`]).

use crate::grid_stride::{MAX_BLOCKS, THREADS};
use crate::plan::{blocks_for, buffer, scalar, Access, Cooperation, LaunchPlan};
use crate::plan::{PlanError, PlanResult, Scalar};
use crate::types::DType;

/// The base name of the kernel; its entry points are `cast_f32_bf16` and
/// `cast_f32_f16`.
pub const KERNELS: &[&str] = &["cast_f32"];

/// The types f32 is rounded to.
pub const INSTANCES: &[&str] = &["bf16", "f16"];

/// The launch that rounds `n` f32 values `x` to `to` (bf16 or f16) in `y`.
pub fn plan(to: DType, n: usize) -> PlanResult<LaunchPlan> {
    if !to.is_half() {
        return Err(PlanError(format!(
            "cast_f32: rounds to bf16 or f16, not {to}"
        )));
    }
    Ok(LaunchPlan {
        kernel: format!("cast_f32_{to}"),
        grid: [blocks_for("cast_f32", n, THREADS)?.min(MAX_BLOCKS), 1, 1],
        block: [THREADS, 1, 1],
        shared_bytes: 0,
        cooperation: Cooperation::Independent,
        params: vec![
            buffer("x", DType::F32, n, Access::Read),
            buffer("y", to, n, Access::Write),
            scalar("n", Scalar::U64(n as u64)),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plans_round_f32_to_a_half_type_only() {
        let p = plan(DType::BF16, 1000).unwrap();
        assert_eq!(p.kernel, "cast_f32_bf16");
        let bufs: Vec<_> = p.buffers().map(|b| (b.name, b.dtype, b.len)).collect();
        assert_eq!(bufs, [("x", DType::F32, 1000), ("y", DType::BF16, 1000)]);
        assert_eq!(p.scalar("n"), Some(Scalar::U64(1000)));
        assert_eq!(plan(DType::F16, 0).unwrap().grid, [1, 1, 1]);
        assert_eq!(plan(DType::F16, 1 << 30).unwrap().grid[0], MAX_BLOCKS);
        assert!(plan(DType::F64, 4).is_err());
    }
}
