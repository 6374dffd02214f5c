//! Launches of `optim.cu`: in-place optimiser updates of one parameter
//! tensor, grid-stride over its `n` elements (see that file for the rules).

use crate::grid_stride::{in_place, input, Extent, GridStride, Slot};
use crate::plan::{LaunchPlan, PlanError, PlanResult};
use crate::types::DType;

/// Plain SGD, `w −= lr·(g + weight_decay·w)`; values `[lr, weight_decay]`.
pub const SGD: GridStride = GridStride {
    base: "sgd",
    slots: &[
        in_place("w"),
        input("g"),
        Slot::Scalar("lr"),
        Slot::Scalar("weight_decay"),
        Slot::Count,
    ],
};

/// SGD with momentum (PyTorch's rule, dampening 0), the velocity `v`
/// updated in place; values `[lr, momentum, weight_decay, nesterov]`.
pub const SGD_MOMENTUM: GridStride = GridStride {
    base: "sgd_momentum",
    slots: &[
        in_place("w"),
        input("g"),
        in_place("v"),
        Slot::Scalar("lr"),
        Slot::Scalar("momentum"),
        Slot::Scalar("weight_decay"),
        Slot::Flag("nesterov"),
        Slot::Count,
    ],
};

/// Adam (or AdamW) in place on `w`, `m`, `v`; planned by [`adam`].
pub const ADAM: GridStride = GridStride {
    base: "adam",
    slots: &[
        in_place("w"),
        input("g"),
        in_place("m"),
        in_place("v"),
        Slot::Scalar("lr"),
        Slot::Scalar("beta1"),
        Slot::Scalar("beta2"),
        Slot::Scalar("eps"),
        Slot::Scalar("weight_decay"),
        Slot::Scalar("step_size"),
        Slot::Scalar("inv_bc2"),
        Slot::Flag("decoupled"),
        Slot::Count,
    ],
};

/// The base names of the kernels in `optim.cu`.
pub const KERNELS: &[&str] = &[SGD.base, SGD_MOMENTUM.base, ADAM.base];

/// Hyper-parameters of one Adam step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamStep {
    /// Learning rate.
    pub lr: f64,
    /// Decay of the first moment.
    pub beta1: f64,
    /// Decay of the second moment.
    pub beta2: f64,
    /// Added to the root of the second moment.
    pub eps: f64,
    /// L2 penalty (or AdamW decay with `decoupled`).
    pub weight_decay: f64,
    /// AdamW's decoupled weight decay instead of an L2 term in the gradient.
    pub decoupled: bool,
    /// The step number, from 1.
    pub step: u64,
}

/// One Adam step over `n` elements, with the bias corrections
/// `step_size = lr / (1 − β1^t)` and `inv_bc2 = 1 / (1 − β2^t)` computed
/// here in f64 (the CPU backend's order of operations).
pub fn adam(dtype: DType, n: usize, s: AdamStep) -> PlanResult<LaunchPlan> {
    if s.step == 0 {
        return Err(PlanError("adam: the step number starts at 1".into()));
    }
    let t = i32::try_from(s.step).unwrap_or(i32::MAX);
    let bc1 = 1.0 - s.beta1.powi(t);
    let bc2 = 1.0 - s.beta2.powi(t);
    ADAM.plan(
        dtype,
        Extent::flat(n),
        &[
            s.lr,
            s.beta1,
            s.beta2,
            s.eps,
            s.weight_decay,
            s.lr / bc1,
            1.0 / bc2,
            if s.decoupled { 1.0 } else { 0.0 },
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Scalar;

    #[test]
    fn adam_bias_correction() {
        let s = AdamStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
            decoupled: true,
            step: 2,
        };
        let p = adam(DType::F64, 4, s).unwrap();
        assert_eq!(
            p.scalar("step_size"),
            Some(Scalar::F64(1e-3 / (1.0 - 0.81)))
        );
        assert_eq!(
            p.scalar("inv_bc2"),
            Some(Scalar::F64(1.0 / (1.0 - 0.999f64.powi(2))))
        );
        assert_eq!(p.scalar("decoupled"), Some(Scalar::I32(1)));
        assert!(adam(DType::F64, 4, AdamStep { step: 0, ..s }).is_err());
    }
}
