//! Where a tensor lives.

use std::fmt;
use std::str::FromStr;

use crate::backend::cuda;
use crate::error::{Error, Result};

/// A compute device: the rayon CPU backend, one CUDA GPU, or the emulated
/// device that runs the CUDA backend on the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// The CPU, through rayon.
    #[default]
    Cpu,
    /// The CUDA GPU with this ordinal (feature `cuda`).
    Cuda(usize),
    /// The CUDA backend — its buffers, launch plans and the same
    /// `kernels/*.cu` — on the SIMT emulator of `crates/simt`: CPU threads
    /// instead of a GPU (feature `emu`). Slow, and exact about what the
    /// kernels do; this is how the CUDA path runs without a GPU.
    Emu,
}

impl Device {
    /// Resolves a user's device request: `cpu`, `cuda`, `cuda:N`, `emu`, or
    /// `auto` (the first GPU when advgrad was built with CUDA and a GPU is
    /// present, else the CPU; never the emulator). A device this build or
    /// machine cannot use is an error that says why.
    pub fn resolve(spec: &str) -> Result<Device> {
        match spec {
            "auto" => Ok(if cuda::is_available() {
                Device::Cuda(0)
            } else {
                Device::Cpu
            }),
            other => {
                let device: Device = other.parse()?;
                match device {
                    Device::Cpu => {}
                    Device::Cuda(n) => {
                        cuda::probe(n).map_err(|u| Error::Cuda(format!("cuda:{n}: {u}")))?
                    }
                    Device::Emu => cuda::ensure_emulator()?,
                }
                Ok(device)
            }
        }
    }

    /// Whether this is the CPU.
    pub fn is_cpu(self) -> bool {
        matches!(self, Device::Cpu)
    }
}

impl FromStr for Device {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "cpu" => Ok(Device::Cpu),
            "cuda" | "gpu" => Ok(Device::Cuda(0)),
            "emu" => Ok(Device::Emu),
            _ => {
                if let Some(n) = s.strip_prefix("cuda:") {
                    n.parse().map(Device::Cuda).map_err(|_| {
                        Error::invalid(format!(
                            "device `{s}`: expected cuda:N with N a GPU ordinal"
                        ))
                    })
                } else {
                    Err(Error::invalid(format!(
                        "unknown device `{s}`: expected cpu, cuda, cuda:N, emu or auto"
                    )))
                }
            }
        }
    }
}

impl fmt::Display for Device {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Device::Cpu => f.write_str("cpu"),
            Device::Cuda(n) => write!(f, "cuda:{n}"),
            Device::Emu => f.write_str("emu"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for d in [Device::Cpu, Device::Cuda(0), Device::Cuda(3), Device::Emu] {
            assert_eq!(d.to_string().parse::<Device>().unwrap(), d);
        }
        assert_eq!("gpu".parse::<Device>().unwrap(), Device::Cuda(0));
        assert!("cuda:x".parse::<Device>().is_err());
        let e = "tpu".parse::<Device>().unwrap_err().to_string();
        assert!(e.contains("emu"), "{e}");
    }

    #[test]
    fn emu_resolves_exactly_when_built_in() {
        assert_eq!(Device::resolve("emu").is_ok(), cfg!(feature = "emu"));
        assert_ne!(Device::resolve("auto").unwrap(), Device::Emu);
    }
}
