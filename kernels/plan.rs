//! What a launch is: [`LaunchPlan`] says everything a kernel launch needs
//! except the device buffers themselves — the entry point, the grid and
//! block, the dynamic shared memory, and the parameter list in the kernel's
//! order (which buffer goes where, how long it must be, and the value of
//! every scalar). Plans are pure Rust, without driver calls, so the same plan
//! drives a launch on a GPU and on the SIMT emulator, and is unit-tested
//! anywhere.
//!
//! Every plan uses whole warps (block sizes are multiples of 32) and a grid
//! of at least one block, so empty problems are valid launches that do
//! nothing (or write zeros, for a matmul with `k = 0`).

use std::fmt;

use crate::types::DType;

/// Threads in a warp.
pub const WARP: u32 = 32;
/// Largest grid extent along y and z.
pub const MAX_GRID_YZ: u32 = 65_535;

/// How a kernel uses a buffer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Access {
    /// Only read.
    Read,
    /// Only written: every element of the first `len` is overwritten, so the
    /// previous contents do not matter (the emulator poisons them first).
    Write,
    /// Read and written (in-place updates, accumulation).
    ReadWrite,
}

/// Whether the threads of a block work together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cooperation {
    /// No thread waits for or reads from another: no `__syncthreads`, no
    /// warp shuffle, no shared memory. The emulator may run such a block's
    /// threads one after another, and fails a launch whose kernel uses any
    /// of those after all.
    Independent,
    /// Threads of a block meet at barriers, shuffle or share memory: the
    /// emulator runs each as a fiber of its own, switched at barriers.
    Block,
}

/// A scalar kernel argument, with the C type it is passed as.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Scalar {
    /// `int`.
    I32(i32),
    /// `unsigned int`.
    U32(u32),
    /// `unsigned long long`.
    U64(u64),
    /// `float`.
    F32(f32),
    /// `double`.
    F64(f64),
}

impl Scalar {
    /// `v` as the kernel's float type `dtype` (`float` or `double`).
    pub fn float(dtype: DType, v: f64) -> Scalar {
        match dtype {
            DType::F64 => Scalar::F64(v),
            _ => Scalar::F32(v as f32),
        }
    }
}

/// One kernel parameter, in the kernel's order.
#[derive(Clone, Debug, PartialEq)]
pub enum Param {
    /// A device pointer the caller supplies.
    Buffer {
        /// The parameter's name in the kernel source.
        name: &'static str,
        /// Its element type.
        dtype: DType,
        /// How many elements the kernel may touch (the buffer may be longer).
        len: usize,
        /// Whether the kernel reads it, writes it, or both.
        access: Access,
    },
    /// A value the plan fixes.
    Scalar {
        /// The parameter's name in the kernel source.
        name: &'static str,
        /// Its value.
        value: Scalar,
    },
}

/// Grid, block, shared memory and parameters of one kernel launch.
#[derive(Clone, Debug, PartialEq)]
pub struct LaunchPlan {
    /// The `extern "C"` entry point, e.g. `matmul_f32`.
    pub kernel: String,
    /// Blocks along x, y, z (each at least 1).
    pub grid: [u32; 3],
    /// Threads per block along x, y, z (their product a multiple of 32).
    pub block: [u32; 3],
    /// Dynamic shared memory in bytes.
    pub shared_bytes: u32,
    /// Whether the threads of a block work together.
    pub cooperation: Cooperation,
    /// The parameters in the kernel's order.
    pub params: Vec<Param>,
}

/// A buffer parameter of a plan: what the caller must supply.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferParam {
    /// The parameter's name in the kernel source.
    pub name: &'static str,
    /// Its element type.
    pub dtype: DType,
    /// How many elements the kernel may touch.
    pub len: usize,
    /// Whether the kernel reads it, writes it, or both.
    pub access: Access,
}

impl LaunchPlan {
    /// Threads per block.
    pub fn threads_per_block(&self) -> u64 {
        self.block.iter().map(|&b| u64::from(b)).product()
    }

    /// Number of blocks.
    pub fn blocks(&self) -> u64 {
        self.grid.iter().map(|&g| u64::from(g)).product()
    }

    /// The buffer parameters, in order.
    pub fn buffers(&self) -> impl Iterator<Item = BufferParam> + '_ {
        self.params.iter().filter_map(|p| match *p {
            Param::Buffer {
                name,
                dtype,
                len,
                access,
            } => Some(BufferParam {
                name,
                dtype,
                len,
                access,
            }),
            Param::Scalar { .. } => None,
        })
    }

    /// The value of the scalar parameter `name`.
    pub fn scalar(&self, name: &str) -> Option<Scalar> {
        self.params.iter().find_map(|p| match p {
            Param::Scalar { name: n, value } if *n == name => Some(*value),
            _ => None,
        })
    }
}

/// A problem the kernels cannot be launched for (too large, wrong type).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PlanError(pub String);

impl fmt::Display for PlanError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for PlanError {}

/// `Result` with [`PlanError`].
pub type PlanResult<T> = Result<T, PlanError>;

/// The entry point `{base}_f32` or `{base}_f64`; u32 has no float kernels.
pub(crate) fn float_kernel(base: &str, dtype: DType) -> PlanResult<String> {
    if dtype.is_float() {
        Ok(format!("{base}_{}", dtype.name()))
    } else {
        Err(PlanError(format!("{base}: no {dtype} instantiation")))
    }
}

/// `v` as a C `int`, or an error naming the op and the extent.
pub(crate) fn as_i32(op: &str, what: &str, v: usize) -> PlanResult<i32> {
    i32::try_from(v).map_err(|_| PlanError(format!("{op}: {what} = {v} exceeds i32::MAX")))
}

/// `a·b` elements, or an error when the count overflows.
pub(crate) fn elements(op: &str, a: usize, b: usize) -> PlanResult<usize> {
    a.checked_mul(b)
        .ok_or_else(|| PlanError(format!("{op}: {a}×{b} elements overflow usize")))
}

/// Blocks of `per_block` items needed for `n`, at least one, as a grid
/// extent.
pub(crate) fn blocks_for(op: &str, n: usize, per_block: u32) -> PlanResult<u32> {
    let b = (n as u64).div_ceil(u64::from(per_block)).max(1);
    u32::try_from(b).map_err(|_| PlanError(format!("{op}: {n} items need too many blocks")))
}

/// A buffer parameter.
pub(crate) fn buffer(name: &'static str, dtype: DType, len: usize, access: Access) -> Param {
    Param::Buffer {
        name,
        dtype,
        len,
        access,
    }
}

/// A scalar parameter.
pub(crate) fn scalar(name: &'static str, value: Scalar) -> Param {
    Param::Scalar { name, value }
}
