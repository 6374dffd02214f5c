//! The fused layer `y = f(x·Wᵀ + b)`: a linear layer with PyTorch's weight
//! layout (`W: [out, in]`) and its activation, recorded as one op.
//!
//! The product runs with the bias and the activation as its epilogue,
//! applied to each finished strip while it is in cache, so the
//! pre-activation never goes to memory. The value is the same bits as
//! `bias_act(matmul_ex(x, W, false, true), b)`.
//!
//! Backward, with `z̄ = g ⊙ f'` computed from the saved output as for
//! `bias_act` (for ReLU, `[y > 0]`): `dx = z̄·W`, `dW = z̄ᵀ·x`,
//! `db[j] = Σᵢ z̄[i, j]`.
//!
//! The three products run in the autocast precision recorded with the op
//! (see [`crate::ops::matmul`]); the bias, the activation and `db` in f32.

use crate::backend::{Activation, BackendStorage};
use crate::error::{Error, Result};
use crate::ops::{matmul, InputGrads, Op};
use crate::precision::Precision;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

impl Tensor {
    /// `f(x·Wᵀ + b)` for `x: [m, in]`, `W: [out, in]`, `b: [out]` and the
    /// activation `act`, in one pass over the output; the product in the
    /// thread's autocast precision.
    pub fn linear_act(&self, weight: &Tensor, bias: &Tensor, act: Activation) -> Result<Tensor> {
        self.linear_act_in(weight, bias, act, Precision::current())
    }

    /// [`Tensor::linear_act`] with the product in `precision`.
    pub fn linear_act_in(
        &self,
        weight: &Tensor,
        bias: &Tensor,
        act: Activation,
        precision: Precision,
    ) -> Result<Tensor> {
        let dims = self.matmul_dims(weight, false, true)?;
        if bias.dims() != [dims.n] {
            return Err(Error::ShapeMismatch {
                op: "linear_act",
                lhs: weight.shape().clone(),
                rhs: bias.shape().clone(),
            });
        }
        let out = self.storage().matmul_bias_act_in(
            weight.storage(),
            dims,
            bias.storage(),
            act,
            precision,
        )?;
        Ok(Tensor::from_storage(out, [dims.m, dims.n].into()))
    }
}

impl Tape {
    /// Records `f(x·Wᵀ + b)` as one op (see the module docs): a hidden layer
    /// of an MLP.
    pub fn linear_act(&mut self, x: Var, weight: Var, bias: Var, act: Activation) -> Result<Var> {
        let precision =
            Precision::for_operands(self.value(x)?.dtype(), self.value(weight)?.dtype());
        let out =
            self.value(x)?
                .linear_act_in(self.value(weight)?, self.value(bias)?, act, precision)?;
        self.record(Op::LinearAct(act, precision), &[x, weight, bias], out)
    }
}

/// `z̄ = g ⊙ f'` from the saved output `y`, then the gradients of the
/// product's operands and the column sums of `z̄`; with `update`, `W`'s
/// gradient is left as its product (see [`matmul::WeightUpdate`]).
pub(super) fn backward(
    inputs: &[&Tensor],
    y: &Tensor,
    g: &Tensor,
    act: Activation,
    precision: Precision,
    needs: &[bool],
    update: Option<matmul::WeightUpdate<'_>>,
) -> Result<InputGrads> {
    let z_bar = g.activation_backward(y, act)?;
    let db = needs[2].then(|| z_bar.sum_rows()).transpose()?;
    let (x, w) = (inputs[0], inputs[1]);
    let mut grads = matmul::backward(x, w, &z_bar, (false, true), precision, &needs[..2], update)?;
    grads.push(db);
    Ok(grads)
}
