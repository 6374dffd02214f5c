//! The optimiser update inside the product that computes the gradient:
//! `P ← rule(P, op(A)·op(B))`, in place, with no pass over memory of its own.
//!
//! The gemm hands each finished `MR × NR` block of `G = op(A)·op(B)` to the
//! update while the block is in L1 ([`gemm::gemm_stepping`]); the update
//! steps the parameter's elements at the block's place (and the optimiser's
//! state there). `G` is never stored whole (where `k` is summed in one block,
//! not even in part), and the separate update pass, which reads the
//! parameter and the whole gradient and writes the parameter, disappears.
//! The per-element arithmetic is [`kernels::update_serial`], so the bits
//! are those of `matmul` followed by `update`.

use super::{gemm, kernels, CpuElement, CpuStorage};
use crate::backend::{BackendStorage, MatmulDims, UpdateRule};
use crate::dtype::Float;
use crate::error::{Error, Result};

/// A buffer shared by the update's calls, which touch disjoint elements of
/// it.
#[derive(Clone, Copy)]
struct Disjoint<T>(*mut T, usize);
// SAFETY: the gemm hands every element of the product to exactly one call,
// and each call touches only the elements at the positions it was handed,
// so no two threads touch the same element.
unsafe impl<T: Send> Send for Disjoint<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for Disjoint<T> {}

impl<T> Disjoint<T> {
    fn new(s: &mut [T]) -> Self {
        Disjoint(s.as_mut_ptr(), s.len())
    }

    /// Elements `offset..offset + len` if the buffer is the parameter's
    /// size `total`, else an empty slice (a state buffer the rule does not
    /// use).
    ///
    /// # Safety
    ///
    /// No other live reference may cover those elements.
    unsafe fn stretch<'a>(self, total: usize, offset: usize, len: usize) -> &'a mut [T] {
        if self.1 == total && offset + len <= total {
            // SAFETY: in bounds (checked); exclusive by the caller's contract.
            unsafe { std::slice::from_raw_parts_mut(self.0.add(offset), len) }
        } else {
            &mut []
        }
    }
}

/// How many blocks ahead the update prefetches the parameter's values: each
/// block of the product takes about a microsecond to sum, long enough to
/// fetch the next one's from memory (without it, the loads of the
/// parameter stall the update).
const PREFETCH_BLOCKS: usize = 2;

/// Asks for the cache lines of `bytes` bytes from `ptr` on (a hint: never
/// faults, whatever the address).
fn prefetch<T>(ptr: *const T, bytes: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in (0..bytes).step_by(64) {
        // SAFETY: a prefetch reads nothing the program can observe and
        // never faults, whatever the address (computed with wrapping_add).
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(
                ptr.cast::<i8>().wrapping_add(line),
            )
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (ptr, bytes);
}

/// `p ← p − lr·(g + wd·p)`, element by element: plain SGD as
/// [`kernels::update_serial`] computes it (the same operations in the same
/// order, so the same bits), in the widest vectors the CPU has.
fn sgd_row<T: Float>(p: &mut [T], g: &[T], lr: T, wd: T) {
    fn portable<T: Float>(p: &mut [T], g: &[T], lr: T, wd: T) {
        for (p, &g) in p.iter_mut().zip(g) {
            *p -= lr * (g + wd * *p);
        }
    }
    #[cfg(target_arch = "x86_64")]
    {
        #[target_feature(enable = "avx512f")]
        fn avx512<T: Float>(p: &mut [T], g: &[T], lr: T, wd: T) {
            portable(p, g, lr, wd)
        }
        if std::arch::is_x86_feature_detected!("avx512f") {
            // SAFETY: the CPU has AVX-512F (checked above).
            return unsafe { avx512(p, g, lr, wd) };
        }
    }
    portable(p, g, lr, wd)
}

/// Steps `param` in place by `rule` from the gradient `op(a)·op(b)` (see
/// the module docs), and `s1`, `s2` with it.
pub(super) fn matmul_update(
    param: &mut CpuStorage,
    a: &CpuStorage,
    b: &CpuStorage,
    d: MatmulDims,
    s1: &mut CpuStorage,
    s2: &mut CpuStorage,
    rule: UpdateRule,
) -> Result<()> {
    match (param, a, b, s1, s2) {
        (
            CpuStorage::F32(p),
            CpuStorage::F32(a),
            CpuStorage::F32(b),
            CpuStorage::F32(s1),
            CpuStorage::F32(s2),
        ) => typed(p, a, b, d, s1, s2, rule),
        (
            CpuStorage::F64(p),
            CpuStorage::F64(a),
            CpuStorage::F64(b),
            CpuStorage::F64(s1),
            CpuStorage::F64(s2),
        ) => typed(p, a, b, d, s1, s2, rule),
        (p, a, b, s1, s2) => {
            let dtype = p.dtype();
            let others = [a.dtype(), b.dtype(), s1.dtype(), s2.dtype()];
            Err(match others.into_iter().find(|&d| d != dtype) {
                Some(rhs) => Error::DTypeMismatch {
                    op: "matmul_update",
                    lhs: dtype,
                    rhs,
                },
                None => super::unsupported("matmul_update", dtype),
            })
        }
    }
}

fn typed<T: Float + CpuElement + gemm::GemmElem>(
    p: &mut [T],
    a: &[T],
    b: &[T],
    d: MatmulDims,
    s1: &mut [T],
    s2: &mut [T],
    rule: UpdateRule,
) -> Result<()> {
    let total = d.m * d.n;
    if p.len() != total {
        return Err(Error::invalid(format!(
            "matmul_update: a parameter of {} values for a [{}, {}] gradient",
            p.len(),
            d.m,
            d.n
        )));
    }
    let (p, s1, s2) = (Disjoint::new(p), Disjoint::new(s1), Disjoint::new(s2));
    let plain_sgd = match rule {
        UpdateRule::Sgd {
            lr,
            momentum: 0.0,
            weight_decay,
            ..
        } => Some((T::from_f64(lr), T::from_f64(weight_decay))),
        _ => None,
    };
    let step = |i: usize, j: usize, g: gemm::GradBlock<'_, T>| {
        // The parameter's (and state's) block that comes PREFETCH_BLOCKS
        // calls later: blocks arrive along a row of blocks.
        let ahead = j + PREFETCH_BLOCKS * g.cols();
        for r in 0..g.rows() {
            let at = (i + r) * d.n + ahead;
            for buf in [p, s1, s2] {
                if buf.1 == total {
                    prefetch(buf.0.wrapping_add(at), g.cols() * std::mem::size_of::<T>());
                }
            }
        }
        if let Some((lr, wd)) = plain_sgd {
            for r in 0..g.rows() {
                let (offset, len) = ((i + r) * d.n + j, g.cols());
                // SAFETY: as below.
                let p = unsafe { p.stretch(total, offset, len) };
                sgd_row(p, g.row(r), lr, wd);
            }
            return;
        }
        for r in 0..g.rows() {
            let (offset, len) = ((i + r) * d.n + j, g.cols());
            // SAFETY: the gemm hands each element of the product to one
            // call only, so these elements of the parameter and its state
            // are touched by no one else.
            let (p, m, v) = unsafe {
                (
                    p.stretch(total, offset, len),
                    s1.stretch(total, offset, len),
                    s2.stretch(total, offset, len),
                )
            };
            kernels::update_wide(p, g.row(r), m, v, rule);
        }
    };
    gemm::gemm_stepping(d.m, d.n, d.k, a, d.a_trans, b, d.b_trans, &step);
    Ok(())
}
