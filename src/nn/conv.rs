//! A 2-D convolution layer.

use crate::error::Result;
use crate::rng::Rng;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// `y = conv2d(x, W) + b` (see [`crate::ops::conv`]) with `W`
/// `[out, in, k, k]` (PyTorch's layout) and `b` `[out]`.
#[derive(Clone, Debug)]
pub struct Conv2d {
    /// The filters, `[out, in, k, k]`.
    pub weight: Tensor,
    /// The bias, `[out]`.
    pub bias: Tensor,
    /// The stride along both axes.
    pub stride: usize,
    /// The zero padding on every side.
    pub padding: usize,
}

impl Conv2d {
    /// PyTorch's default initialisation: `W, b ~ U(−1/√fan_in, 1/√fan_in)`
    /// with `fan_in = in·k·k`.
    pub fn new(
        inputs: usize,
        outputs: usize,
        kernel: usize,
        stride: usize,
        padding: usize,
        rng: &mut Rng,
    ) -> Result<Conv2d> {
        let fan_in = inputs * kernel * kernel;
        let bound = 1.0 / (fan_in.max(1) as f64).sqrt();
        let mut draw = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| rng.uniform_in(-bound, bound) as f32)
                .collect()
        };
        Ok(Conv2d {
            weight: Tensor::from_vec(draw(outputs * fan_in), [outputs, inputs, kernel, kernel])?,
            bias: Tensor::from_vec(draw(outputs), [outputs])?,
            stride,
            padding,
        })
    }

    /// Output channels.
    pub fn outputs(&self) -> usize {
        self.weight.dims()[0]
    }

    /// The kernel's side.
    pub fn kernel(&self) -> usize {
        self.weight.dims()[2]
    }

    /// Records the convolution given the layer's weight and bias variables.
    pub fn record(&self, tape: &mut Tape, x: Var, weight: Var, bias: Var) -> Result<Var> {
        tape.conv2d(x, weight, bias, self.stride, self.padding)
    }

    /// The convolution of a batch `[N, in, H, W]`, without a tape.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        x.conv2d(&self.weight, &self.bias, self.stride, self.padding)
    }
}
