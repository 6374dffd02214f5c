//! Launch of `matmul.cu`: `C = op(A)·op(B)` (`+ C` with `accumulate`), with
//! op(A) `m × k` and op(B) `k × n`. A is stored `[m, k]`, or `[k, m]` with
//! `trans_a`; B `[k, n]`, or `[n, k]` with `trans_b`.

use crate::plan::{
    as_i32, buffer, elements, float_kernel, scalar, Access, Cooperation, LaunchPlan, PlanError,
    PlanResult, Scalar, MAX_GRID_YZ,
};
use crate::types::DType;

/// Rows (and columns) of C computed by one block.
pub const TILE: u32 = 64;
/// Threads of one block (16×16, each computing 4×4 values of C).
pub const THREADS: u32 = 256;

/// Base name of the kernel.
pub const MATMUL: &str = "matmul";

/// The base names of the kernels in `matmul.cu`.
pub const KERNELS: &[&str] = &[MATMUL];

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

/// The product of `d` (added to C with `accumulate`): a [`TILE`]² tile of C
/// per block. Parameters: `a, b, c, m, n, k, trans_a, trans_b, accumulate`.
pub fn matmul(dtype: DType, d: MatmulDims, accumulate: bool) -> PlanResult<LaunchPlan> {
    let op = MATMUL;
    let MatmulDims { m, n, k, .. } = d;
    let kernel = float_kernel(op, dtype)?;
    let (mi, ni, ki) = (
        as_i32(op, "m", m)?,
        as_i32(op, "n", n)?,
        as_i32(op, "k", k)?,
    );
    let gx = (n as u64).div_ceil(u64::from(TILE)).max(1);
    let gy = (m as u64).div_ceil(u64::from(TILE)).max(1);
    if gy > u64::from(MAX_GRID_YZ) {
        return Err(PlanError(format!(
            "{op}: m = {m} needs {gy} row blocks, more than {MAX_GRID_YZ}"
        )));
    }
    let c_access = if accumulate {
        Access::ReadWrite
    } else {
        Access::Write
    };
    Ok(LaunchPlan {
        kernel,
        grid: [gx as u32, gy as u32, 1],
        block: [THREADS, 1, 1],
        shared_bytes: 0,
        cooperation: Cooperation::Block,
        params: vec![
            buffer("a", dtype, elements(op, m, k)?, Access::Read),
            buffer("b", dtype, elements(op, k, n)?, Access::Read),
            buffer("c", dtype, elements(op, m, n)?, c_access),
            scalar("m", Scalar::I32(mi)),
            scalar("n", Scalar::I32(ni)),
            scalar("k", Scalar::I32(ki)),
            scalar("trans_a", Scalar::I32(d.a_trans.into())),
            scalar("trans_b", Scalar::I32(d.b_trans.into())),
            scalar("accumulate", Scalar::I32(accumulate.into())),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SIZES: &[usize] = &[0, 1, 2, 31, 32, 33, 63, 64, 65, 255, 256, 257, 1000, 4097];

    fn dims(m: usize, n: usize, k: usize, a_trans: bool, b_trans: bool) -> MatmulDims {
        MatmulDims {
            m,
            n,
            k,
            a_trans,
            b_trans,
        }
    }

    #[test]
    fn grid_covers_c() {
        assert_eq!(THREADS * 16, TILE * TILE, "16×16 threads of 4×4 tile 64×64");
        for &m in SIZES {
            for &n in SIZES {
                let p = matmul(DType::F32, dims(m, n, 7, false, false), false).unwrap();
                let rows = u64::from(p.grid[1]) * u64::from(TILE);
                let cols = u64::from(p.grid[0]) * u64::from(TILE);
                assert!(rows >= m as u64 && cols >= n as u64);
                // No block lies wholly outside C (apart from the one block of
                // an empty problem).
                assert!(rows < m as u64 + u64::from(TILE) || m == 0);
                assert!(cols < n as u64 + u64::from(TILE) || n == 0);
            }
        }
    }

    #[test]
    fn buffers_follow_the_transposes() {
        let p = matmul(DType::F64, dims(5, 7, 3, true, true), true).unwrap();
        let bufs: Vec<_> = p
            .buffers()
            .map(|b| (b.name, b.dtype, b.len, b.access))
            .collect();
        assert_eq!(bufs[0], ("a", DType::F64, 15, Access::Read));
        assert_eq!(bufs[1], ("b", DType::F64, 21, Access::Read));
        assert_eq!(bufs[2], ("c", DType::F64, 35, Access::ReadWrite));
        assert_eq!(p.params.len(), 9);
        let p = matmul(DType::F32, dims(5, 7, 3, false, false), false).unwrap();
        assert_eq!(p.buffers().nth(2).unwrap().access, Access::Write);
        assert!(matmul(DType::F32, dims(1 << 31, 1, 1, false, false), false).is_err());
        assert!(matmul(DType::U32, dims(1, 1, 1, false, false), false).is_err());
    }
}
