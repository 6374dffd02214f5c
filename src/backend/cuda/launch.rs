//! The seam between the CUDA backend and what runs its kernels.
//!
//! A [`Launcher`] allocates device buffers, copies between host and device
//! and runs a [`LaunchPlan`]; the GPU driver and the SIMT emulator are the
//! two implementations. [`launch`] checks every buffer against the plan
//! (element type, length, and that written buffers are passed mutably)
//! before the launcher runs it, so a wrong plan or a short buffer is an
//! error, never an out-of-bounds access on the device.

use std::fmt;

use kernels::{Access, LaunchPlan, PlanError};

use super::memory::DeviceMemory;
use crate::backend::cpu::CpuStorage;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};

/// An allocation of device memory holding elements of one type.
pub trait DeviceBuffer: Send + Sync + fmt::Debug + 'static {
    /// The element type.
    fn dtype(&self) -> DType;
    /// Allocated elements (at least the length of the storage using it, at
    /// least 1).
    fn capacity(&self) -> usize;
}

/// A buffer argument of a launch.
#[derive(Debug)]
pub enum Arg<'a, B> {
    /// Read by the kernel.
    In(&'a B),
    /// Written (or read and written) by the kernel.
    Out(&'a mut B),
}

impl<B> Arg<'_, B> {
    /// The buffer.
    pub fn buffer(&self) -> &B {
        match self {
            Arg::In(b) => b,
            Arg::Out(b) => b,
        }
    }
}

/// What runs the CUDA backend's kernels: a GPU through the driver, or the
/// SIMT emulator. Every method works on buffers of this launcher only.
pub trait Launcher: Send + Sync + Sized + 'static {
    /// A device allocation.
    type Buffer: DeviceBuffer;

    /// The device this launcher runs on.
    fn device(&self) -> Device;

    /// The device's pool of freed buffers and its counters, which
    /// [`CudaStorage`](super::CudaStorage) keeps: the launcher's own
    /// methods neither count nor pool.
    fn memory(&self) -> &DeviceMemory<Self::Buffer>;

    /// An allocation of `len` (at least 1) elements of `dtype` whose
    /// contents are unspecified: only for buffers a kernel overwrites before
    /// anything reads them (plan outputs with `Access::Write`, reduction
    /// partials).
    fn alloc(&self, dtype: DType, len: usize) -> Result<Self::Buffer>;

    /// A device copy of a host buffer (at least one element allocated).
    fn upload(&self, host: &CpuStorage) -> Result<Self::Buffer>;

    /// The first `len` elements of `buf`, in host memory, once every earlier
    /// launch has finished.
    fn download(&self, buf: &Self::Buffer, len: usize) -> Result<CpuStorage>;

    /// A device copy of `buf`, ordered after every earlier launch.
    fn duplicate(&self, buf: &Self::Buffer) -> Result<Self::Buffer>;

    /// Copies elements `offset..offset + len` of `src` to the first `len`
    /// of `dst` (same element type), on the device, in launch order.
    fn copy_into(
        &self,
        src: &Self::Buffer,
        offset: usize,
        dst: &mut Self::Buffer,
        len: usize,
    ) -> Result<()>;

    /// Streaming multiprocessors of the device, which the matmul's tiling
    /// sizes its grid by. The default, for a device that cannot say (the
    /// emulator), is an H100's 132, so that it runs the plans that GPU gets.
    fn multiprocessors(&self) -> u32 {
        kernels::matmul::DEFAULT_MULTIPROCESSORS
    }

    /// Runs `plan` with `args`, one per buffer parameter in order. Called
    /// only through [`launch`], after its checks.
    fn run(&self, plan: &LaunchPlan, args: &mut [Arg<'_, Self::Buffer>]) -> Result<()>;
}

/// A plan error as an advgrad error.
pub(crate) fn plan_err(e: PlanError) -> Error {
    Error::invalid(e.0)
}

/// Launches `plan` on `launcher` with `args`, one per buffer parameter of
/// the plan, in order, after checking each against the plan.
pub fn launch<L: Launcher>(
    launcher: &L,
    plan: &LaunchPlan,
    args: &mut [Arg<'_, L::Buffer>],
) -> Result<()> {
    let k = &plan.kernel;
    let wanted = plan.buffers().count();
    if wanted != args.len() {
        return Err(Error::Cuda(format!(
            "{k}: the plan takes {wanted} buffers, got {}",
            args.len()
        )));
    }
    for (p, arg) in plan.buffers().zip(args.iter()) {
        let b = arg.buffer();
        if b.dtype() != p.dtype {
            return Err(Error::Cuda(format!(
                "{k}: buffer `{}` must hold {}, got {}",
                p.name,
                p.dtype,
                b.dtype()
            )));
        }
        if b.capacity() < p.len {
            return Err(Error::invalid(format!(
                "{k}: buffer `{}` has {} elements, the kernel needs {}",
                p.name,
                b.capacity(),
                p.len
            )));
        }
        if p.access != Access::Read && matches!(arg, Arg::In(_)) {
            return Err(Error::Cuda(format!(
                "{k}: buffer `{}` is written, pass it as Out",
                p.name
            )));
        }
    }
    launcher.run(plan, args)
}

#[cfg(all(test, feature = "emu"))]
mod tests {
    use super::*;
    use crate::backend::cuda::emulator;
    use kernels::elementwise;
    use kernels::grid_stride::Extent;

    #[test]
    fn buffers_are_checked_against_the_plan_before_a_launch() {
        let emu = emulator();
        let plan = elementwise::SIGN
            .plan(DType::F32, Extent::flat(10), &[])
            .unwrap();
        let x = emu.upload(&CpuStorage::F32(vec![1.0; 10])).unwrap();
        let short = emu.alloc(DType::F32, 9).unwrap();
        let mut y = emu.alloc(DType::F32, 10).unwrap();
        let mut wide = emu.alloc(DType::F64, 10).unwrap();

        let e = launch(&*emu, &plan, &mut [Arg::In(&short), Arg::Out(&mut y)]).unwrap_err();
        assert!(
            e.to_string()
                .contains("has 9 elements, the kernel needs 10"),
            "{e}"
        );
        let e = launch(&*emu, &plan, &mut [Arg::In(&x), Arg::In(&y)]).unwrap_err();
        assert!(
            e.to_string().contains("`y` is written, pass it as Out"),
            "{e}"
        );
        let e = launch(&*emu, &plan, &mut [Arg::In(&x), Arg::Out(&mut wide)]).unwrap_err();
        assert!(e.to_string().contains("must hold f32, got f64"), "{e}");
        let e = launch(&*emu, &plan, &mut [Arg::In(&x)]).unwrap_err();
        assert!(e.to_string().contains("takes 2 buffers, got 1"), "{e}");

        launch(&*emu, &plan, &mut [Arg::In(&x), Arg::Out(&mut y)]).unwrap();
        assert_eq!(
            emu.download(&y, 10).unwrap(),
            CpuStorage::F32(vec![1.0; 10])
        );
    }
}
