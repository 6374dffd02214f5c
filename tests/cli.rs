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
