//! Where a tensor lives.

use std::fmt;
use std::str::FromStr;

use crate::error::{Error, Result};

/// A compute device: the rayon CPU backend or one CUDA GPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
pub enum Device {
    /// The CPU, through rayon.
    #[default]
    Cpu,
    /// The CUDA GPU with this ordinal.
    Cuda(usize),
}

impl Device {
    /// Resolves a user's device request: `cpu`, `cuda`, `cuda:N`, or `auto`
    /// (the first GPU when advgrad was built with CUDA and a GPU is present,
    /// else the CPU).
    pub fn resolve(spec: &str) -> Result<Device> {
        match spec {
            "auto" => Ok(if crate::backend::cuda::is_available() {
                Device::Cuda(0)
            } else {
                Device::Cpu
            }),
            other => {
                let device: Device = other.parse()?;
                if let Device::Cuda(_) = device {
                    crate::backend::cuda::ensure_available()?;
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
            _ => {
                if let Some(n) = s.strip_prefix("cuda:") {
                    n.parse().map(Device::Cuda).map_err(|_| {
                        Error::invalid(format!(
                            "device `{s}`: expected cuda:N with N a GPU ordinal"
                        ))
                    })
                } else {
                    Err(Error::invalid(format!(
                        "unknown device `{s}`: expected cpu, cuda, cuda:N or auto"
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
        }
    }
}
