//! The GELU kernels of chapter 6 (`kernels/gelu.cu`) on the SIMT emulator,
//! from their launch plans, against the CPU reference
//! (`kernels::gelu::reference`, in f64): odd sizes, a size past the grid's
//! cap (so threads loop), and the values that break formulas (±0, ±∞, NaN,
//! |x| large enough that tanh rounds to ±1), in f32 and f64.
//!
//! Tolerance: the per-element check of `tests/support` (1e-5 in f32, 1e-12
//! in f64) relative to the sum of the magnitudes of each result's terms,
//! `½|x|·(1 + |t|)` forward and `|g|·(½(1 + |t|) + ½|x|(1 + t²)·k·(1 + 3a·x²))`
//! backward: `1 + t` and `1 − t²` cancel, and near a cancellation the
//! result carries the rounding of its terms, not of itself.
mod support;

use kernels::gelu::{reference, reference_derivative, A, GELU_BWD, GELU_FWD, K};
use kernels::grid_stride::{Extent, MAX_BLOCKS, THREADS};
use kernels::DType;
use simt::Buf;
use support::{assert_close, Rng, Scale, Tolerance};

/// `t = tanh(k·(x + a·x³))` in f64.
fn t_of(x: f64) -> f64 {
    (K * (x + A * x * x * x)).tanh()
}

/// Inputs: `n` uniform in [−8, 8], then the special values.
fn inputs(n: usize, seed: u64) -> Vec<f64> {
    let mut x = Rng::new(seed).vec(n, -8.0, 8.0);
    x.extend([
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        20.0,
        -20.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ]);
    x
}

/// Runs both kernels in `dtype` on `x` (rounded to it) with gradient `g`,
/// and checks them against the f64 reference on the rounded inputs.
fn check(dtype: DType, x: &[f64], g: &[f64]) {
    let n = x.len();
    let fwd = GELU_FWD.plan(dtype, Extent::flat(n), &[]).unwrap();
    let bwd = GELU_BWD.plan(dtype, Extent::flat(n), &[]).unwrap();
    let (x, g, y, dx) = match dtype {
        DType::F32 => {
            let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
            let g32: Vec<f32> = g.iter().map(|&v| v as f32).collect();
            let (mut y, mut dx) = (vec![0f32; n], vec![0f32; n]);
            simt::run(&fwd, &mut [Buf::F32(&x32), Buf::F32Mut(&mut y)]).unwrap();
            simt::run(
                &bwd,
                &mut [Buf::F32(&x32), Buf::F32(&g32), Buf::F32Mut(&mut dx)],
            )
            .unwrap();
            let wide = |v: &[f32]| v.iter().map(|&e| f64::from(e)).collect::<Vec<f64>>();
            (wide(&x32), wide(&g32), wide(&y), wide(&dx))
        }
        _ => {
            let (mut y, mut dx) = (vec![0f64; n], vec![0f64; n]);
            simt::run(&fwd, &mut [Buf::F64(x), Buf::F64Mut(&mut y)]).unwrap();
            simt::run(&bwd, &mut [Buf::F64(x), Buf::F64(g), Buf::F64Mut(&mut dx)]).unwrap();
            (x.to_vec(), g.to_vec(), y, dx)
        }
    };
    let want: Vec<f64> = x.iter().map(|&v| reference(v)).collect();
    let want_dx: Vec<f64> = x
        .iter()
        .zip(&g)
        .map(|(&v, &g)| g * reference_derivative(v))
        .collect();
    let terms: Vec<f64> = x
        .iter()
        .map(|&v| 0.5 * v.abs() * (1.0 + t_of(v).abs()))
        .collect();
    let terms_dx: Vec<f64> = x
        .iter()
        .zip(&g)
        .map(|(&v, &g)| {
            let t = t_of(v);
            let inner = 0.5 * v.abs() * (1.0 + t * t) * K * (1.0 + 3.0 * A * v * v);
            g.abs() * (0.5 * (1.0 + t.abs()) + if inner.is_finite() { inner } else { 0.0 })
        })
        .collect();
    let t = Tolerance::kernel(dtype);
    assert_close(
        &format!("gelu_fwd {dtype} n={n}"),
        &y,
        &want,
        Scale::Terms(&terms),
        t,
    );
    assert_close(
        &format!("gelu_bwd {dtype} n={n}"),
        &dx,
        &want_dx,
        Scale::Terms(&terms_dx),
        t,
    );
}

#[test]
fn gelu_matches_the_reference_on_odd_sizes_and_special_values() {
    for (i, n) in [1usize, 3, 31, 257, 1000, 4097].into_iter().enumerate() {
        let x = inputs(n, i as u64);
        let g = Rng::new(100 + i as u64).vec(x.len(), -2.0, 2.0);
        check(DType::F32, &x, &g);
        check(DType::F64, &x, &g);
    }
}

#[test]
fn gelu_covers_every_element_past_the_grid_cap() {
    let n = (MAX_BLOCKS * THREADS) as usize + 7;
    let plan = GELU_FWD.plan(DType::F32, Extent::flat(n), &[]).unwrap();
    assert_eq!(
        plan.grid[0], MAX_BLOCKS,
        "the grid is capped, so threads loop"
    );
    let x = inputs(n - 9, 9);
    let g = vec![1.0; x.len()];
    check(DType::F32, &x, &g);
}

#[test]
fn the_special_values_give_the_limits() {
    let x = [f64::INFINITY, f64::NEG_INFINITY, -40.0, 0.0];
    let mut y = [0.0; 4];
    let plan = GELU_FWD.plan(DType::F64, Extent::flat(4), &[]).unwrap();
    simt::run(&plan, &mut [Buf::F64(&x), Buf::F64Mut(&mut y)]).unwrap();
    assert_eq!(y, [f64::INFINITY, 0.0, 0.0, 0.0]);
    let mut dx = [0.0; 4];
    let plan = GELU_BWD.plan(DType::F64, Extent::flat(4), &[]).unwrap();
    simt::run(
        &plan,
        &mut [Buf::F64(&x), Buf::F64(&[2.0; 4]), Buf::F64Mut(&mut dx)],
    )
    .unwrap();
    assert_eq!(dx, [2.0, 0.0, 0.0, 1.0]);
}
