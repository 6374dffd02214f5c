//! Model files: PyTorch-layout safetensors in and out, and clear errors.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use advgrad::nn::{load_model, save_model, save_tensors, Activation, Mlp};
use advgrad::{DType, Tensor};
use safetensors::SafeTensors;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn temp(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("advgrad-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir.join(name)
}

fn read_tensor(path: &Path, name: &str) -> Tensor {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let view = st.tensor(name).unwrap();
    let v: Vec<f32> = view
        .data()
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    Tensor::from_vec(v, view.shape()).unwrap()
}

#[test]
fn a_pytorch_state_dict_loads_and_computes_the_same_logits() {
    let path = fixture("torch_mlp.safetensors");
    let err = load_model(&path, None).unwrap_err().to_string();
    assert!(err.contains("--act"), "{err}");
    let model = load_model(&path, Some(Activation::Relu)).unwrap();
    assert_eq!(model.arch(), "5-4-3");
    let expected = fixture("torch_mlp_expected.safetensors");
    let x = read_tensor(&expected, "x");
    let want = read_tensor(&expected, "logits").to_vec::<f32>().unwrap();
    let got = model.logits(&x).unwrap().to_vec::<f32>().unwrap();
    for (g, w) in got.iter().zip(&want) {
        assert!((g - w).abs() < 1e-5, "{got:?} vs {want:?}");
    }
}

#[test]
fn save_then_load_round_trips_with_pytorch_names_and_metadata() {
    let model = Mlp::new("7-5-4-3", Activation::Tanh, 3).unwrap();
    let path = temp("roundtrip.safetensors");
    save_model(&model, &path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let (_, meta) = SafeTensors::read_metadata(&bytes).unwrap();
    let meta = meta.metadata().clone().unwrap();
    assert_eq!(meta["arch"], "7-5-4-3");
    assert_eq!(meta["activation"], "tanh");
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut names = st.names();
    names.sort();
    assert_eq!(
        names,
        ["0.bias", "0.weight", "2.bias", "2.weight", "4.bias", "4.weight"]
    );
    assert_eq!(st.tensor("0.weight").unwrap().shape(), [5, 7]);

    let loaded = load_model(&path, None).unwrap();
    assert_eq!(loaded.activation, Activation::Tanh);
    for (a, b) in model.params().iter().zip(loaded.params()) {
        assert_eq!(a.to_vec::<f32>().unwrap(), b.to_vec::<f32>().unwrap());
    }
}

#[test]
fn bad_model_files_give_clear_errors() {
    let missing = load_model(Path::new("/nonexistent/m.safetensors"), None).unwrap_err();
    assert!(
        missing.to_string().contains("/nonexistent/m.safetensors"),
        "{missing}"
    );

    let corrupt = temp("corrupt.safetensors");
    std::fs::write(&corrupt, b"not a safetensors file at all").unwrap();
    let err = load_model(&corrupt, None).unwrap_err().to_string();
    assert!(
        err.contains("corrupt.safetensors") && err.contains("safetensors"),
        "{err}"
    );

    let meta = || HashMap::from([("activation".to_string(), "relu".to_string())]);
    let no_bias = temp("nobias.safetensors");
    save_tensors(
        &no_bias,
        &[("0.weight".into(), Tensor::zeros([3, 4], DType::F32))],
        meta(),
    )
    .unwrap();
    let err = load_model(&no_bias, None).unwrap_err().to_string();
    assert!(err.contains("missing key 0.bias"), "{err}");

    let bad_shape = temp("badshape.safetensors");
    save_tensors(
        &bad_shape,
        &[
            ("0.weight".into(), Tensor::zeros([3, 4], DType::F32)),
            ("0.bias".into(), Tensor::zeros([3], DType::F32)),
            ("2.weight".into(), Tensor::zeros([2, 5], DType::F32)),
            ("2.bias".into(), Tensor::zeros([2], DType::F32)),
        ],
        meta(),
    )
    .unwrap();
    let err = load_model(&bad_shape, None).unwrap_err().to_string();
    assert!(
        err.contains("2.weight takes 5 inputs but the previous layer gives 3"),
        "{err}"
    );

    let wrong_bias = temp("wrongbias.safetensors");
    save_tensors(
        &wrong_bias,
        &[
            ("0.weight".into(), Tensor::zeros([3, 4], DType::F32)),
            ("0.bias".into(), Tensor::zeros([4], DType::F32)),
        ],
        meta(),
    )
    .unwrap();
    let err = load_model(&wrong_bias, None).unwrap_err().to_string();
    assert!(err.contains("0.bias must be [3]"), "{err}");
}

#[test]
fn a_model_rejects_inputs_of_the_wrong_width() {
    let model = Mlp::new("6-3", Activation::Relu, 0).unwrap();
    let err = model
        .logits(&Tensor::zeros([2, 5], DType::F32))
        .unwrap_err()
        .to_string();
    assert!(err.contains("expects inputs [N, 6]"), "{err}");
    assert!(Mlp::new("784-x-10", Activation::Relu, 0).is_err());
    assert!(Mlp::new("784", Activation::Relu, 0).is_err());
}
