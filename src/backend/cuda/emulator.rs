//! [`Emulator`]: the [`Launcher`] of the emulated device, `--device emu`.
//!
//! Buffers are host allocations owned by the emulated device
//! ([`simt::DeviceBuffer`]: 256-byte aligned, between guard zones, poisoned
//! with 0xFF bytes when fresh), and a launch runs the plan on the SIMT
//! emulator of `crates/simt`, which compiled the same `kernels/*.cu` as C++:
//! it checks the plan against the kernel's signature, poisons the outputs,
//! checks the guard zones afterwards and reports divergent or hung barriers.
//! Launches are synchronous and run one at a time.

use std::sync::{Arc, OnceLock};

use kernels::LaunchPlan;
use simt::{DeviceBuffer as SimtBuffer, Element};

use super::launch::{Arg, DeviceBuffer, Launcher};
use super::memory::DeviceMemory;
use crate::backend::cpu::CpuStorage;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};

/// The emulated device (there is one).
#[derive(Debug)]
pub struct Emulator {
    memory: DeviceMemory<SimtBuffer>,
}

/// The emulated device.
pub fn emulator() -> Arc<Emulator> {
    static EMU: OnceLock<Arc<Emulator>> = OnceLock::new();
    EMU.get_or_init(|| {
        Arc::new(Emulator {
            memory: DeviceMemory::default(),
        })
    })
    .clone()
}

impl DeviceBuffer for SimtBuffer {
    fn dtype(&self) -> DType {
        SimtBuffer::dtype(self)
    }

    fn capacity(&self) -> usize {
        self.len()
    }
}

fn read<T: Element>(buf: &SimtBuffer, len: usize) -> Result<Vec<T>> {
    buf.to_vec(len).ok_or_else(|| {
        Error::Cuda(format!(
            "emu: reading {len} {} elements from a buffer of {} {}",
            T::DTYPE,
            buf.len(),
            buf.dtype()
        ))
    })
}

impl Launcher for Emulator {
    type Buffer = SimtBuffer;

    fn device(&self) -> Device {
        Device::Emu
    }

    fn memory(&self) -> &DeviceMemory<SimtBuffer> {
        &self.memory
    }

    fn alloc(&self, dtype: DType, len: usize) -> Result<SimtBuffer> {
        Ok(SimtBuffer::poisoned(dtype, len.max(1)))
    }

    fn upload(&self, host: &CpuStorage) -> Result<SimtBuffer> {
        Ok(match host {
            CpuStorage::F32(v) => SimtBuffer::from_slice(v),
            CpuStorage::F64(v) => SimtBuffer::from_slice(v),
            CpuStorage::U32(v) => SimtBuffer::from_slice(v),
            CpuStorage::F16(v) => SimtBuffer::from_slice(v),
            CpuStorage::BF16(v) => SimtBuffer::from_slice(v),
        })
    }

    fn download(&self, buf: &SimtBuffer, len: usize) -> Result<CpuStorage> {
        Ok(match buf.dtype() {
            DType::F32 => CpuStorage::F32(read(buf, len)?),
            DType::F64 => CpuStorage::F64(read(buf, len)?),
            DType::U32 => CpuStorage::U32(read(buf, len)?),
            DType::F16 => CpuStorage::F16(read(buf, len)?),
            DType::BF16 => CpuStorage::BF16(read(buf, len)?),
        })
    }

    fn duplicate(&self, buf: &SimtBuffer) -> Result<SimtBuffer> {
        Ok(buf.clone())
    }

    /// The emulated device's memory is the host's: the range is read and
    /// written as a fresh buffer (not a blocking read of a real device).
    fn copy_into(
        &self,
        src: &SimtBuffer,
        offset: usize,
        dst: &mut SimtBuffer,
        len: usize,
    ) -> Result<()> {
        fn range<T: Element>(src: &SimtBuffer, offset: usize, len: usize) -> Result<SimtBuffer> {
            let v: Vec<T> = read(src, offset + len)?;
            Ok(SimtBuffer::from_slice(&v[offset..]))
        }
        if src.dtype() != dst.dtype() || dst.len() < len.max(1) {
            return Err(Error::Cuda(format!(
                "emu: copying {len} {} elements into a buffer of {} {}",
                src.dtype(),
                dst.len(),
                dst.dtype()
            )));
        }
        if len > 0 {
            *dst = match src.dtype() {
                DType::F32 => range::<f32>(src, offset, len)?,
                DType::F64 => range::<f64>(src, offset, len)?,
                DType::U32 => range::<u32>(src, offset, len)?,
                DType::F16 => range::<half::f16>(src, offset, len)?,
                DType::BF16 => range::<half::bf16>(src, offset, len)?,
            };
        }
        Ok(())
    }

    fn run(&self, plan: &LaunchPlan, args: &mut [Arg<'_, SimtBuffer>]) -> Result<()> {
        let mut args: Vec<simt::Arg<'_>> = args
            .iter_mut()
            .map(|a| match a {
                Arg::In(b) => simt::Arg::In(b),
                Arg::Out(b) => simt::Arg::Out(b),
            })
            .collect();
        simt::launch(plan, &mut args).map_err(|e| Error::Cuda(format!("emu: {e}")))
    }
}
