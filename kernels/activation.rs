//! Launches of `activation.cu`: ReLU, sigmoid and tanh, forward `y = f(x)`
//! and backward `dx = g·f'` from what the forward saved (the input for ReLU,
//! the output otherwise), grid-stride over `n` elements; and a linear
//! layer's bias and activation in one pass, `y[r, c] = f(x[r, c] + b[c])`.

use crate::grid_stride::{input, output, row_input, GridStride, Slot};
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

/// The parameters of the fused bias and activation kernels.
const BIAS_ACT: &[Slot] = &[
    input("x"),
    row_input("b"),
    output("y"),
    Slot::Count,
    Slot::Cols,
];

/// `y[r, c] = max(x[r, c] + b[c], 0)`.
pub const BIAS_RELU: GridStride = GridStride {
    base: "bias_relu",
    slots: BIAS_ACT,
};
/// `y[r, c] = 1/(1 + e^−(x[r, c] + b[c]))`.
pub const BIAS_SIGMOID: GridStride = GridStride {
    base: "bias_sigmoid",
    slots: BIAS_ACT,
};
/// `y[r, c] = tanh(x[r, c] + b[c])`.
pub const BIAS_TANH: GridStride = GridStride {
    base: "bias_tanh",
    slots: BIAS_ACT,
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

/// The fused bias and activation `y[r, c] = f(x[r, c] + b[c])` over a
/// `rows × cols` extent: parameters `x, b, y, n, cols`.
pub const fn bias_act_kernel(act: Activation) -> &'static GridStride {
    match act {
        Activation::Relu => &BIAS_RELU,
        Activation::Sigmoid => &BIAS_SIGMOID,
        Activation::Tanh => &BIAS_TANH,
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
    BIAS_RELU.base,
    BIAS_SIGMOID.base,
    BIAS_TANH.base,
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
            let b = bias_act_kernel(act).plan(DType::F32, Extent::matrix(3, 5), &[]);
            let b = b.unwrap();
            assert_eq!(b.kernel, format!("bias_{}_f32", act.name()));
            let lens: Vec<_> = b.buffers().map(|p| p.len).collect();
            assert_eq!(lens, [15, 5, 15]);
        }
    }
}
