//! [`GpuBuffer`] and the [`Launcher`] of a [`Gpu`]: allocations, copies and
//! launches on the GPU's one stream, through cudarc.

use cudarc::driver::{CudaSlice, DeviceRepr, LaunchConfig, PushKernelArg};
use kernels::{LaunchPlan, Param, Scalar};

use super::{driver_err, Gpu};
use crate::backend::cpu::CpuStorage;
use crate::backend::cuda::launch::{Arg, DeviceBuffer, Launcher};
use crate::backend::cuda::memory::DeviceMemory;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};

/// A device allocation on a GPU, by element type. Allocations hold at least
/// one element (the driver rejects empty ones); the logical length lives in
/// the [`CudaStorage`](crate::backend::cuda::CudaStorage).
#[derive(Debug)]
pub enum GpuBuffer {
    /// f32 elements.
    F32(CudaSlice<f32>),
    /// f64 elements.
    F64(CudaSlice<f64>),
    /// u32 elements (labels, class indices).
    U32(CudaSlice<u32>),
    /// f16 elements, as their bits.
    F16(CudaSlice<u16>),
    /// bf16 elements, as their bits.
    BF16(CudaSlice<u16>),
}

impl DeviceBuffer for GpuBuffer {
    fn dtype(&self) -> DType {
        match self {
            GpuBuffer::F32(_) => DType::F32,
            GpuBuffer::F64(_) => DType::F64,
            GpuBuffer::U32(_) => DType::U32,
            GpuBuffer::F16(_) => DType::F16,
            GpuBuffer::BF16(_) => DType::BF16,
        }
    }

    fn capacity(&self) -> usize {
        match self {
            GpuBuffer::F32(s) => s.len(),
            GpuBuffer::F64(s) => s.len(),
            GpuBuffer::U32(s) => s.len(),
            GpuBuffer::F16(s) | GpuBuffer::BF16(s) => s.len(),
        }
    }
}

fn upload<T: DeviceRepr>(gpu: &Gpu, host: &[T]) -> Result<CudaSlice<T>> {
    let s = gpu.stream();
    let what = "copying to the GPU";
    // SAFETY: the allocation is overwritten by the copy below (its first
    // `host.len()` elements); the padding element of an empty buffer is
    // never read (every kernel stays within the logical length).
    let mut dst = unsafe { s.alloc::<T>(host.len().max(1)) }.map_err(driver_err(what))?;
    if !host.is_empty() {
        s.memcpy_htod(host, &mut dst).map_err(driver_err(what))?;
    }
    Ok(dst)
}

fn download<T: DeviceRepr + Default + Clone>(
    gpu: &Gpu,
    src: &CudaSlice<T>,
    len: usize,
) -> Result<Vec<T>> {
    let mut out = vec![T::default(); len];
    if len > 0 {
        let s = gpu.stream();
        let what = "copying from the GPU";
        s.memcpy_dtoh(&src.slice(..len), &mut out)
            .map_err(driver_err(what))?;
        s.synchronize().map_err(driver_err(what))?;
    }
    Ok(out)
}

impl Launcher for Gpu {
    type Buffer = GpuBuffer;

    fn device(&self) -> Device {
        Device::Cuda(self.ordinal)
    }

    fn memory(&self) -> &DeviceMemory<GpuBuffer> {
        &self.memory
    }

    fn alloc(&self, dtype: DType, len: usize) -> Result<GpuBuffer> {
        let s = self.stream();
        let n = len.max(1);
        let what = "allocating device memory";
        // SAFETY: the memory is uninitialised, but plain f32/f64/u32/u16 have
        // no invalid bit patterns and, by this method's contract, a kernel
        // writes every element the buffer is ever read at before any read.
        unsafe {
            Ok(match dtype {
                DType::F32 => GpuBuffer::F32(s.alloc::<f32>(n).map_err(driver_err(what))?),
                DType::F64 => GpuBuffer::F64(s.alloc::<f64>(n).map_err(driver_err(what))?),
                DType::U32 => GpuBuffer::U32(s.alloc::<u32>(n).map_err(driver_err(what))?),
                DType::F16 => GpuBuffer::F16(s.alloc::<u16>(n).map_err(driver_err(what))?),
                DType::BF16 => GpuBuffer::BF16(s.alloc::<u16>(n).map_err(driver_err(what))?),
            })
        }
    }

    fn upload(&self, host: &CpuStorage) -> Result<GpuBuffer> {
        Ok(match host {
            CpuStorage::F32(v) => GpuBuffer::F32(upload(self, v)?),
            CpuStorage::F64(v) => GpuBuffer::F64(upload(self, v)?),
            CpuStorage::U32(v) => GpuBuffer::U32(upload(self, v)?),
            CpuStorage::F16(v) => {
                let bits: Vec<u16> = v.iter().map(|x| x.to_bits()).collect();
                GpuBuffer::F16(upload(self, &bits)?)
            }
            CpuStorage::BF16(v) => {
                let bits: Vec<u16> = v.iter().map(|x| x.to_bits()).collect();
                GpuBuffer::BF16(upload(self, &bits)?)
            }
        })
    }

    fn download(&self, buf: &GpuBuffer, len: usize) -> Result<CpuStorage> {
        Ok(match buf {
            GpuBuffer::F32(s) => CpuStorage::F32(download(self, s, len)?),
            GpuBuffer::F64(s) => CpuStorage::F64(download(self, s, len)?),
            GpuBuffer::U32(s) => CpuStorage::U32(download(self, s, len)?),
            GpuBuffer::F16(s) => CpuStorage::F16(
                download(self, s, len)?
                    .into_iter()
                    .map(half::f16::from_bits)
                    .collect(),
            ),
            GpuBuffer::BF16(s) => CpuStorage::BF16(
                download(self, s, len)?
                    .into_iter()
                    .map(half::bf16::from_bits)
                    .collect(),
            ),
        })
    }

    fn duplicate(&self, buf: &GpuBuffer) -> Result<GpuBuffer> {
        let what = "copying a device buffer";
        Ok(match buf {
            GpuBuffer::F32(s) => GpuBuffer::F32(s.try_clone().map_err(driver_err(what))?),
            GpuBuffer::F64(s) => GpuBuffer::F64(s.try_clone().map_err(driver_err(what))?),
            GpuBuffer::U32(s) => GpuBuffer::U32(s.try_clone().map_err(driver_err(what))?),
            GpuBuffer::F16(s) => GpuBuffer::F16(s.try_clone().map_err(driver_err(what))?),
            GpuBuffer::BF16(s) => GpuBuffer::BF16(s.try_clone().map_err(driver_err(what))?),
        })
    }

    fn copy_into(
        &self,
        src: &GpuBuffer,
        offset: usize,
        dst: &mut GpuBuffer,
        len: usize,
    ) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let s = self.stream();
        let range = offset..offset + len;
        match (src, dst) {
            (GpuBuffer::F32(a), GpuBuffer::F32(b)) => {
                s.memcpy_dtod(&a.slice(range), &mut b.slice_mut(..len))
            }
            (GpuBuffer::F64(a), GpuBuffer::F64(b)) => {
                s.memcpy_dtod(&a.slice(range), &mut b.slice_mut(..len))
            }
            (GpuBuffer::U32(a), GpuBuffer::U32(b)) => {
                s.memcpy_dtod(&a.slice(range), &mut b.slice_mut(..len))
            }
            (GpuBuffer::F16(a), GpuBuffer::F16(b)) | (GpuBuffer::BF16(a), GpuBuffer::BF16(b)) => {
                s.memcpy_dtod(&a.slice(range), &mut b.slice_mut(..len))
            }
            (a, b) => {
                return Err(Error::Cuda(format!(
                    "copying {} elements into a buffer of {}",
                    a.dtype(),
                    b.dtype()
                )))
            }
        }
        .map_err(driver_err("copying within the GPU"))
    }

    /// The device's `CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT` (the
    /// default when the driver does not answer).
    fn multiprocessors(&self) -> u32 {
        use cudarc::driver::sys::CUdevice_attribute::CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT;
        match self
            .stream()
            .context()
            .attribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT)
        {
            Ok(n) if n > 0 => n as u32,
            _ => kernels::matmul::DEFAULT_MULTIPROCESSORS,
        }
    }

    /// Asynchronous: the kernel runs in stream order after every earlier
    /// launch and copy of this GPU.
    fn run(&self, plan: &LaunchPlan, args: &mut [Arg<'_, GpuBuffer>]) -> Result<()> {
        let k = &plan.kernel;
        let func = self.function(k)?;
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
        let (mut i32s, mut u32s, mut u64s, mut f32s, mut f64s) = (
            i32s.iter(),
            u32s.iter(),
            u64s.iter(),
            f32s.iter(),
            f64s.iter(),
        );
        let mut builder = self.stream().launch_builder(func);
        let mut next = args.iter_mut();
        for p in &plan.params {
            match p {
                Param::Buffer { .. } => match next.next() {
                    Some(Arg::In(b)) => match &**b {
                        GpuBuffer::F32(s) => builder.arg(s),
                        GpuBuffer::F64(s) => builder.arg(s),
                        GpuBuffer::U32(s) => builder.arg(s),
                        GpuBuffer::F16(s) | GpuBuffer::BF16(s) => builder.arg(s),
                    },
                    Some(Arg::Out(b)) => match &mut **b {
                        GpuBuffer::F32(s) => builder.arg(s),
                        GpuBuffer::F64(s) => builder.arg(s),
                        GpuBuffer::U32(s) => builder.arg(s),
                        GpuBuffer::F16(s) | GpuBuffer::BF16(s) => builder.arg(s),
                    },
                    None => unreachable!("launch() checked the buffer count"),
                },
                Param::Scalar { value, .. } => {
                    let missing = "every scalar was collected above";
                    match value {
                        Scalar::I32(_) => builder.arg(i32s.next().expect(missing)),
                        Scalar::U32(_) => builder.arg(u32s.next().expect(missing)),
                        Scalar::U64(_) => builder.arg(u64s.next().expect(missing)),
                        Scalar::F32(_) => builder.arg(f32s.next().expect(missing)),
                        Scalar::F64(_) => builder.arg(f64s.next().expect(missing)),
                    }
                }
            };
        }
        let cfg = LaunchConfig {
            grid_dim: (plan.grid[0], plan.grid[1], plan.grid[2]),
            block_dim: (plan.block[0], plan.block[1], plan.block[2]),
            shared_mem_bytes: plan.shared_bytes,
        };
        // SAFETY: the arguments follow the plan's parameter list, which
        // matches the kernel's signature type by type (the emulator checks
        // it against the same source on every launch in the test suite);
        // `launch()` checked every buffer to hold the plan's element type and
        // at least the number of elements the plan says the kernel touches;
        // written buffers are borrowed mutably, so no other Rust reference
        // sees them change; and all buffers were allocated on this GPU's one
        // stream, which orders this launch after every earlier use of them.
        unsafe { builder.launch(cfg) }.map_err(driver_err(k))?;
        Ok(())
    }
}
