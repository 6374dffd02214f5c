//! Tests: every kernel this CPU runs against a naive f64 reference on odd
//! sizes and all transpose combinations, and thread-count determinism.

use super::driver::{self, Problem};
use super::kernel::{MicroKernel, Portable};
use super::{gemm, GemmElem};
use crate::dtype::Float;

/// Deterministic values in [-1, 1).
pub(super) fn data<T: Float>(len: usize, seed: u64) -> Vec<T> {
    let mut s = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            T::from_f64(((s >> 11) as f64 / (1u64 << 53) as f64) * 2.0 - 1.0)
        })
        .collect()
}

/// Runs one case with `f` and checks against the f64 reference, within
/// `tol` times the sum of |terms| of each element.
#[allow(clippy::too_many_arguments)]
fn check<T: GemmElem>(
    m: usize,
    n: usize,
    k: usize,
    at: bool,
    bt: bool,
    acc: bool,
    tol: f64,
    f: &dyn Fn(&Problem<'_, T>, &mut [T]),
) {
    let a: Vec<T> = data(m * k, 1 + m as u64);
    let b: Vec<T> = data(k * n, 2 + n as u64);
    let c0: Vec<T> = data(m * n, 3 + k as u64);
    let mut c = if acc {
        c0.clone()
    } else {
        vec![T::from_f64(f64::NAN); m * n]
    };
    f(&super::problem(m, n, k, &a, at, &b, bt, acc), &mut c);
    for i in 0..m {
        for j in 0..n {
            let (mut want, mut scale) = if acc {
                (c0[i * n + j].to_f64(), c0[i * n + j].to_f64().abs())
            } else {
                (0.0, 0.0)
            };
            for p in 0..k {
                let av = if at { a[p * m + i] } else { a[i * k + p] }.to_f64();
                let bv = if bt { b[j * k + p] } else { b[p * n + j] }.to_f64();
                want += av * bv;
                scale += (av * bv).abs();
            }
            let got = c[i * n + j].to_f64();
            assert!(
                (got - want).abs() <= tol * scale.max(1e-30),
                "[{m}x{k}]x[{k}x{n}] at={at} bt={bt} acc={acc}: C[{i},{j}] = {got}, want {want}"
            );
        }
    }
}

pub(super) const SIZES: &[(usize, usize, usize)] = &[
    (1, 1, 1),
    (1, 7, 3),
    (5, 1, 9),
    (3, 4, 1),
    (37, 29, 41),
    (17, 33, 300),
    (130, 257, 65),
    (64, 64, 64),
    (200, 96, 520),
    (20, 70, 50),
    (8, 64, 33),
];

fn check_all<T: GemmElem>(tol: f64, f: &dyn Fn(&Problem<'_, T>, &mut [T])) {
    for &(m, n, k) in sizes() {
        for at in [false, true] {
            for bt in [false, true] {
                for acc in [false, true] {
                    check(m, n, k, at, bt, acc, tol, f);
                }
            }
        }
    }
}

fn with_kernel<T: GemmElem, K: MicroKernel<T, Out = T>>(
    kern: K,
) -> impl Fn(&Problem<'_, T>, &mut [T]) {
    move |p, c| driver::run(kern, p, c)
}

#[test]
fn portable_f32_matches_reference() {
    check_all::<f32>(1e-5, &with_kernel(Portable));
}

#[test]
fn portable_f64_matches_reference() {
    check_all::<f64>(1e-13, &with_kernel(Portable));
}

#[cfg(target_arch = "x86_64")]
#[test]
#[cfg_attr(
    miri,
    ignore = "Miri runs no SIMD intrinsics; the portable kernel is its subject"
)]
fn simd_kernels_match_reference() {
    use super::x86::{Avx2Fma, Avx512, Avx512Tall};
    if let Some(k) = Avx2Fma::detect() {
        check_all::<f32>(1e-5, &with_kernel(k));
        check_all::<f64>(1e-13, &with_kernel(k));
    }
    if let Some(k) = Avx512::detect() {
        check_all::<f32>(1e-5, &with_kernel(k));
        check_all::<f64>(1e-13, &with_kernel(k));
    }
    if let Some(k) = Avx512Tall::detect() {
        check_all::<f32>(1e-5, &with_kernel(k));
        check_all::<f64>(1e-13, &with_kernel(k));
    }
}

/// Runs the problem swapped, as `Cᵀ = op(B)ᵀ·op(A)ᵀ`.
fn swapped<T: GemmElem + super::buffers::PackedElem, K: MicroKernel<T, Out = T>>(
    kern: K,
) -> impl Fn(&Problem<'_, T>, &mut [T]) {
    move |p, c| {
        assert_eq!(c.len(), p.m * p.n);
        // SAFETY: `c` is a live, exclusive slice of exactly `m·n` elements.
        unsafe { driver::run_swapped(kern, p, c.as_mut_ptr()) }
    }
}

#[test]
fn swapped_products_match_reference() {
    check_all::<f32>(1e-5, &swapped(Portable));
    check_all::<f64>(1e-13, &swapped(Portable));
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if let Some(k) = super::x86::Avx512::detect() {
        check_all::<f32>(1e-5, &swapped(k));
        check_all::<f64>(1e-13, &swapped(k));
    }
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if let Some(k) = super::x86::Avx512Tall::detect() {
        check_all::<f32>(1e-5, &swapped(k));
        check_all::<f64>(1e-13, &swapped(k));
    }
}

/// The seeded `A` (`m·k` values), `B` (`k·n`) and starting `C` (`m·n`) of
/// [`bits_of`].
fn operands<T: Float>((m, n, k): (usize, usize, usize)) -> (Vec<T>, Vec<T>, Vec<T>) {
    (data(m * k, 21), data(k * n, 22), data(m * n, 23))
}

/// The bits of `C (+)= op(A)·op(B)` (on a `C` of seeded values) from
/// `run`, inside a pool of `threads` threads (as f64 bits, which keep
/// those of an f32 exactly).
fn bits_of<T: GemmElem>(
    run: &(dyn Fn(&Problem<'_, T>, &mut [T]) + Sync),
    threads: usize,
    (m, n, k): (usize, usize, usize),
    at: bool,
    bt: bool,
    acc: bool,
) -> Vec<u64> {
    let (a, b, mut c) = operands::<T>((m, n, k));
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .unwrap();
    pool.install(|| run(&super::problem(m, n, k, &a, at, &b, bt, acc), &mut c));
    c.iter().map(|v| v.to_f64().to_bits()).collect()
}

/// Swapped or not, every element is summed in the same order over the same
/// `k` blocks: the bits agree, for any thread count, with and without
/// accumulation, under every kernel this CPU runs.
#[test]
fn swapped_products_give_the_same_bits() {
    fn compare<K: MicroKernel<f32, Out = f32>>(kern: K, name: &str) {
        let straight = with_kernel(kern);
        let swapped = swapped(kern);
        for &size in threaded_sizes().iter().chain(sizes()) {
            for &(at, bt) in &[(false, false), (false, true), (true, false), (true, true)] {
                for acc in [false, true] {
                    let want = bits_of::<f32>(&straight, 1, size, at, bt, acc);
                    for &threads in [1].iter().chain(other_thread_counts()) {
                        let got = bits_of::<f32>(&swapped, threads, size, at, bt, acc);
                        assert!(
                            got == want,
                            "{name} {size:?} at={at} bt={bt} acc={acc}, {threads} threads"
                        );
                    }
                }
            }
        }
    }
    compare(Portable, "portable");
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if let Some(k) = super::x86::Avx512::detect() {
        compare(k, "avx512");
    }
    #[cfg(all(target_arch = "x86_64", not(miri)))]
    if let Some(k) = super::x86::Avx512Tall::detect() {
        compare(k, "avx512-12x32");
    }
}

#[test]
fn the_rule_swaps_small_products_with_a_transposed_b() {
    let (a, b) = (vec![0.0f32; 128 * 784], vec![0.0f32; 1024 * 784]);
    let p = |m: usize, n: usize, at: bool, bt: bool| {
        driver::swap_pays(&super::problem::<f32, f32, f32>(
            m,
            n,
            784,
            &a[..m * 784],
            at,
            &b[..n * 784],
            bt,
            false,
        ))
    };
    assert!(p(128, 1024, false, true), "x·Wᵀ at batch 128");
    assert!(p(1, 1024, false, true));
    assert!(!p(128, 1024, false, false), "B row-major");
    assert!(
        !p(128, 256, false, true),
        "fewer than four times as many columns"
    );
    assert!(!p(100, 120, false, true));
    assert!(p(64, 256, true, true));
}

#[test]
fn the_swap_setting_is_parsed_strictly() {
    use super::Swap;
    for (value, want) in [
        (None, Swap::Auto),
        (Some(""), Swap::Auto),
        (Some(" auto "), Swap::Auto),
        (Some("always"), Swap::Always),
        (Some("never"), Swap::Never),
    ] {
        assert_eq!(Swap::from_setting(value).expect("a valid setting"), want);
    }
    let err = Swap::from_setting(Some("sometimes")).expect_err("not a rule");
    assert!(
        err.to_string()
            .contains("ADVGRAD_GEMM_SWAP=sometimes: expected auto, always or never"),
        "{err}"
    );
}

/// Calls the public function with explicit flags (through the same checker).
fn public<T: GemmElem>(at: bool, bt: bool) -> impl Fn(&Problem<'_, T>, &mut [T]) {
    move |p, c| gemm(p.m, p.n, p.k, p.a, at, p.b, bt, c, p.accumulate)
}

#[test]
fn public_gemm_matches_reference() {
    for &(m, n, k) in sizes() {
        for at in [false, true] {
            for bt in [false, true] {
                for acc in [false, true] {
                    check::<f32>(m, n, k, at, bt, acc, 1e-5, &public(at, bt));
                    // Under Miri the f64 instance of the same generic code
                    // runs in `portable_f64_matches_reference`.
                    if !cfg!(miri) {
                        check::<f64>(m, n, k, at, bt, acc, 1e-13, &public(at, bt));
                    }
                }
            }
        }
    }
}

#[test]
fn empty_shapes() {
    let mut c = vec![7.0f32; 6];
    gemm(2, 3, 0, &[], false, &[], false, &mut c, true);
    assert_eq!(c, vec![7.0; 6]);
    gemm(2, 3, 0, &[], true, &[], true, &mut c, false);
    assert_eq!(c, vec![0.0; 6]);
    let mut none: Vec<f64> = vec![];
    gemm(0, 3, 4, &[], false, &[1.0; 12], false, &mut none, false);
    gemm(3, 0, 4, &[1.0; 12], false, &[], false, &mut none, false);
}

#[test]
fn same_bits_for_any_thread_count() {
    for &size in threaded_sizes() {
        for &(at, bt) in threaded_transposes() {
            let one = bits_of::<f32>(&public(at, bt), 1, size, at, bt, true);
            for &t in other_thread_counts() {
                let other = bits_of::<f32>(&public(at, bt), t, size, at, bt, true);
                assert!(one == other, "f32 {size:?} {t} threads");
            }
            // The same code in f64; under Miri, f32 alone covers it.
            if cfg!(miri) {
                continue;
            }
            let one = bits_of::<f64>(&public(at, bt), 1, size, at, bt, true);
            let other = bits_of::<f64>(&public(at, bt), 3, size, at, bt, true);
            assert!(one == other, "f64 {size:?}");
        }
    }
}

#[test]
fn gemm_new_matches_gemm_bit_for_bit() {
    for &(m, n, k) in if cfg!(miri) {
        MIRI_SOME
    } else {
        &[
            (1, 1, 1),
            (37, 29, 41),
            (130, 257, 65),
            (5, 3, 0),
            (0, 4, 2),
        ]
    } {
        for (at, bt) in [(false, false), (false, true), (true, false), (true, true)] {
            let a: Vec<f32> = (0..m * k)
                .map(|i| ((i * 7 % 13) as f32 - 6.0) / 5.0)
                .collect();
            let b: Vec<f32> = (0..k * n)
                .map(|i| ((i * 5 % 11) as f32 - 5.0) / 3.0)
                .collect();
            let mut c = vec![f32::NAN; m * n];
            super::gemm(m, n, k, &a, at, &b, bt, &mut c, false);
            let fresh = super::gemm_new(m, n, k, &a, at, &b, bt);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fresh), bits(&c), "{m}x{n}x{k} {at} {bt}");
        }
    }
}

#[test]
fn the_epilogue_sees_every_finished_element_once() {
    use std::sync::atomic::{AtomicU32, Ordering};
    // k spans several k blocks, so an epilogue run before the last block
    // would see a partial sum.
    for &(m, n, k) in if cfg!(miri) {
        MIRI_EPILOGUE
    } else {
        // The last two run swapped (`driver::swap_pays`), the last over
        // several k blocks.
        &[
            (1, 1, 1),
            (37, 45, 1500),
            (301, 211, 97),
            (5, 700, 3),
            (100, 600, 700),
        ]
    } {
        let a: Vec<f32> = (0..m * k)
            .map(|i| ((i * 7 % 13) as f32 - 6.0) / 8.0)
            .collect();
        let b: Vec<f32> = (0..k * n)
            .map(|i| ((i * 5 % 11) as f32 - 5.0) / 4.0)
            .collect();
        let plain = super::gemm_new(m, n, k, &a, false, &b, true);
        let seen: Vec<AtomicU32> = (0..m * n).map(|_| AtomicU32::new(0)).collect();
        let epilogue = |i: usize, j: usize, row: &mut [f32]| {
            for (jj, v) in row.iter_mut().enumerate() {
                seen[i * n + j + jj].fetch_add(1, Ordering::Relaxed);
                *v = 2.0 * *v + 1.0;
            }
        };
        let fused = super::gemm_new_then(m, n, k, &a, false, &b, true, &epilogue);
        assert!(
            seen.iter().all(|s| s.load(Ordering::Relaxed) == 1),
            "{m}x{n}x{k}"
        );
        let expected: Vec<f32> = plain.iter().map(|v| 2.0 * v + 1.0).collect();
        assert_eq!(fused, expected, "{m}x{n}x{k}");
    }
}

/// `gemm_stepping` hands every element of the product over exactly once,
/// with the bits `gemm_new` stores, for each transpose, in f32 and f64.
fn check_stepping<T: GemmElem>() {
    use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
    let sizes: &[(usize, usize, usize)] = if cfg!(miri) {
        &[(1, 1, 1), (3, 13, 300), (5, 20, 3), (2, 3, 0)]
    } else {
        // Several k blocks kept in a tile's buffer (`k` = 1500, and
        // `n > 1024` with `k` = 600); one block, threaded and in fine tiles
        // (300 × 1030 × 256); products that would run swapped; `k` = 0.
        &[
            (1, 1, 1),
            (37, 45, 1500),
            (40, 1100, 600),
            (301, 211, 97),
            (300, 1030, 256),
            (5, 700, 3),
            (100, 600, 700),
            (7, 9, 0),
        ]
    };
    for &(m, n, k) in sizes {
        for (at, bt) in [(false, false), (false, true), (true, false), (true, true)] {
            let a: Vec<T> = data(m * k, 11 + m as u64);
            let b: Vec<T> = data(k * n, 12 + n as u64);
            let plain = super::gemm_new(m, n, k, &a, at, &b, bt);
            let seen: Vec<AtomicU32> = (0..m * n).map(|_| AtomicU32::new(0)).collect();
            let got: Vec<AtomicU64> = (0..m * n).map(|_| AtomicU64::new(0)).collect();
            let step = |i: usize, j: usize, g: super::GradBlock<'_, T>| {
                for r in 0..g.rows() {
                    for (c, v) in g.row(r).iter().enumerate() {
                        let at = (i + r) * n + j + c;
                        seen[at].fetch_add(1, Ordering::Relaxed);
                        got[at].store(v.to_f64().to_bits(), Ordering::Relaxed);
                    }
                }
            };
            super::gemm_stepping(m, n, k, &a, at, &b, bt, &step);
            let case = format!("{m}x{n}x{k} {at} {bt}");
            assert!(
                seen.iter().all(|s| s.load(Ordering::Relaxed) == 1),
                "{case}: an element handed over other than once"
            );
            for (e, (want, got)) in plain.iter().zip(&got).enumerate() {
                let got = f64::from_bits(got.load(Ordering::Relaxed));
                assert_eq!(
                    want.to_f64().to_bits(),
                    got.to_bits(),
                    "{case}: element {e}"
                );
            }
        }
    }
}

#[test]
fn a_stepped_product_hands_each_element_over_once_with_the_bits_of_gemm() {
    check_stepping::<f32>();
    check_stepping::<f64>();
}

// Under Miri (scripts/miri.sh), hundreds of times slower than native code,
// the tests run on smaller problems that still reach every path: partial
// panels and tiles, two `k` blocks (`k > KC`), every transpose, and, in
// `same_bits_for_any_thread_count`, one product just above `PAR_MIN_WORK`
// (16³ under Miri) to be split across threads.

/// The products `check_all` and the public-entry test run.
fn sizes() -> &'static [(usize, usize, usize)] {
    if cfg!(miri) {
        &[
            (1, 1, 1),
            (1, 7, 3),
            (5, 1, 9),
            (3, 4, 1),
            (9, 17, 5),
            // Two `k` blocks, below `PAR_MIN_WORK`: the threaded path is
            // `same_bits_for_any_thread_count`'s alone.
            (2, 7, 260),
        ]
    } else {
        SIZES
    }
}

/// The products split across threads.
fn threaded_sizes() -> &'static [(usize, usize, usize)] {
    if cfg!(miri) {
        // Above Miri's `PAR_MIN_WORK` (16³), partial tiles both ways.
        &[(27, 41, 20)]
    } else {
        &[
            (128, 256, 784),
            (301, 187, 1029),
            (64, 10, 256),
            (1000, 33, 70),
        ]
    }
}

/// The transposes of the threaded products.
fn threaded_transposes() -> &'static [(bool, bool)] {
    if cfg!(miri) {
        &[(false, true)]
    } else {
        &[(false, false), (false, true), (true, false)]
    }
}

/// The thread counts compared with one thread.
fn other_thread_counts() -> &'static [usize] {
    if cfg!(miri) {
        &[2]
    } else {
        &[2, 3]
    }
}

const MIRI_SOME: &[(usize, usize, usize)] = &[(1, 1, 1), (9, 11, 5), (5, 3, 0), (0, 4, 2)];
const MIRI_EPILOGUE: &[(usize, usize, usize)] = &[(1, 1, 1), (3, 13, 300), (5, 20, 3)];

/// The 8 × 32 and 12 × 32 AVX-512 kernels, or `None` (and a note that
/// `test` is skipped) where the CPU lacks AVX-512F.
#[cfg(all(target_arch = "x86_64", not(miri)))]
fn avx512_kernels(test: &str) -> Option<(super::x86::Avx512, super::x86::Avx512Tall)> {
    let kernels = super::x86::Avx512::detect().zip(super::x86::Avx512Tall::detect());
    if kernels.is_none() {
        eprintln!("skipping {test}: no AVX-512F");
    }
    kernels
}

/// The two AVX-512 kernels differ in their register tile, a prefetch and,
/// for f32, the longer `k` blocks of the 12 × 32 one on products with a
/// small `C` (`KC_LONG`): wherever both cut `k` alike, each element takes
/// the same fused multiply-adds in the same order, so their bits agree, for
/// f32 and f64, on every size and transposition, with and without
/// accumulation. (Where the blocks differ,
/// `each_avx512_f32_kernel_sums_in_its_own_k_blocks` pins the bits of each.)
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[test]
fn both_avx512_tiles_give_the_same_bits() {
    use super::x86::{Avx512, Avx512Tall};
    let Some((eight, twelve)) = avx512_kernels("both_avx512_tiles_give_the_same_bits") else {
        return;
    };
    let mut compared = 0;
    for &size in threaded_sizes().iter().chain(sizes()) {
        let (m, n, k) = size;
        let f32_alike = driver::k_block_of::<f32, f32, Avx512>(m, n, k)
            == driver::k_block_of::<f32, f32, Avx512Tall>(m, n, k);
        for &(at, bt) in &[(false, false), (false, true), (true, false), (true, true)] {
            for acc in [false, true] {
                if f32_alike {
                    let want = bits_of::<f32>(&with_kernel(eight), 2, size, at, bt, acc);
                    let got = bits_of::<f32>(&with_kernel(twelve), 2, size, at, bt, acc);
                    assert!(got == want, "f32 {size:?} at={at} bt={bt} acc={acc}");
                    compared += 1;
                }
                let want = bits_of::<f64>(&with_kernel(eight), 2, size, at, bt, acc);
                let got = bits_of::<f64>(&with_kernel(twelve), 2, size, at, bt, acc);
                assert!(got == want, "f64 {size:?} at={at} bt={bt} acc={acc}");
            }
        }
    }
    assert!(
        compared >= 8 * sizes().len(),
        "f32 compared on too few sizes"
    );
}

/// The bits of `C (+)= op(A)·op(B)` summed as the kernels sum it: `k` cut
/// into blocks of `kb`; in each block, an f32 chain of fused multiply-adds
/// from zero in order of `p`; then each block's sum added to `C` (the first
/// stored instead, unless accumulating).
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[allow(clippy::too_many_arguments)]
fn blocked_fma_bits(
    (m, n, k): (usize, usize, usize),
    a: &[f32],
    at: bool,
    b: &[f32],
    bt: bool,
    c: &[f32],
    acc: bool,
    kb: usize,
) -> Vec<u64> {
    let a_at = |i: usize, p: usize| if at { a[p * m + i] } else { a[i * k + p] };
    let b_at = |p: usize, j: usize| if bt { b[j * k + p] } else { b[p * n + j] };
    let mut out = c.to_vec();
    for i in 0..m {
        for j in 0..n {
            for p0 in (0..k).step_by(kb) {
                let sum =
                    (p0..(p0 + kb).min(k)).fold(0.0f32, |s, p| a_at(i, p).mul_add(b_at(p, j), s));
                let o = &mut out[i * n + j];
                *o = if acc || p0 > 0 { *o + sum } else { sum };
            }
        }
    }
    out.iter().map(|&v| f64::from(v).to_bits()).collect()
}

/// Each AVX-512 f32 kernel gives exactly the bits of [`blocked_fma_bits`]
/// with the `k` blocks of `driver::k_block_of`, at one and two threads and
/// swapped: the 12 × 32 kernel in blocks of up to 512 on products with `m`
/// and `n` at most 1024 and `k` above 512, and of up to 256 otherwise; the
/// 8 × 32 kernel always of up to 256.
#[cfg(all(target_arch = "x86_64", not(miri)))]
#[test]
fn each_avx512_f32_kernel_sums_in_its_own_k_blocks() {
    use super::x86::{Avx512, Avx512Tall};
    let Some((eight, twelve)) = avx512_kernels("each_avx512_f32_kernel_sums_in_its_own_k_blocks")
    else {
        return;
    };
    // Long blocks: 784 = 2 × 392 and 1029 = 3 × 343; a dimension over 1024
    // or `k` of at most 512 keeps blocks of at most 256.
    let cases = [
        ((37, 300, 784), 392),
        ((129, 61, 1029), 343),
        ((23, 1030, 700), 234),
        ((45, 70, 512), 256),
    ];
    for ((m, n, k), twelve_kb) in cases {
        assert_eq!(
            driver::k_block_of::<f32, f32, Avx512Tall>(m, n, k),
            twelve_kb
        );
        assert_eq!(
            driver::k_block_of::<f32, f32, Avx512Tall>(n, m, k),
            twelve_kb
        );
        let eight_kb = driver::k_block(k, 256);
        assert_eq!(driver::k_block_of::<f32, f32, Avx512>(m, n, k), eight_kb);
        let (a, b, c) = operands::<f32>((m, n, k));
        for &(at, bt) in &[(false, false), (false, true), (true, false), (true, true)] {
            for acc in [false, true] {
                let size = (m, n, k);
                let twelve_want = blocked_fma_bits(size, &a, at, &b, bt, &c, acc, twelve_kb);
                let eight_want = blocked_fma_bits(size, &a, at, &b, bt, &c, acc, eight_kb);
                for threads in [1, 2] {
                    let what = format!("{size:?} at={at} bt={bt} acc={acc} threads={threads}");
                    let got = bits_of::<f32>(&with_kernel(twelve), threads, size, at, bt, acc);
                    assert!(got == twelve_want, "12 x 32 {what}");
                    let got = bits_of::<f32>(&swapped(twelve), threads, size, at, bt, acc);
                    assert!(got == twelve_want, "12 x 32 swapped {what}");
                    let got = bits_of::<f32>(&with_kernel(eight), threads, size, at, bt, acc);
                    assert!(got == eight_want, "8 x 32 {what}");
                }
            }
        }
    }
}

/// A row-major `A` whose rows are 4 KiB apart is packed for a wide tile
/// instead of read in place; the kernel sums in the same order either
/// way, so the bits are those of the same `op(A)` stored transposed (which
/// is always packed), with one thread and with several.
#[test]
fn an_aliasing_a_gives_the_same_bits_packed() {
    let (m, k, n) = (27, 1024, 1024);
    let a: Vec<f32> = data(m * k, 31);
    let b: Vec<f32> = data(k * n, 32);
    let mut a_t = vec![0.0f32; k * m];
    for i in 0..m {
        for p in 0..k {
            a_t[p * m + i] = a[i * k + p];
        }
    }
    for threads in [1, 2] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        let (rows, transposed) = pool.install(|| {
            let mut rows = vec![0.0f32; m * n];
            super::gemm(m, n, k, &a, false, &b, false, &mut rows, false);
            let mut transposed = vec![0.0f32; m * n];
            super::gemm(m, n, k, &a_t, true, &b, false, &mut transposed, false);
            (rows, transposed)
        });
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert!(bits(&rows) == bits(&transposed), "{threads} threads");
    }
}
