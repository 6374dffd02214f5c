//! Matrix product, with either operand optionally read transposed.
//!
//! Forward `C = op(A)·op(B)`. Backward, for the output gradient `G`:
//!
//! | forward | `dA` | `dB` |
//! |---|---|---|
//! | `A·B` | `G·Bᵀ` | `Aᵀ·G` |
//! | `A·Bᵀ` | `G·B` | `Gᵀ·A` |
//! | `Aᵀ·B` | `B·Gᵀ` | `A·G` |
//! | `Aᵀ·Bᵀ` | `Bᵀ·Gᵀ` | `Gᵀ·Aᵀ` |
//!
//! Each product is one kernel call that reads its stored operands
//! transposed where needed: no transpose is ever materialised.

use crate::backend::{BackendStorage, MatmulDims, UpdateRule};
use crate::error::{Error, Result};
use smallvec::smallvec;

use crate::ops::{InputGrads, Op};
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
        let dims = self.matmul_dims(rhs, a_trans, b_trans)?;
        let out = self.storage().matmul(rhs.storage(), dims)?;
        Ok(Tensor::from_storage(out, [dims.m, dims.n].into()))
    }

    /// The sizes of `op(self) · op(rhs)`, checked.
    pub(crate) fn matmul_dims(
        &self,
        rhs: &Tensor,
        a_trans: bool,
        b_trans: bool,
    ) -> Result<MatmulDims> {
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
            return Err(Error::ShapeMismatch {
                op: "matmul",
                lhs: self.shape().clone(),
                rhs: rhs.shape().clone(),
            });
        }
        Ok(MatmulDims {
            m,
            n,
            k,
            a_trans,
            b_trans,
        })
    }
}

impl Tape {
    /// Records `a · b` (see [`Tensor::matmul`]).
    pub fn matmul(&mut self, a: Var, b: Var) -> Result<Var> {
        self.matmul_ex(a, b, false, false)
    }

    /// Records `op(a) · op(b)` (see [`Tensor::matmul_ex`]); a linear layer
    /// with a PyTorch-layout weight `[out, in]` is `matmul_ex(x, w, false, true)`.
    pub fn matmul_ex(&mut self, a: Var, b: Var, a_trans: bool, b_trans: bool) -> Result<Var> {
        let out = self.value(a)?.matmul_ex(self.value(b)?, a_trans, b_trans)?;
        self.record(Op::Matmul { a_trans, b_trans }, &[a, b], out)
    }
}

/// An optimiser step for the `B` operand of a product (a weight), taken
/// inside the product that computes its gradient `dB`
/// ([`BackendStorage::matmul_update`]) instead of returning `dB`.
pub struct WeightUpdate<'u> {
    /// The optimiser's rule for this step.
    pub rule: UpdateRule,
    /// The optimiser's state buffers for the weight (updated in place).
    pub state: (&'u mut Tensor, &'u mut Tensor),
    /// Receives the updated weight.
    pub updated: &'u mut Option<Tensor>,
}

/// The gradients of `C = op(A)·op(B)`, per the table in the module docs;
/// with `update`, `B` is stepped (see [`WeightUpdate`]) and its gradient is
/// returned as `None`.
pub(super) fn backward(
    a: &Tensor,
    b: &Tensor,
    g: &Tensor,
    (a_trans, b_trans): (bool, bool),
    needs: &[bool],
    update: Option<WeightUpdate<'_>>,
) -> Result<InputGrads> {
    let da = needs[0]
        .then(|| match a_trans {
            false => g.matmul_ex(b, false, !b_trans),
            true => b.matmul_ex(g, b_trans, true),
        })
        .transpose()?;
    let (lhs, rhs, lhs_trans, rhs_trans) = match b_trans {
        false => (a, g, !a_trans, false),
        true => (g, a, true, a_trans),
    };
    let db = match (needs[1], update) {
        (false, _) => None,
        (true, None) => Some(lhs.matmul_ex(rhs, lhs_trans, rhs_trans)?),
        (true, Some(u)) => {
            let dims = lhs.matmul_dims(rhs, lhs_trans, rhs_trans)?;
            let (s1, s2) = u.state;
            let stepped = lhs.storage().matmul_update(
                rhs.storage(),
                dims,
                b.storage(),
                s1.storage_mut(),
                s2.storage_mut(),
                u.rule,
            )?;
            *u.updated = Some(Tensor::from_storage(stepped, b.shape().clone()));
            None
        }
    };
    Ok(smallvec![da, db])
}
