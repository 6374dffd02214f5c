//! Activations, each with a backward that reads what the forward saved.
//!
//! - `relu(x) = max(x, 0)`, `dx = g ⊙ [x > 0]` (the input is saved; the
//!   derivative at 0 is taken as 0).
//! - `sigmoid(x) = y = 1/(1+e^{−x})`, `dx = g ⊙ y ⊙ (1 − y)` (the output is
//!   saved).
//! - `tanh(x) = y`, `dx = g ⊙ (1 − y²)` (the output is saved).
//! - `gelu(x) = ½·x·(1 + t)`, `t = tanh(k·(x + a·x³))`, `k = √(2/π)`,
//!   `a = 0.044715` (the tanh form), and
//!   `dx = g ⊙ (½·(1 + t) + ½·x·(1 − t²)·k·(1 + 3a·x²))` (the input is
//!   saved: `x` cannot be recovered from `y`, GELU not being one-to-one on
//!   the negative axis). For that reason GELU is not an [`Activation`]:
//!   `bias_act` and `linear_act` save only their output, so they and the
//!   models' `--act` offer ReLU, sigmoid and tanh. Its kernels are those
//!   of `kernels/gelu.cu`, the subject of chapter 6 of the course.
//! - `bias_act(x, b) = f(x + b)` with the row `b` broadcast over the rows of
//!   `x` (a linear layer's bias and activation in one pass): with
//!   `z̄ = g ⊙ f'` computed from the saved output as above (for ReLU,
//!   `[y > 0] = [x + b > 0]`), `dx = z̄` and `db[j] = Σᵢ z̄[i, j]`.

use crate::backend::{Activation, BackendStorage};
use crate::error::{Error, Result};
use smallvec::smallvec;

use crate::ops::{InputGrads, Op};
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

impl Tensor {
    /// `f(x)` elementwise for the activation `act`.
    pub fn activation(&self, act: Activation) -> Result<Tensor> {
        let out = self.storage().activation(act)?;
        Ok(Tensor::from_storage(out, self.shape().clone()))
    }

    /// With `self` the output gradient `g`: `g ⊙ f'`, from the forward's
    /// input (ReLU) or output (sigmoid, tanh) `saved`.
    pub fn activation_backward(&self, saved: &Tensor, act: Activation) -> Result<Tensor> {
        if self.shape() != saved.shape() {
            return Err(Error::ShapeMismatch {
                op: "activation backward",
                lhs: self.shape().clone(),
                rhs: saved.shape().clone(),
            });
        }
        let out = self.storage().activation_backward(saved.storage(), act)?;
        Ok(Tensor::from_storage(out, self.shape().clone()))
    }

    /// `max(x, 0)` elementwise.
    pub fn relu(&self) -> Result<Tensor> {
        self.activation(Activation::Relu)
    }

    /// `1/(1+e^{−x})` elementwise.
    pub fn sigmoid(&self) -> Result<Tensor> {
        self.activation(Activation::Sigmoid)
    }

    /// `tanh x` elementwise.
    pub fn tanh(&self) -> Result<Tensor> {
        self.activation(Activation::Tanh)
    }

    /// GELU in its tanh form, elementwise: `½·x·(1 + tanh(k·(x + a·x³)))`,
    /// `k = √(2/π)`, `a = 0.044715` (0 at `x = −∞`, NaN at NaN).
    pub fn gelu(&self) -> Result<Tensor> {
        let out = self.storage().gelu()?;
        Ok(Tensor::from_storage(out, self.shape().clone()))
    }

    /// `f(x + b)` for a matrix `x: [m, n]`, a bias row `b: [n]` and the
    /// activation `act`, in one pass.
    pub fn bias_act(&self, bias: &Tensor, act: Activation) -> Result<Tensor> {
        let cols = match (self.shape().as_matrix(), bias.dims()) {
            (Some((_, n)), &[r]) if r == n => n,
            _ => {
                return Err(Error::ShapeMismatch {
                    op: "bias_act",
                    lhs: self.shape().clone(),
                    rhs: bias.shape().clone(),
                })
            }
        };
        let out = self.storage().bias_act(bias.storage(), cols, act)?;
        Ok(Tensor::from_storage(out, self.shape().clone()))
    }

    /// With `self` the output gradient `g`: `g ⊙ [x > 0]`.
    pub fn relu_backward(&self, x: &Tensor) -> Result<Tensor> {
        self.activation_backward(x, Activation::Relu)
    }

    /// With `self` the output gradient `g` and `y` the sigmoid output:
    /// `g ⊙ y ⊙ (1 − y)`.
    pub fn sigmoid_backward(&self, y: &Tensor) -> Result<Tensor> {
        self.activation_backward(y, Activation::Sigmoid)
    }

    /// With `self` the output gradient `g` and `y` the tanh output:
    /// `g ⊙ (1 − y²)`.
    pub fn tanh_backward(&self, y: &Tensor) -> Result<Tensor> {
        self.activation_backward(y, Activation::Tanh)
    }

    /// With `self` the output gradient `g` and `x` the GELU's input:
    /// `g ⊙ GELU'(x)`, `GELU'(x) = ½·(1 + t) + ½·x·(1 − t²)·k·(1 + 3a·x²)`
    /// with `t = tanh(k·(x + a·x³))` (the second term 0 where `t = ±1`).
    pub fn gelu_backward(&self, x: &Tensor) -> Result<Tensor> {
        if self.shape() != x.shape() {
            return Err(Error::ShapeMismatch {
                op: "gelu backward",
                lhs: self.shape().clone(),
                rhs: x.shape().clone(),
            });
        }
        let out = self.storage().gelu_backward(x.storage())?;
        Ok(Tensor::from_storage(out, self.shape().clone()))
    }
}

impl Tape {
    /// Records `relu(x)`.
    pub fn relu(&mut self, x: Var) -> Result<Var> {
        let out = self.value(x)?.relu()?;
        self.record(Op::Relu, &[x], out)
    }

    /// Records `sigmoid(x)`.
    pub fn sigmoid(&mut self, x: Var) -> Result<Var> {
        let out = self.value(x)?.sigmoid()?;
        self.record(Op::Sigmoid, &[x], out)
    }

    /// Records `f(x)` for the activation `act`.
    pub fn activation(&mut self, act: Activation, x: Var) -> Result<Var> {
        match act {
            Activation::Relu => self.relu(x),
            Activation::Sigmoid => self.sigmoid(x),
            Activation::Tanh => self.tanh(x),
        }
    }

    /// Records `f(x + b)`: the bias row `b` added to every row of `x`, then
    /// the activation `act` (ReLU, sigmoid or tanh), as one op.
    pub fn bias_act(&mut self, x: Var, b: Var, act: Activation) -> Result<Var> {
        let out = self.value(x)?.bias_act(self.value(b)?, act)?;
        self.record(Op::BiasAct(act), &[x, b], out)
    }

    /// Records `tanh(x)`.
    pub fn tanh(&mut self, x: Var) -> Result<Var> {
        let out = self.value(x)?.tanh()?;
        self.record(Op::Tanh, &[x], out)
    }

    /// Records `gelu(x)` (the tanh form), saving the input `x` for the
    /// backward rule.
    pub fn gelu(&mut self, x: Var) -> Result<Var> {
        let out = self.value(x)?.gelu()?;
        self.record(Op::Gelu, &[x], out)
    }
}

/// `z̄ = g ⊙ f'` from the saved output `y`, then `dx = z̄`, `db = Σᵢ z̄[i, ·]`.
pub(super) fn bias_act_backward(
    y: &Tensor,
    g: &Tensor,
    act: Activation,
    needs: &[bool],
) -> Result<InputGrads> {
    let pre = g.activation_backward(y, act)?;
    let db = needs[1].then(|| pre.sum_rows()).transpose()?;
    Ok(smallvec![needs[0].then_some(pre), db])
}
