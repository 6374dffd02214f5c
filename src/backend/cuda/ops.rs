//! The [`BackendStorage`] kernels of the CUDA backend, for either launcher:
//! each op checks its operands, plans the launch (the `kernels` crate),
//! allocates the outputs on the operands' device and launches. No op reads
//! device memory back to the host (the one exception is the error path of
//! a label check, see [`CudaStorage`]).
//!
//! Semantics follow the CPU backend (`src/backend/cpu/kernels.rs`), the
//! reference; `tests/cuda_parity.rs` compares the two on the emulator and,
//! where one is present, on a GPU.

use kernels::grid_stride::Extent;
use kernels::matmul::{Epilogue, Tile, Tuning};
use kernels::optim::AdamStep;
use kernels::{
    activation, cast, elementwise, gelu, matmul, matmul_half, optim, reduce, softmax_xent, tally,
    LaunchPlan,
};

use super::launch::{launch, plan_err, Arg, Launcher};
use super::storage::CudaStorage;
use crate::backend::cpu::mixed::half_type;
use crate::backend::cpu::CpuStorage;
use crate::backend::{
    Activation, BackendStorage, Binary, Conv2dDims, MatmulDims, Norm, PoolDims, UpdateRule,
};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::precision::Precision;

mod conv;
mod robust;

/// The element type of a float buffer.
fn float_type<L: Launcher>(op: &'static str, s: &CudaStorage<L>) -> Result<DType> {
    match s.dtype_of() {
        dtype if dtype.is_float() => Ok(dtype),
        dtype => Err(Error::UnsupportedDType { op, dtype }),
    }
}

/// The common float type of `a` and the `others`, all on `a`'s device.
fn floats<L: Launcher>(
    op: &'static str,
    a: &CudaStorage<L>,
    others: &[&CudaStorage<L>],
) -> Result<DType> {
    for b in others {
        if b.dtype_of() != a.dtype_of() {
            return Err(Error::DTypeMismatch {
                op,
                lhs: a.dtype_of(),
                rhs: b.dtype_of(),
            });
        }
        same_device(op, a, b)?;
    }
    float_type(op, a)
}

fn same_device<L: Launcher>(
    op: &'static str,
    a: &CudaStorage<L>,
    b: &CudaStorage<L>,
) -> Result<()> {
    if a.device() == b.device() {
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

/// Forces the matmul's block tile (`128x128` or `64x64`) instead of the
/// plan's rule, for benchmarks.
pub const MATMUL_TILE_VAR: &str = "ADVGRAD_MATMUL_TILE";
/// Forces the matmul's number of depth ranges (split-K; `1` turns it off).
pub const MATMUL_SPLITS_VAR: &str = "ADVGRAD_MATMUL_SPLITS";

/// Forces whether a half product rounds its f32 operands first (`1`) or
/// while staging them (`0`); unset, large products round first
/// (`kernels::matmul_half::rounds_first`).
pub const MATMUL_ROUND_FIRST_VAR: &str = "ADVGRAD_MATMUL_ROUND_FIRST";

/// The matmul tiling's inputs on `launcher`'s device: its number of SMs,
/// and the overrides of [`MATMUL_TILE_VAR`], [`MATMUL_SPLITS_VAR`] and
/// [`MATMUL_ROUND_FIRST_VAR`].
fn matmul_tuning<L: Launcher>(launcher: &L) -> Result<Tuning> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let tile = var(MATMUL_TILE_VAR)
        .map(|v| {
            v.parse::<Tile>()
                .map_err(|e| Error::invalid(format!("{MATMUL_TILE_VAR}: {e}")))
        })
        .transpose()?;
    let splits = var(MATMUL_SPLITS_VAR)
        .map(|v| {
            v.parse::<u32>().map_err(|_| {
                Error::invalid(format!(
                    "{MATMUL_SPLITS_VAR}={v}: expected a positive number of depth ranges"
                ))
            })
        })
        .transpose()?;
    let round_first = var(MATMUL_ROUND_FIRST_VAR)
        .map(|v| match v.as_str() {
            "1" => Ok(true),
            "0" => Ok(false),
            _ => Err(Error::invalid(format!(
                "{MATMUL_ROUND_FIRST_VAR}={v}: expected 1 (round f32 operands first) or 0 \
                 (round them while staging)"
            ))),
        })
        .transpose()?;
    Ok(Tuning {
        multiprocessors: launcher.multiprocessors(),
        tile,
        splits,
        round_first,
    })
}

fn labels_buf<'a, L: Launcher>(
    op: &'static str,
    labels: &'a CudaStorage<L>,
) -> Result<&'a CudaStorage<L>> {
    match labels.dtype_of() {
        DType::U32 => Ok(labels),
        other => Err(Error::invalid(format!(
            "{op}: labels must be u32, got {other}"
        ))),
    }
}

impl<L: Launcher> CudaStorage<L> {
    /// Launches a plan whose buffers are `inputs` then one new output of
    /// `out_len` elements of `dtype`, and returns the output.
    fn run(
        &self,
        plan: &LaunchPlan,
        inputs: &[&L::Buffer],
        dtype: DType,
        out_len: usize,
    ) -> Result<CudaStorage<L>> {
        let mut out = self.output(dtype, out_len)?;
        let mut args: Vec<Arg<'_, L::Buffer>> = inputs.iter().map(|b| Arg::In(*b)).collect();
        args.push(Arg::Out(&mut out));
        launch(&*self.launcher, plan, &mut args)?;
        Ok(self.wrap(out, out_len))
    }

    /// `op(A)·op(B)` with `self = A`, `rhs = B`, through `epilogue`, whose
    /// bias (if it has one) is `bias`: one launch, or, for a split product,
    /// the partial products into a workspace and their reduction.
    fn product(
        &self,
        op: &'static str,
        rhs: &Self,
        d: MatmulDims,
        epilogue: Epilogue,
        bias: Option<&Self>,
    ) -> Result<CudaStorage<L>> {
        let t = match bias {
            Some(b) => floats(op, self, &[rhs, b])?,
            None => floats(op, self, &[rhs])?,
        };
        check_len(op, "A", self.len, d.m * d.k)?;
        check_len(op, "B", rhs.len, d.k * d.n)?;
        if let Some(b) = bias {
            check_len(op, "the bias", b.len, d.n)?;
        }
        let plan =
            matmul::matmul(t, d, epilogue, matmul_tuning(&*self.launcher)?).map_err(plan_err)?;
        self.run_product(&plan, rhs, bias, t, d.m * d.n)
    }

    /// `op(A)·op(B)` on tensor cores with the operands rounded to `half`
    /// (bf16 or f16; each operand stored in `half` or in f32), f32 sums and
    /// an f32 result through `epilogue` (`bias`, if any, in f32).
    fn half_product(
        &self,
        op: &'static str,
        rhs: &Self,
        d: MatmulDims,
        epilogue: Epilogue,
        bias: Option<&Self>,
        half: DType,
    ) -> Result<CudaStorage<L>> {
        same_device(op, self, rhs)?;
        check_len(op, "A", self.len, d.m * d.k)?;
        check_len(op, "B", rhs.len, d.k * d.n)?;
        if let Some(b) = bias {
            same_device(op, self, b)?;
            check_len(op, "the bias", b.len, d.n)?;
            if b.dtype_of() != DType::F32 {
                return Err(Error::invalid(format!(
                    "{op}: a {} bias for a {half} product on {}: the tensor-core kernels add an \
                     f32 bias (convert it with `to_dtype(DType::F32)`)",
                    b.dtype_of(),
                    self.device()
                )));
            }
        }
        let tuning = matmul_tuning(&*self.launcher)?;
        let (rounded_a, rounded_b);
        let (a, b) = if matmul_half::rounds_first(d, tuning) {
            rounded_a = self.rounded_to(half)?;
            rounded_b = rhs.rounded_to(half)?;
            (
                rounded_a.as_ref().unwrap_or(self),
                rounded_b.as_ref().unwrap_or(rhs),
            )
        } else {
            (self, rhs)
        };
        let plan = matmul_half::matmul(half, a.dtype_of(), b.dtype_of(), d, epilogue, tuning)
            .map_err(plan_err)?;
        a.run_product(&plan, b, bias, DType::F32, d.m * d.n)
    }

    /// This f32 operand rounded to `half` (bf16 or f16) on the device, or
    /// `None` when it is not f32 (a half operand is read as it is).
    fn rounded_to(&self, half: DType) -> Result<Option<CudaStorage<L>>> {
        if self.dtype_of() != DType::F32 {
            return Ok(None);
        }
        let plan = cast::plan(half, self.len).map_err(plan_err)?;
        self.run(&plan, &[&*self.buf], half, self.len).map(Some)
    }

    /// Launches a product's plan (and its split-K reduction) with A = self,
    /// B = rhs, and returns C, `len` elements of `dtype`.
    fn run_product(
        &self,
        plan: &matmul::MatmulPlan,
        rhs: &Self,
        bias: Option<&Self>,
        dtype: DType,
        len: usize,
    ) -> Result<CudaStorage<L>> {
        // Without a bias the kernels read none: any buffer of the type will
        // do (one element when neither operand is of C's type).
        let spare;
        let bias = match bias {
            Some(b) => &*b.buf,
            None if self.dtype_of() == dtype => &*self.buf,
            None if rhs.dtype_of() == dtype => &*rhs.buf,
            None => {
                spare = self.scratch(dtype, 1)?;
                &*spare
            }
        };
        let mut out = self.output(dtype, len)?;
        let (a, b, l) = (&*self.buf, &*rhs.buf, &*self.launcher);
        match &plan.reduce {
            None => launch(
                l,
                &plan.product,
                &mut [Arg::In(a), Arg::In(b), Arg::In(bias), Arg::Out(&mut out)],
            )?,
            Some(reduce) => {
                let mut partial = self.scratch(dtype, plan.workspace_len())?;
                launch(
                    l,
                    &plan.product,
                    &mut [
                        Arg::In(a),
                        Arg::In(b),
                        Arg::In(bias),
                        Arg::Out(&mut partial),
                    ],
                )?;
                launch(
                    l,
                    reduce,
                    &mut [Arg::In(&partial), Arg::In(bias), Arg::Out(&mut out)],
                )?;
            }
        }
        Ok(self.wrap(out, len))
    }

    /// Sum of all elements (`scale = 1`) or their mean (`scale = 1/n`) as a
    /// one-element buffer: two deterministic passes.
    fn reduce(&self, dtype: DType, mean: bool) -> Result<CudaStorage<L>> {
        let [p1, p2] = reduce::sum(dtype, self.len, mean).map_err(plan_err)?;
        let mut partials = self.scratch(dtype, reduce::partials(self.len) as usize)?;
        launch(
            &*self.launcher,
            &p1,
            &mut [Arg::In(&*self.buf), Arg::Out(&mut partials)],
        )?;
        self.run(&p2, &[&partials], dtype, 1)
    }

    /// A grid-stride kernel over `extent` with `inputs` then one new output
    /// of the same float type and `extent`'s element count.
    fn map(
        &self,
        kernel: &kernels::GridStride,
        extent: Extent,
        values: &[f64],
        inputs: &[&L::Buffer],
        dtype: DType,
    ) -> Result<CudaStorage<L>> {
        let p = kernel.plan(dtype, extent, values).map_err(plan_err)?;
        self.run(&p, inputs, dtype, extent.rows * extent.cols)
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

impl<L: Launcher> BackendStorage for CudaStorage<L> {
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
        self.product("matmul", rhs, d, Epilogue::Store, None)
    }

    /// One product whose epilogue adds the bias and applies `act` (after
    /// the split-K reduction, when the product is split).
    fn matmul_bias_act(
        &self,
        rhs: &Self,
        d: MatmulDims,
        row: &Self,
        act: Activation,
    ) -> Result<Self> {
        if row.len != d.n {
            return Err(Error::invalid(format!(
                "linear_act: a bias of {} values for {} columns",
                row.len, d.n
            )));
        }
        self.product("linear_act", rhs, d, Epilogue::BiasAct(act), Some(row))
    }

    /// On tensor cores when the product is a half one (a bf16 or f16
    /// operand, or f32 operands under a half `precision`): f32 operands
    /// are rounded as they are staged, never copied whole.
    fn matmul_in(&self, rhs: &Self, d: MatmulDims, precision: Precision) -> Result<Self> {
        match half_type("matmul", self.dtype_of(), rhs.dtype_of(), precision)? {
            None => self.matmul(rhs, d),
            Some(h) => self.half_product("matmul", rhs, d, Epilogue::Store, None, h),
        }
    }

    /// As [`BackendStorage::matmul_in`], with the bias (f32) and the
    /// activation applied in f32 by the product's epilogue.
    fn matmul_bias_act_in(
        &self,
        rhs: &Self,
        d: MatmulDims,
        row: &Self,
        act: Activation,
        precision: Precision,
    ) -> Result<Self> {
        let op = "linear_act";
        match half_type(op, self.dtype_of(), rhs.dtype_of(), precision)? {
            None => self.matmul_bias_act(rhs, d, row, act),
            Some(h) => self.half_product(op, rhs, d, Epilogue::BiasAct(act), Some(row), h),
        }
    }

    fn activation(&self, act: Activation) -> Result<Self> {
        let t = float_type(act.name(), self)?;
        let kernel = activation::forward_kernel(act);
        self.map(kernel, Extent::flat(self.len), &[], &[&self.buf], t)
    }

    fn activation_backward(&self, saved: &Self, act: Activation) -> Result<Self> {
        let op = "activation_backward";
        let t = floats(op, self, &[saved])?;
        check_len(op, "the saved tensor", saved.len, self.len)?;
        let kernel = activation::backward_kernel(act);
        let extent = Extent::flat(self.len);
        self.map(kernel, extent, &[], &[&saved.buf, &self.buf], t)
    }

    fn gelu(&self) -> Result<Self> {
        let t = float_type("gelu", self)?;
        let extent = Extent::flat(self.len);
        self.map(&gelu::GELU_FWD, extent, &[], &[&self.buf], t)
    }

    /// `self = g`; the kernel's parameters are `x, g, dx`.
    fn gelu_backward(&self, x: &Self) -> Result<Self> {
        let op = "gelu_backward";
        let t = floats(op, self, &[x])?;
        check_len(op, "the saved input", x.len, self.len)?;
        let extent = Extent::flat(self.len);
        self.map(&gelu::GELU_BWD, extent, &[], &[&x.buf, &self.buf], t)
    }

    fn sign(&self) -> Result<Self> {
        let t = float_type("sign", self)?;
        let extent = Extent::flat(self.len);
        self.map(&elementwise::SIGN, extent, &[], &[&self.buf], t)
    }

    fn binary(&self, rhs: &Self, op: Binary) -> Result<Self> {
        let t = floats(op.name(), self, &[rhs])?;
        check_len(op.name(), "rhs", rhs.len, self.len)?;
        let kernel = elementwise::binary(op);
        let extent = Extent::flat(self.len);
        self.map(kernel, extent, &[], &[&self.buf, &rhs.buf], t)
    }

    fn affine(&self, mul: f64, add: f64) -> Result<Self> {
        let t = float_type("affine", self)?;
        let extent = Extent::flat(self.len);
        self.map(&elementwise::AFFINE, extent, &[mul, add], &[&self.buf], t)
    }

    fn full_like(&self, value: f64) -> Result<Self> {
        match float_type("full_like", self)? {
            t @ (DType::F32 | DType::F64) => {
                self.map(&elementwise::FILL, Extent::flat(self.len), &[value], &[], t)
            }
            // No fill kernel for the half types: filled on the host.
            t => CudaStorage::upload(
                &CpuStorage::filled(self.len, value, t),
                self.launcher.clone(),
            ),
        }
    }

    fn add_row(&self, row: &Self, cols: usize) -> Result<Self> {
        let op = "add_row";
        let t = floats(op, self, &[row])?;
        if self.len == 0 {
            return self.map(&elementwise::FILL, Extent::flat(0), &[0.0], &[], t);
        }
        let rows = rows_of(op, self.len, cols)?;
        check_len(op, "the row", row.len, cols)?;
        let extent = Extent::matrix(rows, cols);
        self.map(
            &elementwise::ADD_ROW,
            extent,
            &[],
            &[&self.buf, &row.buf],
            t,
        )
    }

    /// One pass: `y[i, j] = f(x[i, j] + row[j])`.
    fn bias_act(&self, row: &Self, cols: usize, act: Activation) -> Result<Self> {
        let op = "bias_act";
        let t = floats(op, self, &[row])?;
        let rows = if self.len == 0 {
            0
        } else {
            rows_of(op, self.len, cols)?
        };
        check_len(op, "the row", row.len, cols)?;
        let kernel = activation::bias_act_kernel(act);
        let extent = Extent::matrix(rows, cols);
        self.map(kernel, extent, &[], &[&self.buf, &row.buf], t)
    }

    fn sum_rows(&self, cols: usize) -> Result<Self> {
        let op = "sum_rows";
        let t = float_type(op, self)?;
        let rows = if self.len == 0 {
            0
        } else {
            rows_of(op, self.len, cols)?
        };
        let p = reduce::sum_rows(t, rows, cols).map_err(plan_err)?;
        self.run(&p, &[&self.buf], t, cols)
    }

    fn sum_all(&self) -> Result<Self> {
        let t = float_type("sum", self)?;
        self.reduce(t, false)
    }

    fn broadcast_scalar(&self, len: usize, scale: f64) -> Result<Self> {
        let op = "broadcast_scalar";
        let t = float_type(op, self)?;
        if self.len == 0 {
            return Err(Error::invalid("broadcast_scalar: empty scalar buffer"));
        }
        let extent = Extent::flat(len);
        self.map(&elementwise::FILL_SCALAR, extent, &[scale], &[&self.buf], t)
    }

    fn softmax_xent(&self, labels: &Self, classes: usize) -> Result<(Self, Self)> {
        let op = "softmax_cross_entropy";
        let labels = labels_buf(op, labels)?;
        same_device(op, self, labels)?;
        let t = float_type(op, self)?;
        let rows = labels.len;
        check_len(op, "the logits", self.len, rows.saturating_mul(classes))?;
        labels.check_labels(op, classes)?;
        let p = softmax_xent::forward(t, rows, classes).map_err(plan_err)?;
        let mut losses = self.output(t, rows)?;
        let mut probs = self.output(t, self.len)?;
        launch(
            &*self.launcher,
            &p,
            &mut [
                Arg::In(&*self.buf),
                Arg::In(&*labels.buf),
                Arg::Out(&mut losses),
                Arg::Out(&mut probs),
            ],
        )?;
        let losses = self.wrap(losses, rows);
        Ok((losses.reduce(t, true)?, self.wrap(probs, self.len)))
    }

    fn softmax_xent_backward(&self, labels: &Self, grad: &Self, classes: usize) -> Result<Self> {
        let op = "softmax_cross_entropy_backward";
        let labels = labels_buf(op, labels)?;
        same_device(op, self, labels)?;
        let t = floats(op, self, &[grad])?;
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
        let extent = Extent::matrix(rows, classes);
        let inputs = [&**self.buf, &**labels.buf, &**grad.buf];
        self.map(&softmax_xent::BACKWARD, extent, &[], &inputs, t)
    }

    fn clamp(&self, lo: f64, hi: f64) -> Result<Self> {
        let t = float_type("clamp", self)?;
        let extent = Extent::flat(self.len);
        self.map(&elementwise::CLAMP, extent, &[lo, hi], &[&self.buf], t)
    }

    fn project_linf(&self, center: &Self, eps: f64, lo: f64, hi: f64) -> Result<Self> {
        let op = "project_linf";
        let t = floats(op, self, &[center])?;
        check_len(op, "the center", center.len, self.len)?;
        let extent = Extent::flat(self.len);
        let inputs = [&**self.buf, &**center.buf];
        self.map(
            &elementwise::PROJECT_LINF,
            extent,
            &[eps, lo, hi],
            &inputs,
            t,
        )
    }

    /// One pass: the sign, the step and the projection of an L∞ attack.
    fn sign_step(
        &self,
        grad: &Self,
        center: &Self,
        alpha: f64,
        eps: f64,
        lo: f64,
        hi: f64,
    ) -> Result<Self> {
        let op = "sign_step";
        let t = floats(op, self, &[grad, center])?;
        check_len(op, "the gradient", grad.len, self.len)?;
        check_len(op, "the center", center.len, self.len)?;
        let extent = Extent::flat(self.len);
        let inputs = [&**self.buf, &**grad.buf, &**center.buf];
        self.map(
            &elementwise::SIGN_STEP,
            extent,
            &[alpha, eps, lo, hi],
            &inputs,
            t,
        )
    }

    fn argmax_rows(&self, cols: usize) -> Result<Self> {
        let op = "argmax";
        let t = float_type(op, self)?;
        if cols == 0 {
            let p = reduce::argmax_rows(t, 0, 1).map_err(plan_err)?;
            return self.run(&p, &[&self.buf], DType::U32, 0);
        }
        let rows = if self.len == 0 {
            0
        } else {
            rows_of(op, self.len, cols)?
        };
        let p = reduce::argmax_rows(t, rows, cols).map_err(plan_err)?;
        let mut out = self.run(&p, &[&self.buf], DType::U32, rows)?;
        out.label_bound = (rows > 0).then(|| u32::try_from(cols - 1).unwrap_or(u32::MAX));
        Ok(out)
    }

    fn axpy(&mut self, alpha: f64, x: &Self) -> Result<()> {
        let op = "axpy";
        let t = floats(op, self, &[x])?;
        check_len(op, "x", x.len, self.len)?;
        let p = elementwise::AXPY
            .plan(t, Extent::flat(self.len), &[alpha])
            .map_err(plan_err)?;
        let launcher = self.launcher.clone();
        let y = self.buf_mut()?;
        launch(&*launcher, &p, &mut [Arg::In(&*x.buf), Arg::Out(y)])
    }

    fn tally_step(&mut self, loss: &Self, logits: &Self, labels: &Self, cols: usize) -> Result<()> {
        let op = "tally_step";
        let t = floats(op, logits, &[loss])?;
        let labels = labels_buf(op, labels)?;
        same_device(op, self, logits)?;
        same_device(op, self, labels)?;
        if self.dtype_of() != DType::F64 || self.len != tally::LEN {
            return Err(Error::invalid(format!(
                "{op}: the tally must be {} f64 values, got {} {}",
                tally::LEN,
                self.len,
                self.dtype_of()
            )));
        }
        check_len(op, "loss", loss.len, 1)?;
        let rows = labels.len;
        check_len(op, "logits", logits.len, rows * cols)?;
        let p = tally::tally_step(t, rows, cols).map_err(plan_err)?;
        let launcher = self.launcher.clone();
        let sums = self.buf_mut()?;
        launch(
            &*launcher,
            &p,
            &mut [
                Arg::In(&*loss.buf),
                Arg::In(&*logits.buf),
                Arg::In(&*labels.buf),
                Arg::Out(sums),
            ],
        )
    }

    fn update(
        &mut self,
        grad: &Self,
        s1: &mut Self,
        s2: &mut Self,
        rule: UpdateRule,
    ) -> Result<()> {
        let op = "update";
        let dtype = floats(op, self, &[grad, s1, s2])?;
        let n = self.len;
        check_len(op, "the gradient", grad.len, n)?;
        let launcher = self.launcher.clone();
        let extent = Extent::flat(n);
        match rule {
            UpdateRule::Sgd {
                lr,
                momentum,
                nesterov,
                weight_decay,
            } => {
                if momentum == 0.0 {
                    // Plain SGD: the velocity buffer is not touched.
                    let p = optim::SGD
                        .plan(dtype, extent, &[lr, weight_decay])
                        .map_err(plan_err)?;
                    let w = self.buf_mut()?;
                    return launch(&*launcher, &p, &mut [Arg::Out(w), Arg::In(&*grad.buf)]);
                }
                check_len(op, "the velocity", s1.len, n)?;
                let values = [lr, momentum, weight_decay, f64::from(u8::from(nesterov))];
                let p = optim::SGD_MOMENTUM
                    .plan(dtype, extent, &values)
                    .map_err(plan_err)?;
                let w = self.buf_mut()?;
                let v = s1.buf_mut()?;
                launch(
                    &*launcher,
                    &p,
                    &mut [Arg::Out(w), Arg::In(&*grad.buf), Arg::Out(v)],
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
                let p = optim::adam(dtype, n, step).map_err(plan_err)?;
                let w = self.buf_mut()?;
                let m = s1.buf_mut()?;
                let v = s2.buf_mut()?;
                launch(
                    &*launcher,
                    &p,
                    &mut [Arg::Out(w), Arg::In(&*grad.buf), Arg::Out(m), Arg::Out(v)],
                )
            }
        }
    }

    // The kernels of robustness evaluation and training (ops/robust.rs).

    fn log_softmax(&self, classes: usize) -> Result<Self> {
        robust::log_softmax(self, classes)
    }

    fn log_softmax_backward(&self, y: &Self, classes: usize) -> Result<Self> {
        robust::log_softmax_backward(self, y, classes)
    }

    fn exp(&self) -> Result<Self> {
        robust::map(self, &kernels::robust_loss::EXP, "exp")
    }

    fn ln(&self) -> Result<Self> {
        robust::map(self, &kernels::robust_loss::LN, "ln")
    }

    fn pick_rows(&self, index: &Self, classes: usize) -> Result<Self> {
        robust::pick_rows(self, index, classes)
    }

    fn pick_rows_backward(&self, index: &Self, classes: usize) -> Result<Self> {
        robust::pick_rows_backward(self, index, classes)
    }

    fn kl_div_rows(&self, b: &Self, classes: usize) -> Result<Self> {
        robust::kl_div_rows(self, b, classes)
    }

    fn kl_div_rows_backward(&self, b: &Self, grad: &Self, classes: usize) -> Result<(Self, Self)> {
        robust::kl_div_rows_backward(self, b, grad, classes)
    }

    fn dlr_rows(
        &self,
        labels: &Self,
        targets: &Self,
        targeted: bool,
        classes: usize,
    ) -> Result<Self> {
        robust::dlr_rows(self, labels, targets, targeted, classes)
    }

    fn dlr_rows_backward(
        &self,
        labels: &Self,
        targets: &Self,
        targeted: bool,
        grad: &Self,
        classes: usize,
    ) -> Result<Self> {
        robust::dlr_rows_backward(self, labels, targets, targeted, grad, classes)
    }

    fn apgd_step(
        &self,
        previous: &Self,
        grad: &Self,
        center: &Self,
        step: &Self,
        momentum: f64,
        eps: f64,
        norm: Norm,
        cols: usize,
    ) -> Result<Self> {
        let operands = robust::ApgdOperands {
            x: self,
            previous,
            grad,
            center,
            step,
        };
        robust::apgd_step(operands, momentum, eps, norm, cols)
    }

    fn fab_step(
        &self,
        x0: &Self,
        w: &Self,
        f: &Self,
        eta: f64,
        alpha_max: f64,
        norm: Norm,
        cols: usize,
    ) -> Result<(Self, Self)> {
        let operands = robust::FabOperands { x: self, x0, w, f };
        robust::fab_step(operands, eta, alpha_max, norm, cols)
    }

    fn lerp_rows(&mut self, src: &Self, rows: &Self, t: f64, cols: usize) -> Result<()> {
        robust::lerp_rows(self, src, rows, t, cols)
    }

    // The kernels of convolutional networks (ops/conv.rs).

    fn conv2d(&self, weight: &Self, bias: &Self, dims: Conv2dDims) -> Result<Self> {
        conv::conv2d(self, weight, bias, dims)
    }

    fn conv2d_backward_input(&self, weight: &Self, dims: Conv2dDims) -> Result<Self> {
        conv::conv2d_backward_input(self, weight, dims)
    }

    fn conv2d_backward_params(&self, x: &Self, dims: Conv2dDims) -> Result<(Self, Self)> {
        conv::conv2d_backward_params(self, x, dims)
    }

    fn max_pool2d(&self, dims: PoolDims) -> Result<Self> {
        conv::max_pool2d(self, dims)
    }

    fn max_pool2d_backward(&self, x: &Self, dims: PoolDims) -> Result<Self> {
        conv::max_pool2d_backward(self, x, dims)
    }

    fn avg_pool2d(&self, dims: PoolDims) -> Result<Self> {
        conv::avg_pool2d(self, dims)
    }

    fn avg_pool2d_backward(&self, dims: PoolDims) -> Result<Self> {
        conv::avg_pool2d_backward(self, dims)
    }
}
