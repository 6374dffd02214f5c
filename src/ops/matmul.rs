//! Matrix product.
//!
//! Forward `C = A·B` with `A: [m, k]`, `B: [k, n]`. Backward, for the output
//! gradient `G: [m, n]`: `dA = G·Bᵀ` and `dB = Aᵀ·G`, both computed by the
//! kernel reading the stored operand transposed, never materialising a
//! transpose.

use crate::backend::{BackendStorage, MatmulDims};
use crate::error::{Error, Result};
use crate::ops::Op;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

impl Tensor {
    /// `self · rhs` for 2-D tensors `[m, k]·[k, n] → [m, n]`.
    pub fn matmul(&self, rhs: &Tensor) -> Result<Tensor> {
        self.matmul_ex(rhs, false, false)
    }

    /// `op(self) · op(rhs)`, where `op` transposes the stored operand when
    /// its flag is set: `self` is `[m, k]` (or `[k, m]` with `a_trans`),
    /// `rhs` is `[k, n]` (or `[n, k]` with `b_trans`).
    pub fn matmul_ex(&self, rhs: &Tensor, a_trans: bool, b_trans: bool) -> Result<Tensor> {
        let mismatch = || Error::ShapeMismatch {
            op: "matmul",
            lhs: self.shape().clone(),
            rhs: rhs.shape().clone(),
        };
        let (Some((ar, ac)), Some((br, bc))) = (self.shape().as_matrix(), rhs.shape().as_matrix())
        else {
            return Err(Error::BadShape {
                op: "matmul",
                msg: format!(
                    "both operands must be 2-D, got {} and {}",
                    self.shape(),
                    rhs.shape()
                ),
            });
        };
        let (m, k) = if a_trans { (ac, ar) } else { (ar, ac) };
        let (k2, n) = if b_trans { (bc, br) } else { (br, bc) };
        if k != k2 {
            return Err(mismatch());
        }
        let dims = MatmulDims {
            m,
            n,
            k,
            a_trans,
            b_trans,
        };
        let out = self.storage().matmul(rhs.storage(), dims)?;
        Ok(Tensor::from_storage(out, [m, n].into()))
    }
}

impl Tape {
    /// Records `a · b` (see [`Tensor::matmul`]).
    pub fn matmul(&mut self, a: Var, b: Var) -> Result<Var> {
        let out = self.value(a)?.matmul(self.value(b)?)?;
        self.record(Op::Matmul, &[a, b], out)
    }
}

/// `dA = G·Bᵀ`, `dB = Aᵀ·G`.
pub(super) fn backward(
    a: &Tensor,
    b: &Tensor,
    g: &Tensor,
    needs: &[bool],
) -> Result<Vec<Option<Tensor>>> {
    let da = needs[0].then(|| g.matmul_ex(b, false, true)).transpose()?;
    let db = needs[1].then(|| a.matmul_ex(g, true, false)).transpose()?;
    Ok(vec![da, db])
}
