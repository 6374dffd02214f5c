//! The robustness-evaluation attacks (APGD, FAB, Square, AutoAttack), their
//! losses, the audit, and TRADES and MART training, on a small model
//! trained here on synthetic 8×8 images (no download, no data package).
//!
//! Run with `cargo test --release --test robust_eval`.

use std::sync::OnceLock;

use advgrad::attack::{
    audit, evaluate_autoattack, rowwise, Apgd, Attack, AttackOptions, AuditOptions, AutoAttack,
    Classifier, EvalOptions, Square, Target, Threat, Version, EVALUATION_ATTACKS,
};
use advgrad::backend::Norm;
use advgrad::data::{Dataset, Rng};
use advgrad::nn::{Activation, Model};
use advgrad::optim::{OptimConfig, OptimizerKind, Schedule};
use advgrad::train::{train, AdvTraining, TrainConfig};
use advgrad::{DType, Error, Result, Tape, Tensor, Var};

const SIDE: usize = 8;
const D: usize = SIDE * SIDE;
const CLASSES: usize = 5;

/// `n` noisy copies of five fixed 8×8 templates, labels cycling.
fn synthetic(n: usize, seed: u64) -> Dataset {
    let mut templates = Rng::new(1);
    let t: Vec<f32> = (0..CLASSES * D)
        .map(|_| 0.2 + 0.6 * templates.next_f32())
        .collect();
    let mut rng = Rng::new(seed);
    let mut images = Vec::with_capacity(n * D);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % CLASSES;
        labels.push(c as u32);
        for j in 0..D {
            let v = t[c * D + j] + 0.35 * rng.normal() as f32;
            images.push(v.clamp(0.0, 1.0));
        }
    }
    Dataset::from_parts(images, labels, D, CLASSES).unwrap()
}

fn config(epochs: usize, adversarial: Option<AdvTraining>) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 50,
        optim: OptimConfig::new(OptimizerKind::Sgd, 0.1),
        schedule: Schedule::Constant,
        seed: 3,
        adversarial,
        quiet: true,
    }
}

/// A 64-32-5 ReLU MLP trained for 5 epochs on 2000 synthetic images.
fn model() -> &'static Model {
    static MODEL: OnceLock<Model> = OnceLock::new();
    MODEL.get_or_init(|| {
        let mut model = Model::new("64-32-5", Activation::Relu, 7).unwrap();
        train(&mut model, &synthetic(2000, 2), None, &config(5, None)).unwrap();
        model
    })
}

/// The first `n` test images as tensors.
fn batch(n: usize) -> (Tensor, Tensor, Vec<u32>) {
    let data = synthetic(n, 99);
    let x = Tensor::from_vec(data.images().to_vec(), [n, D]).unwrap();
    let labels = data.labels().to_vec();
    (x, Tensor::from_vec(labels.clone(), [n]).unwrap(), labels)
}

fn accuracy(model: &Model, x: &Tensor, labels: &[u32]) -> f64 {
    let p = model.predict(x).unwrap().to_vec::<u32>().unwrap();
    p.iter().zip(labels).filter(|(a, b)| a == b).count() as f64 / labels.len() as f64
}

/// The radius each norm is tested at.
fn eps(norm: Norm) -> f64 {
    match norm {
        Norm::Linf => 0.08,
        Norm::L2 => 0.6,
    }
}

/// `name` in `norm`, with fewer steps and queries than the defaults where
/// that keeps the tests short.
fn attack(name: &str, norm: Norm) -> Attack {
    let options = AttackOptions {
        norm: Some(norm),
        steps: (name != "square").then_some(30),
        queries: matches!(name, "square" | "autoattack").then_some(300),
        targets: matches!(name, "apgd-t" | "fab-t").then_some(3),
        ..AttackOptions::default()
    };
    Attack::build(name, eps(norm), &options).unwrap()
}

fn bits(t: &Tensor) -> Vec<u32> {
    t.to_vec::<f32>()
        .unwrap()
        .iter()
        .map(|v| v.to_bits())
        .collect()
}

fn assert_in_ball(what: &str, threat: Threat, x: &Tensor, adv: &Tensor) {
    let (a, b) = (x.to_vec::<f32>().unwrap(), adv.to_vec::<f32>().unwrap());
    assert!(
        b.iter().all(|v| (0.0..=1.0).contains(v)),
        "{what}: a pixel left [0, 1]"
    );
    for (i, (r, s)) in a.chunks(D).zip(b.chunks(D)).enumerate() {
        let diff = r.iter().zip(s).map(|(p, q)| f64::from(*q) - f64::from(*p));
        match threat {
            Threat::Linf(e) => {
                let linf = diff.fold(0.0f64, |m, v| m.max(v.abs()));
                assert!(linf <= e + 1e-6, "{what}: row {i} has L∞ {linf}");
            }
            Threat::L2(e) => {
                let l2 = diff.map(|v| v * v).sum::<f64>().sqrt();
                assert!(l2 <= e * (1.0 + 1e-6), "{what}: row {i} has L2 {l2}");
            }
        }
    }
}

#[test]
fn dlr_values_match_hand_computed_ones() {
    let z = Tensor::from_vec(
        vec![
            3.0f64, 1.0, 2.0, 0.5, 0.0, 4.0, 1.0, 2.0, 1.0, 5.0, 3.0, 2.0,
        ],
        [3, 4],
    )
    .unwrap();
    let y = Tensor::from_vec(vec![0u32, 1, 0], [3]).unwrap();
    // Row 0: y top, 3 − 2 over 3 − 1. Row 1: 4 − 2 over 4 − 1. Row 2: y
    // not top, 1 − 5 over 5 − 2.
    let expected = [-1.0 / 2.0, -2.0 / 3.0, 4.0 / 3.0];
    let got = z.dlr(&y).unwrap().to_vec::<f64>().unwrap();
    for (g, e) in got.iter().zip(expected) {
        assert!((g - e).abs() < 1e-9, "{got:?} vs {expected:?}");
    }
    // Targeted at t: −(z_y − z_t) / (z_π1 − (z_π3 + z_π4)/2).
    let t = Tensor::from_vec(vec![2u32, 3, 1], [3]).unwrap();
    let expected = [
        -(3.0 - 2.0) / (3.0 - (1.0 + 0.5) / 2.0),
        -(4.0 - 2.0) / (4.0 - (1.0 + 0.0) / 2.0),
        -(1.0 - 5.0) / (5.0 - (2.0 + 1.0) / 2.0),
    ];
    let got = z.dlr_targeted(&y, &t).unwrap().to_vec::<f64>().unwrap();
    for (g, e) in got.iter().zip(expected) {
        assert!((g - e).abs() < 1e-9, "{got:?} vs {expected:?}");
    }
    // Shift and scale invariance: DLR(a·z + b) = DLR(z).
    let moved = z.affine(7.5, -3.0).unwrap().dlr(&y).unwrap();
    let base = z.dlr(&y).unwrap().to_vec::<f64>().unwrap();
    for (a, b) in moved.to_vec::<f64>().unwrap().iter().zip(&base) {
        assert!((a - b).abs() < 1e-9);
    }
    // Too few classes is an error that says how many are needed.
    let two = Tensor::from_vec(vec![1.0f64, 2.0], [1, 2]).unwrap();
    let err = two.dlr(&Tensor::from_vec(vec![0u32], [1]).unwrap());
    assert!(err.unwrap_err().to_string().contains("at least 3 classes"));
}

#[test]
fn the_kl_divergence_and_log_softmax_match_their_definitions() {
    let a = Tensor::rand_uniform([3, 4], -2.0, 2.0, 1, DType::F64);
    let b = Tensor::rand_uniform([3, 4], -2.0, 2.0, 2, DType::F64);
    let (la, lb) = (a.log_softmax().unwrap(), b.log_softmax().unwrap());
    let (la, lb) = (la.to_vec::<f64>().unwrap(), lb.to_vec::<f64>().unwrap());
    let kl = a.kl_div(&b).unwrap().to_vec::<f64>().unwrap();
    for i in 0..3 {
        let p: f64 = (0..4).map(|j| la[i * 4 + j].exp()).sum();
        assert!((p - 1.0).abs() < 1e-12);
        let want: f64 = (0..4)
            .map(|j| la[i * 4 + j].exp() * (la[i * 4 + j] - lb[i * 4 + j]))
            .sum();
        assert!((kl[i] - want).abs() < 1e-12 && kl[i] >= 0.0);
    }
    assert!(a
        .kl_div(&a)
        .unwrap()
        .to_vec::<f64>()
        .unwrap()
        .iter()
        .all(|v| v.abs() < 1e-12));
}

#[test]
fn apgd_checkpoints_and_square_schedule_follow_the_papers() {
    assert_eq!(Apgd::checkpoints(100), (22, 6, 3));
    assert_eq!(
        Apgd::checkpoint_iterations(100),
        vec![22, 41, 57, 70, 80, 87, 93, 99]
    );
    assert_eq!(
        Apgd::checkpoint_iterations(10),
        vec![2, 3, 4, 5, 6, 7, 8, 9, 10]
    );
    let square = Square::new(Threat::Linf(0.1));
    let p: Vec<f64> = [0, 10, 11, 50, 51, 200, 201, 4000, 4001, 4999]
        .iter()
        .map(|&i| square.p_at(i))
        .collect();
    assert_eq!(
        p,
        vec![
            0.8,
            0.8,
            0.4,
            0.4,
            0.2,
            0.2,
            0.1,
            0.8 / 64.0,
            0.8 / 128.0,
            0.8 / 128.0
        ]
    );
    let rescaled = Square {
        queries: 1000,
        rescale_schedule: true,
        ..square
    };
    assert_eq!(rescaled.p_at(2), 0.8 / 2.0);
    assert_eq!(square.image_shape(784).unwrap(), [1, 28, 28]);
    assert_eq!(square.image_shape(3 * 32 * 32).unwrap(), [3, 32, 32]);
    assert_eq!(square.image_shape(37).unwrap(), [1, 1, 37]);
}

#[test]
fn every_evaluation_attack_keeps_its_promises() {
    let model = model();
    let (x, y, labels) = batch(60);
    let before = bits(&x);
    let clean = accuracy(model, &x, &labels);
    assert!(
        clean > 0.9,
        "the test model should learn (accuracy {clean})"
    );
    for norm in [Norm::Linf, Norm::L2] {
        for name in EVALUATION_ATTACKS {
            let a = attack(name, norm);
            let adv = a.run(model, &x, &y, 5).unwrap();
            assert_in_ball(&a.to_string(), a.threat(), &x, &adv);
            assert_eq!(bits(&x), before, "{a} modified its input");
            let robust = accuracy(model, &adv, &labels);
            eprintln!(
                "{a}: accuracy {:.1}% → {:.1}%",
                100.0 * clean,
                100.0 * robust
            );
            assert!(robust < clean, "{a} should hurt the model");
            let again = a.run(model, &x, &y, 5).unwrap();
            assert_eq!(bits(&adv), bits(&again), "{a}: the same seed, other bits");
            if matches!(name, "apgd-ce" | "apgd-dlr" | "apgd-t" | "square") {
                let other = a.run(model, &x, &y, 6).unwrap();
                assert_ne!(bits(&adv), bits(&other), "{a}: another seed, the same bits");
            }
        }
    }
}

#[test]
fn a_batch_gives_each_example_what_it_gets_alone_or_shuffled() {
    let model = model();
    let (x, y, labels) = batch(12);
    let order: Vec<usize> = (0..12).rev().collect();
    let (xs, ys) = (
        rowwise::take_rows(&x, &order).unwrap(),
        rowwise::take_rows(&y, &order).unwrap(),
    );
    for norm in [Norm::Linf, Norm::L2] {
        for name in EVALUATION_ATTACKS {
            let a = attack(name, norm);
            let whole = bits(&a.run(model, &x, &y, 2).unwrap());
            let reversed = bits(&a.run(model, &xs, &ys, 2).unwrap());
            for i in [0, 5, 11] {
                let xi = rowwise::take_rows(&x, &[i]).unwrap();
                let yi = Tensor::from_vec(vec![labels[i]], [1]).unwrap();
                let alone = bits(&a.run(model, &xi, &yi, 2).unwrap());
                assert!(
                    alone == whole[i * D..(i + 1) * D],
                    "{a}: row {i} alone differs"
                );
                let j = 11 - i;
                assert!(
                    reversed[j * D..(j + 1) * D] == whole[i * D..(i + 1) * D],
                    "{a}: row {i} moved to {j} differs"
                );
            }
        }
    }
}

#[test]
fn apgd_gives_the_same_bits_on_any_number_of_threads() {
    // 301 rows: cut into row pieces whose number depends on the threads.
    let model = Model::new("64-48-5", Activation::Relu, 5).unwrap();
    let x = Tensor::rand_uniform([301, 64], 0.0, 1.0, 6, DType::F32);
    let y = Tensor::from_vec((0..301).map(|i| i % 5).collect::<Vec<u32>>(), [301]).unwrap();
    for name in ["apgd-ce", "square"] {
        let a = attack(name, Norm::Linf);
        let on = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap();
            bits(&pool.install(|| a.run(&model, &x, &y, 7)).unwrap())
        };
        let one = on(1);
        for threads in [2, 3] {
            assert!(
                one == on(threads),
                "{name}: {threads} threads differ from one"
            );
        }
    }
}

/// The trained model, except that recording its forward pass on a tape (the
/// only way to a gradient) is an error.
struct NoBackward<'a>(&'a Model);

impl Classifier for NoBackward<'_> {
    fn input_size(&self) -> usize {
        self.0.input_size()
    }
    fn classes(&self) -> usize {
        self.0.classes()
    }
    fn describe(&self) -> String {
        "a model without gradients".into()
    }
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.0.logits(x)
    }
    fn record_logits(&self, _: &mut Tape, _: Var) -> Result<Var> {
        Err(Error::invalid("this model has no backward pass"))
    }
}

#[test]
fn square_runs_on_a_model_without_a_backward_pass() {
    let model = model();
    let (x, y, labels) = batch(40);
    let blind = NoBackward(model);
    for norm in [Norm::Linf, Norm::L2] {
        let square = attack("square", norm);
        let out = square.outcome(&blind, &x, &y, 1).unwrap();
        let robust = accuracy(model, &out.adv, &labels);
        assert!(
            robust < accuracy(model, &x, &labels),
            "{square} should hurt the model"
        );
        // The same bits as on the model itself: Square never asked for more.
        assert_eq!(bits(&out.adv), bits(&square.run(model, &x, &y, 1).unwrap()));
        let apgd = attack("apgd-ce", norm).outcome(&blind, &x, &y, 1);
        assert!(apgd.unwrap_err().to_string().contains("no backward pass"));
    }
}

#[test]
fn the_ensemble_is_never_weaker_than_its_strongest_member() {
    let model = model();
    let (x, y, _) = batch(60);
    for norm in [Norm::Linf, Norm::L2] {
        let aa = attack("autoattack", norm);
        let ensemble = aa.outcome(model, &x, &y, 4).unwrap();
        let Attack::AutoAttack(inner) = &aa else {
            unreachable!()
        };
        let fooled = |f: &[bool]| f.iter().filter(|&&b| b).count();
        for member in inner.members(CLASSES) {
            let alone = member.outcome(model, &x, &y, 4).unwrap();
            for (i, (&m, &e)) in alone.fooled.iter().zip(&ensemble.fooled).enumerate() {
                assert!(
                    !m || e,
                    "{member} alone breaks example {i}, the ensemble does not"
                );
            }
            eprintln!(
                "{aa}: {member} alone breaks {}, the ensemble {}",
                fooled(&alone.fooled),
                fooled(&ensemble.fooled)
            );
        }
    }
}

#[test]
fn autoattack_reports_each_member_and_each_point() {
    let model = model();
    let data = synthetic(150, 99);
    let aa = AutoAttack {
        steps: Some(20),
        queries: Some(200),
        ..AutoAttack::new(Threat::Linf(0.15), Version::Standard)
    };
    let options = EvalOptions {
        batch_size: 64,
        seed: 0,
        keep_samples: 3,
    };
    let mut lines = Vec::new();
    let mut calls = 0;
    let report = evaluate_autoattack(
        model,
        &data,
        &aa,
        &[0.0, 0.15],
        &options,
        &mut |_, _, _| calls += 1,
        &mut |l| lines.push(l.to_string()),
    )
    .unwrap();
    assert_eq!(report.results.len(), 2);
    let zero = &report.results[0];
    assert_eq!(zero.robust_accuracy, report.clean_accuracy);
    let r = &report.results[1];
    let details = r.ensemble.as_ref().unwrap();
    assert!(!details.stages.is_empty() && details.stages.len() <= 4);
    assert_eq!(details.stages[0].attack, "apgd-ce");
    assert!(
        calls > 0
            && lines
                .iter()
                .any(|l| l.contains("robust accuracy after APGD-CE"))
    );
    assert_eq!(details.points.len(), 150);
    let robust = details
        .points
        .iter()
        .filter(|p| p.adv_pred == p.label)
        .count();
    assert_eq!(robust as f64 / 150.0, r.robust_accuracy);
    let last = details.stages.last().unwrap().robust_accuracy;
    assert_eq!(last, r.robust_accuracy);
    for p in &details.points {
        match p.broken_by.as_deref() {
            None => assert_eq!(p.adv_pred, p.label),
            Some("clean") => assert_ne!(p.clean_pred, p.label),
            Some(member) => {
                assert!(["apgd-ce", "apgd-t", "fab-t", "square"].contains(&member));
                assert_ne!(p.adv_pred, p.label);
                assert!(p.linf <= 0.15 + 1e-6);
            }
        }
    }
    let broken: usize = details.stages.iter().map(|s| s.broken).sum();
    let clean_ok = details
        .points
        .iter()
        .filter(|p| p.clean_pred == p.label)
        .count();
    assert_eq!(broken, clean_ok - robust);
    assert_eq!(r.samples.len(), 3);
    let json = serde_json::to_value(&report).unwrap();
    assert!(json["results"][1]["ensemble"]["points"][0]["label"].is_number());
    assert!(json["results"][0].get("ensemble").is_some());
}

#[test]
fn the_audit_passes_on_a_trained_model_and_says_why() {
    let model = model();
    let data = synthetic(200, 99);
    let options = AuditOptions {
        steps: 30,
        queries: 500,
        batch_size: 100,
        ..AuditOptions::new(Threat::Linf(0.1))
    };
    let mut lines = Vec::new();
    let report = audit(model, &data, &options, &mut |l| lines.push(l.to_string())).unwrap();
    let names: Vec<&str> = report.checks.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(
        names,
        [
            "eps-monotone",
            "unbounded",
            "black-box-weaker",
            "more-steps",
            "more-restarts"
        ]
    );
    for line in &lines {
        eprintln!("{line}");
    }
    assert!(report.passed, "{lines:?}");
    assert_eq!(report.checks[1].robust_accuracies, vec![0.0]);
}

#[test]
fn bad_evaluation_options_are_errors() {
    let targeted = AttackOptions {
        target: Target::Class(1),
        ..AttackOptions::default()
    };
    let with = |f: fn(&mut AttackOptions)| {
        let mut o = AttackOptions::default();
        f(&mut o);
        o
    };
    for (name, options) in [
        ("apgd-ce", targeted.clone()),
        ("square", with(|o| o.random_start = true)),
        ("apgd-t", with(|o| o.alpha = Some(0.1))),
        ("pgd", with(|o| o.norm = Some(Norm::L2))),
        ("apgd-ce", with(|o| o.version = Some(Version::Plus))),
        ("apgd-ce", with(|o| o.queries = Some(10))),
        ("square", with(|o| o.steps = Some(10))),
        ("fab", with(|o| o.targets = Some(3))),
        ("autoattack", with(|o| o.restarts = Some(2))),
        ("square", with(|o| o.queries = Some(0))),
    ] {
        let err = Attack::build(name, 0.1, &options).unwrap_err();
        eprintln!("{name}: {err}");
    }
    assert!("fancy".parse::<Version>().is_err());
    // A model with too few classes for the targeted DLR.
    let small = Model::new("4-3", Activation::Relu, 0).unwrap();
    let x = Tensor::rand_uniform([2, 4], 0.0, 1.0, 1, DType::F32);
    let y = Tensor::from_vec(vec![0u32, 1], [2]).unwrap();
    let a = Attack::build("apgd-t", 0.1, &AttackOptions::default()).unwrap();
    let err = a.run(&small, &x, &y, 0).unwrap_err().to_string();
    assert!(err.contains("at least 4 classes"), "{err}");
}

#[test]
fn trades_and_mart_train_a_model_and_their_inner_maximum_stays_in_the_ball() {
    let data = synthetic(1000, 2);
    let (x, y, labels) = batch(100);
    for adv in [
        AdvTraining::Trades {
            eps: 0.1,
            steps: 3,
            alpha: 0.05,
            beta: 6.0,
        },
        AdvTraining::Mart {
            eps: 0.1,
            steps: 3,
            alpha: 0.05,
            beta: 6.0,
        },
    ] {
        let mut model = Model::new("64-32-5", Activation::Relu, 7).unwrap();
        let report = train(&mut model, &data, None, &config(3, Some(adv))).unwrap();
        let losses: Vec<f64> = report.epochs.iter().map(|e| e.train_loss).collect();
        assert!(losses[2] < losses[0], "{adv:?}: losses {losses:?}");
        assert!(accuracy(&model, &x, &labels) > 0.8, "{adv:?} should learn");
        let inner = adv.inner_maximum(&model, &x, &y, 1).unwrap().unwrap();
        assert_in_ball(&format!("{adv:?}"), Threat::Linf(0.1), &x, &inner);
        assert!(adv.attack().is_none());
    }
}
