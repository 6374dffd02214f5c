//! The vocabulary every layer shares: element types, activations and
//! elementwise binary ops. advgrad's backend trait, the launch plans and the
//! emulator all use these enums; advgrad re-exports them (`advgrad::DType`,
//! `advgrad::nn::Activation`, `advgrad::backend::Binary`).

use std::fmt;
use std::str::FromStr;

/// The element type of a tensor or a kernel buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// 32-bit IEEE float (`float`): the training type.
    F32,
    /// 64-bit IEEE float (`double`): the gradient-checking type.
    F64,
    /// Unsigned 32-bit integer (`unsigned`): class labels and argmax results.
    U32,
    /// 16-bit IEEE half (`__half`): 5 exponent bits, 10 fraction bits.
    F16,
    /// bfloat16 (`__nv_bfloat16`): f32's 8 exponent bits, 7 fraction bits.
    BF16,
}

impl DType {
    /// Size of one element in bytes.
    pub const fn size(self) -> usize {
        match self {
            DType::F16 | DType::BF16 => 2,
            DType::F32 | DType::U32 => 4,
            DType::F64 => 8,
        }
    }

    /// Whether the type is a floating-point type (and so differentiable).
    pub const fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }

    /// Whether the type is one of the 16-bit floats (f16, bf16).
    pub const fn is_half(self) -> bool {
        matches!(self, DType::F16 | DType::BF16)
    }

    /// The name: `f32`, `f64`, `u32`, `f16` or `bf16`; also the suffix of the `extern "C"`
    /// entry points instantiated for the type (`matmul_f32`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "f32",
            DType::F64 => "f64",
            DType::U32 => "u32",
            DType::F16 => "f16",
            DType::BF16 => "bf16",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// An activation function, with a backward that reads what the forward
/// saved:
///
/// | | forward `y = f(x)` | backward `dx = g·f'` | saved |
/// |---|---|---|---|
/// | `Relu` | `max(x, 0)` (`x ≤ 0 ? 0 : x`, NaN stays NaN) | `g·[x > 0]` | the input `x` |
/// | `Sigmoid` | `1/(1 + e^−x)` | `g·y·(1 − y)` | the output `y` |
/// | `Tanh` | `tanh x` | `g·(1 − y²)` | the output `y` |
///
/// GELU is not one: the fused bias-and-activation kernels keep only their
/// output, and GELU's derivative needs the input, which its output does
/// not determine. It has kernels of its own ([`crate::gelu`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Activation {
    /// `max(x, 0)`.
    Relu,
    /// `1/(1 + e^−x)`.
    Sigmoid,
    /// `tanh x`.
    Tanh,
}

impl Activation {
    /// Every activation.
    pub const ALL: [Activation; 3] = [Activation::Relu, Activation::Sigmoid, Activation::Tanh];

    /// The name used in specs, model files and kernel names.
    pub const fn name(self) -> &'static str {
        match self {
            Activation::Relu => "relu",
            Activation::Sigmoid => "sigmoid",
            Activation::Tanh => "tanh",
        }
    }

    /// The kernels' code of the activation (`ACT_*` in `common.cuh`): 0
    /// ReLU, 1 sigmoid, 2 tanh.
    pub const fn code(self) -> i32 {
        match self {
            Activation::Relu => 0,
            Activation::Sigmoid => 1,
            Activation::Tanh => 2,
        }
    }

    /// Whether the backward reads the forward's input (ReLU) rather than its
    /// output.
    pub const fn saves_input(self) -> bool {
        matches!(self, Activation::Relu)
    }
}

impl FromStr for Activation {
    type Err = ParseError;

    /// `relu`, `sigmoid` or `tanh`, in any case.
    fn from_str(s: &str) -> Result<Self, ParseError> {
        let lower = s.to_ascii_lowercase();
        Activation::ALL
            .into_iter()
            .find(|a| a.name() == lower)
            .ok_or_else(|| {
                let why = if lower == "gelu" {
                    " (GELU is an op, `Tape::gelu`, not a layer activation: the fused \
                     layers keep only their output, and GELU's derivative needs the input)"
                } else {
                    ""
                };
                ParseError(format!(
                    "unknown activation `{s}`: expected relu, sigmoid or tanh{why}"
                ))
            })
    }
}

impl fmt::Display for Activation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A same-shape elementwise binary function `y = a ∘ b`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Binary {
    /// `a + b`.
    Add,
    /// `a − b`.
    Sub,
    /// `a · b`.
    Mul,
}

impl Binary {
    /// Every binary op.
    pub const ALL: [Binary; 3] = [Binary::Add, Binary::Sub, Binary::Mul];

    /// The name, also the kernel's base name.
    pub const fn name(self) -> &'static str {
        match self {
            Binary::Add => "add",
            Binary::Sub => "sub",
            Binary::Mul => "mul",
        }
    }
}

/// A name that is not one of the names a type accepts; the message lists
/// them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError(pub String);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ParseError {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn activations_parse_their_names_in_any_case() {
        for a in Activation::ALL {
            assert_eq!(a.name().parse::<Activation>(), Ok(a));
            assert_eq!(a.name().to_uppercase().parse::<Activation>(), Ok(a));
            assert_eq!(a.to_string(), a.name());
        }
        let e = "softplus".parse::<Activation>().unwrap_err();
        assert!(e.0.contains("relu, sigmoid or tanh"), "{e}");
    }
}
