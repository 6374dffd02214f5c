//! A training or attack step on a device reads nothing back to the host
//! and, in steady state, allocates no device memory: the device's counters
//! (`advgrad::backend::cuda::device_stats`) over steps on the emulated
//! device (`emu`, the real CUDA backend on the SIMT emulator). Also: the
//! tally of loss and correct count equals the CPU's bit for bit, a
//! non-finite loss still stops training naming its epoch, and the number
//! of blocking reads of a training run does not grow with its steps.
//!
//! The counters are per device and global, so the tests of this file take
//! turns (`serial`).

use std::sync::Mutex;

use advgrad::attack::{Attack, Pgd, Threat};
use advgrad::backend::cuda::{device_stats, DeviceStats};
use advgrad::data::{Batches, Dataset};
use advgrad::nn::{Activation, Model};
use advgrad::optim::{OptimConfig, Optimizer, OptimizerKind, Schedule};
use advgrad::rng::Rng;
use advgrad::tally::StepTally;
use advgrad::train::{batch_tensors, tallied_step, train, AdvTraining, TrainConfig};
use advgrad::{Device, Error, Tape, Tensor};

static SERIAL: Mutex<()> = Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn emu_stats() -> DeviceStats {
    device_stats(Device::Emu).expect("the tests are built with the emu feature")
}

/// Random images in [0, 1) and labels: `rows` examples of 48 features, 10
/// classes.
fn synthetic(rows: usize, seed: u64) -> Dataset {
    synthetic_wide(rows, 48, seed)
}

/// [`synthetic`] with `features` features.
fn synthetic_wide(rows: usize, features: usize, seed: u64) -> Dataset {
    let mut rng = Rng::new(seed);
    let images = (0..rows * features)
        .map(|_| rng.uniform_f32(0.0, 1.0))
        .collect();
    let labels = (0..rows).map(|_| (rng.next_u64() % 10) as u32).collect();
    Dataset::from_parts(images, labels, features, 10).unwrap()
}

/// Runs `passes` passes of tallied steps (batches of 16) on `device` and
/// returns the counters of the last pass, the tally and the model.
fn tallied_passes(
    device: Device,
    data: &Dataset,
    passes: usize,
) -> (DeviceStats, (f64, usize), Model) {
    tallied_passes_of("48-24-10", OptimizerKind::Adam, device, data, passes)
}

/// [`tallied_passes`] of the model `arch` with the optimiser `kind`.
fn tallied_passes_of(
    arch: &str,
    kind: OptimizerKind,
    device: Device,
    data: &Dataset,
    passes: usize,
) -> (DeviceStats, (f64, usize), Model) {
    let mut model = Model::new(arch, Activation::Relu, 1)
        .unwrap()
        .to_device(device)
        .unwrap();
    let config = OptimConfig::new(kind, 0.01);
    let mut optimizer = Optimizer::new(config, &model.params()).unwrap();
    let mut tape = Tape::new();
    let mut tally = StepTally::new(device).unwrap();
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    let order: Vec<usize> = (0..data.rows()).collect();
    let mut last = DeviceStats::default();
    for _ in 0..passes {
        let before = device_stats(device).unwrap_or_default();
        for idx in Batches::new(&order, 16, false).unwrap() {
            let (x, y) = batch_tensors(data, idx, device, &mut images, &mut labels).unwrap();
            tallied_step(
                &mut model,
                &mut optimizer,
                &mut tape,
                x,
                &y,
                0.01,
                &mut tally,
            )
            .unwrap();
        }
        last = device_stats(device).unwrap_or_default().since(before);
    }
    (last, tally.read().unwrap(), model)
}

#[test]
fn a_steady_state_training_step_on_the_device_reads_nothing_and_allocates_nothing() {
    let _turn = serial();
    // 80 rows: five batches of 16 a pass.
    let data = synthetic(80, 3);
    let (pass, tally, model) = tallied_passes(Device::Emu, &data, 3);
    assert_eq!(
        (pass.blocking_reads, pass.allocations),
        (0, 0),
        "a pass of 5 training steps on emu: {pass:?}"
    );
    // Per step: the batch's images and labels (the backward pass's seed
    // is filled on the device).
    assert_eq!(pass.uploads, 5 * 2, "{pass:?}");
    assert!(pass.reused > 0, "{pass:?}");

    // The same steps on the CPU: the same tally, bit for bit (the loss
    // sum within f32 rounding of the two backends' losses).
    let (_, cpu_tally, cpu_model) = tallied_passes(Device::Cpu, &data, 3);
    assert_eq!(tally.1, cpu_tally.1, "correct counts");
    assert!(
        (tally.0 - cpu_tally.0).abs() <= 1e-4 * cpu_tally.0.abs(),
        "loss sums {} on emu, {} on the CPU",
        tally.0,
        cpu_tally.0
    );
    let (w, cw) = (
        model.params()[0].to_f64_vec().unwrap(),
        cpu_model.params()[0].to_f64_vec().unwrap(),
    );
    let worst = w
        .iter()
        .zip(&cw)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(worst < 1e-4, "first-layer weights differ by {worst}");
}

#[test]
fn split_products_take_their_workspaces_from_the_pool() {
    let _turn = serial();
    // 300 features against a hidden layer of 24 at batch 16: the first
    // layer's products leave most SMs idle, so they run split into depth
    // ranges, each step's partial products in a workspace, reduced after.
    // Those workspaces come from the pool and go back to it (they were
    // allocated and freed every step: four a step at 784-256-256-10).
    let data = synthetic_wide(48, 300, 4);
    let (pass, _, _) = tallied_passes_of("300-24-10", OptimizerKind::Sgd, Device::Emu, &data, 3);
    assert_eq!(
        (pass.blocking_reads, pass.allocations),
        (0, 0),
        "a pass of 3 training steps on emu: {pass:?}"
    );
    assert_eq!(pass.uploads, 3 * 2, "{pass:?}");
}
#[test]
fn the_tally_counts_like_argmax_and_count_equal() {
    let _turn = serial();
    // Ties, a NaN row, and labels hit and missed, on both backends.
    let logits = vec![
        1.0f32,
        1.0,
        0.0, // tie: the first wins → 0
        0.0,
        2.0,
        2.0, // tie → 1
        f32::NAN,
        5.0,
        1.0, // the NaN wins → 0
        0.0,
        1.0,
        f32::NAN, // → 2
        3.0,
        -1.0,
        7.0, // → 2
    ];
    let labels = vec![0u32, 2, 0, 2, 1];
    let expected = 3;
    for device in [Device::Cpu, Device::Emu] {
        let z = Tensor::from_vec(logits.clone(), [5, 3])
            .unwrap()
            .to_device(device)
            .unwrap();
        let y = Tensor::from_vec(labels.clone(), [5])
            .unwrap()
            .to_device(device)
            .unwrap();
        let loss = Tensor::from_vec(vec![0.25f32], [1])
            .unwrap()
            .to_device(device)
            .unwrap();
        let hits = z.argmax_rows().unwrap().count_equal(&y).unwrap();
        assert_eq!(hits, expected, "{device}: argmax_rows and count_equal");
        let mut tally = StepTally::new(device).unwrap();
        tally.set(1.5, 4).unwrap();
        tally.add(&loss, &z, &y).unwrap();
        tally.add(&loss, &z, &y).unwrap();
        assert_eq!(
            tally.read().unwrap(),
            (1.5 + 1.25 + 1.25, 4 + 2 * expected),
            "{device}"
        );
        let nan = Tensor::from_vec(vec![f32::NAN], [1])
            .unwrap()
            .to_device(device)
            .unwrap();
        tally.add(&nan, &z, &y).unwrap();
        assert!(
            matches!(tally.read(), Err(Error::NonFinite { .. })),
            "{device}"
        );
    }
}

#[test]
fn an_attack_step_on_the_device_reads_nothing_and_allocates_nothing() {
    let _turn = serial();
    let model = Model::new("48-24-10", Activation::Relu, 2)
        .unwrap()
        .to_device(Device::Emu)
        .unwrap();
    let data = synthetic(32, 5);
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    let idx: Vec<usize> = (0..32).collect();
    let (x, y) = batch_tensors(&data, &idx, Device::Emu, &mut images, &mut labels).unwrap();
    let run = |steps: usize| {
        let attack = Attack::Pgd(Pgd {
            steps,
            random_start: true,
            ..Pgd::new(Threat::Linf(0.1))
        });
        let before = emu_stats();
        let adv = attack.run(&model, &x, &y, 9).unwrap();
        (emu_stats().since(before), adv)
    };
    run(3); // warm the pool
    let (three, _) = run(3);
    let (nine, adv) = run(9);
    let per_six_steps = nine.since(three);
    assert_eq!(
        (per_six_steps.blocking_reads, per_six_steps.allocations),
        (0, 0),
        "six more PGD steps on emu: {per_six_steps:?} (3 steps: {three:?}, 9 steps: {nine:?})"
    );
    // The run's own reads: the input check (pixels in range, labels) and
    // the first step's loss, checked to be finite.
    assert_eq!(three.blocking_reads, 3, "{three:?}");
    // A PGD step uploads nothing (the backward pass's seed is filled on
    // the device).
    assert_eq!(per_six_steps.uploads, 0, "{per_six_steps:?}");
    let cpu = Attack::Pgd(Pgd {
        steps: 9,
        random_start: true,
        ..Pgd::new(Threat::Linf(0.1))
    })
    .run(
        &model.to_device(Device::Cpu).unwrap(),
        &x.to_device(Device::Cpu).unwrap(),
        &y.to_device(Device::Cpu).unwrap(),
        9,
    )
    .unwrap();
    let (a, c) = (adv.to_f64_vec().unwrap(), cpu.to_f64_vec().unwrap());
    let differ = a
        .iter()
        .zip(&c)
        .filter(|(a, c)| (*a - *c).abs() > 1e-6)
        .count();
    // A sign step flips where a gradient entry is within rounding of 0.
    assert!(
        differ * 100 <= a.len(),
        "{differ} of {} pixels differ from the CPU's",
        a.len()
    );
}

fn quiet_config(epochs: usize, adversarial: Option<AdvTraining>) -> TrainConfig {
    TrainConfig {
        epochs,
        batch_size: 8,
        optim: OptimConfig::new(OptimizerKind::Sgd, 0.05),
        schedule: Schedule::Constant,
        seed: 4,
        adversarial,
        quiet: true,
    }
}

#[test]
fn a_training_run_on_the_device_reads_once_an_epoch_whatever_its_steps() {
    let _turn = serial();
    let counts = |rows: usize, adversarial: Option<AdvTraining>| {
        let data = synthetic(rows, 6);
        let mut model = Model::new("48-24-10", Activation::Relu, 3)
            .unwrap()
            .to_device(Device::Emu)
            .unwrap();
        let before = emu_stats();
        let report = train(&mut model, &data, None, &quiet_config(2, adversarial)).unwrap();
        assert_eq!(report.epochs.len(), 2);
        emu_stats().since(before)
    };
    // 3 and 9 steps an epoch: the same reads (one tally read an epoch).
    for adv in [None, Some(AdvTraining::FgsmRs { eps: 0.05 })] {
        let (few, many) = (counts(24, adv), counts(72, adv));
        let what = format!("{adv:?}: 2 epochs of 3 steps {few:?}, of 9 steps {many:?}");
        assert_eq!(few.blocking_reads, many.blocking_reads, "{what}");
        assert_eq!(few.blocking_reads, 2, "{what}: one read an epoch");
        if adv.is_none() {
            // Each step uploads its images; the labels come once an epoch
            // and the backward pass's seed is filled on the device.
            assert_eq!(many.uploads - few.uploads, 2 * 6, "{what}");
        }
    }
}

#[test]
fn a_non_finite_loss_stops_training_naming_the_epoch_on_every_device() {
    let _turn = serial();
    let mut data = synthetic(24, 8);
    let mut images = data.images().to_vec();
    // A NaN pixel in every example: the loss of the first step is NaN.
    images.iter_mut().step_by(48).for_each(|v| *v = f32::NAN);
    data = Dataset::from_parts(images, data.labels().to_vec(), 48, 10).unwrap();
    // The CPU reads its tally after every step, the device at the end of
    // the epoch (3 steps of 8; no progress bar in a test).
    for (device, steps) in [(Device::Cpu, "step 1)"), (Device::Emu, "steps 1..=3)")] {
        let mut model = Model::new("48-24-10", Activation::Relu, 3)
            .unwrap()
            .to_device(device)
            .unwrap();
        let e = train(&mut model, &data, None, &quiet_config(1, None)).unwrap_err();
        let msg = e.to_string();
        assert!(
            matches!(e, Error::NonFinite { op: "train", .. }),
            "{device}: {msg}"
        );
        assert!(
            msg.contains("in epoch 1 (") && msg.contains(steps),
            "{device}: {msg}"
        );
    }
}
