//! Launches of `activation.cu`: ReLU, sigmoid and tanh, forward `y = f(x)`
//! and backward `dx = g·f'` from what the forward saved (the input for ReLU,
//! the output otherwise), grid-stride over `n` elements.

use crate::grid_stride::{input, output, GridStride, Slot};
use crate::types::Activation;

/// The parameters of every forward kernel.
const FORWARD: &[Slot] = &[input("x"), output("y"), Slot::Count];
/// The parameters of the backward kernels that read the forward's input.
const BACKWARD_FROM_INPUT: &[Slot] = &[input("x"), input("g"), output("dx"), Slot::Count];
/// The parameters of the backward kernels that read the forward's output.
const BACKWARD_FROM_OUTPUT: &[Slot] = &[input("y"), input("g"), output("dx"), Slot::Count];

/// `y = max(x, 0)`.
pub const RELU_FWD: GridStride = GridStride {
    base: "relu_fwd",
    slots: FORWARD,
};
/// `y = 1/(1 + e^−x)`.
pub const SIGMOID_FWD: GridStride = GridStride {
    base: "sigmoid_fwd",
    slots: FORWARD,
};
/// `y = tanh x`.
pub const TANH_FWD: GridStride = GridStride {
    base: "tanh_fwd",
    slots: FORWARD,
};
/// `dx = g·[x > 0]`.
pub const RELU_BWD: GridStride = GridStride {
    base: "relu_bwd",
    slots: BACKWARD_FROM_INPUT,
};
/// `dx = g·y·(1 − y)`.
pub const SIGMOID_BWD: GridStride = GridStride {
    base: "sigmoid_bwd",
    slots: BACKWARD_FROM_OUTPUT,
};
/// `dx = g·(1 − y²)`.
pub const TANH_BWD: GridStride = GridStride {
    base: "tanh_bwd",
    slots: BACKWARD_FROM_OUTPUT,
};

/// The forward kernel of `act`: parameters `x, y, n`.
pub const fn forward_kernel(act: Activation) -> &'static GridStride {
    match act {
        Activation::Relu => &RELU_FWD,
        Activation::Sigmoid => &SIGMOID_FWD,
        Activation::Tanh => &TANH_FWD,
    }
}

/// The backward kernel of `act`: parameters `saved, g, dx, n`, with `saved`
/// the forward's input for ReLU and its output otherwise.
pub const fn backward_kernel(act: Activation) -> &'static GridStride {
    match act {
        Activation::Relu => &RELU_BWD,
        Activation::Sigmoid => &SIGMOID_BWD,
        Activation::Tanh => &TANH_BWD,
    }
}

/// The base names of the kernels in `activation.cu`.
pub const KERNELS: &[&str] = &[
    RELU_FWD.base,
    RELU_BWD.base,
    SIGMOID_FWD.base,
    SIGMOID_BWD.base,
    TANH_FWD.base,
    TANH_BWD.base,
];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid_stride::Extent;
    use crate::types::DType;

    #[test]
    fn backward_reads_what_forward_saved() {
        for act in Activation::ALL {
            let p = backward_kernel(act)
                .plan(DType::F32, Extent::flat(5), &[])
                .unwrap();
            let saved = p.buffers().next().unwrap().name;
            assert_eq!(saved, if act.saves_input() { "x" } else { "y" });
            assert_eq!(p.kernel, format!("{}_bwd_f32", act.name()));
            let f = forward_kernel(act).plan(DType::F64, Extent::flat(5), &[]);
            assert_eq!(f.unwrap().kernel, format!("{}_fwd_f64", act.name()));
        }
    }
}
