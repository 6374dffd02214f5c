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
    softmax_cross_entropy,
    sum,
    mean,
    mlp
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
    use advgrad::backend::Unary;
    for act in [Unary::Relu, Unary::Sigmoid, Unary::Tanh] {
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
        let composed = x.add_row(&b).unwrap().map_act(act);
        assert_eq!(fused, composed, "{act:?}");
    }
    let mut tape = Tape::new();
    let x = tape.var(Tensor::zeros([2, 3], DType::F64));
    let b = tape.var(Tensor::zeros([2], DType::F64));
    assert!(tape.bias_act(x, b, advgrad::backend::Unary::Relu).is_err());
}

trait MapAct {
    fn map_act(&self, act: advgrad::backend::Unary) -> Vec<f64>;
}

impl MapAct for Tensor {
    fn map_act(&self, act: advgrad::backend::Unary) -> Vec<f64> {
        use advgrad::backend::Unary;
        let y = match act {
            Unary::Relu => self.relu(),
            Unary::Sigmoid => self.sigmoid(),
            Unary::Tanh => self.tanh(),
            Unary::Sign => self.sign(),
        };
        y.unwrap().to_vec::<f64>().unwrap()
    }
}
