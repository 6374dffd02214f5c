//! Tests of the emulator's WMMA (`crates/simt/csrc/mma.h`) and half types
//! (`simt_half.h`): a one-warp m16n16k16 product in bf16 and f16 in every
//! operand and output layout against a CPU reference, conversions against
//! the `half` crate, and the strictness of the collectives (a misaligned
//! pointer, a bad leading dimension, a pointer that differs between lanes,
//! a lane that skips `mma_sync`) failing the launch with a clear message.

use half::{bf16, f16};
use kernels::{Access, Cooperation, DType, LaunchPlan, Param, Scalar};
use simt::Buf;

fn buffer(name: &'static str, len: usize, access: Access) -> Param {
    Param::Buffer {
        name,
        dtype: DType::F32,
        len,
        access,
    }
}

fn int(name: &'static str, v: i32) -> Param {
    Param::Scalar {
        name,
        value: Scalar::I32(v),
    }
}

fn one_warp(kernel: &str, layouts: [bool; 3], fault: i32) -> LaunchPlan {
    LaunchPlan {
        kernel: kernel.into(),
        grid: [1, 1, 1],
        block: [32, 1, 1],
        shared_bytes: 0,
        cooperation: Cooperation::Block,
        params: vec![
            buffer("a", 256, Access::Read),
            buffer("b", 256, Access::Read),
            buffer("c", 256, Access::ReadWrite),
            int("a_col", layouts[0].into()),
            int("b_col", layouts[1].into()),
            int("c_col", layouts[2].into()),
            int("fault", fault),
        ],
    }
}

/// Deterministic values in [−2, 2) with many significant bits, so that the
/// rounding to 16 bits matters.
fn values(seed: u32, n: usize) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2_654_435_761).wrapping_add(12345);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s as f32 / u32::MAX as f32) * 4.0 - 2.0
        })
        .collect()
}

/// The emulator's documented result: 2·(C + Σₖ A[r][k]·B[k][c]), the
/// operands rounded to the half type, the products added to C one at a
/// time in f32 in the order k = 0..15.
fn reference(a: &[f32], b: &[f32], c: &[f32], round: impl Fn(f32) -> f32) -> Vec<f32> {
    let mut out = vec![0.0f32; 256];
    for r in 0..16 {
        for col in 0..16 {
            let mut acc = c[r * 16 + col];
            for k in 0..16 {
                acc += round(a[r * 16 + k]) * round(b[k * 16 + col]);
            }
            out[r * 16 + col] = 2.0 * acc;
        }
    }
    out
}

fn run_product(
    kernel: &str,
    layouts: [bool; 3],
    seed: u32,
) -> (Vec<f32>, Vec<f32>, Vec<f32>, Vec<f32>) {
    let a = values(seed, 256);
    let b = values(seed + 1, 256);
    let c0 = values(seed + 2, 256);
    let mut c = c0.clone();
    simt::run(
        &one_warp(kernel, layouts, 0),
        &mut [Buf::F32(&a), Buf::F32(&b), Buf::F32Mut(&mut c)],
    )
    .unwrap_or_else(|e| panic!("{kernel} {layouts:?}: {e}"));
    (a, b, c0, c)
}

#[test]
fn one_warp_products_match_the_reference_in_every_layout() {
    let round_bf16 = |x: f32| bf16::from_f32(x).to_f32();
    let round_f16 = |x: f32| f16::from_f32(x).to_f32();
    for (i, layouts) in (0..8u32)
        .map(|m| [m & 1 != 0, m & 2 != 0, m & 4 != 0])
        .enumerate()
    {
        for kernel in ["simt_wmma_bf16", "simt_wmma_f16"] {
            let (a, b, c0, c) = run_product(kernel, layouts, 10 * i as u32);
            let want = if kernel.ends_with("bf16") {
                reference(&a, &b, &c0, round_bf16)
            } else {
                reference(&a, &b, &c0, round_f16)
            };
            // The result as stored: row-major, or column-major.
            let got: Vec<f32> = (0..256)
                .map(|f| {
                    let (r, col) = (f / 16, f % 16);
                    if layouts[2] {
                        c[col * 16 + r]
                    } else {
                        c[f]
                    }
                })
                .collect();
            for f in 0..256 {
                assert_eq!(
                    got[f].to_bits(),
                    want[f].to_bits(),
                    "{kernel} {layouts:?} element ({}, {}): {} vs {}",
                    f / 16,
                    f % 16,
                    got[f],
                    want[f]
                );
            }
            // And within f32 rounding of the exact product of the rounded
            // operands: the rounding to 16 bits is what the emulator does.
            let exact: f64 = (0..16)
                .map(|k| f64::from(a[k]) * f64::from(b[16 * k]))
                .sum::<f64>()
                + f64::from(c0[0]);
            let tol = if kernel.ends_with("bf16") { 0.1 } else { 0.02 };
            assert!((f64::from(want[0]) / 2.0 - exact).abs() < tol);
        }
    }
}

#[test]
fn half_conversions_round_to_nearest_even_like_the_half_crate() {
    let mut inputs = values(7, 2000);
    inputs.extend([
        0.0,
        -0.0,
        1.0,
        65504.0,
        65519.99,
        65520.0,
        1e6,
        -1e6,
        f32::INFINITY,
        f32::NEG_INFINITY,
        5.9604645e-8,              // 2^-24, the smallest f16 subnormal
        2.9802322e-8,              // 2^-25: a tie, rounds to 0
        4.4703484e-8,              // 1.5·2^-25: rounds up to 2^-24
        6.1035156e-5,              // 2^-14, the smallest f16 normal
        6.097555e-5,               // just below it
        1.0 + 2f32.powi(-11),      // a tie for f16: rounds to 1
        1.0 + 2f32.powi(-8),       // a tie for bf16: rounds to 1
        1.0 + 3.0 * 2f32.powi(-8), // a tie for bf16: rounds up
        3.4028235e38,
        1e-40,
    ]);
    for e in -30..20 {
        inputs.push(2f32.powi(e) * 1.337);
    }
    let n = inputs.len();
    let plan = LaunchPlan {
        kernel: "simt_half_round_trip".into(),
        grid: [1, 1, 1],
        block: [64, 1, 1],
        shared_bytes: 0,
        cooperation: Cooperation::Block,
        params: vec![
            buffer("in", n, Access::Read),
            buffer("out", 2 * n, Access::Write),
            int("n", n as i32),
        ],
    };
    let mut out = vec![0.0f32; 2 * n];
    simt::run(&plan, &mut [Buf::F32(&inputs), Buf::F32Mut(&mut out)]).unwrap();
    for (i, &x) in inputs.iter().enumerate() {
        let h = f16::from_f32(x).to_f32();
        let b = bf16::from_f32(x).to_f32();
        assert_eq!(out[2 * i].to_bits(), h.to_bits(), "f16 of {x:e}");
        assert_eq!(out[2 * i + 1].to_bits(), b.to_bits(), "bf16 of {x:e}");
    }
    // NaN stays NaN.
    let nan = [f32::NAN];
    let mut out = [0.0f32; 2];
    let mut plan1 = plan.clone();
    plan1.params = vec![
        buffer("in", 1, Access::Read),
        buffer("out", 2, Access::Write),
        int("n", 1),
    ];
    simt::run(&plan1, &mut [Buf::F32(&nan), Buf::F32Mut(&mut out)]).unwrap();
    assert!(out[0].is_nan() && out[1].is_nan());
}

fn fault(kernel: &str, fault: i32) -> String {
    let a = values(1, 256);
    let b = values(2, 256);
    let mut c = values(3, 256);
    simt::run(
        &one_warp(kernel, [false, true, false], fault),
        &mut [Buf::F32(&a), Buf::F32(&b), Buf::F32Mut(&mut c)],
    )
    .unwrap_err()
    .to_string()
}

#[test]
fn a_misaligned_fragment_pointer_is_an_error() {
    let e = fault("simt_wmma_bf16", 1);
    assert!(
        e.contains("load_matrix_sync") && e.contains("32-byte"),
        "{e}"
    );
}

#[test]
fn a_lane_missing_from_mma_sync_is_an_error() {
    let e = fault("simt_wmma_f16", 2);
    assert!(
        e.contains("divergent barrier") && e.contains("wmma::mma_sync"),
        "{e}"
    );
}

#[test]
fn a_leading_dimension_off_the_multiple_is_an_error() {
    let e = fault("simt_wmma_f16", 3);
    assert!(
        e.contains("leading dimension 12") && e.contains("multiple of 8"),
        "{e}"
    );
}

#[test]
fn a_pointer_that_differs_between_lanes_is_an_error() {
    let e = fault("simt_wmma_bf16", 4);
    assert!(e.contains("warp-uniform"), "{e}");
}
