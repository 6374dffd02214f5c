//! The command line, end to end.

use std::path::{Path, PathBuf};
use std::process::Command;

fn advgrad(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_advgrad"))
        .args(args)
        .output()
        .expect("the binary runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn last_json(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().expect("some output");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("advgrad-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn have_data() -> bool {
    let ok = advgrad::data::Dataset::load(
        &advgrad::data::default_data_dir(),
        advgrad::data::Split::Test,
    )
    .is_ok();
    if !ok {
        eprintln!("skipping: Fashion-MNIST is not installed");
    }
    ok
}

#[test]
fn gradcheck_json_lists_every_op_and_passes() {
    let (ok, stdout, stderr) = advgrad(&["gradcheck", "--json"]);
    assert!(ok, "{stderr}");
    let v = last_json(&stdout);
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["op"].as_str().unwrap())
        .collect();
    assert_eq!(
        names,
        [
            "matmul",
            "add",
            "sub",
            "mul",
            "scale",
            "relu",
            "sigmoid",
            "tanh",
            "bias_act",
            "linear_act",
            "softmax_cross_entropy",
            "sum",
            "mean",
            "mlp"
        ]
    );
    for o in v.as_array().unwrap() {
        assert_eq!(o["passed"], true, "{o}");
        assert!(o["max_rel_err"].as_f64().unwrap() < 1e-6, "{o}");
        assert!(o["max_abs_err"].is_number());
    }
}

#[test]
fn gradcheck_rejects_an_unknown_op() {
    let (ok, _, stderr) = advgrad(&["gradcheck", "--op", "softmax"]);
    assert!(!ok);
    assert!(stderr.contains("unknown op `softmax`"), "{stderr}");
}

#[test]
fn missing_data_says_how_to_install_it() {
    let (ok, _, stderr) = advgrad(&["eval", "--data", "/nonexistent", "--model", "m.safetensors"]);
    assert!(!ok);
    let (ok2, _, stderr2) = advgrad(&[
        "train",
        "--data",
        "/nonexistent",
        "--epochs",
        "1",
        "--out",
        "/tmp/x.safetensors",
    ]);
    assert!(!ok2);
    assert!(
        stderr2.contains("apt-get install dataset-fashion-mnist"),
        "{stderr2}"
    );
    assert!(
        stderr.contains("m.safetensors") || stderr.contains("apt-get"),
        "{stderr}"
    );
}

#[test]
fn train_eval_grads_round_trip() {
    if !have_data() {
        return;
    }
    let model = temp("m.safetensors");
    let m = model.to_str().unwrap();
    let (ok, stdout, stderr) = advgrad(&[
        "train",
        "--arch",
        "784-32-10",
        "--epochs",
        "1",
        "--limit",
        "2000",
        "--device",
        "cpu",
        "--json",
        "--out",
        m,
    ]);
    assert!(ok, "{stderr}");
    let v = last_json(&stdout);
    for key in [
        "epochs",
        "train_loss",
        "test_accuracy",
        "seconds",
        "examples_per_second",
    ] {
        assert!(v[key].is_number(), "{key} in {v}");
    }
    assert!(v["test_accuracy"].as_f64().unwrap() > 0.5, "{v}");

    let (ok, stdout, stderr) = advgrad(&["eval", "--model", m, "--limit", "500", "--json"]);
    assert!(ok, "{stderr}");
    let e = last_json(&stdout);
    assert_eq!(e["n"], 500);
    assert!(
        e["accuracy"].as_f64().unwrap() > 0.5 && e["loss"].is_number(),
        "{e}"
    );

    let grads = temp("g.safetensors");
    let (ok, stdout, stderr) = advgrad(&[
        "grads",
        "--model",
        m,
        "--limit",
        "64",
        "--out",
        grads.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    assert!(stdout.starts_with("loss "), "{stdout}");
    let bytes = std::fs::read(&grads).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(names, ["0.bias", "0.weight", "2.bias", "2.weight", "input"]);
    assert_eq!(st.tensor("input").unwrap().shape(), [64, 784]);
    assert_eq!(st.tensor("0.weight").unwrap().shape(), [32, 784]);
    assert!(Path::new(&grads).exists());
}

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
