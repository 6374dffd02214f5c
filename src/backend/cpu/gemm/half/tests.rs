//! Tests of the half-precision gemm: every path against an f64 reference
//! within the documented bound, on odd sizes, all transposes and both
//! operand forms; each path bit for bit against a scalar model of its
//! documented order of summation; rounded f32 operands against stored
//! ones; thread-count determinism; the kernel switches.
//!
//! A path whose instructions this CPU lacks is skipped with a message on
//! stderr, and the count of skipped paths is printed;
//! `ADVGRAD_REQUIRE_GEMM_PATHS=amx,avx512bf16` (or `all`) turns the skip
//! of a named path into a failure, for machines expected to run it.

use half::{bf16, f16};

use super::source::{HalfBits, HalfSource};
use super::{gemm_half, gemm_half_new, gemm_half_new_then, HalfCall, HalfOperand, Paths};
use crate::backend::cpu::gemm::driver::{k_block, Problem};
use crate::backend::cpu::gemm::select::{Bf16Kernel, F32Kernel, KernelChoice};
use crate::backend::cpu::gemm::tests::{data, SIZES};

/// The `k` block of every half path, and the bound's.
const KC: usize = 256;

/// A bf16 path as the tests run it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Path {
    /// Widened to f32, on one f32 kernel.
    Portable(F32Kernel),
    /// `vdpbf16ps`.
    Avx512Bf16,
    /// The AMX kernel on the scalar model of the tiles.
    AmxModel,
    /// The AMX kernel on the CPU's tiles.
    Amx,
}

/// How a path sums each `k` block (its documented numerics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Order {
    /// Steps in order, IEEE rounding and subnormals.
    Sequential,
    /// Pairs of steps, the odd one first; subnormals flushed.
    PairsOddFirst,
    /// Per 32 steps: even and odd steps summed apart, then added;
    /// subnormals flushed.
    TileSteps,
}

impl Path {
    fn name(self) -> String {
        match self {
            Path::Portable(k) => format!("portable on {k}"),
            Path::Avx512Bf16 => "avx512bf16".into(),
            Path::AmxModel => "amx on the tile model".into(),
            Path::Amx => "amx".into(),
        }
    }

    fn order(self) -> Order {
        match self {
            Path::Portable(_) => Order::Sequential,
            Path::Avx512Bf16 => Order::PairsOddFirst,
            Path::AmxModel | Path::Amx => Order::TileSteps,
        }
    }

    /// The documented `k` block of an `m × n × k` product: equal blocks of
    /// at most 256, or, on the AMX paths, of at most 512 where `k > 512`
    /// and neither `m` nor `n` exceeds 1024. (Literals on purpose: the
    /// test states the rule rather than re-deriving it from the driver.)
    fn k_block(self, m: usize, n: usize, k: usize) -> usize {
        let long = matches!(self, Path::AmxModel | Path::Amx) && k > 512 && m.max(n) <= 1024;
        k_block(k, if long { 512 } else { KC })
    }

    /// `C` of problem `p` on this path.
    fn run<SA: HalfSource<bf16>, SB: HalfSource<bf16>>(
        self,
        p: &Problem<'_, SA, SB, f32>,
        c: &mut [f32],
    ) {
        match self {
            Path::Portable(k) => widened::<bf16, SA, SB>(k, p, c),
            #[cfg(target_arch = "x86_64")]
            Path::Avx512Bf16 => {
                let k = super::avx512bf16::Avx512Bf16::detect().expect("listed as available");
                super::run_with(k, p, c);
            }
            #[cfg(target_arch = "x86_64")]
            Path::AmxModel => super::run_with(super::amx::Amx::model(), p, c),
            #[cfg(target_arch = "x86_64")]
            Path::Amx => {
                let k = super::amx::Amx::detect().expect("listed as available");
                super::run_with(k, p, c);
            }
            #[cfg(not(target_arch = "x86_64"))]
            _ => unreachable!("not listed off x86-64"),
        }
    }
}

/// The widening path on f32 kernel `kernel`.
fn widened<H: HalfBits, SA: HalfSource<H>, SB: HalfSource<H>>(
    kernel: F32Kernel,
    p: &Problem<'_, SA, SB, f32>,
    c: &mut [f32],
) {
    assert!(kernel.available() && c.len() == p.m * p.n);
    // SAFETY: `c` is an exclusive slice of `m·n` values; the kernel is
    // available (asserted).
    unsafe { super::widened(kernel, p, c.as_mut_ptr()) }
}

/// The bf16 paths this CPU runs; the others are reported skipped (or fail
/// the test where `ADVGRAD_REQUIRE_GEMM_PATHS` names them).
fn bf16_paths(test: &str) -> Vec<Path> {
    let mut run: Vec<Path> = F32Kernel::ALL
        .iter()
        .filter(|k| k.available())
        .map(|&k| Path::Portable(k))
        .collect();
    let mut skipped = Vec::new();
    for (path, kernel) in [
        (Path::Avx512Bf16, Bf16Kernel::Avx512Bf16),
        (Path::Amx, Bf16Kernel::Amx),
    ] {
        if kernel.available() {
            run.push(path);
        } else {
            skipped.push((kernel, kernel.needs()));
        }
    }
    if cfg!(target_arch = "x86_64") {
        run.push(Path::AmxModel);
    }
    let required = std::env::var("ADVGRAD_REQUIRE_GEMM_PATHS").unwrap_or_default();
    for (kernel, needs) in &skipped {
        eprintln!("{test}: skipping the {kernel} path: this machine lacks {needs}");
        let wanted = required
            .split(',')
            .any(|r| r.trim() == kernel.name() || r.trim() == "all");
        assert!(
            !wanted,
            "{test}: ADVGRAD_REQUIRE_GEMM_PATHS asks for {kernel}, which cannot run here"
        );
    }
    let names: Vec<String> = run.iter().map(|p| p.name()).collect();
    eprintln!(
        "{test}: ran {} bf16 paths ({}), skipped {}",
        run.len(),
        names.join(", "),
        skipped.len()
    );
    run
}

/// An operand's stored form.
#[derive(Clone, Copy, Debug)]
enum Form {
    Half,
    F32,
}

/// One multiply: shapes, flags, and the operands in f32 (before rounding).
struct Case {
    m: usize,
    n: usize,
    k: usize,
    at: bool,
    bt: bool,
    acc: bool,
    a: Vec<f32>,
    b: Vec<f32>,
    c0: Vec<f32>,
}

impl Case {
    fn new(m: usize, n: usize, k: usize, at: bool, bt: bool, acc: bool) -> Case {
        Case {
            m,
            n,
            k,
            at,
            bt,
            acc,
            a: data(m * k, 1 + m as u64),
            b: data(k * n, 2 + n as u64),
            c0: data(m * n, 3 + k as u64),
        }
    }

    fn start(&self) -> Vec<f32> {
        if self.acc {
            self.c0.clone()
        } else {
            vec![f32::NAN; self.m * self.n]
        }
    }

    /// `op(A)[i, p]` and `op(B)[p, j]` as bf16.
    fn a_at(&self, i: usize, p: usize) -> bf16 {
        bf16::from_f32(if self.at {
            self.a[p * self.m + i]
        } else {
            self.a[i * self.k + p]
        })
    }

    fn b_at(&self, p: usize, j: usize) -> bf16 {
        bf16::from_f32(if self.bt {
            self.b[j * self.k + p]
        } else {
            self.b[p * self.n + j]
        })
    }

    /// `C` on `path`, with the operands in the given forms.
    fn on(&self, path: Path, forms: (Form, Form)) -> Vec<f32> {
        let (a16, b16): (Vec<bf16>, Vec<bf16>) = (
            self.a.iter().map(|&v| bf16::from_f32(v)).collect(),
            self.b.iter().map(|&v| bf16::from_f32(v)).collect(),
        );
        let mut c = self.start();
        macro_rules! run {
            ($a:expr, $b:expr) => {
                path.run(
                    &super::super::problem(
                        self.m, self.n, self.k, $a, self.at, $b, self.bt, self.acc,
                    ),
                    &mut c,
                )
            };
        }
        match forms {
            (Form::Half, Form::Half) => run!(&a16[..], &b16[..]),
            (Form::Half, Form::F32) => run!(&a16[..], &self.b[..]),
            (Form::F32, Form::Half) => run!(&self.a[..], &b16[..]),
            (Form::F32, Form::F32) => run!(&self.a[..], &self.b[..]),
        }
        c
    }

    /// Each element's f64 reference (from the bf16 operands) and the sum of
    /// the magnitudes of its terms.
    fn reference(&self) -> Vec<(f64, f64)> {
        let mut out = Vec::with_capacity(self.m * self.n);
        for i in 0..self.m {
            for j in 0..self.n {
                let c0 = if self.acc {
                    f64::from(self.c0[i * self.n + j])
                } else {
                    0.0
                };
                let (mut want, mut scale) = (c0, c0.abs());
                for p in 0..self.k {
                    let t =
                        f64::from(self.a_at(i, p).to_f32()) * f64::from(self.b_at(p, j).to_f32());
                    want += t;
                    scale += t.abs();
                }
                out.push((want, scale));
            }
        }
        out
    }

    /// Checks `c` against the f64 reference, within the documented bound.
    fn check(&self, c: &[f32], what: &str) {
        let bound = Bound::new(self.k);
        for (e, (&got, (want, scale))) in c.iter().zip(self.reference()).enumerate() {
            let got = f64::from(got);
            assert!(
                (got - want).abs() <= bound.of(scale),
                "{what}: [{}x{}]x[{}x{}] at={} bt={} acc={}: C[{},{}] = {got}, want {want} (bound {})",
                self.m,
                self.k,
                self.k,
                self.n,
                self.at,
                self.bt,
                self.acc,
                e / self.n,
                e % self.n,
                bound.of(scale)
            );
        }
    }

    /// The largest ratio of error to bound over the elements of `c`.
    fn worst_error_over_bound(&self, c: &[f32]) -> f64 {
        let bound = Bound::new(self.k);
        c.iter()
            .zip(self.reference())
            .map(|(&got, (want, scale))| (f64::from(got) - want).abs() / bound.of(scale))
            .fold(0.0, f64::max)
    }

    /// `C` by the scalar model of `order`: `k` in blocks of `kb`, each
    /// summed from zero as the path documents, added to `C` in order.
    fn model(&self, order: Order, kb: usize) -> Vec<f32> {
        let flush = |x: f32| {
            if x.is_subnormal() {
                0.0f32.copysign(x)
            } else {
                x
            }
        };
        let mut c = vec![0.0f32; self.m * self.n];
        for i in 0..self.m {
            for j in 0..self.n {
                let term = |p: usize| (self.a_at(i, p).to_f32(), self.b_at(p, j).to_f32());
                let mut out = if self.acc {
                    self.c0[i * self.n + j]
                } else {
                    0.0
                };
                for (blk, p0) in (0..self.k).step_by(kb).enumerate() {
                    let kc = kb.min(self.k - p0);
                    let at = |p: usize| if p < kc { term(p0 + p) } else { (0.0, 0.0) };
                    let sum = match order {
                        Order::Sequential => (0..kc).fold(0.0f32, |s, p| {
                            let (x, y) = at(p);
                            s + x * y
                        }),
                        Order::PairsOddFirst => (0..kc.div_ceil(2)).fold(0.0f32, |s, q| {
                            let ((x0, y0), (x1, y1)) = (at(2 * q), at(2 * q + 1));
                            let s = flush(flush(x1).mul_add(flush(y1), s));
                            flush(flush(x0).mul_add(flush(y0), s))
                        }),
                        Order::TileSteps => (0..kc.div_ceil(32)).fold(0.0f32, |s, t| {
                            let (mut even, mut odd) = (0.0f32, 0.0f32);
                            for q in 16 * t..16 * (t + 1) {
                                let ((x0, y0), (x1, y1)) = (at(2 * q), at(2 * q + 1));
                                even = flush(flush(x0).mul_add(flush(y0), even));
                                odd = flush(flush(x1).mul_add(flush(y1), odd));
                            }
                            flush(s + flush(even + odd))
                        }),
                    };
                    out = if blk == 0 && !self.acc {
                        sum
                    } else {
                        out + sum
                    };
                }
                c[i * self.n + j] = out;
            }
        }
        c
    }
}

/// The documented error bound for `k` steps: `γ(n)·scale` with
/// `n = min(k, 256) + ⌈k/256⌉ + 1`, plus `2⁻¹²⁶` per step for flushed
/// subnormals.
struct Bound {
    gamma: f64,
    flushed: f64,
}

impl Bound {
    fn new(k: usize) -> Bound {
        let n = (k.min(KC) + k.div_ceil(KC) + 1) as f64;
        let u = f64::from(f32::EPSILON) / 2.0;
        Bound {
            gamma: n * u / (1.0 - n * u),
            flushed: k as f64 * f64::from(f32::MIN_POSITIVE),
        }
    }

    fn of(&self, scale: f64) -> f64 {
        self.gamma * scale + self.flushed
    }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

const FORMS: [(Form, Form); 4] = [
    (Form::Half, Form::Half),
    (Form::Half, Form::F32),
    (Form::F32, Form::Half),
    (Form::F32, Form::F32),
];

/// Sizes small enough for Miri (still two `A` strips, an edge panel, odd
/// `k` and a partial AMX tile step).
const SMALL: &[(usize, usize, usize)] = &[(3, 5, 7), (9, 33, 35)];

fn sizes() -> &'static [(usize, usize, usize)] {
    if cfg!(miri) {
        SMALL
    } else {
        SIZES
    }
}

#[test]
fn every_bf16_path_is_within_the_bound_of_the_f64_reference() {
    for path in bf16_paths("every_bf16_path_is_within_the_bound") {
        // The tile model computes whole 32 × 32 tiles: slow under Miri.
        let sizes = if cfg!(miri) && path == Path::AmxModel {
            &SMALL[..1]
        } else {
            sizes()
        };
        for &(m, n, k) in sizes {
            for (at, bt, acc) in flags() {
                let case = Case::new(m, n, k, at, bt, acc);
                // Under Miri, one form per operand (the others pack alike).
                let forms = if cfg!(miri) { &FORMS[1..3] } else { &FORMS[..] };
                for &forms in forms {
                    case.check(&case.on(path, forms), &format!("{} {forms:?}", path.name()));
                }
            }
        }
    }
}

/// Every combination of the three flags.
fn flags() -> impl Iterator<Item = (bool, bool, bool)> {
    (0..8).map(|f| (f & 1 != 0, f & 2 != 0, f & 4 != 0))
}

#[test]
fn every_bf16_path_sums_in_its_documented_order() {
    // k spans odd lengths, several blocks, and blocks of odd length (k = 301:
    // two blocks of 151); on the AMX paths, long blocks (k = 600: two of
    // 300, against three of 200 elsewhere; k = 1100: three of 367), and
    // none where n > 1024 (three of 200).
    let shapes: &[(usize, usize, usize)] = if cfg!(miri) {
        &[(3, 5, 7)]
    } else {
        &[
            (1, 1, 1),
            (5, 3, 9),
            (37, 29, 41),
            (17, 70, 301),
            (64, 64, 600),
            (40, 33, 1100),
            (7, 1030, 600),
            (9, 33, 2),
        ]
    };
    for path in bf16_paths("every_bf16_path_sums_in_its_documented_order") {
        for &(m, n, k) in shapes {
            for (at, bt, acc) in flags() {
                let case = Case::new(m, n, k, at, bt, acc);
                let got = case.on(path, (Form::F32, Form::Half));
                assert_eq!(
                    bits(&got),
                    bits(&case.model(path.order(), path.k_block(m, n, k))),
                    "{}: {m}x{n}x{k} at={at} bt={bt} acc={acc}",
                    path.name()
                );
            }
        }
    }
}

/// f32 values whose rounding to bf16 is delicate: ties both ways, values
/// just around them, subnormals, large magnitudes (products stay finite).
fn delicate(len: usize, seed: u64) -> Vec<f32> {
    let base: Vec<f32> = data(len, seed);
    base.iter()
        .enumerate()
        .map(|(i, &x)| {
            let bits = x.to_bits() & 0xFFFF_0000;
            match i % 6 {
                0 => f32::from_bits(bits | 0x8000),
                1 => f32::from_bits((bits + 0x1_0000) | 0x8000),
                2 => f32::from_bits(bits | 0x7FFF),
                3 => x * 1.0e-39,
                4 => x * 1.0e18,
                _ => x,
            }
        })
        .collect()
}

#[test]
fn rounding_while_packing_equals_rounding_first() {
    let shapes: &[(usize, usize, usize)] = if cfg!(miri) {
        &[(3, 9, 17)]
    } else {
        &[(1, 1, 1), (37, 29, 41), (17, 70, 301), (130, 257, 65)]
    };
    for path in bf16_paths("rounding_while_packing_equals_rounding_first") {
        for &(m, n, k) in shapes {
            for (at, bt, acc) in flags() {
                let mut case = Case::new(m, n, k, at, bt, acc);
                case.a = delicate(m * k, 5);
                case.b = delicate(k * n, 6);
                let stored = case.on(path, (Form::Half, Form::Half));
                for forms in &FORMS[1..] {
                    assert_eq!(
                        bits(&case.on(path, *forms)),
                        bits(&stored),
                        "{} {forms:?}: {m}x{n}x{k} at={at} bt={bt} acc={acc}",
                        path.name()
                    );
                }
            }
        }
    }
}

#[test]
#[cfg_attr(miri, ignore)]
fn same_bits_for_any_thread_count() {
    for path in bf16_paths("same_bits_for_any_thread_count") {
        for &(m, n, k) in &[
            (128, 256, 784),
            (301, 187, 1029),
            (64, 10, 256),
            (1000, 33, 70),
            // Above the AMX kernel's threshold for a second thread (384³).
            (600, 260, 1000),
        ] {
            for (at, bt) in [(false, false), (false, true), (true, false)] {
                let case = Case::new(m, n, k, at, bt, true);
                let with = |threads: usize| {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .expect("a thread pool");
                    pool.install(|| bits(&case.on(path, (Form::F32, Form::Half))))
                };
                let one = with(1);
                for t in [2, 3] {
                    assert!(
                        one == with(t),
                        "{}: {m}x{n}x{k} on {t} threads",
                        path.name()
                    );
                }
            }
        }
    }
}

#[test]
fn the_error_bound_grows_with_k_and_holds() {
    let ks: &[usize] = if cfg!(miri) {
        &[1, 2, 33]
    } else {
        &[1, 2, 3, 16, 255, 256, 257, 511, 1000, 2048, 4096]
    };
    // Linear in k up to one block, then one more rounding per block.
    let gammas: Vec<f64> = ks.iter().map(|&k| Bound::new(k).gamma).collect();
    assert!(
        gammas.windows(2).all(|g| g[0] <= g[1]),
        "the bound never shrinks as k grows"
    );
    assert!(gammas.last() > gammas.first(), "the bound grows with k");
    for path in bf16_paths("the_error_bound_grows_with_k_and_holds") {
        let mut worst: f64 = 0.0;
        for &k in ks {
            // All terms positive: no cancellation, the rounding errors of
            // the sum add up.
            let mut case = Case::new(4, 5, k, false, true, false);
            case.a.iter_mut().for_each(|v| *v = v.abs());
            case.b.iter_mut().for_each(|v| *v = v.abs());
            let c = case.on(path, (Form::F32, Form::F32));
            case.check(&c, &path.name());
            worst = worst.max(case.worst_error_over_bound(&c));
        }
        eprintln!(
            "{}: largest error / bound over k in {ks:?}: {worst:.3}",
            path.name()
        );
    }
}

#[test]
fn the_widening_path_gives_the_same_bits_on_every_f32_kernel() {
    let kernels: Vec<F32Kernel> = F32Kernel::ALL
        .iter()
        .copied()
        .filter(|k| k.available())
        .collect();
    let shapes: &[(usize, usize, usize)] = if cfg!(miri) {
        &[(3, 9, 17)]
    } else {
        &[(37, 29, 41), (17, 70, 301)]
    };
    for &(m, n, k) in shapes {
        for (at, bt, acc) in flags() {
            let case = Case::new(m, n, k, at, bt, acc);
            let first = case.on(Path::Portable(F32Kernel::Portable), (Form::F32, Form::Half));
            for &kernel in &kernels {
                let got = case.on(Path::Portable(kernel), (Form::F32, Form::Half));
                assert_eq!(bits(&got), bits(&first), "bf16 on {kernel}: {m}x{n}x{k}");
                let f16s = |kernel| {
                    let a: Vec<f16> = case.a.iter().map(|&v| f16::from_f32(v)).collect();
                    let mut c = case.start();
                    let p = super::super::problem(m, n, k, &a[..], at, &case.b[..], bt, acc);
                    widened::<f16, _, _>(kernel, &p, &mut c);
                    bits(&c)
                };
                assert_eq!(
                    f16s(kernel),
                    f16s(F32Kernel::Portable),
                    "f16 on {kernel}: {m}x{n}x{k}"
                );
            }
        }
    }
}

#[test]
fn f16_is_within_the_bound_and_rounds_while_packing_as_first() {
    for &(m, n, k) in sizes() {
        for (at, bt, acc) in flags() {
            let case = Case::new(m, n, k, at, bt, acc);
            let a16: Vec<f16> = case.a.iter().map(|&v| f16::from_f32(v)).collect();
            let b16: Vec<f16> = case.b.iter().map(|&v| f16::from_f32(v)).collect();
            let run = |a: HalfOperand<'_, f16>, b: HalfOperand<'_, f16>| {
                let mut c = case.start();
                let call = HalfCall {
                    accumulate: acc,
                    ..HalfCall::new(m, n, k, a, at, b, bt)
                };
                call.into_slice(
                    Paths {
                        bf16: Bf16Kernel::Portable,
                        f32: F32Kernel::Portable,
                    },
                    &mut c,
                );
                c
            };
            let stored = run(HalfOperand::Half(&a16), HalfOperand::Half(&b16));
            assert_eq!(
                bits(&run(HalfOperand::F32(&case.a), HalfOperand::F32(&case.b))),
                bits(&stored)
            );
            let bound = Bound::new(k);
            for i in 0..m {
                for j in 0..n {
                    let c0 = if acc {
                        f64::from(case.c0[i * n + j])
                    } else {
                        0.0
                    };
                    let (mut want, mut scale) = (c0, c0.abs());
                    for p in 0..k {
                        let x = if at { a16[p * m + i] } else { a16[i * k + p] };
                        let y = if bt { b16[j * k + p] } else { b16[p * n + j] };
                        let t = f64::from(x.to_f32()) * f64::from(y.to_f32());
                        want += t;
                        scale += t.abs();
                    }
                    let got = f64::from(stored[i * n + j]);
                    assert!(
                        (got - want).abs() <= bound.of(scale),
                        "f16 {m}x{n}x{k}: C[{i},{j}] = {got}, want {want}"
                    );
                }
            }
        }
    }
}

#[test]
fn the_public_entry_points_agree() {
    let (m, n, k) = if cfg!(miri) { (3, 5, 7) } else { (37, 45, 700) };
    let case = Case::new(m, n, k, false, true, false);
    let (a, b) = (HalfOperand::<bf16>::F32(&case.a), HalfOperand::F32(&case.b));
    let mut c = vec![f32::NAN; m * n];
    gemm_half(m, n, k, a, false, b, true, &mut c, false);
    let fresh = gemm_half_new(m, n, k, a, false, b, true);
    assert_eq!(bits(&fresh), bits(&c));
    let seen: Vec<std::sync::atomic::AtomicU32> = (0..m * n).map(|_| 0.into()).collect();
    let epilogue = |i: usize, j: usize, row: &mut [f32]| {
        for (jj, v) in row.iter_mut().enumerate() {
            seen[i * n + j + jj].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            *v = 2.0 * *v + 1.0;
        }
    };
    let fused = gemm_half_new_then(m, n, k, a, false, b, true, &epilogue);
    assert!(seen
        .iter()
        .all(|s| s.load(std::sync::atomic::Ordering::Relaxed) == 1));
    assert_eq!(
        bits(&fused),
        bits(&c.iter().map(|v| 2.0 * v + 1.0).collect::<Vec<_>>())
    );
    // Accumulating adds to C.
    let mut twice = c.clone();
    gemm_half(m, n, k, a, false, b, true, &mut twice, true);
    assert!(twice
        .iter()
        .zip(&c)
        .all(|(t, c)| (t - 2.0 * c).abs() <= 1e-5 * c.abs().max(1.0)));
}

#[test]
fn empty_shapes() {
    let none = HalfOperand::<bf16>::Half(&[]);
    let mut c = vec![7.0f32; 6];
    gemm_half(2, 3, 0, none, false, none, false, &mut c, true);
    assert_eq!(c, vec![7.0; 6]);
    gemm_half(2, 3, 0, none, true, none, true, &mut c, false);
    assert_eq!(c, vec![0.0; 6]);
    assert_eq!(
        gemm_half_new(2, 3, 0, none, false, none, false),
        vec![0.0; 6]
    );
    let ones = [1.0f32; 12];
    assert!(gemm_half_new(0, 3, 4, none, false, HalfOperand::<bf16>::F32(&ones), false).is_empty());
}

#[test]
#[should_panic(expected = "gemm_half: B has the wrong length for [3, 2]")]
fn a_wrong_length_is_named() {
    let a = [0.5f32; 6];
    gemm_half_new(
        2,
        2,
        3,
        HalfOperand::<bf16>::F32(&a),
        false,
        HalfOperand::F32(&a[..5]),
        false,
    );
}

#[test]
fn the_kernel_switches_parse_and_refuse_what_the_cpu_lacks() {
    assert_eq!(
        Bf16Kernel::from_setting(None).expect("auto"),
        Bf16Kernel::best()
    );
    assert_eq!(
        Bf16Kernel::from_setting(Some(" auto ")).expect("auto"),
        Bf16Kernel::best()
    );
    assert_eq!(
        F32Kernel::from_setting(Some("")).expect("auto"),
        F32Kernel::best()
    );
    assert_eq!(
        Bf16Kernel::from_setting(Some("portable")).expect("portable"),
        Bf16Kernel::Portable
    );
    assert_eq!(
        F32Kernel::from_setting(Some("portable")).expect("portable"),
        F32Kernel::Portable
    );
    let err = Bf16Kernel::from_setting(Some("tpu"))
        .expect_err("no such kernel")
        .to_string();
    assert!(
        err.contains("ADVGRAD_GEMM_BF16=tpu") && err.contains("amx, avx512bf16, portable"),
        "{err}"
    );
    let err = F32Kernel::from_setting(Some("sse"))
        .expect_err("no such kernel")
        .to_string();
    assert!(
        err.contains("ADVGRAD_GEMM=sse") && err.contains("avx512-12x32, avx512, avx2, portable"),
        "{err}"
    );
    match Bf16Kernel::ALL.iter().find(|k| !k.available()) {
        Some(k) => {
            let err = Bf16Kernel::from_setting(Some(k.name()))
                .expect_err("unavailable")
                .to_string();
            assert!(err.contains("this machine lacks"), "{err}");
        }
        None => {
            eprintln!("the_kernel_switches...: every bf16 kernel runs here; no refusal to test")
        }
    }
    // What this process selected is one of the kernels and runs here.
    assert!(Bf16Kernel::selected().expect("a valid setting").available());
    assert!(F32Kernel::selected().expect("a valid setting").available());
}

#[cfg(target_arch = "x86_64")]
#[test]
#[cfg_attr(miri, ignore)]
fn the_simd_packers_give_the_portable_bits() {
    use super::pairs::{self, x86::ConvertRounding, x86::IntegerRounding, x86::Rounding};
    use crate::backend::cpu::gemm::pack::View;
    let present = is_x86_feature_detected!("avx512f")
        && is_x86_feature_detected!("avx512bw")
        && is_x86_feature_detected!("avx512vl")
        && is_x86_feature_detected!("avx2");
    if !present {
        eprintln!("skipping the_simd_packers_give_the_portable_bits: no AVX-512F, BW, VL and AVX2");
        return;
    }
    let convert = is_x86_feature_detected!("avx512bf16") && is_x86_feature_detected!("avx512dq");
    if !convert {
        eprintln!(
            "the_simd_packers_give_the_portable_bits: no AVX512-BF16 and DQ, so the \
             vcvtne2ps2bf16 rounding is skipped (the integer one is tested)"
        );
    }
    /// The three layouts of `x[r0..r0+w, p0..p0+kc]`: by k (one panel of
    /// at most 16 rows), by row (a strip of 32 rows), and as panels (all of
    /// `x`'s rows from r0, padded to whole tile steps).
    type Packed = (Vec<u32>, Vec<u32>, Vec<u32>);
    fn sizes(x_rows: usize, r0: usize, kc: usize) -> (usize, usize, usize) {
        let qk = kc.div_ceil(32) * 16;
        (
            kc.div_ceil(2) * 16,
            32 * qk,
            (x_rows - r0).div_ceil(16) * qk * 16,
        )
    }
    #[inline(always)]
    fn simd<S: HalfSource<bf16>, R: Rounding>(
        x: View<'_, S>,
        rows: usize,
        at: (usize, usize, usize, usize),
        fill: u32,
    ) -> Packed {
        let (r0, w, p0, kc) = at;
        let (n_k, n_row, n_panels) = sizes(rows, r0, kc);
        let qk = n_row / 32;
        let (mut by_k, mut by_row, mut panels) =
            (vec![fill; n_k], vec![fill; n_row], vec![fill; n_panels]);
        pairs::x86::pack_pairs::<S, R, 16>(x, r0, w.min(16), p0, kc, &mut by_k);
        pairs::x86::pack_pair_rows::<S, R, 32>(x, r0, w.min(32), p0, kc, qk, &mut by_row);
        pairs::x86::pack_pair_panels::<S, R, 16>(x, r0, rows - r0, p0, kc, qk * 16, &mut panels);
        (by_k, by_row, panels)
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
    fn simd_integer<S: HalfSource<bf16>>(
        x: View<'_, S>,
        rows: usize,
        at: (usize, usize, usize, usize),
        fill: u32,
    ) -> Packed {
        simd::<S, IntegerRounding>(x, rows, at, fill)
    }
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,avx512dq,avx512bf16")]
    fn simd_convert<S: HalfSource<bf16>>(
        x: View<'_, S>,
        rows: usize,
        at: (usize, usize, usize, usize),
        fill: u32,
    ) -> Packed {
        simd::<S, ConvertRounding>(x, rows, at, fill)
    }
    fn portable<S: HalfSource<bf16>>(
        x: View<'_, S>,
        rows: usize,
        at: (usize, usize, usize, usize),
    ) -> Packed {
        let (r0, w, p0, kc) = at;
        let (n_k, n_row, n_panels) = sizes(rows, r0, kc);
        let qk = n_row / 32;
        let (mut by_k, mut by_row, mut panels) = (vec![7; n_k], vec![9; n_row], vec![11; n_panels]);
        pairs::pack_pairs::<S, 16>(x, r0, w.min(16), p0, kc, &mut by_k);
        pairs::pack_pair_rows::<S, 32>(x, r0, w.min(32), p0, kc, qk, &mut by_row);
        pairs::pack_pair_panels::<S, 16>(x, r0, rows - r0, p0, kc, qk * 16, &mut panels);
        (by_k, by_row, panels)
    }
    let (rows, cols) = (45, 77);
    // With a subnormal in every group of six (the conversion instruction's
    // groups fall back to the integer form), and with none (they do not).
    for f in [delicate(rows * cols, 9), delicate_normal(rows * cols, 9)] {
        let h: Vec<bf16> = f.iter().map(|&v| bf16::from_f32(v)).collect();
        for (rs, cs) in [(cols, 1), (1, rows)] {
            for &at in &[
                (0, 16, 0, 77),
                (3, 16, 5, 33),
                (29, 16, 1, 16),
                (7, 9, 2, 31),
                (0, 16, 60, 1),
                (20, 16, 0, 2),
                (0, 32, 0, 77),
                (13, 25, 3, 40),
                (10, 20, 7, 64),
                (5, 10, 4, 70),
                (30, 3, 0, 45),
            ] {
                let (vf, vh) = (
                    View {
                        data: &f[..],
                        rs,
                        cs,
                    },
                    View {
                        data: &h[..],
                        rs,
                        cs,
                    },
                );
                let expected = portable(vf, rows, at);
                // SAFETY: the features were detected above.
                let (sf, sh) =
                    unsafe { (simd_integer(vf, rows, at, 1), simd_integer(vh, rows, at, 3)) };
                assert_eq!(sf, expected, "f32 rs={rs} {at:?}");
                assert_eq!(sh, portable(vh, rows, at), "bf16 rs={rs} {at:?}");
                assert_eq!(sf, sh);
                if convert {
                    // SAFETY: as above, AVX512-BF16 and DQ included.
                    let (cf, ch) =
                        unsafe { (simd_convert(vf, rows, at, 5), simd_convert(vh, rows, at, 6)) };
                    assert_eq!(cf, expected, "f32 rs={rs} {at:?}, vcvtne2ps2bf16");
                    assert_eq!(ch, sh, "bf16 rs={rs} {at:?}, vcvtne2ps2bf16");
                }
            }
        }
    }
}

/// [`delicate`] without subnormals: the same rounding ties, and NaNs
/// (quiet, signalling, negative), infinities, values that round to
/// infinity, zeros of both signs and the smallest normals in their place.
fn delicate_normal(len: usize, seed: u64) -> Vec<f32> {
    const SPECIAL: [u32; 8] = [
        0x7FC0_0001, // quiet NaN with a payload
        0x7F80_0001, // signalling NaN
        0xFFC1_2345, // negative NaN
        0x7F80_0000, // +∞
        0x7F7F_FFFF, // f32::MAX, which rounds to +∞
        0x8000_0000, // −0
        0x0080_0000, // the smallest normal
        0x8080_8000, // a tie at the smallest normals
    ];
    let mut x = delicate(len, seed);
    for (i, v) in x.iter_mut().enumerate() {
        if i % 6 == 3 {
            *v = f32::from_bits(SPECIAL[(i / 6) % SPECIAL.len()]);
        }
    }
    x
}
