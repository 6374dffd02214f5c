//! `advgrad demo`: the main job. Trains a standard and an adversarially
//! trained MLP on Fashion-MNIST, attacks both with FGSM and PGD-20 at
//! several eps and with AutoAttack at eps 0.1, prints the side-by-side
//! table and writes the pictures. `--cnn` runs the same table with the
//! small CNN `1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10`, on fewer epochs and
//! test examples by default.

use std::path::PathBuf;
use std::process::ExitCode;

use advgrad::attack::{
    evaluate_attack, evaluate_autoattack, Attack, AttackOptions, AttackReport, AutoAttack,
    EvalOptions, Threat, Version,
};
use advgrad::data::{Split, FASHION_MNIST_CLASSES};
use advgrad::nn::{save_model, Activation, Model};
use advgrad::optim::{OptimConfig, OptimizerKind, Schedule};
use advgrad::report::{save_grid, LinePlot, Table};
use advgrad::train::{evaluate, progress_bar, train, AdvTraining, TrainConfig};
use advgrad::{Error, Result};

use super::common::{follow, DataArgs};

/// Options of `advgrad demo`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    /// Where the models, pictures and results go.
    #[arg(long, default_value = "advgrad-demo")]
    out_dir: PathBuf,
    /// The architecture of both models [default: 784-256-256-10, with
    /// --cnn 1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10].
    #[arg(long)]
    arch: Option<String>,
    /// The table with the small CNN: --arch, --epochs, --limit and
    /// --autoattack-limit default to 1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10,
    /// 2, 2000 and 200.
    #[arg(long)]
    cnn: bool,
    /// Training epochs of each model [default: 4, with --cnn 2].
    #[arg(long)]
    epochs: Option<usize>,
    /// L∞ budget of adversarial training.
    #[arg(long, default_value_t = 0.1)]
    train_eps: f64,
    /// The attack budgets (L∞).
    #[arg(long, value_delimiter = ',', default_value = "0.02,0.05,0.1,0.15")]
    eps: Vec<f64>,
    /// Attack the first N test examples [default: 10000, with --cnn 2000].
    #[arg(long)]
    limit: Option<usize>,
    /// AutoAttack (standard, L∞) on the first N test examples at eps 0.1
    /// (0: skip it) [default: 1000, with --cnn 200].
    #[arg(long)]
    autoattack_limit: Option<usize>,
    /// Train on the first N training examples (all by default).
    #[arg(long)]
    train_limit: Option<usize>,
    /// Seed of everything.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// No progress bars.
    #[arg(long)]
    quiet: bool,
}

/// What `--cnn` changes: the architecture and the defaults it gives
/// `--epochs`, `--limit` and `--autoattack-limit`.
struct Defaults {
    arch: &'static str,
    epochs: usize,
    limit: usize,
    autoattack_limit: usize,
}

const MLP_DEFAULTS: Defaults = Defaults {
    arch: "784-256-256-10",
    epochs: 4,
    limit: 10000,
    autoattack_limit: 1000,
};

const CNN_DEFAULTS: Defaults = Defaults {
    arch: "1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10",
    epochs: 2,
    limit: 2000,
    autoattack_limit: 200,
};

/// The options with `--cnn`'s defaults filled in.
struct Resolved {
    arch: String,
    epochs: usize,
    limit: usize,
    autoattack_limit: usize,
}

impl Args {
    fn resolved(&self) -> Resolved {
        let d = if self.cnn {
            &CNN_DEFAULTS
        } else {
            &MLP_DEFAULTS
        };
        Resolved {
            arch: self.arch.clone().unwrap_or_else(|| d.arch.to_string()),
            epochs: self.epochs.unwrap_or(d.epochs),
            limit: self.limit.unwrap_or(d.limit),
            autoattack_limit: self.autoattack_limit.unwrap_or(d.autoattack_limit),
        }
    }
}

const PGD_STEPS: usize = 20;
/// The radius of the demo's AutoAttack column.
const AUTOATTACK_EPS: f64 = 0.1;

fn say(quiet: bool, msg: &str) {
    if !quiet {
        eprintln!("{msg}");
    }
}

pub fn run(mut args: Args) -> Result<ExitCode> {
    // The main job works on a fresh machine: the data is fetched on first use.
    args.data.download = true;
    args.data.quiet = args.quiet;
    if args.eps.iter().any(|e| !(*e > 0.0 && *e <= 1.0)) {
        return Err(Error::invalid(format!(
            "--eps values must be in (0, 1], got {:?}",
            args.eps
        )));
    }
    let opts = args.resolved();
    let device = args.data.device()?;
    let train_set = args.data.load(Split::Train, args.train_limit)?;
    let test_set = args.data.load(Split::Test, None)?;
    let attack_set = test_set.clone().limit(opts.limit);
    std::fs::create_dir_all(&args.out_dir).map_err(|source| Error::Io {
        path: args.out_dir.clone(),
        source,
    })?;

    let base = TrainConfig {
        epochs: opts.epochs,
        batch_size: 128,
        optim: OptimConfig::new(OptimizerKind::Sgd, 0.1),
        schedule: Schedule::Constant,
        seed: args.seed,
        adversarial: None,
        quiet: args.quiet,
    };
    let variants = [
        ("standard", None),
        (
            "adv-trained",
            Some(AdvTraining::FgsmRs {
                eps: args.train_eps,
            }),
        ),
    ];
    let mut rows = Vec::new();
    for (name, adversarial) in variants {
        say(
            args.quiet,
            &format!(
                "== training the {name} model ({}{}), {} epochs on {} examples, device {device}",
                opts.arch,
                adversarial.map_or(String::new(), |_| format!(
                    ", FGSM-RS adversarial training at eps {}",
                    args.train_eps
                )),
                opts.epochs,
                train_set.rows()
            ),
        );
        let mut model = Model::new(&opts.arch, Activation::Relu, args.seed)?.to_device(device)?;
        let cfg = TrainConfig {
            adversarial,
            ..base.clone()
        };
        let trained = train(&mut model, &train_set, None, &cfg)?;
        save_model(&model, &args.out_dir.join(format!("{name}.safetensors")))?;
        let clean = evaluate(&model, &test_set, 1000)?;

        let mut reports = Vec::new();
        for attack_name in ["fgsm", "pgd"] {
            let options = AttackOptions {
                steps: (attack_name == "pgd").then_some(PGD_STEPS),
                ..AttackOptions::default()
            };
            let attack = Attack::build(attack_name, args.eps[0], &options)?;
            let prefix = format!("{name}: {}", label(attack_name));
            let bar = progress_bar(0, prefix, args.quiet);
            let eval = EvalOptions {
                batch_size: 500,
                seed: args.seed,
                keep_samples: 8,
            };
            let report = evaluate_attack(
                &model,
                &attack_set,
                &attack,
                &args.eps,
                &eval,
                &mut follow(&bar),
            )?;
            bar.finish_and_clear();
            reports.push(report);
        }
        let autoattack = if opts.autoattack_limit > 0 {
            let bar = progress_bar(0, format!("{name}: AutoAttack"), args.quiet);
            let aa = AutoAttack::new(Threat::Linf(AUTOATTACK_EPS), Version::Standard);
            let eval = EvalOptions {
                batch_size: 1000,
                seed: args.seed,
                keep_samples: 0,
            };
            let report = evaluate_autoattack(
                &model,
                &test_set.clone().limit(opts.autoattack_limit),
                &aa,
                &[AUTOATTACK_EPS],
                &eval,
                &mut |member, done, total| {
                    bar.set_prefix(format!("{name}: AutoAttack {member}"));
                    bar.set_length(total as u64);
                    bar.set_position(done as u64);
                },
                &mut |_| {},
            )?;
            bar.finish_and_clear();
            Some(report)
        } else {
            None
        };
        rows.push(ModelRow {
            name,
            train_seconds: trained.seconds,
            clean_accuracy: clean.accuracy,
            reports,
            autoattack,
        });
    }

    print_table(&rows, &args.eps, attack_set.rows(), test_set.rows());
    write_pictures(&rows, &args)?;
    write_json(&rows, &args)?;
    Ok(ExitCode::SUCCESS)
}

struct ModelRow {
    name: &'static str,
    train_seconds: f64,
    clean_accuracy: f64,
    reports: Vec<AttackReport>,
    autoattack: Option<AttackReport>,
}

fn label(attack: &str) -> String {
    match attack {
        "pgd" => format!("PGD-{PGD_STEPS}"),
        other => other.to_uppercase(),
    }
}

fn print_table(rows: &[ModelRow], eps: &[f64], n_attacked: usize, n_test: usize) {
    let mut header = vec!["model".to_string(), "train s".into(), "clean".into()];
    for r in &rows[0].reports {
        for e in eps {
            header.push(format!("{} {e}", label(&r.attack)));
        }
    }
    let aa_n = rows[0].autoattack.as_ref().map(|r| r.n);
    if let Some(n) = aa_n {
        header.push(format!("AA {AUTOATTACK_EPS} (first {n})"));
    }
    header.push("attack s".into());
    let mut table = Table::new(header);
    for row in rows {
        let mut cells = vec![
            row.name.to_string(),
            format!("{:.1}", row.train_seconds),
            format!("{:.1}%", 100.0 * row.reports[0].clean_accuracy),
        ];
        let mut attack_seconds = 0.0;
        for r in &row.reports {
            for res in &r.results {
                cells.push(format!("{:.1}%", 100.0 * res.robust_accuracy));
                attack_seconds += res.seconds;
            }
        }
        for res in row.autoattack.iter().flat_map(|r| &r.results) {
            cells.push(format!("{:.1}%", 100.0 * res.robust_accuracy));
            attack_seconds += res.seconds;
        }
        cells.push(format!("{attack_seconds:.1}"));
        table.row(cells);
    }
    println!(
        "\nAccuracy on the first {n_attacked} of {n_test} test examples, clean and under L∞ attacks:\n\n{table}"
    );
}

fn write_pictures(rows: &[ModelRow], args: &Args) -> Result<()> {
    let mut series = Vec::new();
    for row in rows {
        for r in &row.reports {
            series.push((format!("{} {}", row.name, label(&r.attack)), r));
        }
    }
    let named: Vec<(&str, &AttackReport)> = series.iter().map(|(n, r)| (n.as_str(), *r)).collect();
    let curve = args.out_dir.join("curve.png");
    LinePlot::robust_accuracy(&named).save(&curve)?;

    let grid = args.out_dir.join("grid.png");
    let pgd = &rows[0].reports[1];
    let at = pgd
        .results
        .iter()
        .min_by(|a, b| (a.eps - 0.1).abs().total_cmp(&(b.eps - 0.1).abs()))
        .expect("at least one eps");
    save_grid(
        &grid,
        &at.samples,
        [28, 28],
        &FASHION_MNIST_CLASSES,
        &format!(
            "{} on the standard model, eps {}",
            label(&pgd.attack),
            at.eps
        ),
    )?;
    println!("\nwrote {} and {}", grid.display(), curve.display());
    Ok(())
}

fn write_json(rows: &[ModelRow], args: &Args) -> Result<()> {
    let json: Vec<_> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "model": r.name,
                "train_seconds": r.train_seconds,
                "clean_accuracy": r.clean_accuracy,
                "attacks": r.reports,
                "autoattack": r.autoattack,
            })
        })
        .collect();
    let path = args.out_dir.join("results.json");
    let text = serde_json::to_string_pretty(&json).expect("plain numbers serialise");
    advgrad::atomic_file::write_bytes_atomic(&path, text.as_bytes())
}
