//! Convolution and pooling: forward values against direct definitions,
//! PyTorch's tie rule, clear errors, and the same bits for any number of
//! threads. (Their gradients are checked in `gradcheck_ops.rs`.)

use advgrad::{DType, Error, Tape, Tensor};

/// `y[n,o,i,j] = b[o] + Σ w[o,c,p,q]·x[n,c,i·s+p−pad,j·s+q−pad]`, straight
/// from the definition, in f64.
fn direct_conv(x: &Tensor, w: &Tensor, b: &Tensor, s: usize, pad: usize) -> Vec<f64> {
    let (xd, wd) = (x.dims().to_vec(), w.dims().to_vec());
    let (n, c, h, wi) = (xd[0], xd[1], xd[2], xd[3]);
    let (o, kh, kw) = (wd[0], wd[2], wd[3]);
    let (oh, ow) = ((h + 2 * pad - kh) / s + 1, (wi + 2 * pad - kw) / s + 1);
    let (xv, wv, bv) = (
        x.to_f64_vec().unwrap(),
        w.to_f64_vec().unwrap(),
        b.to_f64_vec().unwrap(),
    );
    let mut y = vec![0.0; n * o * oh * ow];
    for ni in 0..n {
        for oi in 0..o {
            for i in 0..oh {
                for j in 0..ow {
                    let mut acc = bv[oi];
                    for ci in 0..c {
                        for p in 0..kh {
                            for q in 0..kw {
                                let (r, col) = (
                                    (i * s + p) as isize - pad as isize,
                                    (j * s + q) as isize - pad as isize,
                                );
                                if r < 0 || col < 0 || r >= h as isize || col >= wi as isize {
                                    continue;
                                }
                                let xi = ((ni * c + ci) * h + r as usize) * wi + col as usize;
                                acc += wv[((oi * c + ci) * kh + p) * kw + q] * xv[xi];
                            }
                        }
                    }
                    y[((ni * o + oi) * oh + i) * ow + j] = acc;
                }
            }
        }
    }
    y
}

#[test]
fn conv2d_matches_the_definition_on_odd_sizes() {
    // (input, kernel, stride, padding): non-square, strided, padded, and
    // the small CNN's second layer.
    let cases = [
        ([3, 2, 9, 7], [5, 2, 3, 2], 2, 1),
        ([2, 3, 6, 11], [4, 3, 5, 5], 1, 2),
        ([1, 1, 5, 5], [2, 1, 5, 5], 3, 0),
        ([5, 4, 8, 8], [3, 4, 1, 1], 1, 0),
        ([9, 16, 14, 14], [32, 16, 5, 5], 1, 2),
    ];
    for (k, (xd, wd, s, pad)) in cases.into_iter().enumerate() {
        let x = Tensor::rand_uniform(xd, -1.0, 1.0, 10 + k as u64, DType::F64);
        let w = Tensor::rand_uniform(wd, -1.0, 1.0, 20 + k as u64, DType::F64);
        let b = Tensor::rand_uniform([wd[0]], -1.0, 1.0, 30 + k as u64, DType::F64);
        let y = x.conv2d(&w, &b, s, pad).unwrap();
        let expected = direct_conv(&x, &w, &b, s, pad);
        let got = y.to_vec::<f64>().unwrap();
        assert_eq!(got.len(), expected.len(), "case {k}");
        for (a, e) in got.iter().zip(&expected) {
            assert!(
                (a - e).abs() < 1e-12 * (1.0 + e.abs()),
                "case {k}: {a} vs {e}"
            );
        }
    }
}

#[test]
fn max_pool_takes_the_first_maximum_on_ties_as_pytorch_does() {
    // One 2x2 window of equal values, one with its maximum last, and a
    // remainder row and column (5x5 with K = 2) that no window covers.
    let mut v = vec![0.0f32; 25];
    v[0] = 1.0;
    v[1] = 1.0;
    v[5] = 1.0;
    v[6] = 1.0;
    v[2] = -3.0;
    v[3] = -2.0;
    v[7] = -1.0;
    v[8] = 2.0;
    v[24] = 9.0;
    let x = Tensor::from_vec(v, [1, 1, 5, 5]).unwrap();
    let mut tape = Tape::new();
    let xv = tape.var(x);
    let y = tape.max_pool2d(xv, 2).unwrap();
    assert_eq!(tape.value(y).unwrap().dims(), [1, 1, 2, 2]);
    assert_eq!(
        tape.value(y).unwrap().to_vec::<f32>().unwrap()[..2],
        [1.0, 2.0]
    );
    let s = tape.sum(y).unwrap();
    tape.backward(s).unwrap();
    let g = tape.grad(xv).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(
        g[0], 1.0,
        "the first of four equal values takes the gradient"
    );
    assert_eq!([g[1], g[5], g[6]], [0.0; 3]);
    assert_eq!(g[8], 1.0);
    assert_eq!(g[24], 0.0, "outside every window");
}

#[test]
fn avg_pool_is_the_window_mean() {
    let x = Tensor::from_vec((0..12).map(|v| v as f64).collect::<Vec<_>>(), [1, 1, 3, 4]).unwrap();
    let y = x.avg_pool2d(2).unwrap();
    assert_eq!(y.dims(), [1, 1, 1, 2]);
    assert_eq!(y.to_vec::<f64>().unwrap(), [2.5, 4.5]);
}

#[test]
fn bad_shapes_are_named() {
    let x = Tensor::zeros([2, 3, 8, 8], DType::F32);
    let w = Tensor::zeros([4, 2, 3, 3], DType::F32);
    let b = Tensor::zeros([4], DType::F32);
    let err = x.conv2d(&w, &b, 1, 0).unwrap_err();
    assert!(matches!(err, Error::BadShape { op: "conv2d", .. }), "{err}");
    assert!(
        err.to_string()
            .contains("expects 2 input channels, the input [2, 3, 8, 8] has 3"),
        "{err}"
    );
    let big = Tensor::zeros([4, 3, 11, 3], DType::F32);
    assert!(x
        .conv2d(&big, &b, 1, 1)
        .unwrap_err()
        .to_string()
        .contains("does not fit"));
    assert!(x
        .conv2d(&Tensor::zeros([4, 3, 3, 3], DType::F32), &b, 0, 0)
        .is_err());
    let flat = Tensor::zeros([2, 64], DType::F32);
    assert!(flat
        .max_pool2d(2)
        .unwrap_err()
        .to_string()
        .contains("[N, C, H, W]"));
    assert!(x
        .avg_pool2d(9)
        .unwrap_err()
        .to_string()
        .contains("does not fit"));
}

/// The forward value and every gradient of conv → relu → max-pool →
/// flatten, at batch `n`, in f32.
fn conv_step_bits(n: usize) -> Vec<Vec<u32>> {
    let x = Tensor::rand_uniform([n, 3, 13, 11], 0.0, 1.0, 1, DType::F32);
    let w = Tensor::rand_uniform([8, 3, 5, 5], -0.3, 0.3, 2, DType::F32);
    let b = Tensor::rand_uniform([8], -0.3, 0.3, 3, DType::F32);
    let mut tape = Tape::new();
    let (xv, wv, bv) = (tape.var(x), tape.var(w), tape.var(b));
    let h = tape.conv2d(xv, wv, bv, 1, 2).unwrap();
    let h = tape.relu(h).unwrap();
    let h = tape.max_pool2d(h, 2).unwrap();
    let h = tape.flatten(h).unwrap();
    let y = tape.tanh(h).unwrap();
    let loss = tape.sum(y).unwrap();
    tape.backward(loss).unwrap();
    let bits = |t: &Tensor| {
        t.to_vec::<f32>()
            .unwrap()
            .iter()
            .map(|v| v.to_bits())
            .collect()
    };
    vec![
        bits(tape.value(y).unwrap()),
        bits(tape.grad(xv).unwrap()),
        bits(tape.grad(wv).unwrap()),
        bits(tape.grad(bv).unwrap()),
    ]
}

#[test]
fn conv_and_pooling_give_the_same_bits_on_any_number_of_threads() {
    for n in [1, 7, 33] {
        let runs: Vec<_> = [1, 2, 3, 5]
            .iter()
            .map(|&t| {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(t)
                    .build()
                    .unwrap();
                pool.install(|| conv_step_bits(n))
            })
            .collect();
        for (t, r) in runs.iter().enumerate().skip(1) {
            assert!(
                r == &runs[0],
                "batch {n}: run {t} differs from the one-thread run"
            );
        }
    }
}
