//! The optimiser update as the epilogue of the product that computes the
//! gradient: `P' = rule(P, op(A)·op(B))` in one pass.
//!
//! The gemm hands each finished stretch of a row of `G = op(A)·op(B)` to the
//! epilogue while it is in cache; the epilogue overwrites it with the
//! updated parameter (and updates the optimiser's state there), so the
//! stretch of `G` is never read back from memory and the separate update
//! pass over every parameter disappears. The per-element arithmetic is
//! [`kernels::update`] itself, run on the stretch, so the bits are those of
//! `matmul` followed by `update`.

use super::{gemm, kernels, CpuElement, CpuStorage};
use crate::backend::{BackendStorage, MatmulDims, UpdateRule};
use crate::dtype::Float;
use crate::error::{Error, Result};

/// Values of a stretch handled at a time: the gradient is copied aside (on
/// the stack) and the parameter copied into its place, where the update
/// rewrites it.
const STRETCH: usize = 256;

/// A state buffer shared by the epilogue's calls, which touch disjoint
/// elements of it.
#[derive(Clone, Copy)]
struct StatePtr<T>(*mut T, usize);
// SAFETY: the gemm hands every element of the product to exactly one
// epilogue call, and each call touches only the state elements at the
// positions it was handed, so no two threads touch the same element.
unsafe impl<T: Send> Send for StatePtr<T> {}
// SAFETY: as above.
unsafe impl<T: Send> Sync for StatePtr<T> {}

impl<T> StatePtr<T> {
    fn new(s: &mut [T]) -> Self {
        StatePtr(s.as_mut_ptr(), s.len())
    }

    /// Elements `offset..offset + len` if the buffer is the parameter's
    /// size `total`, else an empty slice (a buffer the rule does not use).
    ///
    /// # Safety
    ///
    /// No other live reference may cover those elements.
    unsafe fn stretch<'a>(self, total: usize, offset: usize, len: usize) -> &'a mut [T] {
        if self.1 == total {
            // SAFETY: in bounds (offset + len ≤ total = the buffer's length);
            // exclusive by the caller's contract.
            unsafe { std::slice::from_raw_parts_mut(self.0.add(offset), len) }
        } else {
            &mut []
        }
    }
}

/// `param` updated by `rule` from the gradient `op(a)·op(b)` (see the
/// module docs), as a new buffer; `s1`, `s2` updated in place.
pub(super) fn matmul_update(
    a: &CpuStorage,
    b: &CpuStorage,
    d: MatmulDims,
    param: &CpuStorage,
    s1: &mut CpuStorage,
    s2: &mut CpuStorage,
    rule: UpdateRule,
) -> Result<CpuStorage> {
    match (a, b, param, s1, s2) {
        (
            CpuStorage::F32(a),
            CpuStorage::F32(b),
            CpuStorage::F32(p),
            CpuStorage::F32(s1),
            CpuStorage::F32(s2),
        ) => typed(a, b, d, p, s1, s2, rule),
        (
            CpuStorage::F64(a),
            CpuStorage::F64(b),
            CpuStorage::F64(p),
            CpuStorage::F64(s1),
            CpuStorage::F64(s2),
        ) => typed(a, b, d, p, s1, s2, rule),
        (a, b, p, s1, s2) => {
            let dtype = a.dtype();
            let others = [b.dtype(), p.dtype(), s1.dtype(), s2.dtype()];
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
    a: &[T],
    b: &[T],
    d: MatmulDims,
    p: &[T],
    s1: &mut [T],
    s2: &mut [T],
    rule: UpdateRule,
) -> Result<CpuStorage> {
    let total = d.m * d.n;
    if p.len() != total {
        return Err(Error::invalid(format!(
            "matmul_update: a parameter of {} values for a [{}, {}] gradient",
            p.len(),
            d.m,
            d.n
        )));
    }
    let (s1, s2) = (StatePtr::new(s1), StatePtr::new(s2));
    let epilogue = |i: usize, j: usize, c: &mut [T]| {
        let start = i * d.n + j;
        for (t, out) in c.chunks_mut(STRETCH).enumerate() {
            let offset = start + t * STRETCH;
            let mut grad = [T::ZERO; STRETCH];
            let grad = &mut grad[..out.len()];
            grad.copy_from_slice(out);
            out.copy_from_slice(&p[offset..offset + out.len()]);
            // SAFETY: the gemm hands each element of the product to one
            // call only, so these state elements are touched by no one
            // else.
            let (m, v) = unsafe {
                (
                    s1.stretch(total, offset, out.len()),
                    s2.stretch(total, offset, out.len()),
                )
            };
            kernels::update(out, grad, m, v, rule);
        }
    };
    Ok(T::into_storage(gemm::gemm_new_then(
        d.m, d.n, d.k, a, d.a_trans, b, d.b_trans, &epilogue,
    )))
}
