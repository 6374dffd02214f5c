//! `impl BackendStorage for Storage`: each kernel forwarded to the backend
//! of the operands' device, after checking that they share one device.

use super::cpu::CpuStorage;
use super::{
    Activation, BackendStorage, Binary, Conv2dDims, MatmulDims, Norm, PoolDims, Storage, UpdateRule,
};
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::precision::Precision;

/// Forwards a method with no buffer arguments to the backend of `self`.
macro_rules! on_device {
    ($self:expr, $s:ident => $body:expr, $wrap:ident) => {
        match $self {
            Storage::Cpu($s) => $wrap!(Cpu, $body),
            #[cfg(feature = "cuda")]
            Storage::Cuda($s) => $wrap!(Cuda, $body),
            #[cfg(feature = "emu")]
            Storage::Emu($s) => $wrap!(Emu, $body),
        }
    };
}

/// Forwards a method with buffer arguments, all on the same device.
macro_rules! on_same_device {
    ($op:expr, ($($arg:ident = $val:expr),+) => $body:expr, $wrap:ident) => {{
        let devices = [$($val.device()),+];
        if let Some(other) = devices.iter().find(|d| **d != devices[0]) {
            return Err(Error::DeviceMismatch {
                op: $op,
                lhs: devices[0].to_string(),
                rhs: other.to_string(),
            });
        }
        #[allow(unreachable_patterns)]
        match ($($val),+) {
            ($(Storage::Cpu($arg)),+) => $wrap!(Cpu, $body),
            #[cfg(feature = "cuda")]
            ($(Storage::Cuda($arg)),+) => $wrap!(Cuda, $body),
            #[cfg(feature = "emu")]
            ($(Storage::Emu($arg)),+) => $wrap!(Emu, $body),
            _ => unreachable!("operands were checked to share one device"),
        }
    }};
}

macro_rules! wrap_storage {
    ($variant:ident, $e:expr) => {
        $e.map(Storage::$variant)
    };
}
macro_rules! wrap_plain {
    ($variant:ident, $e:expr) => {
        $e
    };
}
macro_rules! wrap_pair {
    ($variant:ident, $e:expr) => {
        $e.map(|(a, b)| (Storage::$variant(a), Storage::$variant(b)))
    };
}

impl BackendStorage for Storage {
    fn dtype(&self) -> DType {
        on_device!(self, s => s.dtype(), wrap_plain)
    }
    fn len(&self) -> usize {
        on_device!(self, s => s.len(), wrap_plain)
    }
    fn to_cpu(&self) -> Result<CpuStorage> {
        on_device!(self, s => s.to_cpu(), wrap_plain)
    }
    fn matmul(&self, rhs: &Self, dims: MatmulDims) -> Result<Self> {
        on_same_device!("matmul", (a = self, rhs = rhs) => a.matmul(rhs, dims), wrap_storage)
    }

    fn matmul_in(&self, rhs: &Self, dims: MatmulDims, precision: Precision) -> Result<Self> {
        on_same_device!("matmul", (a = self, rhs = rhs) => a.matmul_in(rhs, dims, precision), wrap_storage)
    }

    fn matmul_bias_act_in(
        &self,
        rhs: &Self,
        dims: MatmulDims,
        row: &Self,
        act: Activation,
        precision: Precision,
    ) -> Result<Self> {
        on_same_device!("linear_act", (a = self, rhs = rhs, row = row) => a.matmul_bias_act_in(rhs, dims, row, act, precision), wrap_storage)
    }
    fn activation(&self, act: Activation) -> Result<Self> {
        on_device!(self, s => s.activation(act), wrap_storage)
    }
    fn activation_backward(&self, saved: &Self, act: Activation) -> Result<Self> {
        on_same_device!("activation_backward", (a = self, saved = saved) => a.activation_backward(saved, act), wrap_storage)
    }
    fn gelu(&self) -> Result<Self> {
        on_device!(self, s => s.gelu(), wrap_storage)
    }
    fn gelu_backward(&self, x: &Self) -> Result<Self> {
        on_same_device!("gelu_backward", (g = self, x = x) => g.gelu_backward(x), wrap_storage)
    }
    fn sign(&self) -> Result<Self> {
        on_device!(self, s => s.sign(), wrap_storage)
    }
    fn binary(&self, rhs: &Self, op: Binary) -> Result<Self> {
        on_same_device!("binary", (a = self, rhs = rhs) => a.binary(rhs, op), wrap_storage)
    }
    fn affine(&self, mul: f64, add: f64) -> Result<Self> {
        on_device!(self, s => s.affine(mul, add), wrap_storage)
    }
    fn full_like(&self, value: f64) -> Result<Self> {
        on_device!(self, s => s.full_like(value), wrap_storage)
    }
    fn add_row(&self, row: &Self, cols: usize) -> Result<Self> {
        on_same_device!("add_row", (a = self, row = row) => a.add_row(row, cols), wrap_storage)
    }
    fn bias_act(&self, row: &Self, cols: usize, act: Activation) -> Result<Self> {
        on_same_device!("bias_act", (a = self, row = row) => a.bias_act(row, cols, act), wrap_storage)
    }
    fn matmul_bias_act(
        &self,
        rhs: &Self,
        dims: MatmulDims,
        row: &Self,
        act: Activation,
    ) -> Result<Self> {
        on_same_device!("linear_act", (a = self, rhs = rhs, row = row) => a.matmul_bias_act(rhs, dims, row, act), wrap_storage)
    }
    fn sum_rows(&self, cols: usize) -> Result<Self> {
        on_device!(self, s => s.sum_rows(cols), wrap_storage)
    }
    fn sum_all(&self) -> Result<Self> {
        on_device!(self, s => s.sum_all(), wrap_storage)
    }
    fn broadcast_scalar(&self, len: usize, scale: f64) -> Result<Self> {
        on_device!(self, s => s.broadcast_scalar(len, scale), wrap_storage)
    }
    fn softmax_xent(&self, labels: &Self, classes: usize) -> Result<(Self, Self)> {
        on_same_device!("softmax_cross_entropy", (a = self, labels = labels) => a.softmax_xent(labels, classes), wrap_pair)
    }
    fn softmax_xent_backward(&self, labels: &Self, grad: &Self, classes: usize) -> Result<Self> {
        on_same_device!("softmax_cross_entropy_backward", (a = self, labels = labels, grad = grad) => a.softmax_xent_backward(labels, grad, classes), wrap_storage)
    }
    fn clamp(&self, lo: f64, hi: f64) -> Result<Self> {
        on_device!(self, s => s.clamp(lo, hi), wrap_storage)
    }
    fn project_linf(&self, center: &Self, eps: f64, lo: f64, hi: f64) -> Result<Self> {
        on_same_device!("project_linf", (a = self, center = center) => a.project_linf(center, eps, lo, hi), wrap_storage)
    }
    fn sign_step(
        &self,
        grad: &Self,
        center: &Self,
        alpha: f64,
        eps: f64,
        lo: f64,
        hi: f64,
    ) -> Result<Self> {
        on_same_device!("sign_step", (a = self, grad = grad, center = center) => a.sign_step(grad, center, alpha, eps, lo, hi), wrap_storage)
    }
    fn argmax_rows(&self, cols: usize) -> Result<Self> {
        on_device!(self, s => s.argmax_rows(cols), wrap_storage)
    }
    fn axpy(&mut self, alpha: f64, x: &Self) -> Result<()> {
        on_same_device!("axpy", (a = self, x = x) => a.axpy(alpha, x), wrap_plain)
    }
    fn update(
        &mut self,
        grad: &Self,
        s1: &mut Self,
        s2: &mut Self,
        rule: UpdateRule,
    ) -> Result<()> {
        on_same_device!("update", (a = self, grad = grad, s1 = s1, s2 = s2) => a.update(grad, s1, s2, rule), wrap_plain)
    }
    fn matmul_update(
        &mut self,
        a: &Self,
        b: &Self,
        dims: MatmulDims,
        s1: &mut Self,
        s2: &mut Self,
        rule: UpdateRule,
    ) -> Result<()> {
        on_same_device!("matmul_update", (p = self, a = a, b = b, s1 = s1, s2 = s2) => p.matmul_update(a, b, dims, s1, s2, rule), wrap_plain)
    }
    fn tally_step(&mut self, loss: &Self, logits: &Self, labels: &Self, cols: usize) -> Result<()> {
        on_same_device!("tally_step", (t = self, loss = loss, logits = logits, labels = labels) => t.tally_step(loss, logits, labels, cols), wrap_plain)
    }
    fn log_softmax(&self, classes: usize) -> Result<Self> {
        on_device!(self, s => s.log_softmax(classes), wrap_storage)
    }
    fn log_softmax_backward(&self, y: &Self, classes: usize) -> Result<Self> {
        on_same_device!("log_softmax_backward", (g = self, y = y) => g.log_softmax_backward(y, classes), wrap_storage)
    }
    fn exp(&self) -> Result<Self> {
        on_device!(self, s => s.exp(), wrap_storage)
    }
    fn ln(&self) -> Result<Self> {
        on_device!(self, s => s.ln(), wrap_storage)
    }
    fn pick_rows(&self, index: &Self, classes: usize) -> Result<Self> {
        on_same_device!("pick", (x = self, index = index) => x.pick_rows(index, classes), wrap_storage)
    }
    fn pick_rows_backward(&self, index: &Self, classes: usize) -> Result<Self> {
        on_same_device!("pick_backward", (g = self, index = index) => g.pick_rows_backward(index, classes), wrap_storage)
    }
    fn kl_div_rows(&self, b: &Self, classes: usize) -> Result<Self> {
        on_same_device!("kl_div", (a = self, b = b) => a.kl_div_rows(b, classes), wrap_storage)
    }
    fn kl_div_rows_backward(&self, b: &Self, grad: &Self, classes: usize) -> Result<(Self, Self)> {
        on_same_device!("kl_div_backward", (a = self, b = b, grad = grad) => a.kl_div_rows_backward(b, grad, classes), wrap_pair)
    }
    fn dlr_rows(
        &self,
        labels: &Self,
        targets: &Self,
        targeted: bool,
        classes: usize,
    ) -> Result<Self> {
        on_same_device!("dlr", (z = self, labels = labels, targets = targets) => z.dlr_rows(labels, targets, targeted, classes), wrap_storage)
    }
    fn dlr_rows_backward(
        &self,
        labels: &Self,
        targets: &Self,
        targeted: bool,
        grad: &Self,
        classes: usize,
    ) -> Result<Self> {
        on_same_device!("dlr_backward", (z = self, labels = labels, targets = targets, grad = grad) => z.dlr_rows_backward(labels, targets, targeted, grad, classes), wrap_storage)
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
        on_same_device!("apgd_step", (x = self, previous = previous, grad = grad, center = center, step = step) => x.apgd_step(previous, grad, center, step, momentum, eps, norm, cols), wrap_storage)
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
        on_same_device!("fab_step", (x = self, x0 = x0, w = w, f = f) => x.fab_step(x0, w, f, eta, alpha_max, norm, cols), wrap_pair)
    }
    fn lerp_rows(&mut self, src: &Self, rows: &Self, t: f64, cols: usize) -> Result<()> {
        on_same_device!("lerp_rows", (x = self, src = src, rows = rows) => x.lerp_rows(src, rows, t, cols), wrap_plain)
    }
    fn conv2d(&self, weight: &Self, bias: &Self, dims: Conv2dDims) -> Result<Self> {
        on_same_device!("conv2d", (x = self, weight = weight, bias = bias) => x.conv2d(weight, bias, dims), wrap_storage)
    }
    fn conv2d_backward_input(&self, weight: &Self, dims: Conv2dDims) -> Result<Self> {
        on_same_device!("conv2d_backward", (g = self, weight = weight) => g.conv2d_backward_input(weight, dims), wrap_storage)
    }
    fn conv2d_backward_params(&self, x: &Self, dims: Conv2dDims) -> Result<(Self, Self)> {
        on_same_device!("conv2d_backward", (g = self, x = x) => g.conv2d_backward_params(x, dims), wrap_pair)
    }
    fn max_pool2d(&self, dims: PoolDims) -> Result<Self> {
        on_device!(self, x => x.max_pool2d(dims), wrap_storage)
    }
    fn max_pool2d_backward(&self, x: &Self, dims: PoolDims) -> Result<Self> {
        on_same_device!("max_pool2d_backward", (g = self, x = x) => g.max_pool2d_backward(x, dims), wrap_storage)
    }
    fn avg_pool2d(&self, dims: PoolDims) -> Result<Self> {
        on_device!(self, x => x.avg_pool2d(dims), wrap_storage)
    }
    fn avg_pool2d_backward(&self, dims: PoolDims) -> Result<Self> {
        on_device!(self, g => g.avg_pool2d_backward(dims), wrap_storage)
    }
}
