//! `advgrad audit`: the gradient-masking checks of Carlini et al. on a
//! saved model, with the robustness-evaluation attacks.

use std::process::ExitCode;

use advgrad::attack::{audit, AuditOptions, Threat};
use advgrad::backend::Norm;
use advgrad::data::Split;
use advgrad::report::Table;
use advgrad::{Error, Result};

use super::common::{DataArgs, ModelArgs};

/// Options of `advgrad audit`.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(flatten)]
    data: DataArgs,
    #[command(flatten)]
    model: ModelArgs,
    /// The radius under audit.
    #[arg(long)]
    eps: f64,
    /// linf or l2.
    #[arg(long, default_value = "linf")]
    norm: String,
    /// Audit on the first N test examples.
    #[arg(long, default_value_t = 1000)]
    limit: usize,
    /// Examples per attacked batch.
    #[arg(long, default_value_t = 1000)]
    batch: usize,
    /// Percentage points of robust accuracy that count as "little".
    #[arg(long, default_value_t = 1.0)]
    tolerance: f64,
    /// APGD's iterations (the more-steps check runs four times as many).
    #[arg(long, default_value_t = 100)]
    steps: usize,
    /// Square's queries.
    #[arg(long, default_value_t = 5000)]
    queries: usize,
    /// Seed of every attack.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Print the report as one JSON object (the last line of stdout).
    #[arg(long)]
    json: bool,
    /// No progress lines.
    #[arg(long)]
    quiet: bool,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let norm = match args.norm.as_str() {
        "linf" | "Linf" => Norm::Linf,
        "l2" | "L2" => Norm::L2,
        other => {
            return Err(Error::invalid(format!(
                "unknown --norm `{other}`: expected linf or l2"
            )))
        }
    };
    let bad_eps = args.eps.is_nan() || args.eps <= 0.0;
    let bad_tolerance = args.tolerance.is_nan() || args.tolerance < 0.0;
    if bad_eps || bad_tolerance || args.steps == 0 || args.queries == 0 {
        return Err(Error::invalid(
            "--eps must be > 0, --steps and --queries at least 1, --tolerance ≥ 0",
        ));
    }
    let device = args.data.device()?;
    let model = args.model.load(device)?;
    let data = args.data.load(Split::Test, Some(args.limit))?;
    let options = AuditOptions {
        batch_size: args.batch,
        seed: args.seed,
        tolerance: args.tolerance,
        steps: args.steps,
        queries: args.queries,
        ..AuditOptions::new(Threat::of(norm, args.eps))
    };
    let quiet = args.quiet || args.json;
    if !quiet {
        eprintln!(
            "auditing {} ({}) at {} on {} test examples: five checks, each a full attack run",
            model.arch(),
            args.model.model.display(),
            options.threat,
            data.rows()
        );
    }
    let report = audit(&model, &data, &options, &mut |line| {
        if !quiet {
            eprintln!("{line}");
        }
    })?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&report).expect("plain numbers serialise")
        );
    } else {
        println!(
            "gradient-masking audit of {} at {} on {} examples (clean accuracy {:.2}%):",
            args.model.model.display(),
            options.threat,
            report.n,
            100.0 * report.clean_accuracy
        );
        let mut table = Table::new(["check", "result", "measured"]);
        for c in &report.checks {
            table.row([
                c.name.clone(),
                if c.passed { "pass" } else { "FAIL" }.to_string(),
                c.detail.clone(),
            ]);
        }
        print!("{table}");
        println!(
            "{}",
            if report.passed {
                "all checks pass"
            } else {
                "some checks FAIL: the robust accuracy above may be overstated"
            }
        );
    }
    Ok(if report.passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
