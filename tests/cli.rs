//! The command line, end to end. Tests that need Fashion-MNIST skip with a
//! note when it is not installed, and fail under `CI=true`.

mod sandbox;
mod support;

use std::collections::BTreeMap;
use std::path::Path;

use advgrad::data::Split;
use support::run_advgrad as advgrad;

fn last_json(stdout: &str) -> serde_json::Value {
    let line = stdout.lines().last().expect("some output");
    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// `advgrad train` of a 784-32-10 MLP for one epoch on the first `limit`
/// training examples, on the CPU, saved to `out`; JSON on stdout.
fn train_small_model(out: &str, limit: &str) -> (bool, String, String) {
    advgrad(&[
        "train",
        "--arch",
        "784-32-10",
        "--epochs",
        "1",
        "--limit",
        limit,
        "--device",
        "cpu",
        "--json",
        "--out",
        out,
    ])
}

fn have_data() -> bool {
    support::fashion_mnist(Split::Test).is_some()
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
            "gelu",
            "bias_act",
            "linear_act",
            "softmax_cross_entropy",
            "sum",
            "mean",
            "log_softmax",
            "exp",
            "ln",
            "pick",
            "kl_div",
            "dlr",
            "dlr_targeted",
            "mlp",
            "conv2d",
            "conv2d_same",
            "max_pool2d",
            "avg_pool2d",
            "reshape",
            "cnn"
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
fn gelu_as_a_layer_activation_is_refused_with_the_reason() {
    let (ok, _, stderr) = advgrad(&["tape", "--arch", "4-3-2", "--act", "gelu"]);
    assert!(!ok);
    assert!(stderr.contains("unknown activation `gelu`"), "{stderr}");
    assert!(stderr.contains("needs the input"), "{stderr}");
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
    let dir = sandbox::temp_dir();
    let model = dir.path().join("m.safetensors");
    let m = model.to_str().unwrap();
    let (ok, stdout, stderr) = train_small_model(m, "2000");
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

    let grads = dir.path().join("g.safetensors");
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

/// The f32 values of every tensor of a safetensors file, by name.
fn tensors(path: &Path) -> Vec<(String, Vec<f64>)> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Vec<f64>)> = st
        .tensors()
        .into_iter()
        .map(|(name, view)| {
            let v = view
                .data()
                .chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]) as f64)
                .collect();
            (name, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// `eval`, `grads`, `attack` and `gradcheck` on `--device emu` (the CUDA
/// backend on the SIMT emulator) give the CPU backend's numbers: equal
/// accuracies and attack norms, and losses and gradients within f32
/// tolerance. Gradients are sums of products, so an element that cancels to
/// near zero keeps the rounding of the tensor's larger terms: its scale is
/// at least 1e-2 of the tensor's largest element. (With 1e-3, a weight
/// gradient at 1.08e-3 of its tensor's largest value differed between the
/// backends by 1.3e-4 of itself, 1.4e-7 of the largest, once the CPU
/// summed the first layer's `k = 784` in blocks of 392 instead of 196; it
/// had differed by 5.2e-5 of itself before.)
#[test]
fn the_emulated_device_gives_the_cpu_numbers() {
    if !have_data() {
        return;
    }
    let dir = sandbox::temp_dir();
    let model = dir.path().join("emu.safetensors");
    let m = model.to_str().unwrap();
    let (ok, _, stderr) = train_small_model(m, "1000");
    assert!(ok, "{stderr}");
    let both = |args: &[&str]| {
        ["cpu", "emu"].map(|device| {
            let mut a = args.to_vec();
            a.extend(["--device", device]);
            let (ok, stdout, stderr) = advgrad(&a);
            assert!(ok, "{device}: {stderr}");
            stdout
        })
    };
    let t = support::Tolerance::composite(advgrad::DType::F32);

    let [cpu, emu] = both(&["eval", "--model", m, "--limit", "200", "--json"]);
    let (c, e) = (last_json(&cpu), last_json(&emu));
    assert_eq!(c["accuracy"], e["accuracy"], "eval: {c} vs {e}");
    let loss = |v: &serde_json::Value| v["loss"].as_f64().unwrap();
    support::assert_close(
        "eval loss",
        &[loss(&e)],
        &[loss(&c)],
        support::Scale::Value,
        t,
    );

    let outs = ["grads-cpu.safetensors", "grads-emu.safetensors"].map(|f| dir.path().join(f));
    for (out, device) in outs.iter().zip(["cpu", "emu"]) {
        let a = [
            "grads", "--model", m, "--limit", "32", "--device", device, "--out",
        ];
        let (ok, _, stderr) = advgrad(&[&a[..], &[out.to_str().unwrap()]].concat());
        assert!(ok, "{device}: {stderr}");
    }
    for ((name, c), (_, e)) in tensors(&outs[0]).into_iter().zip(tensors(&outs[1])) {
        let largest = c.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let scale: Vec<f64> = c.iter().map(|v| v.abs().max(1e-2 * largest)).collect();
        let what = format!("grads {name}");
        support::assert_close(&what, &e, &c, support::Scale::Terms(&scale), t);
    }

    for attack in ["fgsm", "pgd"] {
        let [cpu, emu] = both(&[
            "attack", "--model", m, "--attack", attack, "--eps", "0.05,0.1", "--steps", "3",
            "--limit", "64", "--json",
        ]);
        let (c, e) = (last_json(&cpu), last_json(&emu));
        assert_eq!(c["clean_accuracy"], e["clean_accuracy"], "{attack}");
        for (rc, re) in c["results"]
            .as_array()
            .unwrap()
            .iter()
            .zip(e["results"].as_array().unwrap())
        {
            for key in ["robust_accuracy", "success_rate"] {
                assert_eq!(rc[key], re[key], "{attack} {key}: {rc} vs {re}");
            }
            for key in ["max_linf", "mean_linf", "max_l2", "mean_l2"] {
                let (x, y) = (rc[key].as_f64().unwrap(), re[key].as_f64().unwrap());
                let what = format!("{attack} {key}");
                support::assert_close(&what, &[y], &[x], support::Scale::Value, t);
            }
        }
    }

    // Every gradient check on both devices, at the full (odd, non-square)
    // sizes.
    let [cpu, emu] = both(&["gradcheck", "--json"]);
    let (cpu, emu) = (last_json(&cpu), last_json(&emu));
    let by_op = |rows: &serde_json::Value| -> BTreeMap<String, serde_json::Value> {
        rows.as_array()
            .unwrap()
            .iter()
            .map(|r| (r["op"].as_str().unwrap().to_string(), r.clone()))
            .collect()
    };
    let (cpu, emu) = (by_op(&cpu), by_op(&emu));
    let names: Vec<&str> = advgrad::gradcheck::suite::CASE_NAMES.to_vec();
    assert_eq!(cpu.keys().count(), names.len(), "{cpu:?}");
    assert_eq!(emu.keys().count(), names.len(), "{emu:?}");
    for op in names {
        let (c, e) = (&cpu[op], &emu[op]);
        assert_eq!(c["passed"], true, "cpu {op}: {c}");
        // The robust-loss ops may have no CUDA kernel yet: listed as not
        // run, never as passed.
        if e["passed"].is_null() {
            assert!(!CUDA_GRADCHECK_OPS.contains(&op), "emu {op}: {e}");
            assert!(
                e["not_run"].as_str().unwrap().contains("no kernel on emu"),
                "{e}"
            );
            continue;
        }
        assert_eq!(e["passed"], true, "emu {op}: {e}");
        // As close as the CPU's own check of the same case: the two differ
        // only in the order of their sums, which moves the finite
        // differences of the smallest gradient entries (`mlp`: 9.0e-7 on
        // the CPU, 3.0e-6 on the emulator).
        let rel = |r: &serde_json::Value| r["max_rel_err"].as_f64().unwrap();
        assert!(
            rel(e) < 1e-6_f64.max(10.0 * rel(c)),
            "emu {op}: {e}, cpu: {c}"
        );
    }
}

/// The gradient checks of every op the CUDA backend runs: each must pass
/// on `--device emu`.
const CUDA_GRADCHECK_OPS: [&str; 21] = [
    "matmul",
    "add",
    "sub",
    "mul",
    "scale",
    "relu",
    "sigmoid",
    "tanh",
    "gelu",
    "bias_act",
    "linear_act",
    "softmax_cross_entropy",
    "sum",
    "mean",
    "mlp",
    "conv2d",
    "conv2d_same",
    "max_pool2d",
    "avg_pool2d",
    "reshape",
    "cnn",
];
