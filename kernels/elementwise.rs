//! Launches of `elementwise.cu`: elementwise arithmetic the ops, the
//! optimisers and the attacks need, all grid-stride over `n = rows × cols`
//! elements (see that file for each formula).

use crate::grid_stride::{in_place, input, output, row_input, scalar_input, GridStride, Slot};
use crate::types::Binary;

/// The parameters of the binary kernels.
const BINARY: &[Slot] = &[input("a"), input("b"), output("y"), Slot::Count];

/// `y = a + b`.
pub const ADD: GridStride = GridStride {
    base: Binary::Add.name(),
    slots: BINARY,
};
/// `y = a − b`.
pub const SUB: GridStride = GridStride {
    base: Binary::Sub.name(),
    slots: BINARY,
};
/// `y = a · b`.
pub const MUL: GridStride = GridStride {
    base: Binary::Mul.name(),
    slots: BINARY,
};

/// The kernel of `y = a ∘ b`.
pub const fn binary(op: Binary) -> &'static GridStride {
    match op {
        Binary::Add => &ADD,
        Binary::Sub => &SUB,
        Binary::Mul => &MUL,
    }
}

/// Bias add over a `rows × cols` extent: `y[r, c] = x[r, c] + b[c]`.
pub const ADD_ROW: GridStride = GridStride {
    base: "add_row",
    slots: &[
        input("x"),
        row_input("b"),
        output("y"),
        Slot::Count,
        Slot::Cols,
    ],
};

/// `y = alpha·x + beta`; values `[alpha, beta]`.
pub const AFFINE: GridStride = GridStride {
    base: "affine",
    slots: &[
        input("x"),
        output("y"),
        Slot::Scalar("alpha"),
        Slot::Scalar("beta"),
        Slot::Count,
    ],
};

/// `y += alpha·x` in place; values `[alpha]`.
pub const AXPY: GridStride = GridStride {
    base: "axpy",
    slots: &[
        input("x"),
        in_place("y"),
        Slot::Scalar("alpha"),
        Slot::Count,
    ],
};

/// `y = sign x` (0 for ±0, NaN for NaN).
pub const SIGN: GridStride = GridStride {
    base: "sign",
    slots: &[input("x"), output("y"), Slot::Count],
};

/// `y = min(max(x, lo), hi)`; values `[lo, hi]`.
pub const CLAMP: GridStride = GridStride {
    base: "clamp",
    slots: &[
        input("x"),
        output("y"),
        Slot::Scalar("lo"),
        Slot::Scalar("hi"),
        Slot::Count,
    ],
};

/// Projection onto the L∞ ball of radius `eps` around `x0`, intersected
/// with `[lo, hi]`: `y = min(max(x, max(x0 − eps, lo)), min(x0 + eps, hi))`;
/// values `[eps, lo, hi]`.
pub const PROJECT_LINF: GridStride = GridStride {
    base: "project_linf",
    slots: &[
        input("x"),
        input("x0"),
        output("y"),
        Slot::Scalar("eps"),
        Slot::Scalar("lo"),
        Slot::Scalar("hi"),
        Slot::Count,
    ],
};

/// One signed-gradient step projected back, in one pass:
/// `y = min(max(x + alpha·sign g, max(x0 − eps, lo)), min(x0 + eps, hi))`
/// (the update of FGSM, BIM and L∞ PGD); values `[alpha, eps, lo, hi]`.
pub const SIGN_STEP: GridStride = GridStride {
    base: "sign_step",
    slots: &[
        input("x"),
        input("g"),
        input("x0"),
        output("y"),
        Slot::Scalar("alpha"),
        Slot::Scalar("eps"),
        Slot::Scalar("lo"),
        Slot::Scalar("hi"),
        Slot::Count,
    ],
};

/// `y = value`; values `[value]`.
pub const FILL: GridStride = GridStride {
    base: "fill",
    slots: &[output("y"), Slot::Scalar("value"), Slot::Count],
};

/// `y = s[0]·scale` from a device scalar `s` (the backward of sum with
/// `scale = 1` and of mean with `scale = 1/n`); values `[scale]`.
pub const FILL_SCALAR: GridStride = GridStride {
    base: "fill_scalar",
    slots: &[
        scalar_input("s"),
        output("y"),
        Slot::Scalar("scale"),
        Slot::Count,
    ],
};

/// `y = x·s[0]·scale` with a device scalar `s`; values `[scale]`.
pub const SCALE_SCALAR: GridStride = GridStride {
    base: "scale_scalar",
    slots: &[
        input("x"),
        scalar_input("s"),
        output("y"),
        Slot::Scalar("scale"),
        Slot::Count,
    ],
};

/// The base names of the kernels in `elementwise.cu`.
pub const KERNELS: &[&str] = &[
    ADD.base,
    SUB.base,
    MUL.base,
    ADD_ROW.base,
    AFFINE.base,
    AXPY.base,
    SIGN.base,
    CLAMP.base,
    PROJECT_LINF.base,
    SIGN_STEP.base,
    FILL.base,
    FILL_SCALAR.base,
    SCALE_SCALAR.base,
];
