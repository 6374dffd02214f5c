//! Checkpoints and resumption: a run interrupted (in process, by SIGKILL at
//! random steps, or by Ctrl-C) and resumed ends with the same bits as a run
//! never interrupted, and a killed run never damages the files it was
//! replacing.

mod sandbox;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use advgrad::checkpoint;
use advgrad::data::{Dataset, Split};
use advgrad::nn::{load_model, Activation, Model};
use advgrad::optim::{OptimConfig, OptimizerKind, Schedule};
use advgrad::rng::Rng;
use advgrad::train::{train, train_with, AdvTraining, Checkpointing, SaveEvery, TrainConfig};
use sandbox::{advgrad, Run};

/// The bits of every parameter of the model file at `path`.
fn model_bits(path: &Path) -> Vec<Vec<u32>> {
    let model = load_model(path, None).unwrap_or_else(|e| panic!("{e}"));
    params_bits(&model)
}

fn params_bits(model: &Model) -> Vec<Vec<u32>> {
    model
        .params()
        .iter()
        .map(|p| {
            p.to_vec::<f32>()
                .unwrap()
                .iter()
                .map(|x| x.to_bits())
                .collect()
        })
        .collect()
}

fn small_data(dir: &Path) -> (Dataset, Dataset) {
    sandbox::write_synthetic_data(dir, 600, 100, 8);
    (
        Dataset::load(dir, Split::Train).unwrap(),
        Dataset::load(dir, Split::Test).unwrap(),
    )
}

#[test]
fn a_run_resumed_from_a_mid_epoch_checkpoint_ends_with_the_same_bits() {
    let home = sandbox::temp_dir();
    let (train_set, test_set) = small_data(home.path());
    let cfg = TrainConfig {
        epochs: 3,
        batch_size: 32,
        optim: OptimConfig::new(OptimizerKind::Adam, 1e-2),
        schedule: Schedule::Cosine,
        seed: 7,
        adversarial: Some(AdvTraining::FgsmRs { eps: 0.05 }),
        quiet: true,
    };
    let fresh = || Model::new("64-16-10", Activation::Relu, 7).unwrap();
    let mut reference = fresh();
    let report = train(&mut reference, &train_set, Some(&test_set), &cfg).unwrap();

    // 19 steps per epoch; the last checkpoint of every-10 lands at step 50,
    // mid-way through the third epoch.
    let path = home.path().join("run.ckpt.safetensors");
    let mut first = fresh();
    let ckpt = Checkpointing {
        path: Some(path.clone()),
        every: SaveEvery::Steps(10),
        ..Checkpointing::default()
    };
    train_with(&mut first, &train_set, Some(&test_set), &cfg, ckpt).unwrap();
    let saved = checkpoint::load(&path).unwrap();
    assert_eq!((saved.progress.step, saved.progress.epoch), (50, 2));
    assert_eq!(saved.order.len(), 600);
    assert_eq!(saved.progress.epochs.len(), 2);

    let mut resumed = Model::new("64-16-10", Activation::Relu, 999).unwrap();
    let ckpt = Checkpointing {
        resume: Some(saved),
        ..Checkpointing::default()
    };
    let again = train_with(&mut resumed, &train_set, Some(&test_set), &cfg, ckpt).unwrap();
    assert_eq!(params_bits(&resumed), params_bits(&reference));
    let accuracies = |r: &advgrad::train::TrainReport| {
        r.epochs.iter().map(|e| e.test_accuracy).collect::<Vec<_>>()
    };
    assert_eq!(accuracies(&again), accuracies(&report));

    // A checkpoint reads as a model file too.
    let as_model = load_model(&path, None).unwrap();
    assert_eq!(as_model.arch(), "64-16-10");
}

#[test]
fn resuming_with_other_settings_names_each_difference() {
    let home = sandbox::temp_dir();
    let (train_set, _) = small_data(home.path());
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 50,
        optim: OptimConfig::new(OptimizerKind::Sgd, 0.1),
        schedule: Schedule::Constant,
        seed: 1,
        adversarial: None,
        quiet: true,
    };
    let path = home.path().join("c.safetensors");
    let mut model = Model::new("64-10", Activation::Relu, 1).unwrap();
    let ckpt = Checkpointing {
        path: Some(path.clone()),
        every: SaveEvery::Epoch,
        ..Checkpointing::default()
    };
    train_with(&mut model, &train_set, None, &cfg, ckpt).unwrap();

    let other = TrainConfig {
        optim: OptimConfig::new(OptimizerKind::Sgd, 0.05),
        batch_size: 64,
        ..cfg.clone()
    };
    let ckpt = Checkpointing {
        resume: Some(checkpoint::load(&path).unwrap()),
        ..Checkpointing::default()
    };
    let err = train_with(&mut model, &train_set, None, &other, ckpt)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("optim.lr is 0.1 in the checkpoint, 0.05 now")
            && err.contains("batch_size is 50 in the checkpoint, 64 now"),
        "{err}"
    );
    let smaller = train_set.clone().limit(500);
    let ckpt = Checkpointing {
        resume: Some(checkpoint::load(&path).unwrap()),
        ..Checkpointing::default()
    };
    let err = train_with(&mut model, &smaller, None, &cfg, ckpt)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train_examples is 600 in the checkpoint, 500 now"),
        "{err}"
    );
}

/// `advgrad train` for `epochs` on the synthetic data in `data`, writing
/// `out`, with `extra` arguments.
fn train_cmd(data: &Path, out: &Path, epochs: usize, extra: &[&str]) -> Command {
    let mut cmd = advgrad();
    cmd.args(["train", "--arch", "64-32-10", "--batch", "16", "--epochs"])
        .arg(epochs.to_string())
        .args(["--optim", "momentum", "--lr", "0.05", "--seed", "3"])
        .args(["--device", "cpu", "--data"])
        .arg(data)
        .arg("--out")
        .arg(out)
        .args(extra);
    cmd
}

/// A seed for the kill times: `ADVGRAD_TEST_SEED` if set, else the clock
/// (printed, so a failure can be replayed).
fn kill_seed() -> u64 {
    let seed = std::env::var("ADVGRAD_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
        });
    eprintln!("kill times from ADVGRAD_TEST_SEED={seed}");
    seed
}

/// The step of the checkpoint at `path`, if one can be read now.
fn checkpoint_step(path: &Path) -> Option<usize> {
    checkpoint::load(path).ok().map(|c| c.progress.step)
}

#[test]
fn sigkill_at_random_steps_never_damages_files_and_resuming_gives_the_same_bits() {
    const EPOCHS: usize = 6;
    const STEPS: usize = EPOCHS * 2000 / 16;
    let home = sandbox::temp_dir();
    let data = home.path().join("data");
    sandbox::write_synthetic_data(&data, 2000, 200, 8);

    // The reference: one run, never interrupted, without checkpoints.
    let reference = home.path().join("reference.safetensors");
    let run = Run::of(train_cmd(&data, &reference, EPOCHS, &["--quiet"]).stderr(Stdio::piped()));
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    // The model file the killed runs are replacing, and its bytes.
    let out = home.path().join("model.safetensors");
    sandbox::write_model(&out, "64-5-10");
    let old_bytes = std::fs::read(&out).unwrap();
    let ckpt = home.path().join("model.ckpt.safetensors");
    let ckpt_arg = ckpt.to_str().unwrap().to_string();
    let mut rng = Rng::new(kill_seed());

    // Three runs killed at random steps, each resuming the last; then one
    // that finishes.
    let mut last_step = 0;
    for kill in 1..=4 {
        let mut args = vec![
            "--quiet",
            "--checkpoint",
            &ckpt_arg,
            "--checkpoint-every",
            "3",
        ];
        if kill > 1 {
            args.extend(["--resume", &ckpt_arg]);
        }
        let mut child = train_cmd(&data, &out, EPOCHS, &args)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        if kill == 4 {
            assert!(child.wait().unwrap().success());
            break;
        }
        // A random step ahead of the last checkpoint; kill once the run has
        // passed it (it is then writing steps and checkpoints at full speed).
        let target = last_step + 1 + rng.below(((STEPS - last_step) / 3) as u64) as usize;
        let start = Instant::now();
        while checkpoint_step(&ckpt).is_none_or(|s| s < target) {
            assert!(
                child.try_wait().unwrap().is_none(),
                "the run ended before step {target}"
            );
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "no step {target} in 2 minutes"
            );
            std::thread::sleep(Duration::from_micros(200));
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        // The model file is the old one, whole and loadable, and the
        // checkpoint it was overwriting every three steps is loadable.
        assert_eq!(std::fs::read(&out).unwrap(), old_bytes, "after kill {kill}");
        assert_eq!(load_model(&out, None).unwrap().arch(), "64-5-10");
        let saved = checkpoint::load(&ckpt).unwrap_or_else(|e| panic!("after kill {kill}: {e}"));
        eprintln!(
            "kill {kill} past step {target}: checkpoint at step {} (epoch {}, batch {})",
            saved.progress.step,
            saved.progress.epoch + 1,
            saved.progress.batch
        );
        assert!(saved.progress.step >= target);
        last_step = saved.progress.step;
    }
    assert_eq!(model_bits(&out), model_bits(&reference));
}

#[cfg(unix)]
#[test]
fn ctrl_c_saves_a_checkpoint_and_exits_130() {
    use std::io::{BufRead, BufReader};
    // Long enough (about a second here) that the signal lands mid-run even
    // on a loaded machine, where ctrlc's handler thread may wait to be
    // scheduled: a 30-epoch run (a few milliseconds) once finished first.
    const EPOCHS: usize = 2000;
    let home = sandbox::temp_dir();
    let data = home.path().join("data");
    sandbox::write_synthetic_data(&data, 2000, 200, 8);
    let reference = home.path().join("reference.safetensors");
    let run = Run::of(&mut train_cmd(&data, &reference, EPOCHS, &["--quiet"]));
    assert_eq!(run.code, Some(0), "{}", run.stderr);

    // No --checkpoint: Ctrl-C saves next to --out.
    let out = home.path().join("interrupted.safetensors");
    let ckpt: PathBuf = home.path().join("interrupted.ckpt.safetensors");
    let mut child = train_cmd(&data, &out, EPOCHS, &[])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Interrupt once the first epoch is reported.
    let mut stderr = BufReader::new(child.stderr.take().unwrap());
    let mut seen = String::new();
    while !seen.contains("epoch   1:") {
        let mut line = String::new();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "{seen}");
        seen.push_str(&line);
    }
    // SAFETY: signalling a child this test started and has not reaped.
    let sent = unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
    assert_eq!(sent, 0);
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stderr, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(130), "{seen}{rest}");
    assert!(
        rest.contains("checkpoint saved to") && rest.contains("interrupted.ckpt.safetensors"),
        "{rest}"
    );
    assert!(!out.exists(), "no model is written when stopped");
    let saved = checkpoint::load(&ckpt).unwrap();
    assert!(
        saved.progress.step < EPOCHS * 125,
        "{}",
        saved.progress.step
    );

    let ckpt_arg = ckpt.to_str().unwrap();
    let run = Run::of(&mut train_cmd(
        &data,
        &out,
        EPOCHS,
        &["--quiet", "--resume", ckpt_arg],
    ));
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(model_bits(&out), model_bits(&reference));
}
