//! A fully connected layer.

use crate::dtype::DType;
use crate::error::Result;
use crate::rng::Rng;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// `y = x·Wᵀ + b` with `W: [out, in]` (PyTorch's layout) and `b: [out]`.
#[derive(Clone, Debug)]
pub struct Linear {
    /// The weight, `[out, in]`.
    pub weight: Tensor,
    /// The bias, `[out]`.
    pub bias: Tensor,
}

impl Linear {
    /// PyTorch's default initialisation: `W, b ~ U(−1/√in, 1/√in)`.
    pub fn new(inputs: usize, outputs: usize, rng: &mut Rng) -> Result<Linear> {
        let bound = 1.0 / (inputs.max(1) as f64).sqrt();
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| rng.uniform_in(-bound, bound) as f32)
                .collect()
        };
        Ok(Linear {
            weight: Tensor::from_vec(draw(outputs * inputs), [outputs, inputs])?,
            bias: Tensor::from_vec(draw(outputs), [outputs])?,
        })
    }

    /// Number of input features.
    pub fn inputs(&self) -> usize {
        self.weight.dims()[1]
    }

    /// Number of output features.
    pub fn outputs(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Records `x·Wᵀ + b` given the layer's weight and bias variables.
    pub fn record(tape: &mut Tape, x: Var, weight: Var, bias: Var) -> Result<Var> {
        let z = tape.matmul_ex(x, weight, false, true)?;
        tape.add(z, bias)
    }

    /// `x·Wᵀ + b` without a tape.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.matmul_ex(&self.weight, false, true)?.add_row(&self.bias)
    }

    /// The element type of the parameters.
    pub fn dtype(&self) -> DType {
        self.weight.dtype()
    }
}
