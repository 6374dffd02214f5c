//! Helpers shared by the integration tests (each test file that needs them
//! says `mod support;`): a tiny random generator, the per-element tolerance
//! check every kernel test compares with, and the Fashion-MNIST loader that
//! refuses to skip in CI.
#![allow(dead_code)]

use advgrad::backend::cuda::{self, Verdict};
use advgrad::data::{default_data_dir, Dataset, Split};
use advgrad::{DType, Device};

/// The devices a CUDA parity test runs on: the emulator (unless
/// `ADVGRAD_PARITY_EMU=0`, as in the GPU bundle), and `cuda:0` where this
/// build has CUDA and a GPU is present; without one, `test` says why
/// `cuda:0` is skipped (`ADVGRAD_REQUIRE_GPU=1` makes that a failure).
pub fn parity_devices(test: &str) -> Vec<Device> {
    let mut v = Vec::new();
    if cuda::parity_on_emulator() {
        v.push(Device::Emu);
    }
    match cuda::verdict(0) {
        Verdict::Run => v.push(Device::Cuda(0)),
        Verdict::Skip(why) => eprintln!("{test}: cuda:0 skipped: {why}"),
        Verdict::Fail(why) => panic!("{test}: {why}"),
    }
    assert!(
        !v.is_empty(),
        "{test}: {}=0 leaves out the emulator and cuda:0 is skipped: nothing to test",
        cuda::PARITY_EMU_VAR
    );
    v
}

/// xorshift64*: a tiny deterministic generator.
pub struct Rng(u64);

impl Rng {
    /// A generator fixed by `seed`.
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `[lo, hi)`.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64)
    }

    /// `n` draws uniform in `[lo, hi)`.
    pub fn vec(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    /// Uniform in `0..n`.
    pub fn below(&mut self, n: u32) -> u32 {
        (self.next_u64() % u64::from(n)) as u32
    }

    /// `n` labels in `0..classes`.
    pub fn labels(&mut self, n: usize, classes: usize) -> Vec<u32> {
        (0..n).map(|_| self.below(classes as u32)).collect()
    }
}

/// How close a result must be to the reference, element by element:
///
/// `|got − want| ≤ tol · max(scale, floor)`
///
/// where `scale` is `|want|` for elementwise results and the sum of the
/// `|terms|` for sums and products ([`Scale`]), and the absolute `floor`
/// (1e-6 in f32, 1e-12 in f64) only keeps results that should be exactly
/// zero from demanding bit equality. So a value of 2e-5 may be off by
/// 2e-10 in f32, not by 1e-5: a 45 % error is a failure at any magnitude
/// above the floor. NaN must match NaN, and an infinity must match exactly.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Tolerance {
    /// The relative tolerance.
    pub tol: f64,
    /// The smallest scale.
    pub floor: f64,
}

impl Tolerance {
    /// One kernel: 1e-5 in f32 (a few ulps of the transcendental functions,
    /// which differ between libm and CUDA's), 1e-12 in f64.
    pub fn kernel(dtype: DType) -> Tolerance {
        match dtype {
            DType::F64 => Tolerance {
                tol: 1e-12,
                floor: 1e-12,
            },
            _ => Tolerance {
                tol: 1e-5,
                floor: 1e-6,
            },
        }
    }

    /// `n` roundings of the type (`n·ε`: ε = 2⁻²³ in f32, 2⁻⁵² in f64), for
    /// arithmetic with no transcendental function, measured against its
    /// terms.
    pub fn roundings(dtype: DType, n: f64) -> Tolerance {
        let eps = if dtype == DType::F64 {
            f64::EPSILON
        } else {
            f32::EPSILON as f64
        };
        Tolerance {
            tol: n * eps,
            ..Tolerance::kernel(dtype)
        }
    }

    /// A chain of kernels (a training step, an attack step): their
    /// roundings add up, so 1e-4 in f32 and 1e-10 in f64.
    pub fn composite(dtype: DType) -> Tolerance {
        Tolerance {
            tol: if dtype == DType::F64 { 1e-10 } else { 1e-4 },
            ..Tolerance::kernel(dtype)
        }
    }
}

/// The scale each element's error is measured against.
#[derive(Clone, Copy, Debug)]
pub enum Scale<'a> {
    /// `|want|`: elementwise results, computed by the same formula on both
    /// sides, differ by a few roundings of their own size.
    Value,
    /// The sum of the absolute values of the terms that make each element
    /// (`Σₚ |aᵢₚ·bₚⱼ|` for a matrix product, `Σ |xᵢ|` for a sum, `|p·g| + |g|`
    /// for a difference of two products). Any summation order errs by at
    /// most a few ulps of this sum, not of the result: when terms cancel, a
    /// result near zero still carries the rounding of its large terms, and
    /// the CPU and the kernels add in different orders.
    Terms(&'a [f64]),
}

/// Compares `got` with `want` element by element; the error names the
/// first element out of tolerance.
pub fn compare(
    what: &str,
    got: &[f64],
    want: &[f64],
    scale: Scale<'_>,
    t: Tolerance,
) -> Result<(), String> {
    if got.len() != want.len() {
        return Err(format!(
            "{what}: {} elements, expected {}",
            got.len(),
            want.len()
        ));
    }
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if w.is_nan() || !w.is_finite() {
            if g.to_bits() != w.to_bits() && !(w.is_nan() && g.is_nan()) {
                return Err(format!("{what}[{i}]: got {g}, want {w}"));
            }
            continue;
        }
        let s = match scale {
            Scale::Value => w.abs(),
            Scale::Terms(terms) => terms[i],
        };
        let err = (g - w).abs() / s.max(t.floor);
        if err.is_nan() || err > t.tol {
            return Err(format!(
                "{what}[{i}]: got {g}, want {w}, error {err:.3e} of the scale {:.3e} > {:e}",
                s.max(t.floor),
                t.tol
            ));
        }
    }
    Ok(())
}

/// [`compare`], failing the test.
#[track_caller]
pub fn assert_close(what: &str, got: &[f64], want: &[f64], scale: Scale<'_>, t: Tolerance) {
    if let Err(e) = compare(what, got, want, scale, t) {
        panic!("{e}");
    }
}

/// One split of Fashion-MNIST, or `None` (with a note) when it is not
/// installed. Under `CI=true` missing data fails the test instead: CI
/// installs the data, so a missing data set there is a broken run, not a
/// skip.
pub fn fashion_mnist(split: Split) -> Option<Dataset> {
    match Dataset::load(&default_data_dir(), split) {
        Ok(d) => Some(d),
        Err(e) if ci() => panic!("CI=true but Fashion-MNIST cannot be loaded: {e}"),
        Err(e) => {
            eprintln!("skipping: Fashion-MNIST is not installed ({e})");
            None
        }
    }
}

/// Whether the tests run in CI (`CI=true`, or any value but `false`/`0`).
pub fn ci() -> bool {
    std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0")
}

/// Runs the `advgrad` binary with `args`, in the test's environment:
/// whether it succeeded, its stdout and its stderr.
pub fn run_advgrad(args: &[&str]) -> (bool, String, String) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_advgrad"))
        .args(args)
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}
