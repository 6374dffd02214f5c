//! `advgrad gradcheck`: the built-in gradient checks as a table or JSON.

use std::process::ExitCode;

use advgrad::gradcheck::suite::{self, CaseSize, CASE_NAMES};
use advgrad::{Device, Error, GradcheckOptions, Precision, Result};

/// Options of `advgrad gradcheck`.
#[derive(clap::Args, Debug)]
pub struct Args {
    /// One case of the built-in suite (an op such as matmul, gelu,
    /// conv2d or max_pool2d, or the whole mlp), or `all`; an unknown name
    /// is answered with the full list.
    #[arg(long, default_value = "all")]
    op: String,
    /// Print one JSON array instead of a table.
    #[arg(long)]
    json: bool,
    /// Relative finite-difference step.
    #[arg(long, default_value_t = GradcheckOptions::default().eps)]
    eps: f64,
    /// Absolute tolerance [default: 1e-8; with --precision, 16·u of it].
    #[arg(long)]
    atol: Option<f64>,
    /// Relative tolerance [default: 1e-6; with --precision, 16·u of it].
    #[arg(long)]
    rtol: Option<f64>,
    /// Evaluate the gradient in f32 with its matrix products in f32, bf16
    /// or f16 and compare it with the f64 reference, at that precision's
    /// tolerance (the CPU only).
    #[arg(long)]
    precision: Option<Precision>,
    /// The device the checks run on: cpu, cuda, cuda:N, or emu (all in f64).
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Input sizes: full (odd, non-square) on every device, or small (every
    /// extent halved, about a quarter of the finite differences) for a
    /// quicker run.
    #[arg(long, default_value = "full", value_parser = ["full", "small"])]
    size: String,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let names: Vec<&str> = if args.op == "all" {
        CASE_NAMES.to_vec()
    } else if CASE_NAMES.contains(&args.op.as_str()) {
        vec![args.op.as_str()]
    } else {
        return Err(Error::invalid(format!(
            "unknown op `{}`: expected one of {} or all",
            args.op,
            CASE_NAMES.join(", ")
        )));
    };
    let device = Device::resolve(&args.device)?;
    let defaults = args
        .precision
        .map_or_else(GradcheckOptions::default, GradcheckOptions::for_precision);
    let options = GradcheckOptions {
        eps: args.eps,
        atol: args.atol.unwrap_or(defaults.atol),
        rtol: args.rtol.unwrap_or(defaults.rtol),
    };
    let size = match args.size.as_str() {
        "small" => CaseSize::Small,
        _ => CaseSize::Full,
    };
    let mut rows = Vec::new();
    // With `all`, the ops this device has no kernel for are listed, not
    // checked (and not counted as passed); one op asked for by name fails.
    let mut no_kernel = Vec::new();
    for name in &names {
        let case = suite::case_sized(name, size)?
            .expect("names come from CASE_NAMES")
            .to_device(device)?;
        let run = match args.precision {
            None => case.run(&options),
            Some(p) => case.run_in(&options, p),
        };
        match run {
            Ok(report) => rows.push((*name, report)),
            Err(e) if names.len() > 1 && lacks_kernel(&e) => no_kernel.push(*name),
            Err(e) => return Err(e),
        }
    }
    let all_passed = rows.iter().all(|(_, r)| r.passed());
    if args.json {
        let checked = rows.iter().map(|(name, r)| {
            serde_json::json!({
                "op": name,
                "max_abs_err": r.max_abs_err(),
                "max_rel_err": r.max_rel_err(),
                "passed": r.passed(),
            })
        });
        let unchecked = no_kernel.iter().map(|name| {
            serde_json::json!({
                "op": name,
                "passed": null,
                "not_run": format!("no kernel on {device}"),
            })
        });
        let json: Vec<_> = checked.chain(unchecked).collect();
        println!("{}", serde_json::Value::Array(json));
    } else {
        if let Some(p) = args.precision {
            println!("gradients in f32 with {p} products against the f64 reference");
        }
        println!(
            "{:<22} {:>7} {:>12} {:>12}  result   (eps {:e}, atol {:e}, rtol {:e}, {size:?} sizes, {device})",
            "op", "inputs", "max abs err", "max rel err", options.eps, options.atol, options.rtol
        );
        for (name, r) in &rows {
            println!(
                "{:<22} {:>7} {:>12.3e} {:>12.3e}  {}",
                name,
                r.inputs.len(),
                r.max_abs_err(),
                r.max_rel_err(),
                if r.passed() { "ok" } else { "FAIL" }
            );
        }
        if !no_kernel.is_empty() {
            println!(
                "\nnot run, no kernel on {device} yet: {}",
                no_kernel.join(", ")
            );
        }
        for (name, r) in rows.iter().filter(|(_, r)| !r.passed()) {
            println!("\n{name}:\n{r}");
        }
    }
    Ok(if all_passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// Whether `e` says that the device has no kernel for an op (the CUDA
/// backend's robust-loss ops, until it has them).
fn lacks_kernel(e: &Error) -> bool {
    matches!(e, Error::InvalidArgument(m) if m.contains("is not implemented on this device"))
}
