//! Runs a [`LaunchPlan`] on the GPU: the same plan the CPU SIMT emulator
//! runs in tests.
//!
//! [`launch`] checks every buffer against the plan (element type, length,
//! and that written buffers are passed mutably) before the one `unsafe`
//! driver call, so a wrong plan or a short buffer is an error, never an
//! out-of-bounds access on the device.

use cudarc::driver::{LaunchConfig, PushKernelArg};

use super::context::{driver_err, Gpu};
use super::plan::{Access, LaunchPlan, Param, PlanError, Scalar};
use super::storage::Buffer;
use crate::error::{Error, Result};

/// A buffer argument of a launch.
#[derive(Debug)]
pub enum Arg<'a> {
    /// Read by the kernel.
    In(&'a Buffer),
    /// Written (or read and written) by the kernel.
    Out(&'a mut Buffer),
}

impl Arg<'_> {
    fn buffer(&self) -> &Buffer {
        match self {
            Arg::In(b) => b,
            Arg::Out(b) => b,
        }
    }
}

/// A plan error as an advgrad error.
pub(crate) fn plan_err(e: PlanError) -> Error {
    Error::invalid(e.0)
}

/// Launches `plan` on `gpu`'s stream with `bufs`, one per
/// [`Param::Buffer`] of the plan, in order. Asynchronous: the kernel runs in
/// stream order after every earlier launch and copy of this GPU.
pub fn launch(gpu: &Gpu, plan: &LaunchPlan, bufs: &mut [Arg<'_>]) -> Result<()> {
    let k = &plan.kernel;
    let func = gpu.function(k)?;
    let wanted = plan.buffers().count();
    if wanted != bufs.len() {
        return Err(Error::Cuda(format!(
            "{k}: the plan takes {wanted} buffers, got {}",
            bufs.len()
        )));
    }
    for ((name, elem, len, access), arg) in plan.buffers().zip(bufs.iter()) {
        let b = arg.buffer();
        if b.elem() != elem {
            return Err(Error::Cuda(format!(
                "{k}: buffer `{name}` must hold {elem:?}, got {:?}",
                b.elem()
            )));
        }
        if b.capacity() < len {
            return Err(Error::invalid(format!(
                "{k}: buffer `{name}` has {} elements, the kernel needs {len}",
                b.capacity()
            )));
        }
        if access != Access::Read && matches!(arg, Arg::In(_)) {
            return Err(Error::Cuda(format!(
                "{k}: buffer `{name}` is written, pass it as Out"
            )));
        }
    }

    // Scalars live in typed vectors that outlive the builder holding
    // references to them.
    let mut i32s = Vec::new();
    let mut u32s = Vec::new();
    let mut u64s = Vec::new();
    let mut f32s = Vec::new();
    let mut f64s = Vec::new();
    for p in &plan.params {
        if let Param::Scalar { value, .. } = p {
            match *value {
                Scalar::I32(v) => i32s.push(v),
                Scalar::U32(v) => u32s.push(v),
                Scalar::U64(v) => u64s.push(v),
                Scalar::F32(v) => f32s.push(v),
                Scalar::F64(v) => f64s.push(v),
            }
        }
    }
    let (mut ii, mut iu, mut il, mut ifl, mut id) = (0, 0, 0, 0, 0);
    let mut builder = gpu.stream().launch_builder(func);
    let mut next = bufs.iter_mut();
    for p in &plan.params {
        match p {
            Param::Buffer { .. } => match next.next() {
                Some(Arg::In(b)) => match &**b {
                    Buffer::F32(s) => builder.arg(s),
                    Buffer::F64(s) => builder.arg(s),
                    Buffer::U32(s) => builder.arg(s),
                },
                Some(Arg::Out(b)) => match &mut **b {
                    Buffer::F32(s) => builder.arg(s),
                    Buffer::F64(s) => builder.arg(s),
                    Buffer::U32(s) => builder.arg(s),
                },
                None => unreachable!("buffer count checked above"),
            },
            Param::Scalar { value, .. } => match value {
                Scalar::I32(_) => {
                    ii += 1;
                    builder.arg(&i32s[ii - 1])
                }
                Scalar::U32(_) => {
                    iu += 1;
                    builder.arg(&u32s[iu - 1])
                }
                Scalar::U64(_) => {
                    il += 1;
                    builder.arg(&u64s[il - 1])
                }
                Scalar::F32(_) => {
                    ifl += 1;
                    builder.arg(&f32s[ifl - 1])
                }
                Scalar::F64(_) => {
                    id += 1;
                    builder.arg(&f64s[id - 1])
                }
            },
        };
    }
    let cfg = LaunchConfig {
        grid_dim: (plan.grid[0], plan.grid[1], plan.grid[2]),
        block_dim: (plan.block[0], plan.block[1], plan.block[2]),
        shared_mem_bytes: plan.shared_bytes,
    };
    // SAFETY: the arguments follow the plan's parameter list, which matches
    // the kernel's signature type by type (checked for every kernel by the
    // SIMT emulator tests, which compile the same source); every buffer was
    // checked above to hold the plan's element type and at least the number
    // of elements the plan says the kernel touches; written buffers are
    // borrowed mutably, so no other Rust reference sees them change; and all
    // buffers were allocated on this GPU's one stream, which orders this
    // launch after every earlier use of them.
    unsafe { builder.launch(cfg) }.map_err(driver_err(k))?;
    Ok(())
}
