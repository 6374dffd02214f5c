//! The convolution and pooling kernels (`kernels/conv.cu`,
//! `kernels/pool.cu`) on the SIMT emulator, from their launch plans,
//! against direct f64 references written from the definitions (loops over
//! every tap, no unfolding): odd, non-square sizes with stride 2, padding,
//! KH ≠ KW, H ≠ W, channel counts that are not multiples of the 64-wide
//! tiles (and more than one tile of rows and of columns), a kernel larger
//! than the unpadded input, the small CNN's real layers, and the weight
//! gradient unsplit, split by the plan's rule and split by force. Pooling
//! is checked bit for bit: ties, ±0 and NaNs in the windows, rows and
//! columns past the last window, and a size past the grid's cap.
//!
//! The emulator fills every output with NaN before a launch, so an element
//! a kernel forgets to write fails the comparison.
//!
//! Tolerance: the per-element check of `tests/support` (1e-5 in f32, 1e-12
//! in f64) relative to the sum of the magnitudes of each result's terms.
mod support;

use kernels::conv::{self, Conv2dDims};
use kernels::pool::{self, PoolDims};
use kernels::{DType, LaunchPlan};
use simt::Buf;
use support::{compare, Rng, Scale, Tolerance};

const DTYPES: [DType; 2] = [DType::F32, DType::F64];

/// `v` rounded to `dtype`.
fn round(dtype: DType, v: &[f64]) -> Vec<f64> {
    match dtype {
        DType::F32 => v.iter().map(|&x| f64::from(x as f32)).collect(),
        _ => v.to_vec(),
    }
}

/// Runs `plan` in `dtype` with the buffers `inputs` then new outputs of the
/// given lengths, and returns the outputs.
fn run(plan: &LaunchPlan, dtype: DType, inputs: &[&[f64]], outputs: &[usize]) -> Vec<Vec<f64>> {
    let fail = |e: simt::SimtError| panic!("{}: {e}", plan.kernel);
    match dtype {
        DType::F32 => {
            let ins: Vec<Vec<f32>> = inputs
                .iter()
                .map(|v| v.iter().map(|&x| x as f32).collect())
                .collect();
            let mut outs: Vec<Vec<f32>> = outputs.iter().map(|&n| vec![0.0; n]).collect();
            let mut bufs: Vec<Buf<'_>> = ins.iter().map(|v| Buf::F32(v)).collect();
            bufs.extend(outs.iter_mut().map(|v| Buf::F32Mut(v)));
            simt::run(plan, &mut bufs).unwrap_or_else(fail);
            drop(bufs);
            outs.into_iter()
                .map(|v| v.into_iter().map(f64::from).collect())
                .collect()
        }
        _ => {
            let mut outs: Vec<Vec<f64>> = outputs.iter().map(|&n| vec![0.0; n]).collect();
            let mut bufs: Vec<Buf<'_>> = inputs.iter().map(|v| Buf::F64(v)).collect();
            bufs.extend(outs.iter_mut().map(|v| Buf::F64Mut(v)));
            simt::run(plan, &mut bufs).unwrap_or_else(fail);
            drop(bufs);
            outs
        }
    }
}

// ------------------------------------------------------------ convolution

/// Visits every (output position, tap) pair whose input position lies in
/// the image: `f(y index, x index, weight index)`.
fn each_tap(d: &Conv2dDims, mut f: impl FnMut(usize, usize, usize)) {
    let (oh, ow) = (d.out_h(), d.out_w());
    let (c, h, w, o) = (d.in_channels, d.height, d.width, d.out_channels);
    let (kh, kw, s, pad) = (d.kernel_h, d.kernel_w, d.stride, d.padding);
    for n in 0..d.batch {
        for oc in 0..o {
            for i in 0..oh {
                for j in 0..ow {
                    let yi = ((n * o + oc) * oh + i) * ow + j;
                    for ci in 0..c {
                        for p in 0..kh {
                            for q in 0..kw {
                                let (hh, ww) = ((i * s + p) as isize, (j * s + q) as isize);
                                let (hh, ww) = (hh - pad as isize, ww - pad as isize);
                                if hh < 0 || ww < 0 || hh >= h as isize || ww >= w as isize {
                                    continue;
                                }
                                let xi = ((n * c + ci) * h + hh as usize) * w + ww as usize;
                                let wi = ((oc * c + ci) * kh + p) * kw + q;
                                f(yi, xi, wi);
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The reference results and the sums of the magnitudes of their terms.
struct ConvReference {
    y: (Vec<f64>, Vec<f64>),
    dx: (Vec<f64>, Vec<f64>),
    dw: (Vec<f64>, Vec<f64>),
    db: (Vec<f64>, Vec<f64>),
}

fn conv_reference(d: &Conv2dDims, x: &[f64], w: &[f64], b: &[f64], g: &[f64]) -> ConvReference {
    let pixels = d.out_h() * d.out_w();
    let zeros = |n| (vec![0.0; n], vec![0.0; n]);
    let (mut y, mut dx, mut dw, mut db) = (
        zeros(d.output_len()),
        zeros(d.input_len()),
        zeros(d.weight_len()),
        zeros(d.out_channels),
    );
    for (yi, v) in y.0.iter_mut().enumerate() {
        let oc = yi / pixels % d.out_channels;
        *v = b[oc];
        y.1[yi] = b[oc].abs();
        db.0[oc] += g[yi];
        db.1[oc] += g[yi].abs();
    }
    each_tap(d, |yi, xi, wi| {
        y.0[yi] += w[wi] * x[xi];
        y.1[yi] += (w[wi] * x[xi]).abs();
        dx.0[xi] += g[yi] * w[wi];
        dx.1[xi] += (g[yi] * w[wi]).abs();
        dw.0[wi] += g[yi] * x[xi];
        dw.1[wi] += (g[yi] * x[xi]).abs();
    });
    ConvReference { y, dx, dw, db }
}

#[allow(clippy::too_many_arguments)]
fn dims(
    batch: usize,
    in_channels: usize,
    (height, width): (usize, usize),
    out_channels: usize,
    (kernel_h, kernel_w): (usize, usize),
    stride: usize,
    padding: usize,
) -> Conv2dDims {
    Conv2dDims {
        batch,
        in_channels,
        height,
        width,
        out_channels,
        kernel_h,
        kernel_w,
        stride,
        padding,
    }
}

/// Odd geometries, then the small CNN's two convolutions
/// (`1x28x28-c16k5p2-…-c32k5p2-…`) at batch 2.
fn conv_cases() -> Vec<Conv2dDims> {
    vec![
        // Stride 2, padding 1, a 3×2 kernel on 9×7; 70 filters: two
        // column blocks.
        dims(3, 5, (9, 7), 70, (3, 2), 2, 1),
        // Stride 1, padding 2, 5×3 on 11×13: 286 output rows (five row
        // blocks), depth 45 (not a multiple of 16).
        dims(2, 3, (11, 13), 5, (5, 3), 1, 2),
        // A 1×1 kernel with stride 3 and no padding: rows and columns the
        // stride skips get no input gradient.
        dims(2, 7, (5, 6), 3, (1, 1), 3, 0),
        // A 4×5 kernel larger than the 2×3 input, reaching it through the
        // padding.
        dims(2, 2, (2, 3), 3, (4, 5), 1, 2),
        // Stride 2 with padding 2 and a kernel wider than the stride.
        dims(1, 4, (8, 10), 6, (5, 5), 2, 2),
        dims(2, 1, (28, 28), 16, (5, 5), 1, 2),
        dims(2, 16, (14, 14), 32, (5, 5), 1, 2),
    ]
}

/// The four conv kernels in `dtype` on `d` against the reference, with the
/// weight gradient split into `splits` ranges (None: the plan's rule for
/// 132 SMs). Returns every result out of tolerance, not only the first.
fn conv_case(dtype: DType, d: &Conv2dDims, splits: Option<u32>, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let x = round(dtype, &rng.vec(d.input_len(), -1.0, 1.0));
    let w = round(dtype, &rng.vec(d.weight_len(), -1.0, 1.0));
    let b = round(dtype, &rng.vec(d.out_channels, -1.0, 1.0));
    let g = round(dtype, &rng.vec(d.output_len(), -1.0, 1.0));
    let r = conv_reference(d, &x, &w, &b, &g);
    let t = Tolerance::kernel(dtype);
    let mut errors = Vec::new();
    let mut check = |k: &str, got: &[f64], (want, terms): &(Vec<f64>, Vec<f64>)| {
        let what = format!("{dtype} {k} {d:?}");
        errors.extend(compare(&what, got, want, Scale::Terms(terms), t).err());
    };

    let p = conv::forward(dtype, d).unwrap();
    let y = run(&p, dtype, &[&x, &w, &b], &[d.output_len()]);
    check("y", &y[0], &r.y);

    let p = conv::backward_input(dtype, d).unwrap();
    let dx = run(&p, dtype, &[&g, &w], &[d.input_len()]);
    check("dx", &dx[0], &r.dx);

    let p = conv::backward_weight(dtype, d, 132, splits).unwrap();
    if let Some(s) = splits {
        assert_eq!(p.splits, s.max(1), "{d:?}");
    }
    let dw = match &p.reduce {
        None => run(&p.product, dtype, &[&g, &x], &[d.weight_len()]).remove(0),
        Some(reduce) => {
            let partial = run(&p.product, dtype, &[&g, &x], &[p.workspace_len()]).remove(0);
            run(reduce, dtype, &[&partial, &partial], &[d.weight_len()]).remove(0)
        }
    };
    check(&format!("dw ({} ranges)", p.splits), &dw, &r.dw);

    let p = conv::backward_bias(dtype, d).unwrap();
    let db = run(&p, dtype, &[&g], &[d.out_channels]);
    check("db", &db[0], &r.db);
    errors
}

/// Fails with every error of `errors`.
#[track_caller]
fn no_errors(errors: Vec<String>) {
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn conv_kernels_match_the_reference() {
    let mut errors = Vec::new();
    for dtype in DTYPES {
        for (i, d) in conv_cases().iter().enumerate() {
            errors.extend(conv_case(dtype, d, None, 100 + i as u64));
        }
    }
    no_errors(errors);
}

#[test]
fn the_weight_gradient_is_the_same_sum_split_or_not() {
    let d = dims(3, 5, (9, 7), 70, (3, 2), 2, 1);
    let mut errors = Vec::new();
    for dtype in DTYPES {
        // Depth 3·5·4 = 60: 1, 2 and 4 ranges (the last one short).
        for splits in [1, 2, 4] {
            errors.extend(conv_case(dtype, &d, Some(splits), 200 + u64::from(splits)));
        }
    }
    no_errors(errors);
}

// ---------------------------------------------------------------- pooling

/// The flat in-plane position of the argmax of window (i, j): the first
/// maximum in row-major order, a NaN replacing anything before it.
fn window_argmax(plane: &[f64], d: &PoolDims, i: usize, j: usize) -> usize {
    let k = d.kernel;
    let mut at = i * k * d.width + j * k;
    for a in 0..k {
        for b in 0..k {
            let pos = (i * k + a) * d.width + j * k + b;
            if plane[pos] > plane[at] || plane[pos].is_nan() {
                at = pos;
            }
        }
    }
    at
}

/// Values with many ties, signed zeros and some NaNs.
fn tied_values(rng: &mut Rng, n: usize) -> Vec<f64> {
    const CHOICES: [f64; 7] = [-1.0, -0.0, 0.0, 0.5, 0.5, 1.0, 1.0];
    (0..n)
        .map(|_| match rng.below(40) {
            0 => f64::NAN,
            c => CHOICES[c as usize % CHOICES.len()],
        })
        .collect()
}

/// Bitwise equality, NaN included: the first element that differs.
fn same_bits(what: &str, got: &[f64], want: &[f64]) -> Option<String> {
    if got.len() != want.len() {
        return Some(format!(
            "{what}: {} elements, expected {}",
            got.len(),
            want.len()
        ));
    }
    got.iter().zip(want).enumerate().find_map(|(i, (g, w))| {
        let same = g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan());
        (!same).then(|| format!("{what}[{i}]: got {g}, want {w}"))
    })
}

/// The four pooling kernels against the reference: every mismatch.
fn pool_case(dtype: DType, d: &PoolDims, seed: u64) -> Vec<String> {
    let mut rng = Rng::new(seed);
    let x = round(dtype, &tied_values(&mut rng, d.input_len()));
    let g = round(dtype, &rng.vec(d.output_len(), -1.0, 1.0));
    let (oh, ow, k) = (d.out_h(), d.out_w(), d.kernel);
    let plane = d.height * d.width;
    let (mut y, mut dx) = (vec![0.0; d.output_len()], vec![0.0; d.input_len()]);
    let (mut avg, mut avg_terms) = (vec![0.0; d.output_len()], vec![0.0; d.output_len()]);
    let mut davg = vec![0.0; d.input_len()];
    let scale = round(dtype, &[1.0 / (k * k) as f64])[0];
    for p in 0..d.planes {
        let xp = &x[p * plane..][..plane];
        for i in 0..oh {
            for j in 0..ow {
                let o = (p * oh + i) * ow + j;
                let at = window_argmax(xp, d, i, j);
                y[o] = xp[at];
                dx[p * plane + at] = g[o];
                for a in 0..k {
                    for b in 0..k {
                        let pos = (i * k + a) * d.width + j * k + b;
                        avg[o] += xp[pos] / (k * k) as f64;
                        avg_terms[o] += xp[pos].abs() / (k * k) as f64;
                        davg[p * plane + pos] = round(dtype, &[g[o] * scale])[0];
                    }
                }
            }
        }
    }
    let what = |kernel: &str| format!("{dtype} {kernel} {d:?}");
    let mut errors = Vec::new();
    let p = pool::max_forward(dtype, d).unwrap();
    errors.extend(same_bits(
        &what("max fwd"),
        &run(&p, dtype, &[&x], &[y.len()])[0],
        &y,
    ));
    let p = pool::max_backward(dtype, d).unwrap();
    let got = run(&p, dtype, &[&x, &g], &[dx.len()]).remove(0);
    errors.extend(same_bits(&what("max bwd"), &got, &dx));
    let p = pool::avg_backward(dtype, d).unwrap();
    let got = run(&p, dtype, &[&g], &[dx.len()]).remove(0);
    errors.extend(same_bits(&what("avg bwd"), &got, &davg));
    // The average of a window with a NaN is NaN; elsewhere a sum.
    let p = pool::avg_forward(dtype, d).unwrap();
    let got = run(&p, dtype, &[&x], &[avg.len()]).remove(0);
    let t = Tolerance::kernel(dtype);
    errors.extend(compare(&what("avg fwd"), &got, &avg, Scale::Terms(&avg_terms), t).err());
    errors
}

#[test]
fn pool_kernels_match_the_reference_bit_for_bit() {
    let cases = [
        // 2×2 windows on 7×5: the last row and column have no window.
        (6, 7, 5, 2),
        (3, 9, 10, 3),
        (1, 1, 1, 1),
        (2, 5, 3, 3),
        // A window larger than the plane: no output, zero gradient.
        (2, 3, 3, 4),
        // The small CNN's pools at batch 2: 16×28×28 and 32×14×14.
        (32, 28, 28, 2),
        (64, 14, 14, 2),
    ];
    let mut errors = Vec::new();
    for dtype in DTYPES {
        for (s, &(planes, height, width, kernel)) in cases.iter().enumerate() {
            let d = PoolDims {
                planes,
                height,
                width,
                kernel,
            };
            errors.extend(pool_case(dtype, &d, 400 + s as u64));
        }
    }
    no_errors(errors);
}

/// More elements than the grid's cap of threads: each thread loops.
#[test]
fn pool_kernels_loop_past_the_grid_cap() {
    let d = PoolDims {
        planes: 580,
        height: 61,
        width: 60,
        kernel: 2,
    };
    let cap = (kernels::grid_stride::MAX_BLOCKS * kernels::grid_stride::THREADS) as usize;
    assert!(d.input_len() > cap);
    no_errors(pool_case(DType::F32, &d, 500));
}
