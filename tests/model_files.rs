//! Model files: PyTorch-layout safetensors in and out, and clear errors.

mod sandbox;

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use advgrad::nn::{load_model, save_model, save_tensors, Activation, Model};
use advgrad::{DType, Tensor};
use safetensors::SafeTensors;

fn fixture(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// A path named `name` in a fresh temporary folder that is removed, with
/// whatever was written there, when the value is dropped.
struct TempFile {
    _dir: tempfile::TempDir,
    path: PathBuf,
}

impl std::ops::Deref for TempFile {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for TempFile {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

fn temp(name: &str) -> TempFile {
    let dir = sandbox::temp_dir();
    let path = dir.path().join(name);
    TempFile { _dir: dir, path }
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
    let model = Model::new("7-5-4-3", Activation::Tanh, 3).unwrap();
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
    let model = Model::new("6-3", Activation::Relu, 0).unwrap();
    let err = model
        .logits(&Tensor::zeros([2, 5], DType::F32))
        .unwrap_err()
        .to_string();
    assert!(err.contains("expects inputs [N, 6]"), "{err}");
    assert!(Model::new("784-x-10", Activation::Relu, 0).is_err());
    assert!(Model::new("784", Activation::Relu, 0).is_err());
}

/// Writes `tensors` (name, dtype, shape, little-endian bytes) as a
/// safetensors file with ReLU metadata.
fn write_raw(path: &Path, tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(name, dtype, shape, bytes)| {
            let view = safetensors::tensor::TensorView::new(*dtype, shape.clone(), bytes).unwrap();
            (name.to_string(), view)
        })
        .collect();
    let meta = HashMap::from([("activation".to_string(), "relu".to_string())]);
    std::fs::write(path, safetensors::serialize(views, &Some(meta)).unwrap()).unwrap();
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn non_finite_weights_are_refused_with_the_tensor_and_counts_named() {
    use safetensors::Dtype::F32;
    let path = temp("nonfinite.safetensors");
    let mut w = vec![0.5f32; 12];
    w[3] = f32::NAN;
    w[4] = f32::NAN;
    w[7] = f32::NEG_INFINITY;
    write_raw(
        &path,
        &[
            ("0.weight", F32, vec![3, 4], f32_bytes(&w)),
            ("0.bias", F32, vec![3], f32_bytes(&[0.0; 3])),
        ],
    );
    let err = load_model(&path, None).unwrap_err().to_string();
    assert!(
        err.contains("nonfinite.safetensors")
            && err.contains("0.weight")
            && err.contains("2 NaN and 1 infinite of 12 values"),
        "{err}"
    );

    write_raw(
        &path,
        &[
            ("0.weight", F32, vec![3, 4], f32_bytes(&[0.1; 12])),
            (
                "0.bias",
                F32,
                vec![3],
                f32_bytes(&[0.0, f32::INFINITY, 0.0]),
            ),
        ],
    );
    let err = load_model(&path, None).unwrap_err().to_string();
    assert!(
        err.contains("0.bias") && err.contains("0 NaN and 1 infinite of 3 values"),
        "{err}"
    );
}

#[test]
fn integer_tensors_are_refused_with_their_dtype_named() {
    use safetensors::Dtype::{F32, I64};
    let path = temp("integer.safetensors");
    let ints: Vec<u8> = (0..12i64).flat_map(|x| x.to_le_bytes()).collect();
    write_raw(
        &path,
        &[
            ("0.weight", I64, vec![3, 4], ints),
            ("0.bias", F32, vec![3], f32_bytes(&[0.0; 3])),
        ],
    );
    let err = load_model(&path, None).unwrap_err().to_string();
    assert!(
        err.contains("integer.safetensors") && err.contains("0.weight") && err.contains("I64"),
        "{err}"
    );
}

#[test]
fn half_precision_files_load_as_f32() {
    use safetensors::Dtype::{BF16, F16};
    let w: Vec<f32> = (0..12).map(|i| i as f32 / 8.0 - 0.75).collect();
    let b = [0.25f32, -0.5, 1.0];
    for dtype in [F16, BF16] {
        let enc = |v: &[f32]| -> Vec<u8> {
            v.iter()
                .flat_map(|&x| match dtype {
                    F16 => half::f16::from_f32(x).to_le_bytes(),
                    _ => half::bf16::from_f32(x).to_le_bytes(),
                })
                .collect()
        };
        let path = temp("half.safetensors");
        write_raw(
            &path,
            &[
                ("0.weight", dtype, vec![3, 4], enc(&w)),
                ("0.bias", dtype, vec![3], enc(&b)),
            ],
        );
        let model = load_model(&path, None).unwrap();
        // Every value is exact in both half types.
        assert_eq!(model.params()[0].to_vec::<f32>().unwrap(), w, "{dtype:?}");
        assert_eq!(model.params()[1].to_vec::<f32>().unwrap(), b, "{dtype:?}");
    }
}
