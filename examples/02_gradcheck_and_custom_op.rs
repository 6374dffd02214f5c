//! Chapter 2, a new op and its gradient check: softplus as a `CustomOp`.
//!
//! ```text
//! cargo run --release --example 02_gradcheck_and_custom_op
//! ```
//!
//! `softplus(x) = ln(1 + eˣ)`, whose derivative is the logistic sigmoid,
//! `d softplus/dx = 1/(1 + e^{−x}) = σ(x)`. An op outside the library is two
//! pieces: the forward value, computed from the inputs' values and recorded
//! with [`Tape::custom`], and a [`CustomOp`], which supplies the backward
//! rule (the vector–Jacobian product `dx = g ⊙ σ(x)`).
//!
//! The first version below makes a classic mistake: it applies σ to the
//! op's *output* instead of its input. [`gradcheck`] compares the tape's
//! gradient with central finite differences in f64 and reports the worst
//! element, so the mistake shows at once. The second version is right and
//! passes.

use std::sync::Arc;

use advgrad::ops::CustomOp;
use advgrad::{gradcheck, DType, Error, GradcheckOptions, Result, Tape, Tensor, Var};

/// The logistic sigmoid of every element of an f64 tensor.
fn sigmoid_of(t: &Tensor) -> Result<Tensor> {
    let v: Vec<f64> = t
        .to_f64_vec()?
        .iter()
        .map(|x| 1.0 / (1.0 + (-x).exp()))
        .collect();
    Tensor::from_vec(v, t.shape().clone())
}

/// Softplus with a wrong backward rule: `dx = g ⊙ σ(y)`, σ of the output.
struct SoftplusWrong;

impl CustomOp for SoftplusWrong {
    fn name(&self) -> &str {
        "softplus_wrong"
    }
    fn backward(
        &self,
        _inputs: &[&Tensor],
        output: &Tensor,
        g: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.mul(&sigmoid_of(output)?)?)])
    }
}

/// Softplus with the right backward rule: `dx = g ⊙ σ(x)`.
struct Softplus;

impl CustomOp for Softplus {
    fn name(&self) -> &str {
        "softplus"
    }
    fn backward(
        &self,
        inputs: &[&Tensor],
        _output: &Tensor,
        g: &Tensor,
    ) -> Result<Vec<Option<Tensor>>> {
        Ok(vec![Some(g.mul(&sigmoid_of(inputs[0])?)?)])
    }
}

/// Records `softplus(x)` on the tape with `op` as its backward rule. The
/// forward value is `max(x, 0) + ln(1 + e^{−|x|})`, the same function
/// written so that no `eˣ` overflows.
fn softplus(tape: &mut Tape, x: Var, op: Arc<dyn CustomOp>) -> Result<Var> {
    let value = tape.value(x)?;
    let y: Vec<f64> = value
        .to_f64_vec()?
        .iter()
        .map(|x| x.max(0.0) + (-x.abs()).exp().ln_1p())
        .collect();
    let y = Tensor::from_vec(y, value.shape().clone())?;
    tape.custom(op, &[x], y)
}

/// Checks `Σ softplus(x)·w` (the weights `w` make every element's gradient
/// different) with the backward rule `op`.
fn check(op: Arc<dyn CustomOp>, x: &Tensor, w: &Tensor) -> Result<advgrad::GradcheckReport> {
    gradcheck(
        |tape, v| {
            let y = softplus(tape, v[0], op.clone())?;
            let w = tape.constant(w.clone());
            let yw = tape.mul(y, w)?;
            tape.sum(yw)
        },
        std::slice::from_ref(x),
        &GradcheckOptions::default(),
    )
}

fn main() -> Result<()> {
    println!("Chapter 2: a custom op and its gradient check");
    println!("softplus(x) = ln(1 + e^x), d/dx softplus(x) = sigmoid(x)\n");
    let x = Tensor::rand_uniform([3, 7], -3.0, 3.0, 7, DType::F64);
    let w = Tensor::rand_uniform([3, 7], 0.5, 1.5, 8, DType::F64);

    println!("1. backward written as g * sigmoid(output), a mistake:");
    let wrong = check(Arc::new(SoftplusWrong), &x, &w)?;
    println!("{wrong}");
    match wrong.ensure_passed() {
        Ok(_) => return Err(Error::invalid("gradcheck passed a wrong backward rule")),
        Err(e) => println!("gradcheck caught it: {e}\n"),
    }

    println!("2. backward written as g * sigmoid(input), the derivative:");
    let right = check(Arc::new(Softplus), &x, &w)?;
    println!("{right}");
    let right = right.ensure_passed()?;
    println!(
        "gradcheck passed: max abs error {:.1e}, max rel error {:.1e}",
        right.max_abs_err(),
        right.max_rel_err()
    );
    Ok(())
}
