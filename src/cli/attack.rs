//! `advgrad attack`: attack a saved model on the test set at several eps and
//! report clean and robust accuracy, success rate, perturbation sizes and
//! speed; optionally a picture grid and a robust-accuracy curve.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use advgrad::attack::{
    evaluate_attack, evaluate_autoattack, Attack, AttackOptions, EvalOptions, Target, ATTACK_NAMES,
};
use advgrad::backend::Norm;
use advgrad::data::{Split, FASHION_MNIST_CLASSES};
use advgrad::report::{self, LinePlot, Table};
use advgrad::train::progress_bar;
use advgrad::{Error, Result};

use super::common::{follow, DataArgs, ModelArgs, PrecisionArgs};

/// Options of `advgrad attack`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    #[command(flatten)]
    precision: PrecisionArgs,
    /// fgsm, fgm, bim, pgd, pgd-l2, mifgsm, deepfool, cw, apgd-ce,
    /// apgd-dlr, apgd-t, fab, fab-t, square or autoattack.
    #[arg(long)]
    attack: String,
    /// Budgets, comma-separated (L∞ for fgsm, bim, pgd, mifgsm; L2 for
    /// fgm, pgd-l2, deepfool, cw; --norm for the others).
    #[arg(long, value_delimiter = ',', required = true, num_args = 1..)]
    eps: Vec<f64>,
    /// The norm of apgd-*, fab, fab-t, square and autoattack: linf or l2.
    #[arg(long)]
    norm: Option<String>,
    /// AutoAttack's version: standard, plus or rand.
    #[arg(long)]
    version: Option<String>,
    /// Square's query budget (square, autoattack) [default: 5000].
    #[arg(long)]
    queries: Option<usize>,
    /// Target classes of apgd-t and fab-t [default: 9].
    #[arg(long)]
    targets: Option<usize>,
    /// Scale Square's schedule of window sizes to --queries, as
    /// torchattacks does (square, autoattack).
    #[arg(long)]
    rescale_schedule: bool,
    /// Iterations (bim, pgd, mifgsm, deepfool, apgd-*, fab, and the
    /// gradient members of autoattack) or Adam steps per search step (cw)
    /// [default: 20 for bim/pgd, 10 mifgsm, 50 deepfool, 100 cw, apgd, fab].
    #[arg(long)]
    steps: Option<usize>,
    /// Step size (bim, pgd, mifgsm; default 2.5·eps/steps, mifgsm
    /// eps/steps) or Adam learning rate (cw; default 0.01).
    #[arg(long)]
    alpha: Option<f64>,
    /// Start PGD from a uniform random point of the ball.
    #[arg(long)]
    random_start: bool,
    /// Restarts of pgd (the worst case per example is kept), apgd-*, fab
    /// and square (each on the examples still robust).
    #[arg(long)]
    restarts: Option<usize>,
    /// Targeted: a random other class per example, or --target-class.
    #[arg(long)]
    targeted: bool,
    /// The class every example is pushed to (with --targeted).
    #[arg(long, requires = "targeted")]
    target_class: Option<u32>,
    /// Attack the first N test examples in file order.
    #[arg(long)]
    limit: Option<usize>,
    /// Examples per attacked batch.
    #[arg(long, default_value_t = 256)]
    batch: usize,
    /// Seed of random starts and random targets.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the results as one JSON object (the last line of stdout).
    #[arg(long)]
    json: bool,
    /// Write a PNG grid of examples at the largest eps: clean, adversarial,
    /// perturbation.
    #[arg(long)]
    save_grid: Option<PathBuf>,
    /// Examples in the grid.
    #[arg(long, default_value_t = 8)]
    grid_examples: usize,
    /// Write a PNG plot of robust accuracy against eps.
    #[arg(long)]
    plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    args.precision.clone().run(|| run_in_precision(args))
}

fn run_in_precision(mut args: Args) -> Result<ExitCode> {
    args.data.quiet = args.quiet || args.json;
    if !ATTACK_NAMES.contains(&args.attack.as_str()) {
        return Err(Error::invalid(format!(
            "unknown attack `{}`: expected one of {}",
            args.attack,
            ATTACK_NAMES.join(", ")
        )));
    }
    if args.batch == 0 {
        return Err(Error::invalid("--batch must be at least 1"));
    }
    let target = match (args.targeted, args.target_class) {
        (false, _) => Target::Untargeted,
        (true, None) => Target::RandomOther,
        (true, Some(k)) => Target::Class(k),
    };
    let norm = match args.norm.as_deref() {
        None => None,
        Some("linf") | Some("Linf") | Some("inf") => Some(Norm::Linf),
        Some("l2") | Some("L2") => Some(Norm::L2),
        Some(other) => {
            return Err(Error::invalid(format!(
                "unknown --norm `{other}`: expected linf or l2"
            )))
        }
    };
    let options = AttackOptions {
        steps: args.steps,
        alpha: args.alpha,
        random_start: args.random_start,
        restarts: args.restarts,
        target,
        norm,
        version: args.version.as_deref().map(str::parse).transpose()?,
        queries: args.queries,
        targets: args.targets,
        rescale_schedule: args.rescale_schedule,
    };
    let first_eps = args.eps.first().copied().unwrap_or(0.0);
    let attack = Attack::build(&args.attack, first_eps, &options)?;
    let device = args.data.device()?;
    let model = args.model.load(device)?;
    for &e in &args.eps {
        attack.with_eps(e).threat().validate(model.input_size())?;
    }
    if let Target::Class(k) = target {
        if k as usize >= model.classes() {
            return Err(Error::invalid(format!(
                "--target-class {k} is out of range for a model of {} classes",
                model.classes()
            )));
        }
    }
    let data = args.data.load(Split::Test, args.limit)?;

    let quiet = args.quiet || args.json || !std::io::stderr().is_terminal();
    let bar = progress_bar(0, args.attack.clone(), quiet);
    bar.set_message("batches");

    let eval = EvalOptions {
        batch_size: args.batch,
        seed: args.seed,
        keep_samples: if args.save_grid.is_some() {
            args.grid_examples
        } else {
            0
        },
    };
    let report = match &attack {
        Attack::AutoAttack(aa) => {
            let mut progress = |member: &str, done: usize, total: usize| {
                bar.set_prefix(format!("autoattack: {member}"));
                bar.set_length(total as u64);
                bar.set_position(done as u64);
            };
            let mut log = |line: &str| {
                if args.json {
                    if !args.quiet {
                        bar.suspend(|| eprintln!("{line}"));
                    }
                } else {
                    bar.suspend(|| println!("{line}"));
                }
            };
            evaluate_autoattack(&model, &data, aa, &args.eps, &eval, &mut progress, &mut log)?
        }
        _ => evaluate_attack(&model, &data, &attack, &args.eps, &eval, &mut follow(&bar))?,
    };
    bar.finish_and_clear();

    if let Some(path) = &args.save_grid {
        // The samples at the largest eps.
        let largest = report
            .results
            .iter()
            .max_by(|a, b| a.eps.total_cmp(&b.eps))
            .expect("at least one eps");
        let title = format!(
            "{} {} eps {} on {} ({})",
            report.attack,
            report.norm,
            largest.eps,
            model.arch(),
            device
        );
        let dims = match data.image_dims() {
            &[h, w] => [h, w],
            _ => [1, data.features()],
        };
        report::save_grid(path, &largest.samples, dims, &FASHION_MNIST_CLASSES, &title)?;
    }
    if let Some(path) = &args.plot {
        let mut plot = LinePlot::robust_accuracy(&[(&report.attack, &report)]);
        plot.title = format!("Robust accuracy vs {} eps ({})", report.norm, model.arch());
        plot.save(path)?;
    }

    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("plain numbers serialise")
        );
    } else {
        println!(
            "{} on {} ({}), {} test examples on {device}: clean accuracy {:.2}%",
            attack.name(),
            model.arch(),
            args.model.model.display(),
            report.n,
            100.0 * report.clean_accuracy
        );
        let mut table = Table::new([
            "eps",
            "robust acc",
            "success",
            "mean L∞",
            "max L∞",
            "mean L2",
            "max L2",
            "seconds",
            "ex/s",
        ]);
        for r in &report.results {
            table.row([
                format!("{}", r.eps),
                format!("{:.2}%", 100.0 * r.robust_accuracy),
                format!("{:.2}%", 100.0 * r.success_rate),
                format!("{:.4}", r.mean_linf),
                format!("{:.4}", r.max_linf),
                format!("{:.4}", r.mean_l2),
                format!("{:.4}", r.max_l2),
                format!("{:.3}", r.seconds),
                format!("{:.0}", r.examples_per_second),
            ]);
        }
        print!("{table}");
        for p in [&args.save_grid, &args.plot].into_iter().flatten() {
            println!("wrote {}", p.display());
        }
    }
    Ok(ExitCode::SUCCESS)
}
