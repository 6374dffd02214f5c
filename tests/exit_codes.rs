//! Exit codes and messages: usage errors exit 2, runtime errors exit 1 with
//! one `error:` line and no Rust `Debug` dump, over a list of bad options.

use std::path::Path;

mod sandbox;

/// Runs `advgrad ARGS` with `{data}`, `{model}`, `{out}` and `{ckpt}` in
/// the arguments replaced by paths in `home`.
fn run_in(home: &Path, args: &[&str]) -> sandbox::Run {
    let sub = |a: &str| {
        a.replace("{data}", home.join("data").to_str().unwrap())
            .replace("{model}", home.join("model.safetensors").to_str().unwrap())
            .replace("{out}", home.join("out").to_str().unwrap())
            .replace(
                "{ckpt}",
                home.join("out.ckpt.safetensors").to_str().unwrap(),
            )
    };
    sandbox::Run::of(sandbox::advgrad().args(args.iter().map(|a| sub(a))))
}

#[test]
fn usage_errors_exit_2_and_runtime_errors_exit_1_without_debug_dumps() {
    let home = sandbox::temp_dir();
    sandbox::write_synthetic_data(&home.path().join("data"), 300, 100, 28);
    sandbox::write_model(&home.path().join("model.safetensors"), "784-16-10");
    let d = ["--data", "{data}", "--device", "cpu"];
    let with = |args: &[&'static str]| -> Vec<&'static str> {
        let mut v = args.to_vec();
        v.extend(d);
        v
    };
    let usage: Vec<Vec<&str>> = vec![
        vec![],
        vec!["train", "--bogus"],
        vec!["train", "--epochs", "many", "--out", "{out}"],
        vec!["eval"],
        vec!["attack", "--model", "{model}", "--attack", "fgsm"],
        vec!["train", "--checkpoint-every", "5", "--out", "{out}"],
        vec![
            "train",
            "--checkpoint",
            "{ckpt}",
            "--checkpoint-every",
            "0",
            "--out",
            "{out}",
        ],
    ];
    for args in usage {
        let run = run_in(home.path(), &args);
        assert_eq!(run.code, Some(2), "{args:?}: {}", run.stderr);
    }
    let runtime: Vec<Vec<&str>> = vec![
        with(&["train", "--lr", "nan", "--out", "{out}"]),
        with(&["train", "--lr=-1", "--out", "{out}"]),
        with(&[
            "train",
            "--momentum",
            "2",
            "--optim",
            "momentum",
            "--out",
            "{out}",
        ]),
        with(&["train", "--weight-decay", "inf", "--out", "{out}"]),
        with(&["train", "--epochs", "0", "--out", "{out}"]),
        with(&["train", "--batch", "0", "--out", "{out}"]),
        with(&["train", "--limit", "0", "--out", "{out}"]),
        with(&["train", "--arch", "784--10", "--out", "{out}"]),
        with(&["train", "--arch", "10-10", "--out", "{out}"]),
        with(&["train", "--schedule", "step:0:1", "--out", "{out}"]),
        with(&["train", "--adv", "pgd", "--eps", "nan", "--out", "{out}"]),
        with(&[
            "train",
            "--adv",
            "pgd",
            "--adv-alpha",
            "nan",
            "--out",
            "{out}",
        ]),
        with(&["train", "--resume", "{model}", "--out", "{out}"]),
        with(&["train", "--resume", "{data}", "--out", "{out}"]),
        with(&["train", "--epochs", "1", "--out", "{data}/no/such/folder/m"]),
        with(&["eval", "--model", "{model}", "--split", "dev"]),
        with(&["eval", "--model", "{model}", "--act", "gelu"]),
        with(&["eval", "--model", "{data}"]),
        with(&[
            "grads", "--model", "{model}", "--limit", "0", "--out", "{out}",
        ]),
        with(&[
            "attack", "--model", "{model}", "--attack", "pgd", "--eps", "nan",
        ]),
        with(&[
            "attack", "--model", "{model}", "--attack", "pgd", "--eps", "inf",
        ]),
        with(&[
            "attack", "--model", "{model}", "--attack", "fgsm", "--eps", "0.1", "--batch", "0",
        ]),
        with(&[
            "attack", "--model", "{model}", "--attack", "nope", "--eps", "0.1",
        ]),
        with(&["demo", "--eps", "nan", "--out-dir", "{out}"]),
        vec!["gradcheck", "--eps", "nan"],
        vec!["gradcheck", "--atol=-1"],
    ];
    for args in runtime {
        let run = run_in(home.path(), &args);
        assert_eq!(run.code, Some(1), "{args:?}: {}", run.stderr);
        let line = run.error_line().unwrap_or_default();
        assert!(
            !line.is_empty(),
            "{args:?}: no error line in {}",
            run.stderr
        );
        for dump in [" { ", "Some(", "None", "Config", "Options"] {
            assert!(!line.contains(dump), "{args:?}: a Debug dump: {line}");
        }
    }
}
