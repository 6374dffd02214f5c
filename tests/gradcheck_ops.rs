//! Every op's backward against finite differences in f64.

use advgrad::gradcheck::suite::{self, CASE_NAMES};
use advgrad::{gradcheck, DType, Error, GradcheckOptions, Tape, Tensor};

fn check(name: &str) {
    let case = suite::case(name).unwrap().unwrap();
    let report = case.run(&GradcheckOptions::default()).unwrap();
    assert!(report.passed(), "{name}:\n{report}");
    assert!(
        report.max_rel_err() < 1e-6,
        "{name}: max rel err {:e}\n{report}",
        report.max_rel_err()
    );
}

macro_rules! gradcheck_tests {
    ($($name:ident),*) => {
        $(
            #[test]
            fn $name() {
                check(stringify!($name));
            }
        )*
        #[test]
        fn every_listed_case_has_a_test() {
            let tested = [$(stringify!($name)),*];
            assert_eq!(tested.as_slice(), CASE_NAMES.as_slice());
        }
    };
}

gradcheck_tests!(
    matmul,
    add,
    sub,
    mul,
    scale,
    relu,
    sigmoid,
    tanh,
    gelu,
    bias_act,
    linear_act,
    softmax_cross_entropy,
    sum,
    mean,
    log_softmax,
    exp,
    ln,
    pick,
    kl_div,
    dlr,
    dlr_targeted,
    mlp,
    conv2d,
    conv2d_same,
    max_pool2d,
    avg_pool2d,
    reshape,
    cnn
);

#[test]
fn gradcheck_catches_a_wrong_backward_rule() {
    use advgrad::ops::CustomOp;
    use std::sync::Arc;

    /// Squares its input but claims the derivative is `x` instead of `2x`.
    struct BadSquare;
    impl CustomOp for BadSquare {
        fn name(&self) -> &str {
            "bad_square"
        }
        fn backward(
            &self,
            inputs: &[&Tensor],
            _out: &Tensor,
            g: &Tensor,
        ) -> advgrad::Result<Vec<Option<Tensor>>> {
            Ok(vec![Some(g.mul(inputs[0])?)])
        }
    }
    let x = Tensor::rand_uniform([3, 5], 0.5, 1.0, 1, DType::F64);
    let report = gradcheck(
        |t, v| {
            let xv = t.value(v[0])?.clone();
            let y = t.custom(Arc::new(BadSquare), &[v[0]], xv.mul(&xv)?)?;
            t.sum(y)
        },
        &[x],
        &GradcheckOptions::default(),
    )
    .unwrap();
    assert!(!report.passed());
    assert!(report.max_rel_err() > 0.4, "{report}");
    let err = report.ensure_passed().unwrap_err().to_string();
    assert!(err.contains("gradcheck failed for input 0"), "{err}");
}

#[test]
fn gradcheck_explains_bad_arguments() {
    let x32 = Tensor::rand_uniform([2, 3], -1.0, 1.0, 0, DType::F32);
    let err = gradcheck(|t, v| t.sum(v[0]), &[x32], &GradcheckOptions::default()).unwrap_err();
    assert!(err.to_string().contains("need f64"), "{err}");

    let x = Tensor::rand_uniform([2, 3], -1.0, 1.0, 0, DType::F64);
    let err = gradcheck(|t, v| t.relu(v[0]), &[x], &GradcheckOptions::default()).unwrap_err();
    assert!(err.to_string().contains("must return a scalar"), "{err}");
    assert!(matches!(err, Error::InvalidArgument(_)));
}

#[test]
fn gradients_accumulate_when_a_value_is_used_twice() {
    // f = Σ (x ⊙ x) + Σ x  ⇒  df/dx = 2x + 1
    let x = Tensor::from_vec(vec![1.0f64, -2.0, 0.5], [3]).unwrap();
    let mut tape = Tape::new();
    let v = tape.var(x);
    let sq = tape.mul(v, v).unwrap();
    let a = tape.sum(sq).unwrap();
    let b = tape.sum(v).unwrap();
    let f = tape.add(a, b).unwrap();
    tape.backward(f).unwrap();
    assert_eq!(
        tape.grad(v).unwrap().to_vec::<f64>().unwrap(),
        vec![3.0, -3.0, 2.0]
    );
}

#[test]
fn fused_bias_activation_matches_finite_differences_and_its_composition() {
    use advgrad::backend::Activation;
    for act in Activation::ALL {
        // Inputs kept at least 0.05 from ReLU's kink after the bias is added.
        let x: Vec<f64> = Tensor::rand_uniform([7, 9], -1.0, 1.0, 3, DType::F64)
            .to_vec::<f64>()
            .unwrap()
            .into_iter()
            .map(|v| v.signum() * (0.05 + 0.5 * v.abs()))
            .collect();
        let x = Tensor::from_vec(x, [7, 9]).unwrap();
        let b = Tensor::full([9], 0.0, DType::F64);
        let w = Tensor::rand_uniform([7, 9], -1.0, 1.0, 4, DType::F64);
        let report = gradcheck(
            |t, v| {
                let y = t.bias_act(v[0], v[1], act)?;
                let w = t.constant(w.clone());
                let p = t.mul(y, w)?;
                t.sum(p)
            },
            &[x.clone(), b.clone()],
            &GradcheckOptions::default(),
        )
        .unwrap();
        assert!(
            report.passed() && report.max_rel_err() < 1e-6,
            "{act:?}\n{report}"
        );

        let b = Tensor::rand_uniform([9], -0.02, 0.02, 5, DType::F64);
        let fused = x.bias_act(&b, act).unwrap().to_vec::<f64>().unwrap();
        let composed = x.add_row(&b).unwrap().activation(act).unwrap();
        assert_eq!(fused, composed.to_vec::<f64>().unwrap(), "{act:?}");
    }
    let mut tape = Tape::new();
    let x = tape.var(Tensor::zeros([2, 3], DType::F64));
    let b = tape.var(Tensor::zeros([2], DType::F64));
    assert!(tape.bias_act(x, b, Activation::Relu).is_err());
}

#[test]
fn fused_linear_layer_matches_finite_differences_and_its_composition() {
    use advgrad::backend::Activation;
    for act in [Activation::Sigmoid, Activation::Tanh] {
        let x = Tensor::rand_uniform([7, 9], -1.0, 1.0, 6, DType::F64);
        let w = Tensor::rand_uniform([5, 9], -1.0, 1.0, 7, DType::F64);
        let b = Tensor::rand_uniform([5], -1.0, 1.0, 8, DType::F64);
        let g = Tensor::rand_uniform([7, 5], -1.0, 1.0, 9, DType::F64);
        let report = gradcheck(
            |t, v| {
                let y = t.linear_act(v[0], v[1], v[2], act)?;
                let g = t.constant(g.clone());
                let p = t.mul(y, g)?;
                t.sum(p)
            },
            &[x, w, b],
            &GradcheckOptions::default(),
        )
        .unwrap();
        assert!(
            report.passed() && report.max_rel_err() < 1e-6,
            "{act:?}\n{report}"
        );
    }
    // The value and every gradient equal the unfused layer's bit for bit, on
    // odd sizes, with products large enough to run in parallel tiles.
    for (m, k, n, dtype) in [
        (129usize, 785usize, 257usize, DType::F32),
        (33, 17, 11, DType::F64),
    ] {
        for act in Activation::ALL {
            let x = Tensor::rand_uniform([m, k], -1.0, 1.0, 10, dtype);
            let w = Tensor::rand_uniform([n, k], -0.1, 0.1, 11, dtype);
            let b = Tensor::rand_uniform([n], -0.1, 0.1, 12, dtype);
            let g = Tensor::rand_uniform([m, n], -1.0, 1.0, 13, dtype);
            let run = |fused: bool| {
                let mut t = Tape::new();
                let (xv, wv, bv) = (t.var(x.clone()), t.var(w.clone()), t.var(b.clone()));
                let y = if fused {
                    t.linear_act(xv, wv, bv, act).unwrap()
                } else {
                    let z = t.matmul_ex(xv, wv, false, true).unwrap();
                    t.bias_act(z, bv, act).unwrap()
                };
                let gv = t.constant(g.clone());
                let p = t.mul(y, gv).unwrap();
                let loss = t.sum(p).unwrap();
                t.backward(loss).unwrap();
                let mut bits = vec![t.value(y).unwrap().to_f64_vec().unwrap()];
                for v in [xv, wv, bv] {
                    bits.push(t.grad(v).unwrap().to_f64_vec().unwrap());
                }
                bits
            };
            assert_eq!(run(true), run(false), "{m}x{k}x{n} {dtype} {act:?}");
        }
    }
    let mut tape = Tape::new();
    let x = tape.var(Tensor::zeros([2, 3], DType::F64));
    let w = tape.var(Tensor::zeros([4, 3], DType::F64));
    let b = tape.var(Tensor::zeros([4], DType::F64));
    let wrong_b = tape.var(Tensor::zeros([3], DType::F64));
    assert!(tape.linear_act(x, w, wrong_b, Activation::Relu).is_err());
    assert!(tape.linear_act(w, x, b, Activation::Relu).is_err());
}
