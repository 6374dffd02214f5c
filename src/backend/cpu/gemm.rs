//! Dense matrix multiply on the CPU (placeholder: blocked, parallel over rows
//! of C; the packed SIMD version replaces it).

use rayon::prelude::*;

use crate::dtype::Float;

/// Element types the CPU matmul is instantiated for.
pub trait GemmElem: Float {}
impl GemmElem for f32 {}
impl GemmElem for f64 {}

/// `C = op(A)·op(B)` (or `C += …` when `accumulate`), all row-major.
///
/// `A` is stored as `[m, k]`, or as `[k, m]` when `a_trans`; `B` as `[k, n]`,
/// or as `[n, k]` when `b_trans`; `C` is `[m, n]`. The result is the same bits
/// for any number of rayon threads.
#[allow(clippy::too_many_arguments)]
pub fn gemm<T: GemmElem>(
    m: usize,
    n: usize,
    k: usize,
    a: &[T],
    a_trans: bool,
    b: &[T],
    b_trans: bool,
    c: &mut [T],
    accumulate: bool,
) {
    assert_eq!(a.len(), m * k);
    assert_eq!(b.len(), k * n);
    assert_eq!(c.len(), m * n);
    if n == 0 {
        return;
    }
    c.par_chunks_mut(n).enumerate().for_each(|(i, row)| {
        if !accumulate {
            row.iter_mut().for_each(|v| *v = T::ZERO);
        }
        for p in 0..k {
            let aip = if a_trans { a[p * m + i] } else { a[i * k + p] };
            if b_trans {
                for (j, cv) in row.iter_mut().enumerate() {
                    *cv += aip * b[j * k + p];
                }
            } else {
                let brow = &b[p * n..(p + 1) * n];
                for (cv, &bv) in row.iter_mut().zip(brow) {
                    *cv += aip * bv;
                }
            }
        }
    });
}
