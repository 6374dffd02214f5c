//! Convolutional models: the `nn.Sequential` layout, model files with and
//! without their architecture, image-shaped inputs and gradients, training,
//! and the command line on a CNN.

mod support;

use std::collections::HashMap;
use std::path::PathBuf;

use advgrad::data::Split;
use advgrad::nn::{load_model, load_model_arch, save_model, save_tensors, Activation, Model};
use advgrad::optim::{OptimConfig, Optimizer, OptimizerKind};
use advgrad::{DType, Tape, Tensor};
use support::run_advgrad as advgrad;

const SMALL_CNN: &str = "1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10";

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("advgrad-cnn-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

#[test]
fn the_small_cnn_has_pytorchs_sequential_keys_and_shapes() {
    let model = Model::new(SMALL_CNN, Activation::Relu, 0).unwrap();
    let shapes: Vec<(String, Vec<usize>)> = model
        .param_names()
        .into_iter()
        .zip(model.params())
        .map(|(n, p)| (n, p.dims().to_vec()))
        .collect();
    let want: Vec<(String, Vec<usize>)> = [
        ("0.weight", vec![16, 1, 5, 5]),
        ("0.bias", vec![16]),
        ("3.weight", vec![32, 16, 5, 5]),
        ("3.bias", vec![32]),
        ("7.weight", vec![128, 1568]),
        ("7.bias", vec![128]),
        ("9.weight", vec![10, 128]),
        ("9.bias", vec![10]),
    ]
    .into_iter()
    .map(|(n, d)| (n.to_string(), d))
    .collect();
    assert_eq!(shapes, want);
    assert_eq!(model.arch(), SMALL_CNN);
    assert_eq!((model.input_size(), model.classes()), (784, 10));
    // An MLP keeps its names.
    let mlp = Model::new("784-256-256-10", Activation::Relu, 0).unwrap();
    assert_eq!(
        mlp.param_names(),
        ["0.weight", "0.bias", "2.weight", "2.bias", "4.weight", "4.bias"]
    );
}

fn images(n: usize, seed: u64) -> Tensor {
    Tensor::rand_uniform([n, 1, 28, 28], 0.0, 1.0, seed, DType::F32)
}

#[test]
fn flat_and_image_inputs_give_the_same_logits_and_gradient_shapes() {
    let model = Model::new("1x28x28-c4k3s2p1-ap2-c6k3-mp2-12-10", Activation::Tanh, 3).unwrap();
    let x = images(5, 1);
    let flat = x.reshape([5, 784]).unwrap();
    let a = model.logits(&x).unwrap().to_vec::<f32>().unwrap();
    let b = model.logits(&flat).unwrap().to_vec::<f32>().unwrap();
    assert_eq!(a, b);
    let y = Tensor::from_vec(vec![0u32, 3, 9, 2, 2], [5]).unwrap();
    let (_, g) = model.input_gradient(&x, &y).unwrap();
    assert_eq!(g.dims(), [5, 1, 28, 28]);
    let (_, g) = model.input_gradient(&flat, &y).unwrap();
    assert_eq!(g.dims(), [5, 784]);
    let wrong = Tensor::zeros([5, 1, 27, 28], DType::F32);
    let err = model.logits(&wrong).unwrap_err().to_string();
    assert!(err.contains("[N, 1, 28, 28] or [N, 784]"), "{err}");
}

#[test]
fn model_files_round_trip_and_a_state_dict_loads_with_its_arch() {
    let model = Model::new(SMALL_CNN, Activation::Relu, 5).unwrap();
    let x = images(3, 2);
    let want = model.logits(&x).unwrap().to_vec::<f32>().unwrap();
    let path = temp("cnn.safetensors");
    save_model(&model, &path).unwrap();
    let back = load_model(&path, None).unwrap();
    assert_eq!(back.arch(), SMALL_CNN);
    assert_eq!(back.logits(&x).unwrap().to_vec::<f32>().unwrap(), want);

    // A state dict as PyTorch saves it: the tensors, no metadata.
    let bare = temp("state_dict.safetensors");
    let tensors: Vec<(String, Tensor)> = model
        .param_names()
        .into_iter()
        .zip(model.params().into_iter().cloned())
        .collect();
    save_tensors(&bare, &tensors, HashMap::new()).unwrap();
    let err = load_model(&bare, Some(Activation::Relu))
        .unwrap_err()
        .to_string();
    assert!(err.contains("--arch"), "{err}");
    let loaded = load_model_arch(&bare, Some(Activation::Relu), Some(SMALL_CNN)).unwrap();
    assert_eq!(loaded.logits(&x).unwrap().to_vec::<f32>().unwrap(), want);

    // Another architecture names the tensor that does not fit it.
    let err = load_model_arch(
        &bare,
        Some(Activation::Relu),
        Some("1x28x28-c16k3p1-mp2-c32k5p2-mp2-128-10"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("0.weight must be [16, 1, 3, 3]"), "{err}");
    let err = load_model_arch(
        &bare,
        Some(Activation::Relu),
        Some("1x28x28-c16k5p2-mp2-c32k5p2-mp2-10"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("7.weight must be [10, 1568]"), "{err}");
    let mut extra = tensors.clone();
    extra.push(("11.weight".into(), Tensor::zeros([2], DType::F32)));
    save_tensors(&bare, &extra, HashMap::new()).unwrap();
    let err = load_model_arch(&bare, Some(Activation::Relu), Some(SMALL_CNN))
        .unwrap_err()
        .to_string();
    assert!(err.contains("unexpected key 11.weight"), "{err}");
}

#[test]
fn adam_steps_lower_the_loss_of_a_small_cnn() {
    let mut model = Model::new("1x12x10-c6k3p1-mp2-c8k3s2-16-4", Activation::Relu, 1).unwrap();
    let x = Tensor::rand_uniform([24, 1, 12, 10], 0.0, 1.0, 4, DType::F32);
    let y = Tensor::from_vec((0..24u32).map(|i| i % 4).collect::<Vec<_>>(), [24]).unwrap();
    let mut opt =
        Optimizer::new(OptimConfig::new(OptimizerKind::Adam, 1e-2), &model.params()).unwrap();
    let mut tape = Tape::new();
    let first = model.input_gradient(&x, &y).unwrap().0;
    for _ in 0..30 {
        model
            .optimizer_step(&mut tape, x.clone(), &y, &mut opt, 1e-2)
            .unwrap();
    }
    let last = model.input_gradient(&x, &y).unwrap().0;
    assert!(last < 0.5 * first, "loss {first} → {last}");
}

#[test]
fn train_eval_grads_and_attack_a_cnn_from_the_command_line() {
    if support::fashion_mnist(Split::Test).is_none() {
        return;
    }
    let model = temp("cli-cnn.safetensors");
    let m = model.to_str().unwrap();
    let arch = "1x28x28-c8k5s2p2-mp2-32-10";
    let (ok, stdout, stderr) = advgrad(&[
        "train", "--arch", arch, "--epochs", "1", "--limit", "3000", "--optim", "adam", "--lr",
        "0.003", "--json", "--quiet", "--out", m,
    ]);
    assert!(ok, "{stderr}");
    let last = stdout.lines().last().unwrap();
    let v: serde_json::Value = serde_json::from_str(last).unwrap();
    assert!(v["test_accuracy"].as_f64().unwrap() > 0.6, "{v}");

    let (ok, stdout, stderr) = advgrad(&["eval", "--model", m, "--limit", "300", "--json"]);
    assert!(ok, "{stderr}");
    let e: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    assert!(e["accuracy"].as_f64().unwrap() > 0.6, "{e}");

    let grads = temp("cli-cnn-grads.safetensors");
    let (ok, _, stderr) = advgrad(&[
        "grads",
        "--model",
        m,
        "--limit",
        "8",
        "--out",
        grads.to_str().unwrap(),
    ]);
    assert!(ok, "{stderr}");
    let bytes = std::fs::read(&grads).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    assert_eq!(st.tensor("input").unwrap().shape(), [8, 1, 28, 28]);
    assert_eq!(st.tensor("0.weight").unwrap().shape(), [8, 1, 5, 5]);
    assert_eq!(st.tensor("4.weight").unwrap().shape(), [32, 392]);

    let (ok, stdout, stderr) = advgrad(&[
        "attack", "--model", m, "--attack", "pgd", "--eps", "0,0.1", "--limit", "200", "--json",
    ]);
    assert!(ok, "{stderr}");
    let v: serde_json::Value = serde_json::from_str(stdout.lines().last().unwrap()).unwrap();
    let rows = v["results"].as_array().unwrap();
    let clean = rows[0]["robust_accuracy"].as_f64().unwrap();
    let robust = rows[1]["robust_accuracy"].as_f64().unwrap();
    assert!(clean > 0.6 && robust < clean - 0.2, "{v}");
    assert!(rows[1]["max_linf"].as_f64().unwrap() <= 0.1 + 1e-6, "{v}");
}
