//! Forward values, numerical stability, errors and determinism of the core.

use advgrad::{DType, Error, Tape, Tensor};
use approx::assert_relative_eq;

#[test]
fn softmax_cross_entropy_is_stable_for_huge_logits() {
    // Rows: a confident right answer, a confident wrong one, and ties.
    let logits = Tensor::from_vec(
        vec![1e4f32, -1e4, 0.0, -1e4, 1e4, 0.0, 1e4, 1e4, -1e4],
        [3, 3],
    )
    .unwrap();
    let labels = Tensor::from_vec(vec![0u32, 0, 1], [3]).unwrap();
    let (loss, probs) = logits.softmax_cross_entropy(&labels).unwrap();
    // Row losses: 0, 2e4, ln 2.
    let expected = (0.0 + 2e4 + std::f64::consts::LN_2) / 3.0;
    assert_relative_eq!(loss.to_scalar().unwrap(), expected, max_relative = 1e-6);
    let p = probs.to_vec::<f32>().unwrap();
    assert!(p.iter().all(|v| v.is_finite()));
    assert_relative_eq!(p[6], 0.5);
    assert_relative_eq!(p[7], 0.5);

    let mut tape = Tape::new();
    let x = tape.var(logits.to_dtype(DType::F64).unwrap());
    let l = tape.softmax_cross_entropy(x, &labels).unwrap();
    tape.backward(l).unwrap();
    let g = tape.grad(x).unwrap().to_vec::<f64>().unwrap();
    assert!(g.iter().all(|v| v.is_finite()));
    // Row 1: p = onehot(1), label 0 ⇒ dx = (p − e₀)/3.
    assert_relative_eq!(g[3], -1.0 / 3.0);
    assert_relative_eq!(g[4], 1.0 / 3.0);
}

#[test]
fn softmax_cross_entropy_matches_the_definition() {
    let x = Tensor::rand_uniform([6, 5], -3.0, 3.0, 5, DType::F64);
    let y: Vec<u32> = vec![0, 4, 2, 1, 3, 3];
    let labels = Tensor::from_vec(y.clone(), [6]).unwrap();
    let (loss, _) = x.softmax_cross_entropy(&labels).unwrap();
    let v = x.to_vec::<f64>().unwrap();
    let mut expected = 0.0;
    for (i, row) in v.chunks(5).enumerate() {
        let lse = row.iter().map(|z| z.exp()).sum::<f64>().ln();
        expected += lse - row[y[i] as usize];
    }
    assert_relative_eq!(
        loss.to_scalar().unwrap(),
        expected / 6.0,
        max_relative = 1e-12
    );
}

#[test]
fn label_out_of_range_names_row_and_class_count() {
    let x = Tensor::zeros([3, 4], DType::F32);
    let labels = Tensor::from_vec(vec![0u32, 7, 1], [3]).unwrap();
    let err = x.softmax_cross_entropy(&labels).unwrap_err();
    assert!(matches!(
        err,
        Error::LabelOutOfRange {
            row: 1,
            label: 7,
            classes: 4,
            ..
        }
    ));
    let msg = err.to_string();
    assert!(msg.contains("row 1") && msg.contains("4 classes"), "{msg}");
}

#[test]
fn shape_mismatch_names_op_and_both_shapes() {
    let a = Tensor::zeros([2, 3], DType::F32);
    let b = Tensor::zeros([4, 5], DType::F32);
    let msg = a.matmul(&b).unwrap_err().to_string();
    assert_eq!(msg, "matmul: shape mismatch: [2, 3] vs [4, 5]");
    let msg = a.add(&b).unwrap_err().to_string();
    assert_eq!(msg, "add: shape mismatch: [2, 3] vs [4, 5]");
    let mut tape = Tape::new();
    let (x, bias) = (tape.var(a), tape.var(Tensor::zeros([4], DType::F32)));
    let msg = tape.add(x, bias).unwrap_err().to_string();
    assert!(msg.contains("[2, 3] vs [4]"), "{msg}");
}

#[test]
fn dtype_mismatch_is_an_error() {
    let a = Tensor::zeros([2, 2], DType::F32);
    let b = Tensor::zeros([2, 2], DType::F64);
    assert!(matches!(
        a.add(&b).unwrap_err(),
        Error::DTypeMismatch { .. }
    ));
    let l = Tensor::zeros([2], DType::U32);
    assert!(matches!(
        l.relu().unwrap_err(),
        Error::UnsupportedDType { .. }
    ));
}

#[test]
fn non_finite_loss_is_reported_by_backward() {
    let mut tape = Tape::new();
    let x = tape.var(Tensor::from_vec(vec![1.0f32, f32::NAN], [2]).unwrap());
    let s = tape.sum(x).unwrap();
    let err = tape.backward(s).unwrap_err();
    assert!(matches!(err, Error::NonFinite { .. }), "{err}");
    assert!(err.to_string().contains("NaN"), "{err}");
}

#[test]
fn backward_needs_a_scalar_and_a_var_of_this_tape() {
    let mut tape = Tape::new();
    let x = tape.var(Tensor::zeros([2, 2], DType::F32));
    let y = tape.relu(x).unwrap();
    assert!(tape.backward(y).unwrap_err().to_string().contains("scalar"));
    let mut other = Tape::new();
    assert!(other.backward(y).is_err());
    assert!(other.relu(y).is_err());
}

#[test]
fn bad_shapes_for_constructors_are_errors() {
    assert!(Tensor::from_vec(vec![1.0f32; 5], [2, 3]).is_err());
    assert!(Tensor::zeros([2, 3], DType::F32).reshape([4, 2]).is_err());
}

#[test]
fn matmul_variants_match_a_naive_product() {
    let (m, k, n) = (37, 29, 41);
    let a = Tensor::rand_uniform([m, k], -1.0, 1.0, 1, DType::F64);
    let b = Tensor::rand_uniform([k, n], -1.0, 1.0, 2, DType::F64);
    let c = a.matmul(&b).unwrap().to_vec::<f64>().unwrap();
    let (av, bv) = (a.to_vec::<f64>().unwrap(), b.to_vec::<f64>().unwrap());
    for i in 0..m {
        for j in 0..n {
            let e: f64 = (0..k).map(|p| av[i * k + p] * bv[p * n + j]).sum();
            assert_relative_eq!(c[i * n + j], e, max_relative = 1e-12, epsilon = 1e-12);
        }
    }
    // Aᵀ stored as [k, m] and Bᵀ as [n, k] give the same product.
    let at: Vec<f64> = (0..k * m).map(|i| av[(i % m) * k + i / m]).collect();
    let bt: Vec<f64> = (0..n * k).map(|i| bv[(i % k) * n + i / k]).collect();
    let at = Tensor::from_vec(at, [k, m]).unwrap();
    let bt = Tensor::from_vec(bt, [n, k]).unwrap();
    let c2 = at
        .matmul_ex(&bt, true, true)
        .unwrap()
        .to_vec::<f64>()
        .unwrap();
    for (x, y) in c.iter().zip(&c2) {
        assert_relative_eq!(x, y, max_relative = 1e-12, epsilon = 1e-12);
    }
}

#[test]
fn helpers_sign_clamp_argmax_project() {
    let x = Tensor::from_vec(vec![-2.0f32, 0.0, 3.0, 0.5, 0.7, -0.1], [2, 3]).unwrap();
    assert_eq!(
        x.sign().unwrap().to_vec::<f32>().unwrap(),
        vec![-1.0, 0.0, 1.0, 1.0, 1.0, -1.0]
    );
    assert_eq!(
        x.clamp(0.0, 1.0).unwrap().to_vec::<f32>().unwrap(),
        vec![0.0, 0.0, 1.0, 0.5, 0.7, 0.0]
    );
    assert_eq!(
        x.argmax_rows().unwrap().to_vec::<u32>().unwrap(),
        vec![2, 1]
    );
    let c = Tensor::full([2, 3], 0.5, DType::F32);
    let p = x
        .project_linf(&c, 0.25, 0.0, 1.0)
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    assert_eq!(p, vec![0.25, 0.25, 0.75, 0.5, 0.7, 0.25]);
    assert!(x.clamp(1.0, 0.0).is_err());
    assert!(x.project_linf(&c, -1.0, 0.0, 1.0).is_err());
}

#[test]
fn results_are_bit_identical_across_thread_counts() {
    let run = || {
        let x = Tensor::rand_uniform([300, 257], -1.0, 1.0, 3, DType::F32);
        let w = Tensor::rand_uniform([257, 65], -1.0, 1.0, 4, DType::F32);
        let b = Tensor::rand_uniform([65], -1.0, 1.0, 5, DType::F32);
        let labels =
            Tensor::from_vec((0..300u32).map(|i| i % 65).collect::<Vec<_>>(), [300]).unwrap();
        let mut tape = Tape::new();
        let (xv, wv, bv) = (tape.var(x), tape.var(w), tape.var(b));
        let z = tape.matmul(xv, wv).unwrap();
        let z = tape.add(z, bv).unwrap();
        let h = tape.tanh(z).unwrap();
        let s = tape.sum(h).unwrap();
        let l = tape.softmax_cross_entropy(z, &labels).unwrap();
        let total = tape.add(l, s).unwrap();
        tape.backward(total).unwrap();
        let mut bits: Vec<u32> = Vec::new();
        for v in [xv, wv, bv] {
            bits.extend(
                tape.grad(v)
                    .unwrap()
                    .to_vec::<f32>()
                    .unwrap()
                    .iter()
                    .map(|f| f.to_bits()),
            );
        }
        bits.push(tape.value(total).unwrap().to_vec::<f32>().unwrap()[0].to_bits());
        bits
    };
    let reference = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(run);
    for threads in [2, 3, 7] {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .unwrap();
        assert!(
            pool.install(run) == reference,
            "{threads} threads differ from 1"
        );
    }
}

#[test]
fn tape_prints_and_exports_dot() {
    let mut tape = Tape::new();
    let x = tape.var(Tensor::zeros([2, 3], DType::F64));
    tape.set_name(x, "x").unwrap();
    let y = tape.sigmoid(x).unwrap();
    let s = tape.mean(y).unwrap();
    tape.set_retain_grads(true);
    tape.backward(s).unwrap();
    let text = tape.to_string();
    assert!(text.contains("%1   = sigmoid(%0)"), "{text}");
    assert!(text.contains("# x"), "{text}");
    let dot = tape.to_dot();
    assert!(dot.starts_with("digraph tape"));
    assert!(dot.contains("n0 -> n1;") && dot.contains("|grad|"), "{dot}");
    // d mean(sigmoid(0))/dx = 0.25/6
    let g = tape.grad(x).unwrap().to_vec::<f64>().unwrap();
    assert_relative_eq!(g[0], 0.25 / 6.0, max_relative = 1e-15);
}

#[test]
fn fused_sign_step_equals_its_composition() {
    for (n, dtype) in [
        (37usize, DType::F32),
        (70_001, DType::F32),
        (1_001, DType::F64),
    ] {
        let x = Tensor::rand_uniform([n], 0.0, 1.0, 1, dtype);
        let g = Tensor::rand_uniform([n], -1.0, 1.0, 2, dtype);
        let c = Tensor::rand_uniform([n], 0.0, 1.0, 3, dtype);
        let fused = x.sign_step(&g, &c, 0.03, 0.1, 0.0, 1.0).unwrap();
        let composed = x
            .add(&g.sign().unwrap().scale(0.03).unwrap())
            .unwrap()
            .project_linf(&c, 0.1, 0.0, 1.0)
            .unwrap();
        assert_eq!(
            fused.to_f64_vec().unwrap(),
            composed.to_f64_vec().unwrap(),
            "n = {n}"
        );
    }
    let x = Tensor::zeros([3], DType::F32);
    assert!(x
        .sign_step(&Tensor::zeros([4], DType::F32), &x, 0.1, 0.1, 0.0, 1.0)
        .is_err());
    assert!(x.sign_step(&x, &x, 0.1, -0.1, 0.0, 1.0).is_err());
}

#[test]
fn rows_and_cat_rows_cut_and_restack_a_batch() {
    for dtype in [DType::F32, DType::F64] {
        let x = Tensor::rand_uniform([7, 3], -1.0, 1.0, 5, dtype);
        let parts = [
            x.rows(0..2).unwrap(),
            x.rows(2..2).unwrap(),
            x.rows(2..7).unwrap(),
        ];
        assert_eq!(parts[0].dims(), &[2, 3]);
        assert_eq!(parts[1].dims(), &[0, 3]);
        let back = Tensor::cat_rows(&parts).unwrap();
        assert_eq!(back.dims(), &[7, 3]);
        assert_eq!(back.to_f64_vec().unwrap(), x.to_f64_vec().unwrap());
        assert_eq!(
            x.rows(3..4).unwrap().to_f64_vec().unwrap(),
            x.to_f64_vec().unwrap()[9..12]
        );
    }
    let labels = Tensor::from_vec(vec![3u32, 1, 4, 1, 5], [5]).unwrap();
    assert_eq!(
        labels.rows(1..4).unwrap().to_vec::<u32>().unwrap(),
        [1, 4, 1]
    );
    let x = Tensor::zeros([4, 3], DType::F32);
    assert!(x.rows(2..5).is_err());
    assert!(Tensor::scalar(1.0, DType::F32).rows(0..0).is_err());
    assert!(Tensor::cat_rows(&[]).is_err());
    assert!(Tensor::cat_rows(&[x.clone(), Tensor::zeros([4, 2], DType::F32)]).is_err());
    assert!(Tensor::cat_rows(&[x.clone(), Tensor::zeros([4, 3], DType::F64)]).is_err());
}

#[test]
fn first_outside_finds_the_first_outlier_in_any_chunk() {
    let mut v = vec![0.5f32; 200_000];
    let t = Tensor::from_vec(v.clone(), [200_000]).unwrap();
    assert_eq!(t.first_outside(0.0, 1.0).unwrap(), None);
    v[150_001] = 1.5;
    v[190_000] = -0.5;
    let t = Tensor::from_vec(v.clone(), [200_000]).unwrap();
    assert_eq!(t.first_outside(0.0, 1.0).unwrap(), Some((150_001, 1.5)));
    v[3] = f32::NAN;
    let t = Tensor::from_vec(v, [200_000]).unwrap();
    let (i, x) = t.first_outside(0.0, 1.0).unwrap().unwrap();
    assert!(i == 3 && x.is_nan());
}

/// GELU (the tanh form) on the CPU against `kernels::gelu::reference`, the
/// f64 reference the CUDA kernel is tested against (`tests/simt_gelu.rs`):
/// in f64 the same bits (the same formula, evaluated in the same order),
/// in f32 within its rounding, and in both the same 0, ±∞ and NaN. The
/// backward reads the input: `dx = g·GELU'(x)`.
#[test]
fn gelu_matches_the_kernels_reference_at_zero_infinities_and_nan() {
    use kernels::gelu::{reference, reference_derivative};
    let mut x: Vec<f64> = (-96..=96).map(|i| f64::from(i) / 8.0).collect();
    x.extend([
        0.0,
        -0.0,
        1e-30,
        -1e-30,
        40.0,
        -40.0,
        1e200,
        -1e200,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ]);
    let g: Vec<f64> = (0..x.len()).map(|i| 0.25 + (i % 7) as f64 * 0.5).collect();
    let n = x.len();
    let same = |a: f64, b: f64| a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan());

    let xt = Tensor::from_vec(x.clone(), [n]).unwrap();
    let gt = Tensor::from_vec(g.clone(), [n]).unwrap();
    let y = xt.gelu().unwrap().to_vec::<f64>().unwrap();
    let dx = gt.gelu_backward(&xt).unwrap().to_vec::<f64>().unwrap();
    for i in 0..n {
        let (want, want_dx) = (reference(x[i]), g[i] * reference_derivative(x[i]));
        assert!(same(y[i], want), "gelu({}) = {}, want {want}", x[i], y[i]);
        assert!(
            same(dx[i], want_dx),
            "gelu backward at {} (g = {}) = {}, want {want_dx}",
            x[i],
            g[i],
            dx[i]
        );
    }
    // The limits, spelled out: 0 → 0, +∞ → +∞ with slope 1, −∞ → 0 with
    // slope 0, NaN → NaN.
    let at = |v: f64| x.iter().position(|&e| same(e, v)).unwrap();
    let (zero, inf, ninf, nan) = (
        at(0.0),
        at(f64::INFINITY),
        at(f64::NEG_INFINITY),
        at(f64::NAN),
    );
    assert_eq!((y[zero], dx[zero]), (0.0, 0.5 * g[zero]));
    assert_eq!((y[inf], dx[inf]), (f64::INFINITY, g[inf]));
    assert_eq!((y[ninf], dx[ninf]), (0.0, 0.0));
    assert!(y[nan].is_nan() && dx[nan].is_nan());

    // f32: within a few roundings of the terms ½|x|·(1 + |t|) (the result
    // of 1 + t carries the rounding of t), specials exact.
    let x32: Vec<f32> = x.iter().map(|&v| v as f32).collect();
    let y32 = Tensor::from_vec(x32.clone(), [n])
        .unwrap()
        .gelu()
        .unwrap()
        .to_vec::<f32>()
        .unwrap();
    for (&v, &got) in x32.iter().zip(&y32) {
        let (v, got) = (f64::from(v), f64::from(got));
        let want = reference(v);
        if !want.is_finite() {
            assert!(same(got, want), "f32 gelu({v}) = {got}, want {want}");
            continue;
        }
        let t = (kernels::gelu::K * (v + kernels::gelu::A * v * v * v)).tanh();
        let scale = (0.5 * v.abs() * (1.0 + t.abs())).max(1e-30);
        assert!(
            (got - want).abs() <= 1e-6 * scale,
            "f32 gelu({v}) = {got}, want {want}"
        );
    }

    // On the tape: the recorded op is `gelu`, and backward hands the input
    // to the rule (the output could not give x back).
    let mut tape = Tape::new();
    let finite: Vec<f64> = (-24..=24).map(|i| f64::from(i) / 4.0).collect();
    let v = tape.var(Tensor::from_vec(finite.clone(), [finite.len()]).unwrap());
    let out = tape.gelu(v).unwrap();
    assert!(tape.to_string().contains("gelu("), "{tape}");
    let s = tape.sum(out).unwrap();
    tape.backward(s).unwrap();
    let grad = tape.grad(v).unwrap().to_vec::<f64>().unwrap();
    for (&xv, &gv) in finite.iter().zip(&grad) {
        assert!(same(gv, reference_derivative(xv)), "d gelu({xv}) = {gv}");
    }
}
