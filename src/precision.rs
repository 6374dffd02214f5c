//! Mixed precision: the type matrix products run in, and the autocast
//! setting that picks it.
//!
//! Under [`autocast`]`(Precision::Bf16, …)` every f32 matrix product the
//! code inside makes — [`Tensor::matmul_ex`](crate::Tensor::matmul_ex),
//! [`Tensor::linear_act`](crate::Tensor::linear_act), their tape ops and
//! the products of their backward passes — rounds its operands to bf16 as
//! it packs them and sums in f32 ([`gemm_half`](crate::backend::cpu::gemm::gemm_half)),
//! with an f32 result. Everything else stays f32: parameters (the master
//! weights), optimiser state, biases, activations, softmax, losses,
//! reductions, and an attack's perturbation and projection. f64 tensors are
//! never autocast (gradient checks stay exact). This is PyTorch's
//! `torch.autocast` rule; like it, the setting belongs to the thread, and a
//! tape records with each product the precision it ran in, so its backward
//! pass uses the same one wherever it runs.
//!
//! ```
//! use advgrad::precision::{autocast, Precision};
//! use advgrad::{DType, Tensor};
//! let a = Tensor::from_vec(vec![1.0f32 + 1.0 / 256.0], [1, 1])?; // not a bf16 value
//! let exact = a.matmul(&a)?.to_vec::<f32>()?[0];
//! let in_bf16 = autocast(Precision::Bf16, || a.matmul(&a))?.to_vec::<f32>()?[0];
//! assert_eq!(in_bf16, 1.0); // 1 + 2⁻⁸ rounds to 1 (ties to even)
//! assert!(exact > 1.0);
//! # Ok::<(), advgrad::Error>(())
//! ```

use std::cell::Cell;
use std::fmt;
use std::str::FromStr;

use crate::dtype::DType;
use crate::error::{Error, Result};

/// The type the operands of a matrix product are rounded to; the sums and
/// the result are f32 in every case.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Precision {
    /// Operands as they are (f32): exact products.
    #[default]
    F32,
    /// Operands rounded to bfloat16 (8 significant bits, f32's range).
    Bf16,
    /// Operands rounded to IEEE half (11 significant bits, at most 65504):
    /// training needs loss scaling ([`crate::loss_scale::LossScaler`]).
    F16,
}

impl Precision {
    /// Every precision.
    pub const ALL: [Precision; 3] = [Precision::F32, Precision::Bf16, Precision::F16];

    /// The name: `f32`, `bf16` or `f16`.
    pub const fn name(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Bf16 => "bf16",
            Precision::F16 => "f16",
        }
    }

    /// The element type the product's operands are rounded to.
    pub const fn dtype(self) -> DType {
        match self {
            Precision::F32 => DType::F32,
            Precision::Bf16 => DType::BF16,
            Precision::F16 => DType::F16,
        }
    }

    /// The precision whose products round to `dtype` (f32 and f64: none).
    pub const fn of_dtype(dtype: DType) -> Precision {
        match dtype {
            DType::BF16 => Precision::Bf16,
            DType::F16 => Precision::F16,
            _ => Precision::F32,
        }
    }

    /// The unit roundoff of the operand type: half an ulp of 1, the largest
    /// relative error of rounding a value in its normal range
    /// (`2⁻²⁴`, `2⁻⁸`, `2⁻¹¹`).
    pub fn unit_roundoff(self) -> f64 {
        match self {
            Precision::F32 => 2f64.powi(-24),
            Precision::Bf16 => 2f64.powi(-8),
            Precision::F16 => 2f64.powi(-11),
        }
    }

    /// Whether operands are rounded to a 16-bit type.
    pub const fn is_half(self) -> bool {
        !matches!(self, Precision::F32)
    }

    /// The precision of matrix products on this thread now (see
    /// [`autocast`]); f32 unless set.
    pub fn current() -> Precision {
        AUTOCAST.with(Cell::get)
    }

    /// The precision a product of operands of types `a` and `b` runs in
    /// here: a half operand's type, else the thread's setting. A tape
    /// records this with the op, so that the backward products of a
    /// product with a bf16 weight round their f32 operands to bf16 too.
    pub fn for_operands(a: DType, b: DType) -> Precision {
        match (a.is_half(), b.is_half()) {
            (true, _) => Precision::of_dtype(a),
            (_, true) => Precision::of_dtype(b),
            _ => Precision::current(),
        }
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Precision {
    type Err = Error;

    /// `f32`, `bf16` or `f16`, in any case.
    fn from_str(s: &str) -> Result<Precision> {
        let lower = s.to_ascii_lowercase();
        Precision::ALL
            .into_iter()
            .find(|p| p.name() == lower)
            .ok_or_else(|| {
                Error::invalid(format!(
                    "unknown precision `{s}`: expected f32, bf16 or f16"
                ))
            })
    }
}

thread_local! {
    static AUTOCAST: Cell<Precision> = const { Cell::new(Precision::F32) };
}

/// Runs `f` with the matrix products of this thread in `precision`, then
/// restores the previous setting (also when `f` panics).
pub fn autocast<R>(precision: Precision, f: impl FnOnce() -> R) -> R {
    /// Puts the previous setting back when dropped.
    struct Restore(Precision);
    impl Drop for Restore {
        fn drop(&mut self) {
            AUTOCAST.with(|c| c.set(self.0));
        }
    }
    let _restore = Restore(AUTOCAST.with(|c| c.replace(precision)));
    f()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn autocast_nests_and_restores() {
        assert_eq!(Precision::current(), Precision::F32);
        autocast(Precision::Bf16, || {
            assert_eq!(Precision::current(), Precision::Bf16);
            autocast(Precision::F16, || {
                assert_eq!(Precision::current(), Precision::F16)
            });
            assert_eq!(Precision::current(), Precision::Bf16);
        });
        assert_eq!(Precision::current(), Precision::F32);
        let caught = std::panic::catch_unwind(|| autocast(Precision::F16, || panic!("inside")));
        assert!(caught.is_err());
        assert_eq!(Precision::current(), Precision::F32);
    }

    #[test]
    fn names_parse() {
        for p in Precision::ALL {
            assert_eq!(p.name().parse::<Precision>().unwrap(), p);
            assert_eq!(p.name().to_uppercase().parse::<Precision>().unwrap(), p);
        }
        let e = "fp8".parse::<Precision>().unwrap_err().to_string();
        assert!(e.contains("f32, bf16 or f16"), "{e}");
    }
}
