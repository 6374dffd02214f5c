//! Gradient checking: the tape's gradients against finite differences.
//!
//! For a scalar function `f` of tensors and each input element `xⱼ`, the
//! numerical derivative is the fourth-order central difference
//!
//! `∂f/∂xⱼ ≈ (−f(x+2h) + 8f(x+h) − 8f(x−h) + f(x−2h)) / 12h`
//!
//! with `h = eps·max(1, |xⱼ|)`, evaluated in f64. Its truncation error is
//! `O(h⁴)`, so with the default `eps = 1e-4` the comparison is limited by
//! rounding (about `1e-12·|f|`), not by the stencil. Keep inputs at least
//! `2h` away from kinks (ReLU at 0), where no finite difference is right.
//!
//! [`gradcheck_in`] checks the same function evaluated in f32 with its
//! matrix products in a [`Precision`] (f32, bf16 or f16): the reference
//! stays the f64 finite difference, and the tolerances are that
//! precision's ([`GradcheckOptions::for_precision`]), so the report shows
//! how far the reduced-precision gradient is from the exact one.

use std::fmt;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::precision::{autocast, Precision};
use crate::shape::Shape;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// Tolerances of a gradient check.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GradcheckOptions {
    /// Relative step of the finite difference.
    pub eps: f64,
    /// Absolute tolerance: an element passes when
    /// `|analytic − numeric| ≤ atol + rtol·|numeric|`.
    pub atol: f64,
    /// Relative tolerance (see `atol`).
    pub rtol: f64,
}

impl Default for GradcheckOptions {
    fn default() -> Self {
        GradcheckOptions {
            eps: 1e-4,
            atol: 1e-8,
            rtol: 1e-6,
        }
    }
}

impl GradcheckOptions {
    /// The tolerances of a gradient evaluated in f32 with products in
    /// `precision`: `atol = rtol = 16·u`, `u` the unit roundoff of the
    /// products' type (`2⁻²⁴`, `2⁻⁸`, `2⁻¹¹`): a few roundings of each
    /// operand and of the f32 sums along the chain of a small function.
    pub fn for_precision(precision: Precision) -> GradcheckOptions {
        let tol = 16.0 * precision.unit_roundoff();
        GradcheckOptions {
            atol: tol,
            rtol: tol,
            ..GradcheckOptions::default()
        }
    }
}

/// The comparison for one input tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct InputReport {
    /// Position of the input in the `inputs` slice.
    pub input: usize,
    /// Its shape.
    pub shape: Shape,
    /// `maxⱼ |analyticⱼ − numericⱼ|`.
    pub max_abs_err: f64,
    /// `maxⱼ |analyticⱼ − numericⱼ| / max(|analyticⱼ|, |numericⱼ|)` over the
    /// elements where that denominator exceeds `atol`.
    pub max_rel_err: f64,
    /// Multi-index of the element that fails worst (largest
    /// `|a − n| − rtol·|n|`).
    pub worst_index: Vec<usize>,
    /// The tape's derivative at `worst_index`.
    pub analytic: f64,
    /// The finite-difference derivative at `worst_index`.
    pub numeric: f64,
    /// Whether every element is within tolerance.
    pub passed: bool,
}

/// The result of [`gradcheck`]: one [`InputReport`] per input.
#[derive(Clone, Debug, PartialEq)]
pub struct GradcheckReport {
    /// Per-input comparisons.
    pub inputs: Vec<InputReport>,
    /// The tolerances used.
    pub options: GradcheckOptions,
    /// What the analytic gradient was computed in: `None` for f64, else
    /// f32 with products in this precision ([`gradcheck_in`]).
    pub products: Option<Precision>,
}

impl GradcheckReport {
    /// Whether every input passed.
    pub fn passed(&self) -> bool {
        self.inputs.iter().all(|r| r.passed)
    }

    /// The largest absolute error over all inputs.
    pub fn max_abs_err(&self) -> f64 {
        self.inputs
            .iter()
            .map(|r| r.max_abs_err)
            .fold(0.0, f64::max)
    }

    /// The largest relative error over all inputs.
    pub fn max_rel_err(&self) -> f64 {
        self.inputs
            .iter()
            .map(|r| r.max_rel_err)
            .fold(0.0, f64::max)
    }

    /// `Ok(self)` if every input passed, else an error describing the worst
    /// element of the first failing input.
    pub fn ensure_passed(self) -> Result<Self> {
        match self.inputs.iter().find(|r| !r.passed) {
            None => Ok(self),
            Some(r) => Err(Error::invalid(format!(
                "gradcheck failed for input {} (shape {}) at index {:?}: analytic {:.9e} vs numeric {:.9e} \
                 (abs err {:.3e}, rel err {:.3e}; atol {:e}, rtol {:e})",
                r.input,
                r.shape,
                r.worst_index,
                r.analytic,
                r.numeric,
                r.max_abs_err,
                r.max_rel_err,
                self.options.atol,
                self.options.rtol
            ))),
        }
    }
}

impl fmt::Display for GradcheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(p) = self.products {
            writeln!(
                f,
                "gradient in f32 with {p} products against the f64 reference \
                 (atol {:e}, rtol {:e})",
                self.options.atol, self.options.rtol
            )?;
        }
        writeln!(
            f,
            "{:<6} {:<12} {:>12} {:>12} {:<14} {:>16} {:>16}  result",
            "input", "shape", "max abs err", "max rel err", "worst index", "analytic", "numeric"
        )?;
        for r in &self.inputs {
            writeln!(
                f,
                "{:<6} {:<12} {:>12.3e} {:>12.3e} {:<14} {:>16.9e} {:>16.9e}  {}",
                r.input,
                r.shape.to_string(),
                r.max_abs_err,
                r.max_rel_err,
                format!("{:?}", r.worst_index),
                r.analytic,
                r.numeric,
                if r.passed { "ok" } else { "FAIL" }
            )?;
        }
        Ok(())
    }
}

fn eval_scalar<F>(f: &F, inputs: &[Tensor]) -> Result<f64>
where
    F: Fn(&mut Tape, &[Var]) -> Result<Var>,
{
    let mut tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|t| tape.constant(t.clone())).collect();
    let out = f(&mut tape, &vars)?;
    tape.value(out)?.to_scalar()
}

fn unravel(mut flat: usize, dims: &[usize]) -> Vec<usize> {
    let mut idx = vec![0; dims.len()];
    for (i, &d) in dims.iter().enumerate().rev() {
        if d > 0 {
            idx[i] = flat % d;
            flat /= d;
        }
    }
    idx
}

/// Checks the tape's gradient of the scalar function `f` at `inputs` against
/// fourth-order central finite differences (see the module documentation).
///
/// `f` receives a fresh tape and one variable per input (in order) and
/// returns the variable of its scalar result. Inputs must be f64.
///
/// ```
/// use advgrad::{gradcheck, GradcheckOptions, Tensor, DType};
/// let x = Tensor::rand_uniform([3, 4], -1.0, 1.0, 0, DType::F64);
/// let report = gradcheck(
///     |tape, v| { let y = tape.tanh(v[0])?; tape.sum(y) },
///     &[x],
///     &GradcheckOptions::default(),
/// )?;
/// assert!(report.passed(), "{report}");
/// # Ok::<(), advgrad::Error>(())
/// ```
pub fn gradcheck<F>(f: F, inputs: &[Tensor], options: &GradcheckOptions) -> Result<GradcheckReport>
where
    F: Fn(&mut Tape, &[Var]) -> Result<Var>,
{
    check(f, inputs, options, None)
}

/// [`gradcheck`] of `f` evaluated in f32 with its matrix products in
/// `precision`: the inputs (f64) are rounded to f32, the tape's gradient
/// is taken under [`autocast`]`(precision, …)`, and each element is
/// compared with the f64 finite difference of `f` in f64. Use
/// [`GradcheckOptions::for_precision`] for the tolerances.
///
/// ```
/// use advgrad::{gradcheck_in, GradcheckOptions, Precision, Tensor, DType};
/// let x = Tensor::rand_uniform([4, 30], -1.0, 1.0, 0, DType::F64);
/// let w = Tensor::rand_uniform([30, 5], -1.0, 1.0, 1, DType::F64);
/// let f = |tape: &mut advgrad::Tape, v: &[advgrad::Var]| {
///     let y = tape.matmul(v[0], v[1])?;
///     let y = tape.tanh(y)?;
///     tape.sum(y)
/// };
/// let bf16 = GradcheckOptions::for_precision(Precision::Bf16);
/// let report = gradcheck_in(f, &[x, w], &bf16, Precision::Bf16)?;
/// assert!(report.passed(), "{report}");
/// assert!(report.max_abs_err() > 1e-4); // bf16 shows
/// # Ok::<(), advgrad::Error>(())
/// ```
pub fn gradcheck_in<F>(
    f: F,
    inputs: &[Tensor],
    options: &GradcheckOptions,
    precision: Precision,
) -> Result<GradcheckReport>
where
    F: Fn(&mut Tape, &[Var]) -> Result<Var>,
{
    check(f, inputs, options, Some(precision))
}

/// The check, with the analytic gradient in f64 (`products: None`) or in
/// f32 with products in a precision.
fn check<F>(
    f: F,
    inputs: &[Tensor],
    options: &GradcheckOptions,
    products: Option<Precision>,
) -> Result<GradcheckReport>
where
    F: Fn(&mut Tape, &[Var]) -> Result<Var>,
{
    let GradcheckOptions { eps, atol, rtol } = *options;
    let valid = eps > 0.0 && eps.is_finite() && atol >= 0.0 && rtol >= 0.0;
    if !valid {
        return Err(Error::invalid(format!(
            "gradcheck: the step eps must be a positive finite number and the tolerances \
             atol and rtol ≥ 0, got eps {eps}, atol {atol}, rtol {rtol}"
        )));
    }
    for (i, t) in inputs.iter().enumerate() {
        if t.dtype() != DType::F64 {
            return Err(Error::invalid(format!(
                "gradcheck: input {i} (shape {}) is {}; finite differences need f64 inputs: \
                 convert with `.to_dtype(DType::F64)`",
                t.shape(),
                t.dtype()
            )));
        }
    }

    let mut tape = Tape::new();
    let evaluated: Vec<Tensor> = match products {
        None => inputs.to_vec(),
        Some(_) => inputs
            .iter()
            .map(|t| t.to_dtype(DType::F32))
            .collect::<Result<_>>()?,
    };
    let vars: Vec<Var> = evaluated.into_iter().map(|t| tape.var(t)).collect();
    let out = autocast(products.unwrap_or_default(), || f(&mut tape, &vars))?;
    if tape.value(out)?.numel() != 1 {
        return Err(Error::invalid(format!(
            "gradcheck: the function must return a scalar, got shape {}; reduce it with tape.sum(..)",
            tape.value(out)?.shape()
        )));
    }
    tape.backward(out)?;

    let mut reports = Vec::with_capacity(inputs.len());
    for (i, (input, &var)) in inputs.iter().zip(&vars).enumerate() {
        let analytic = match tape.grad(var) {
            Some(g) => g.to_f64_vec()?,
            None => vec![0.0; input.numel()],
        };
        let base = input.to_f64_vec()?;
        let mut point: Vec<Tensor> = inputs.to_vec();
        let mut eval_at = |j: usize, x: f64| -> Result<f64> {
            let mut v = base.clone();
            v[j] = x;
            point[i] = Tensor::from_vec(v, input.shape().clone())?.to_device(input.device())?;
            eval_scalar(&f, &point)
        };
        let mut report = InputReport {
            input: i,
            shape: input.shape().clone(),
            max_abs_err: 0.0,
            max_rel_err: 0.0,
            worst_index: Vec::new(),
            analytic: 0.0,
            numeric: 0.0,
            passed: true,
        };
        let mut worst_excess = f64::NEG_INFINITY;
        for j in 0..base.len() {
            let h = options.eps * base[j].abs().max(1.0);
            let f2p = eval_at(j, base[j] + 2.0 * h)?;
            let f1p = eval_at(j, base[j] + h)?;
            let f1m = eval_at(j, base[j] - h)?;
            let f2m = eval_at(j, base[j] - 2.0 * h)?;
            let numeric = (-f2p + 8.0 * f1p - 8.0 * f1m + f2m) / (12.0 * h);
            let a = analytic[j];
            let err = (a - numeric).abs();
            let scale = a.abs().max(numeric.abs());
            report.max_abs_err = report.max_abs_err.max(err);
            if scale > options.atol {
                report.max_rel_err = report.max_rel_err.max(err / scale);
            }
            let ok = err <= options.atol + options.rtol * numeric.abs();
            report.passed &= ok && a.is_finite() && numeric.is_finite();
            let excess = if err.is_nan() {
                f64::INFINITY
            } else {
                err - options.rtol * numeric.abs()
            };
            if excess > worst_excess {
                worst_excess = excess;
                report.worst_index = unravel(j, input.dims());
                report.analytic = a;
                report.numeric = numeric;
            }
        }
        reports.push(report);
    }
    Ok(GradcheckReport {
        inputs: reports,
        options: *options,
        products,
    })
}

pub mod suite;
