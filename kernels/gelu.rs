//! Launches of `gelu.cu`: GELU in its tanh form, forward and backward,
//! grid-stride over `n` elements. With `u = k·(x + a·x³)`, `k = √(2/π)`,
//! `a = 0.044715` and `t = tanh u`:
//!
//! - forward `y = ½·x·(1 + t)`;
//! - backward `dx = g·(½·(1 + t) + ½·x·(1 − t²)·k·(1 + 3a·x²))`, from the
//!   forward's input `x`.
//!
//! This kernel is the subject of chapter 6 of the course
//! (`examples/06_writing_a_cuda_kernel.rs`), which shows how a kernel is
//! added, planned, emulated and checked. It is also the tape's op `gelu`
//! (`Tape::gelu` in `src/ops/activation.rs`): the CUDA backend launches
//! these plans for it (on a GPU and on the emulator), the CPU backend
//! evaluates the same formula in the same order, and
//! `advgrad bench --op gelu` times it. It is not an `Activation`: the fused
//! bias-and-activation kernels save their output, from which GELU's input
//! cannot be recovered.

use crate::grid_stride::{input, output, GridStride, Slot};

/// `y = ½·x·(1 + tanh(k·(x + a·x³)))`: parameters `x, y, n`.
pub const GELU_FWD: GridStride = GridStride {
    base: "gelu_fwd",
    slots: &[input("x"), output("y"), Slot::Count],
};

/// `dx = g·GELU'(x)`: parameters `x, g, dx, n`.
pub const GELU_BWD: GridStride = GridStride {
    base: "gelu_bwd",
    slots: &[input("x"), input("g"), output("dx"), Slot::Count],
};

/// `k = √(2/π)`, the scale inside the tanh.
pub const K: f64 = 0.797_884_560_802_865_4;
/// `a`, the weight of the cubic term.
pub const A: f64 = 0.044_715;

/// The CPU reference of the forward kernel, in f64:
/// `½·x·(1 + tanh(k·(x + a·x³)))`, and 0 where `1 + tanh(…)` is 0 (as the
/// kernel, so that `x = −∞` gives 0).
pub fn reference(x: f64) -> f64 {
    let h = 1.0 + (K * (x + A * x * x * x)).tanh();
    if h == 0.0 {
        0.0
    } else {
        0.5 * x * h
    }
}

/// The CPU reference of the backward kernel's derivative, in f64:
/// `GELU'(x) = ½·(1 + t) + ½·x·(1 − t²)·k·(1 + 3a·x²)`, `t = tanh(k·(x + a·x³))`,
/// the second term 0 where `t = ±1` (as the kernel).
pub fn reference_derivative(x: f64) -> f64 {
    let t = (K * (x + A * x * x * x)).tanh();
    let slope = 1.0 - t * t;
    let inner = if slope == 0.0 {
        0.0
    } else {
        0.5 * x * slope * K * (1.0 + 3.0 * A * x * x)
    };
    0.5 * (1.0 + t) + inner
}

/// The base names of the kernels in `gelu.cu`.
pub const KERNELS: &[&str] = &[GELU_FWD.base, GELU_BWD.base];

#[cfg(test)]
mod tests {
    use super::*;
    use crate::grid_stride::Extent;
    use crate::types::DType;

    #[test]
    fn the_plans_name_the_instantiations_and_cover_every_element() {
        let f = GELU_FWD.plan(DType::F32, Extent::flat(1000), &[]).unwrap();
        assert_eq!(f.kernel, "gelu_fwd_f32");
        let b = GELU_BWD.plan(DType::F64, Extent::flat(7), &[]).unwrap();
        assert_eq!(b.kernel, "gelu_bwd_f64");
        let names: Vec<_> = b.buffers().map(|p| (p.name, p.len)).collect();
        assert_eq!(names, [("x", 7), ("g", 7), ("dx", 7)]);
    }

    /// The derivative against central differences of the forward, and the
    /// limits at ±∞.
    #[test]
    fn the_reference_derivative_is_the_derivative_of_the_reference() {
        for i in -60..=60 {
            let x = f64::from(i) / 10.0;
            let h = 1e-5;
            let numeric = (reference(x + h) - reference(x - h)) / (2.0 * h);
            assert!((numeric - reference_derivative(x)).abs() < 1e-8, "x = {x}");
        }
        assert_eq!(reference(f64::INFINITY), f64::INFINITY);
        assert_eq!(reference(f64::NEG_INFINITY), 0.0);
        assert_eq!(reference_derivative(f64::INFINITY), 1.0);
        assert_eq!(reference_derivative(f64::NEG_INFINITY), 0.0);
        assert!(reference(f64::NAN).is_nan() && reference_derivative(f64::NAN).is_nan());
    }
}
