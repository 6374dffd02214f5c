//! Training on Fashion-MNIST: determinism, learning, adversarial training.
//! Tests that need the data skip with a note when it is not installed
//! (`sudo apt-get install dataset-fashion-mnist`), and fail under `CI=true`.

mod support;

use advgrad::data::{Dataset, Split};
use advgrad::nn::{Activation, Model};
use advgrad::optim::{OptimConfig, OptimizerKind, Schedule};
use advgrad::rng::Rng;
use advgrad::train::{evaluate, train, AdvTraining, TrainConfig};

fn data(split: Split, n: usize) -> Option<Dataset> {
    support::fashion_mnist(split).map(|d| d.limit(n))
}

fn config(epochs: usize, adversarial: Option<AdvTraining>) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 64,
        optim: OptimConfig::new(OptimizerKind::Sgd, 0.1),
        schedule: Schedule::Constant,
        seed: 7,
        adversarial,
        quiet: true,
    }
}

#[test]
fn same_seed_gives_the_same_model() {
    let Some(train_set) = data(Split::Train, 1000) else {
        return;
    };
    let run = || {
        let mut model = Model::new("784-32-10", Activation::Relu, 1).unwrap();
        let mut cfg = config(2, None);
        cfg.optim = OptimConfig::new(OptimizerKind::Momentum, 0.05);
        train(&mut model, &train_set, None, &cfg).unwrap();
        let bits: Vec<u32> = model
            .params()
            .iter()
            .flat_map(|p| p.to_vec::<f32>().unwrap())
            .map(f32::to_bits)
            .collect();
        bits
    };
    let a = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .unwrap()
        .install(run);
    let b = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap()
        .install(run);
    assert!(a == b, "two runs with one seed differ");
}

#[test]
fn training_learns_fashion_mnist() {
    let (Some(train_set), Some(test_set)) = (data(Split::Train, 6000), data(Split::Test, 2000))
    else {
        return;
    };
    let mut model = Model::new("784-64-10", Activation::Relu, 0).unwrap();
    let before = evaluate(&model, &test_set, 500).unwrap();
    let report = train(&mut model, &train_set, Some(&test_set), &config(2, None)).unwrap();
    let after = evaluate(&model, &test_set, 500).unwrap();
    assert!(
        before.accuracy < 0.3,
        "untrained accuracy {}",
        before.accuracy
    );
    assert!(
        after.accuracy > 0.72,
        "accuracy after training {}",
        after.accuracy
    );
    assert!(report.epochs[1].train_loss < report.epochs[0].train_loss);
    assert_eq!(report.epochs[1].test_accuracy, Some(after.accuracy));
}

#[test]
fn adversarial_training_beats_standard_training_under_pgd() {
    let (Some(train_set), Some(test_set)) = (data(Split::Train, 6000), data(Split::Test, 500))
    else {
        return;
    };
    let eps = 0.1;
    let mut standard = Model::new("784-64-10", Activation::Relu, 0).unwrap();
    let mut robust = standard.clone();
    train(&mut standard, &train_set, None, &config(3, None)).unwrap();
    train(
        &mut robust,
        &train_set,
        None,
        &config(3, Some(AdvTraining::FgsmRs { eps })),
    )
    .unwrap();

    let pgd = AdvTraining::Pgd {
        eps,
        steps: 10,
        alpha: eps / 4.0,
    };
    let robust_accuracy = |model: &Model| {
        let idx: Vec<usize> = (0..test_set.rows()).collect();
        let (x, y) = advgrad::train::batch_tensors(
            &test_set,
            &idx,
            model.device(),
            &mut vec![],
            &mut vec![],
        )
        .unwrap();
        let adv = pgd.perturb(model, &x, &y, &mut Rng::new(0)).unwrap();
        let pred = model.predict(&adv).unwrap().to_vec::<u32>().unwrap();
        let labels = y.to_vec::<u32>().unwrap();
        pred.iter().zip(&labels).filter(|(a, b)| a == b).count() as f64 / labels.len() as f64
    };
    let (s, r) = (robust_accuracy(&standard), robust_accuracy(&robust));
    eprintln!("PGD-10 robust accuracy at eps {eps}: standard {s:.3}, adversarially trained {r:.3}");
    assert!(r > s + 0.2, "standard {s}, adversarially trained {r}");
}
