//! The [`BackendStorage`] kernels of the CUDA backend: each op checks its
//! operands, asks [`plan`] for the launch, allocates the outputs on the
//! operands' GPU and launches. No op reads device memory back to the host
//! (the one exception is the error path of a label check, see
//! [`CudaStorage`]).
//!
//! Semantics follow the CPU backend (`src/backend/cpu/kernels.rs`), the
//! reference; `tests/simt_kernels.rs` (emulated) and `tests/cuda_parity.rs`
//! (on a GPU) compare the two.

use super::launch::{launch, plan_err, Arg};
use super::plan::{self, Activation, AdamStep, Elem, LaunchPlan};
use super::storage::{Buffer, CudaStorage};
use crate::backend::cpu::CpuStorage;
use crate::backend::{BackendStorage, Binary, MatmulDims, Unary, UpdateRule};
use crate::dtype::DType;
use crate::error::{Error, Result};

/// The kernel element type of a float buffer.
fn float_elem(op: &'static str, s: &CudaStorage) -> Result<Elem> {
    match s.dtype_of() {
        DType::F32 => Ok(Elem::F32),
        DType::F64 => Ok(Elem::F64),
        dtype => Err(Error::UnsupportedDType { op, dtype }),
    }
}

/// The common float type of `a` and the `others`, all on `a`'s GPU.
fn floats(op: &'static str, a: &CudaStorage, others: &[&CudaStorage]) -> Result<Elem> {
    for b in others {
        if b.dtype_of() != a.dtype_of() {
            return Err(Error::DTypeMismatch {
                op,
                lhs: a.dtype_of(),
                rhs: b.dtype_of(),
            });
        }
        same_gpu(op, a, b)?;
    }
    float_elem(op, a)
}

fn same_gpu(op: &'static str, a: &CudaStorage, b: &CudaStorage) -> Result<()> {
    if a.gpu.ordinal() == b.gpu.ordinal() {
        Ok(())
    } else {
        Err(Error::DeviceMismatch {
            op,
            lhs: a.device().to_string(),
            rhs: b.device().to_string(),
        })
    }
}

fn check_len(op: &'static str, what: &str, got: usize, want: usize) -> Result<()> {
    if got == want {
        Ok(())
    } else {
        Err(Error::invalid(format!(
            "{op}: {what} has {got} elements, expected {want}"
        )))
    }
}

/// Rows of a buffer of `len` elements with `cols` columns.
fn rows_of(op: &'static str, len: usize, cols: usize) -> Result<usize> {
    if cols == 0 || !len.is_multiple_of(cols) {
        return Err(Error::invalid(format!(
            "{op}: {len} elements do not form rows of {cols} columns"
        )));
    }
    Ok(len / cols)
}

fn labels_buf<'a>(op: &'static str, labels: &'a CudaStorage) -> Result<&'a CudaStorage> {
    match labels.dtype_of() {
        DType::U32 => Ok(labels),
        other => Err(Error::invalid(format!(
            "{op}: labels must be u32, got {other}"
        ))),
    }
}

impl CudaStorage {
    /// Launches a plan whose buffers are `inputs` then one new output of
    /// `out_len` elements of `elem`, and returns the output.
    fn run(
        &self,
        plan: &LaunchPlan,
        inputs: &[&Buffer],
        elem: Elem,
        out_len: usize,
    ) -> Result<CudaStorage> {
        let mut out = self.output(elem, out_len)?;
        let mut args: Vec<Arg<'_>> = inputs.iter().map(|b| Arg::In(b)).collect();
        args.push(Arg::Out(&mut out));
        launch(&self.gpu, plan, &mut args)?;
        Ok(self.wrap(out, out_len))
    }

    /// Sum of all elements (`scale = 1`) or their mean (`scale = 1/n`) as a
    /// one-element buffer: two deterministic passes.
    fn reduce(&self, elem: Elem, mean: bool) -> Result<CudaStorage> {
        let [p1, p2] = plan::sum(elem, self.len, mean).map_err(plan_err)?;
        let mut partials = self.output(elem, plan::reduce_blocks(self.len) as usize)?;
        launch(
            &self.gpu,
            &p1,
            &mut [Arg::In(&self.buf), Arg::Out(&mut partials)],
        )?;
        self.run(&p2, &[&partials], elem, 1)
    }

    /// Fails with the CPU backend's error when a label is `>= classes`.
    /// Free when the labels' upper bound is known to be in range; otherwise
    /// the labels are read back to find the offending row.
    fn check_labels(&self, op: &'static str, classes: usize) -> Result<()> {
        match self.label_bound {
            Some(b) if (b as usize) < classes => return Ok(()),
            None if self.len == 0 => return Ok(()),
            _ => {}
        }
        if let CpuStorage::U32(v) = self.to_host()? {
            if let Some((row, &label)) = v.iter().enumerate().find(|(_, &l)| l as usize >= classes)
            {
                return Err(Error::LabelOutOfRange {
                    op,
                    row,
                    label: label as u64,
                    classes,
                });
            }
        }
        Ok(())
    }
}

impl BackendStorage for CudaStorage {
    fn dtype(&self) -> DType {
        self.dtype_of()
    }

    fn len(&self) -> usize {
        self.len
    }

    fn to_cpu(&self) -> Result<CpuStorage> {
        self.to_host()
    }

    fn matmul(&self, rhs: &Self, d: MatmulDims) -> Result<Self> {
        let op = "matmul";
        let e = floats(op, self, &[rhs])?;
        let p = plan::matmul(e, d.m, d.n, d.k, d.a_trans, d.b_trans, false).map_err(plan_err)?;
        check_len(op, "A", self.len, d.m * d.k)?;
        check_len(op, "B", rhs.len, d.k * d.n)?;
        self.run(&p, &[&self.buf, &rhs.buf], e, d.m * d.n)
    }

    fn unary(&self, op: Unary) -> Result<Self> {
        let e = float_elem("unary", self)?;
        let n = self.len;
        let p = match op {
            Unary::Relu => plan::activation_fwd(Activation::Relu, e, n),
            Unary::Sigmoid => plan::activation_fwd(Activation::Sigmoid, e, n),
            Unary::Tanh => plan::activation_fwd(Activation::Tanh, e, n),
            Unary::Sign => plan::sign(e, n),
        }
        .map_err(plan_err)?;
        self.run(&p, &[&self.buf], e, n)
    }

    fn unary_backward(&self, saved: &Self, op: Unary) -> Result<Self> {
        let name = "unary_backward";
        let e = floats(name, self, &[saved])?;
        let n = self.len;
        check_len(name, "the saved tensor", saved.len, n)?;
        let act = match op {
            Unary::Relu => Activation::Relu,
            Unary::Sigmoid => Activation::Sigmoid,
            Unary::Tanh => Activation::Tanh,
            Unary::Sign => {
                let p = plan::fill(e, n, 0.0).map_err(plan_err)?;
                return self.run(&p, &[], e, n);
            }
        };
        let p = plan::activation_bwd(act, e, n).map_err(plan_err)?;
        self.run(&p, &[&saved.buf, &self.buf], e, n)
    }

    fn binary(&self, rhs: &Self, op: Binary) -> Result<Self> {
        let name = "binary";
        let e = floats(name, self, &[rhs])?;
        check_len(name, "rhs", rhs.len, self.len)?;
        let op = match op {
            Binary::Add => plan::Binary::Add,
            Binary::Sub => plan::Binary::Sub,
            Binary::Mul => plan::Binary::Mul,
        };
        let p = plan::binary(op, e, self.len).map_err(plan_err)?;
        self.run(&p, &[&self.buf, &rhs.buf], e, self.len)
    }

    fn affine(&self, mul: f64, add: f64) -> Result<Self> {
        let e = float_elem("affine", self)?;
        let p = plan::affine(e, self.len, mul, add).map_err(plan_err)?;
        self.run(&p, &[&self.buf], e, self.len)
    }

    fn add_row(&self, row: &Self, cols: usize) -> Result<Self> {
        let op = "add_row";
        let e = floats(op, self, &[row])?;
        if self.len == 0 {
            return self.run(&plan::fill(e, 0, 0.0).map_err(plan_err)?, &[], e, 0);
        }
        let rows = rows_of(op, self.len, cols)?;
        check_len(op, "the row", row.len, cols)?;
        let p = plan::add_row(e, rows, cols).map_err(plan_err)?;
        self.run(&p, &[&self.buf, &row.buf], e, self.len)
    }

    fn sum_rows(&self, cols: usize) -> Result<Self> {
        let op = "sum_rows";
        let e = float_elem(op, self)?;
        let rows = if self.len == 0 {
            0
        } else {
            rows_of(op, self.len, cols)?
        };
        let p = plan::sum_rows(e, rows, cols).map_err(plan_err)?;
        self.run(&p, &[&self.buf], e, cols)
    }

    fn sum_all(&self) -> Result<Self> {
        let e = float_elem("sum", self)?;
        self.reduce(e, false)
    }

    fn broadcast_scalar(&self, len: usize, scale: f64) -> Result<Self> {
        let op = "broadcast_scalar";
        let e = float_elem(op, self)?;
        if self.len == 0 {
            return Err(Error::invalid("broadcast_scalar: empty scalar buffer"));
        }
        let p = plan::fill_scalar(e, len, scale).map_err(plan_err)?;
        self.run(&p, &[&self.buf], e, len)
    }

    fn softmax_xent(&self, labels: &Self, classes: usize) -> Result<(Self, Self)> {
        let op = "softmax_cross_entropy";
        let labels = labels_buf(op, labels)?;
        same_gpu(op, self, labels)?;
        let e = float_elem(op, self)?;
        let rows = labels.len;
        check_len(op, "the logits", self.len, rows.saturating_mul(classes))?;
        labels.check_labels(op, classes)?;
        let p = plan::softmax_xent_fwd(e, rows, classes).map_err(plan_err)?;
        let mut losses = self.output(e, rows)?;
        let mut probs = self.output(e, self.len)?;
        launch(
            &self.gpu,
            &p,
            &mut [
                Arg::In(&self.buf),
                Arg::In(&labels.buf),
                Arg::Out(&mut losses),
                Arg::Out(&mut probs),
            ],
        )?;
        let losses = self.wrap(losses, rows);
        Ok((losses.reduce(e, true)?, self.wrap(probs, self.len)))
    }

    fn softmax_xent_backward(&self, labels: &Self, grad: &Self, classes: usize) -> Result<Self> {
        let op = "softmax_cross_entropy_backward";
        let labels = labels_buf(op, labels)?;
        same_gpu(op, self, labels)?;
        let e = floats(op, self, &[grad])?;
        if grad.len == 0 {
            return Err(Error::invalid(format!("{op}: empty upstream gradient")));
        }
        let rows = labels.len;
        check_len(
            op,
            "the probabilities",
            self.len,
            rows.saturating_mul(classes),
        )?;
        labels.check_labels(op, classes)?;
        let p = plan::softmax_xent_bwd(e, rows, classes).map_err(plan_err)?;
        self.run(&p, &[&self.buf, &labels.buf, &grad.buf], e, self.len)
    }

    fn clamp(&self, lo: f64, hi: f64) -> Result<Self> {
        let e = float_elem("clamp", self)?;
        let p = plan::clamp(e, self.len, lo, hi).map_err(plan_err)?;
        self.run(&p, &[&self.buf], e, self.len)
    }

    fn project_linf(&self, center: &Self, eps: f64, lo: f64, hi: f64) -> Result<Self> {
        let op = "project_linf";
        let e = floats(op, self, &[center])?;
        check_len(op, "the center", center.len, self.len)?;
        let p = plan::project_linf(e, self.len, eps, lo, hi).map_err(plan_err)?;
        self.run(&p, &[&self.buf, &center.buf], e, self.len)
    }

    fn argmax_rows(&self, cols: usize) -> Result<Self> {
        let op = "argmax";
        let e = float_elem(op, self)?;
        if cols == 0 {
            let p = plan::argmax_rows(e, 0, 1).map_err(plan_err)?;
            return self.run(&p, &[&self.buf], Elem::U32, 0);
        }
        let rows = if self.len == 0 {
            0
        } else {
            rows_of(op, self.len, cols)?
        };
        let p = plan::argmax_rows(e, rows, cols).map_err(plan_err)?;
        let mut out = self.run(&p, &[&self.buf], Elem::U32, rows)?;
        out.label_bound = (rows > 0).then(|| u32::try_from(cols - 1).unwrap_or(u32::MAX));
        Ok(out)
    }

    fn axpy(&mut self, alpha: f64, x: &Self) -> Result<()> {
        let op = "axpy";
        let e = floats(op, self, &[x])?;
        check_len(op, "x", x.len, self.len)?;
        let p = plan::axpy(e, self.len, alpha).map_err(plan_err)?;
        let gpu = self.gpu.clone();
        let y = self.buf_mut()?;
        launch(&gpu, &p, &mut [Arg::In(&x.buf), Arg::Out(y)])
    }

    fn update(
        &mut self,
        grad: &Self,
        s1: &mut Self,
        s2: &mut Self,
        rule: UpdateRule,
    ) -> Result<()> {
        let op = "update";
        let e = floats(op, self, &[grad, s1, s2])?;
        let n = self.len;
        check_len(op, "the gradient", grad.len, n)?;
        let gpu = self.gpu.clone();
        match rule {
            UpdateRule::Sgd {
                lr,
                momentum,
                nesterov,
                weight_decay,
            } => {
                if momentum == 0.0 {
                    // Plain SGD: the velocity buffer is not touched.
                    let p = plan::sgd(e, n, lr, weight_decay).map_err(plan_err)?;
                    let w = self.buf_mut()?;
                    return launch(&gpu, &p, &mut [Arg::Out(w), Arg::In(&grad.buf)]);
                }
                check_len(op, "the velocity", s1.len, n)?;
                let p = plan::sgd_momentum(e, n, lr, momentum, weight_decay, nesterov)
                    .map_err(plan_err)?;
                let w = self.buf_mut()?;
                let v = s1.buf_mut()?;
                launch(
                    &gpu,
                    &p,
                    &mut [Arg::Out(w), Arg::In(&grad.buf), Arg::Out(v)],
                )
            }
            UpdateRule::Adam {
                lr,
                beta1,
                beta2,
                eps,
                weight_decay,
                t,
            } => {
                check_len(op, "Adam's first moment", s1.len, n)?;
                check_len(op, "Adam's second moment", s2.len, n)?;
                let step = AdamStep {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                    decoupled: false,
                    step: t,
                };
                let p = plan::adam(e, n, step).map_err(plan_err)?;
                let w = self.buf_mut()?;
                let m = s1.buf_mut()?;
                let v = s2.buf_mut()?;
                launch(
                    &gpu,
                    &p,
                    &mut [Arg::Out(w), Arg::In(&grad.buf), Arg::Out(m), Arg::Out(v)],
                )
            }
        }
    }
}
