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
//!
//! **Precision.** Products of f32 tensors run in the thread's autocast
//! precision ([`crate::precision`]): under bf16 or f16 the operands are
//! rounded to it as they are packed and summed in f32. A bf16 or f16
//! operand makes the product run in its own type (with an f32 operand, or
//! one of the same type). The result is always f32 (f64 for f64 operands,
//! which are never rounded). A tape records the precision with the op and
//! runs the two products of the backward pass in it too; the gradient of a
//! half tensor is f32.

use crate::backend::{BackendStorage, MatmulDims, UpdateRule};
use crate::error::{Error, Result};
use crate::precision::Precision;
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
    /// `rhs` is `[k, n]` (or `[n, k]` with `b_trans`). f32 operands are
    /// multiplied in the thread's autocast precision (see the module docs).
    pub fn matmul_ex(&self, rhs: &Tensor, a_trans: bool, b_trans: bool) -> Result<Tensor> {
        self.matmul_in(rhs, a_trans, b_trans, Precision::current())
    }

    /// [`Tensor::matmul_ex`] with f32 operands rounded to `precision`
    /// whatever the autocast setting; an f32 result (f64 for f64 operands).
    ///
    /// ```
    /// use advgrad::{DType, Precision, Tensor};
    /// let a = Tensor::rand_uniform([3, 300], -1.0, 1.0, 1, DType::F32);
    /// let b = Tensor::rand_uniform([300, 2], -1.0, 1.0, 2, DType::F32);
    /// let c = a.matmul_in(&b, false, false, Precision::Bf16)?;
    /// // the same bits as the product of operands stored in bf16
    /// let (a16, b16) = (a.to_dtype(DType::BF16)?, b.to_dtype(DType::BF16)?);
    /// assert_eq!(c.to_vec::<f32>()?, a16.matmul(&b16)?.to_vec::<f32>()?);
    /// # Ok::<(), advgrad::Error>(())
    /// ```
    pub fn matmul_in(
        &self,
        rhs: &Tensor,
        a_trans: bool,
        b_trans: bool,
        precision: Precision,
    ) -> Result<Tensor> {
        let dims = self.matmul_dims(rhs, a_trans, b_trans)?;
        let out = self.storage().matmul_in(rhs.storage(), dims, precision)?;
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

    /// Records `op(a) · op(b)` (see [`Tensor::matmul_ex`]) in the thread's
    /// autocast precision, which the backward pass uses too; a linear layer
    /// with a PyTorch-layout weight `[out, in]` is `matmul_ex(x, w, false, true)`.
    pub fn matmul_ex(&mut self, a: Var, b: Var, a_trans: bool, b_trans: bool) -> Result<Var> {
        let precision = Precision::for_operands(self.value(a)?.dtype(), self.value(b)?.dtype());
        let out = self
            .value(a)?
            .matmul_in(self.value(b)?, a_trans, b_trans, precision)?;
        let op = Op::Matmul {
            a_trans,
            b_trans,
            precision,
        };
        self.record(op, &[a, b], out)
    }
}

/// A weight's gradient `dB = op(lhs)·op(rhs)` kept as its product instead
/// of computed, for the optimiser to step the weight with
/// ([`GradientProduct::step`]) once nothing else holds the weight: the
/// product then updates the weight in place as it goes
/// ([`BackendStorage::matmul_update`]), and `dB` is never stored whole.
#[derive(Clone, Debug)]
pub struct GradientProduct {
    lhs: Tensor,
    rhs: Tensor,
    dims: MatmulDims,
}

impl GradientProduct {
    /// Steps `param` in place by `rule` from this gradient, and the state
    /// buffers `s1`, `s2` with it: the bits of computing the gradient and
    /// then [`BackendStorage::update`].
    ///
    /// # Errors
    /// [`Error::ShapeMismatch`] if `param` is not the gradient's shape; the
    /// backend's errors (dtypes, devices).
    pub fn step(
        &self,
        param: &mut Tensor,
        s1: &mut Tensor,
        s2: &mut Tensor,
        rule: UpdateRule,
    ) -> Result<()> {
        let dims = self.dims;
        if param.shape().dims() != [dims.m, dims.n] {
            return Err(Error::ShapeMismatch {
                op: "optimizer step",
                lhs: param.shape().clone(),
                rhs: [dims.m, dims.n].into(),
            });
        }
        let (lhs, rhs) = (self.lhs.storage(), self.rhs.storage());
        param
            .storage_mut()
            .matmul_update(lhs, rhs, dims, s1.storage_mut(), s2.storage_mut(), rule)
    }
}

/// Where the backward pass leaves the gradient of a product's `B` operand
/// (a weight) as a [`GradientProduct`] instead of computing it.
pub struct WeightUpdate<'u> {
    /// Receives the weight's gradient as its product.
    pub deferred: &'u mut Option<GradientProduct>,
}

/// The gradients of `C = op(A)·op(B)`, per the table in the module docs,
/// with the products in `precision`; with `update` and an f32 product, the
/// gradient of `B` is left as its product in the [`WeightUpdate`] and
/// returned as `None`. A bf16 or f16 product has no such form, so there
/// `dB` is returned as usual and the caller steps `B` in place once the
/// tape lets go of it ([`crate::nn::Model::optimizer_step`]).
pub(super) fn backward(
    a: &Tensor,
    b: &Tensor,
    g: &Tensor,
    (a_trans, b_trans): (bool, bool),
    precision: Precision,
    needs: &[bool],
    update: Option<WeightUpdate<'_>>,
) -> Result<InputGrads> {
    let da = needs[0]
        .then(|| match a_trans {
            false => g.matmul_in(b, false, !b_trans, precision),
            true => b.matmul_in(g, b_trans, true, precision),
        })
        .transpose()?;
    let (lhs, rhs, lhs_trans, rhs_trans) = match b_trans {
        false => (a, g, !a_trans, false),
        true => (g, a, true, a_trans),
    };
    let db = match (needs[1], update) {
        (false, _) => None,
        (true, Some(u)) if precision == Precision::F32 => {
            *u.deferred = Some(GradientProduct {
                lhs: lhs.clone(),
                rhs: rhs.clone(),
                dims: lhs.matmul_dims(rhs, lhs_trans, rhs_trans)?,
            });
            None
        }
        (true, _) => Some(lhs.matmul_in(rhs, lhs_trans, rhs_trans, precision)?),
    };
    Ok(smallvec![da, db])
}
