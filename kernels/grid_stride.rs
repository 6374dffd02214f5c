//! Grid-stride kernels as data. Most kernels (elementwise arithmetic,
//! activations, optimiser updates, the softmax-cross-entropy backward) walk
//! `n` elements with the grid-stride loop `ADV_FOR_EACH` of `common.cuh`,
//! on blocks of [`THREADS`] independent threads. Such a kernel is fully
//! described by its base name and its parameter list ([`GridStride`]);
//! [`GridStride::plan`] turns the description, an element type, an
//! [`Extent`] and the scalar values into a [`LaunchPlan`].
//!
//! The descriptions live beside their `.cu` sources (`elementwise.rs`,
//! `activation.rs`, `optim.rs`, `softmax_xent.rs`); the emulator checks each
//! against the kernel's C++ signature, type by type, on every launch.

use crate::plan::{
    blocks_for, buffer, elements, float_kernel, scalar, Access, Cooperation, LaunchPlan, PlanError,
    PlanResult, Scalar,
};
use crate::types::DType;

/// Threads per block of every grid-stride kernel.
pub const THREADS: u32 = 256;
/// Upper bound on the grid: larger problems loop.
pub const MAX_BLOCKS: u32 = 8192;

/// The elements a grid-stride launch covers: `rows × cols`, with `cols = 1`
/// for flat kernels. Only kernels that index rows (a bias row, one label per
/// row) look at the split.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Extent {
    /// Rows (the element count, for flat kernels).
    pub rows: usize,
    /// Elements per row.
    pub cols: usize,
}

impl Extent {
    /// `n` elements in one flat run.
    pub const fn flat(n: usize) -> Extent {
        Extent { rows: n, cols: 1 }
    }

    /// A `rows × cols` matrix.
    pub const fn matrix(rows: usize, cols: usize) -> Extent {
        Extent { rows, cols }
    }
}

/// How many elements of a float buffer a grid-stride kernel touches.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Len {
    /// All `rows × cols`.
    All,
    /// One row: `cols` (a bias row).
    Row,
    /// One element (a device scalar).
    One,
}

/// One parameter of a grid-stride kernel, in the kernel's order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// A buffer of the launch's float type.
    Float {
        /// The name in the kernel source.
        name: &'static str,
        /// How many elements the kernel touches.
        len: Len,
        /// Read, written or both.
        access: Access,
    },
    /// `const u32*`: one label per row.
    Labels(&'static str),
    /// A scalar of the launch's float type: the next of the caller's values.
    Scalar(&'static str),
    /// An `int` flag: the next of the caller's values, nonzero as 1.
    Flag(&'static str),
    /// `u64 n`: the element count `rows × cols`.
    Count,
    /// `u64 cols`: the row length, at least 1 (so `i % cols` is defined).
    Cols,
    /// `rows` as the float type, at least 1 (a divisor for means).
    RowsAsFloat,
}

/// A float buffer the kernel reads, `rows × cols` long.
pub const fn input(name: &'static str) -> Slot {
    Slot::Float {
        name,
        len: Len::All,
        access: Access::Read,
    }
}

/// A float buffer the kernel overwrites, `rows × cols` long.
pub const fn output(name: &'static str) -> Slot {
    Slot::Float {
        name,
        len: Len::All,
        access: Access::Write,
    }
}

/// A float buffer updated in place, `rows × cols` long.
pub const fn in_place(name: &'static str) -> Slot {
    Slot::Float {
        name,
        len: Len::All,
        access: Access::ReadWrite,
    }
}

/// A float row the kernel reads, `cols` long.
pub const fn row_input(name: &'static str) -> Slot {
    Slot::Float {
        name,
        len: Len::Row,
        access: Access::Read,
    }
}

/// A one-element float buffer the kernel reads (a device scalar).
pub const fn scalar_input(name: &'static str) -> Slot {
    Slot::Float {
        name,
        len: Len::One,
        access: Access::Read,
    }
}

/// A grid-stride kernel: the base name of its `{base}_f32` and `{base}_f64`
/// entry points and its parameters in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GridStride {
    /// The base name of the entry points.
    pub base: &'static str,
    /// The parameters, in the kernel's order.
    pub slots: &'static [Slot],
}

impl GridStride {
    /// How many values [`GridStride::plan`] takes: one per
    /// [`Slot::Scalar`] and [`Slot::Flag`], in order.
    pub fn value_count(&self) -> usize {
        self.slots
            .iter()
            .filter(|s| matches!(s, Slot::Scalar(_) | Slot::Flag(_)))
            .count()
    }

    /// The launch over `extent` in `dtype` with `values` for the scalar and
    /// flag parameters in order: [`THREADS`] threads per block and
    /// `⌈n / THREADS⌉` blocks, at most [`MAX_BLOCKS`] (the loop covers the
    /// rest).
    pub fn plan(&self, dtype: DType, extent: Extent, values: &[f64]) -> PlanResult<LaunchPlan> {
        let op = self.base;
        let kernel = float_kernel(op, dtype)?;
        if values.len() != self.value_count() {
            return Err(PlanError(format!(
                "{op}: takes {} scalar values, got {}",
                self.value_count(),
                values.len()
            )));
        }
        let n = elements(op, extent.rows, extent.cols)?;
        let mut values = values.iter().copied();
        let mut next = || values.next().unwrap_or_default();
        let params = self
            .slots
            .iter()
            .map(|slot| match *slot {
                Slot::Float { name, len, access } => {
                    let len = match len {
                        Len::All => n,
                        Len::Row => extent.cols,
                        Len::One => 1,
                    };
                    buffer(name, dtype, len, access)
                }
                Slot::Labels(name) => buffer(name, DType::U32, extent.rows, Access::Read),
                Slot::Scalar(name) => scalar(name, Scalar::float(dtype, next())),
                Slot::Flag(name) => scalar(name, Scalar::I32((next() != 0.0).into())),
                Slot::Count => scalar("n", Scalar::U64(n as u64)),
                Slot::Cols => scalar("cols", Scalar::U64(extent.cols.max(1) as u64)),
                Slot::RowsAsFloat => {
                    scalar("rows", Scalar::float(dtype, extent.rows.max(1) as f64))
                }
            })
            .collect();
        Ok(LaunchPlan {
            kernel,
            grid: [blocks_for(op, n, THREADS)?.min(MAX_BLOCKS), 1, 1],
            block: [THREADS, 1, 1],
            shared_bytes: 0,
            cooperation: Cooperation::Independent,
            params,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Param;

    const SIZES: &[usize] = &[0, 1, 2, 31, 32, 33, 255, 256, 257, 1000, 4097, 10_000_000];

    const ROW_OP: GridStride = GridStride {
        base: "row_op",
        slots: &[
            input("x"),
            row_input("b"),
            Slot::Labels("labels"),
            output("y"),
            Slot::Scalar("alpha"),
            Slot::Flag("on"),
            Slot::Count,
            Slot::Cols,
            Slot::RowsAsFloat,
        ],
    };

    #[test]
    fn grids_cover_every_element_within_the_cap() {
        for &n in SIZES {
            let p = ROW_OP
                .plan(DType::F32, Extent::flat(n), &[1.0, 0.0])
                .unwrap();
            let threads = p.blocks() * p.threads_per_block();
            assert!(p.grid[0] >= 1 && p.grid[0] <= MAX_BLOCKS);
            if n <= (MAX_BLOCKS * THREADS) as usize {
                assert!(threads >= n as u64);
                assert!(threads < n as u64 + u64::from(THREADS) || n == 0);
            }
            assert_eq!(p.cooperation, Cooperation::Independent);
        }
    }

    #[test]
    fn slots_become_the_parameters_in_order() {
        let p = ROW_OP
            .plan(DType::F64, Extent::matrix(3, 5), &[0.5, 2.0])
            .unwrap();
        assert_eq!(p.kernel, "row_op_f64");
        let lens: Vec<_> = p.buffers().map(|b| (b.name, b.dtype, b.len)).collect();
        assert_eq!(
            lens,
            [
                ("x", DType::F64, 15),
                ("b", DType::F64, 5),
                ("labels", DType::U32, 3),
                ("y", DType::F64, 15)
            ]
        );
        assert_eq!(p.scalar("alpha"), Some(Scalar::F64(0.5)));
        assert_eq!(p.scalar("on"), Some(Scalar::I32(1)));
        assert_eq!(p.scalar("n"), Some(Scalar::U64(15)));
        assert_eq!(p.scalar("cols"), Some(Scalar::U64(5)));
        assert_eq!(p.scalar("rows"), Some(Scalar::F64(3.0)));
        assert!(matches!(p.params[4], Param::Scalar { name: "alpha", .. }));
    }

    #[test]
    fn wrong_value_counts_and_types_are_errors() {
        assert!(ROW_OP.plan(DType::F32, Extent::flat(4), &[1.0]).is_err());
        assert!(ROW_OP
            .plan(DType::U32, Extent::flat(4), &[1.0, 1.0])
            .is_err());
        // Empty extents keep `cols` and `rows` at least 1.
        let p = ROW_OP
            .plan(DType::F32, Extent::matrix(0, 0), &[1.0, 1.0])
            .unwrap();
        assert_eq!(p.scalar("cols"), Some(Scalar::U64(1)));
        assert_eq!(p.scalar("rows"), Some(Scalar::F32(1.0)));
        assert_eq!(p.grid, [1, 1, 1]);
    }
}
