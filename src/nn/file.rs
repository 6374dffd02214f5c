//! Model files: safetensors in the layout of a PyTorch `nn.Sequential` of
//! `Linear` and activation layers.
//!
//! Keys `0.weight` (`[out, in]`), `0.bias`, `2.weight`, `2.bias`, … (the
//! activations take the odd indices), f32 (or F16 or BF16, see
//! [`save_model_as`]), with metadata
//! `{"arch": "784-256-256-10", "activation": "relu", "dtype": "f32"}`. A state dict saved by
//! `safetensors.torch.save_file(model.state_dict(), path)` loads: the
//! architecture comes from the shapes, the activation from the metadata or
//! the caller. Parameters stored as F32, F64, F16 or BF16 load (as f32);
//! integer tensors and NaN or infinite values are refused with the tensor
//! named.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};

use crate::atomic_file::write_bytes_atomic;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

use super::arch::{parse_arch, Arch, Input};
use super::conv::Conv2d;
use super::linear::Linear;
use super::model::{Activation, Layer, LayerSizes, Model};

/// One tensor as a safetensors file stores it: a name, a dtype, a shape and
/// the little-endian bytes.
#[derive(Clone, Debug)]
pub struct RawTensor {
    /// The key.
    pub name: String,
    /// The element type.
    pub dtype: Dtype,
    /// The dimensions.
    pub shape: Vec<usize>,
    /// `shape`'s elements, little-endian.
    pub bytes: Vec<u8>,
}

impl RawTensor {
    /// `t` (any device) in its own type if that is f32, f64, f16 or bf16,
    /// else as f32.
    pub fn from_tensor(name: impl Into<String>, t: &Tensor) -> Result<RawTensor> {
        let (dtype, bytes) = match t.dtype() {
            DType::F64 => (Dtype::F64, le_bytes(&t.to_vec::<f64>()?, f64::to_le_bytes)),
            DType::F16 => (
                Dtype::F16,
                le_bytes(&t.to_vec::<half::f16>()?, half::f16::to_le_bytes),
            ),
            DType::BF16 => (
                Dtype::BF16,
                le_bytes(&t.to_vec::<half::bf16>()?, half::bf16::to_le_bytes),
            ),
            _ => (
                Dtype::F32,
                le_bytes(&t.to_dtype(DType::F32)?.to_vec::<f32>()?, f32::to_le_bytes),
            ),
        };
        Ok(RawTensor {
            name: name.into(),
            dtype,
            shape: t.dims().to_vec(),
            bytes,
        })
    }
}

/// The little-endian bytes of `values`.
pub fn le_bytes<T: Copy, const N: usize>(values: &[T], to_le: fn(T) -> [u8; N]) -> Vec<u8> {
    values.iter().flat_map(|&v| to_le(v)).collect()
}

/// Writes `tensors` to a safetensors file with `metadata`, atomically (see
/// [`crate::atomic_file`]): an existing file at `path` is replaced only by
/// a complete new one.
///
/// # Errors
/// [`Error::File`] if a tensor's bytes do not fit its shape and dtype;
/// [`Error::Io`] if the file cannot be written.
pub fn write_safetensors(
    path: &Path,
    tensors: &[RawTensor],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let views = tensors
        .iter()
        .map(|t| {
            TensorView::new(t.dtype, t.shape.clone(), &t.bytes)
                .map(|v| (t.name.clone(), v))
                .map_err(|e| Error::file(path, format!("tensor {}: {e}", t.name)))
        })
        .collect::<Result<Vec<_>>>()?;
    let bytes = safetensors::serialize(views, &Some(metadata))
        .map_err(|e| Error::file(path, format!("cannot write safetensors: {e}")))?;
    write_bytes_atomic(path, &bytes)
}

/// Writes named tensors (any device) as f32 to a safetensors file with
/// `metadata`, atomically (see [`write_safetensors`]).
pub fn save_tensors(
    path: &Path,
    tensors: &[(String, Tensor)],
    metadata: HashMap<String, String>,
) -> Result<()> {
    let raw = tensors
        .iter()
        .map(|(name, t)| RawTensor::from_tensor(name.clone(), &t.to_dtype(DType::F32)?))
        .collect::<Result<Vec<_>>>()?;
    write_safetensors(path, &raw, metadata)
}

/// Saves a model: f32 parameters under their PyTorch names, with its
/// architecture and activation as metadata.
pub fn save_model(model: &Model, path: &Path) -> Result<()> {
    save_model_as(model, path, DType::F32)
}

/// Saves a model with its parameters stored as `dtype` (f32, f16 or bf16;
/// each value rounded to nearest even), which the metadata's `"dtype"`
/// names. Half the size in f16 or bf16; [`load_model`] reads every one
/// back as f32.
///
/// # Errors
/// [`Error::InvalidArgument`] for another dtype, or for a parameter beyond
/// the range of `dtype` (f16 ends at 65504), named; as [`write_safetensors`].
pub fn save_model_as(model: &Model, path: &Path, dtype: DType) -> Result<()> {
    if !matches!(dtype, DType::F32 | DType::F16 | DType::BF16) {
        return Err(Error::invalid(format!(
            "a model is saved as f32, f16 or bf16, not {dtype}"
        )));
    }
    let mut raw = Vec::new();
    for (name, p) in model.param_names().into_iter().zip(model.params()) {
        let stored = p.to_dtype(DType::F32)?.to_dtype(dtype)?;
        if let Some((i, v)) = stored.first_outside(f64::MIN, f64::MAX)? {
            let original = p.to_dtype(DType::F64)?.to_f64_vec()?[i];
            return Err(Error::invalid(format!(
                "cannot save {name} as {dtype}: element {i} ({original}) becomes {v}; \
                 save as bf16 or f32"
            )));
        }
        raw.push(RawTensor::from_tensor(name, &stored)?);
    }
    let metadata = HashMap::from([
        ("dtype".to_string(), dtype.to_string()),
        ("arch".to_string(), model.arch()),
        (
            "activation".to_string(),
            model.activation.name().to_string(),
        ),
        ("format".to_string(), "pt".to_string()),
    ]);
    write_safetensors(path, &raw, metadata)
}

/// The values of a floating-point tensor as f32.
///
/// # Errors
/// [`Error::File`] naming the tensor if its dtype is not a floating-point
/// one (an integer or boolean tensor is not a parameter), or if it holds NaN
/// or infinite values (how many of each).
fn read_f32(path: &Path, name: &str, view: &TensorView<'_>) -> Result<Tensor> {
    let data = view.data();
    let values: Vec<f32> = match view.dtype() {
        Dtype::F32 => data
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect(),
        Dtype::F64 => data
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32)
            .collect(),
        Dtype::F16 => data
            .chunks_exact(2)
            .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        Dtype::BF16 => data
            .chunks_exact(2)
            .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
            .collect(),
        other => {
            return Err(Error::file(
                path,
                format!(
                    "tensor {name} has dtype {other:?}, not a floating-point type: model \
                     parameters must be F32, F64, F16 or BF16"
                ),
            ))
        }
    };
    check_finite(path, name, &values)?;
    Tensor::from_vec(values, view.shape())
}

/// An error naming `name` if any of `values` is NaN or infinite.
fn check_finite(path: &Path, name: &str, values: &[f32]) -> Result<()> {
    let nan = values.iter().filter(|v| v.is_nan()).count();
    let inf = values.iter().filter(|v| v.is_infinite()).count();
    if nan + inf == 0 {
        return Ok(());
    }
    Err(Error::file(
        path,
        format!(
            "tensor {name} is not finite: {nan} NaN and {inf} infinite of {} values; \
             a model with such weights gives meaningless outputs and gradients",
            values.len()
        ),
    ))
}

/// Loads a model saved by [`save_model`] or by PyTorch. The activation is
/// `activation` if given, else the file's metadata, else an error.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::File`] naming the file
/// if it is not safetensors, misses or mis-shapes a layer, holds an
/// unexpected key, an integer tensor (its dtype is named) or a NaN or
/// infinite value (the tensor and the counts are named).
pub fn load_model(path: &Path, activation: Option<Activation>) -> Result<Model> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_model_bytes(path, &bytes, activation)
}

/// [`load_model`] from the bytes of a model file held in memory; `path`
/// only names it in error messages.
///
/// # Errors
/// As [`load_model`].
pub fn load_model_bytes(
    path: &Path,
    bytes: &[u8],
    activation: Option<Activation>,
) -> Result<Model> {
    load_model_bytes_arch(path, bytes, activation, None)
}

/// [`load_model`] with the architecture `arch` (an `--arch` spec) when
/// given, else the file's metadata `"arch"`: what a convolutional model
/// needs, since its tensors do not tell strides, padding or pooling. An
/// MLP's architecture comes from its tensors and is checked against
/// `arch`.
///
/// # Errors
/// As [`load_model`]; also [`Error::File`] if a tensor is missing, extra or
/// of another shape than the architecture asks.
pub fn load_model_arch(
    path: &Path,
    activation: Option<Activation>,
    arch: Option<&str>,
) -> Result<Model> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_model_bytes_arch(path, &bytes, activation, arch)
}

/// [`load_model_arch`] from the bytes of a model file held in memory.
///
/// # Errors
/// As [`load_model_arch`].
pub fn load_model_bytes_arch(
    path: &Path,
    bytes: &[u8],
    activation: Option<Activation>,
    arch: Option<&str>,
) -> Result<Model> {
    let (_, meta) = SafeTensors::read_metadata(bytes)
        .map_err(|e| Error::file(path, format!("not a safetensors file: {e}")))?;
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| Error::file(path, format!("corrupt safetensors file: {e}")))?;
    let metadata = meta.metadata().clone().unwrap_or_default();

    let activation = match (activation, metadata.get("activation")) {
        (Some(a), _) => a,
        (None, Some(name)) => name
            .parse()
            .map_err(|e| Error::file(path, format!("metadata \"activation\": {e}")))?,
        (None, None) => {
            return Err(Error::file(
                path,
                "no activation in the file's metadata: pass --act relu|sigmoid|tanh",
            ))
        }
    };

    let arch_text = arch
        .map(str::to_string)
        .or_else(|| metadata.get("arch").cloned());
    let arch = arch_text
        .as_deref()
        .map(parse_arch)
        .transpose()
        .map_err(|e| Error::file(path, format!("architecture: {e}")))?;
    let names = file.names();
    if let Some(arch) = arch.as_ref().filter(|a| !a.is_mlp()) {
        return load_layers(path, &file, &names, arch, activation);
    }
    let mut layers = Vec::new();
    for index in (0..).step_by(2) {
        let (wk, bk) = (format!("{index}.weight"), format!("{index}.bias"));
        let (w, b) = match (file.tensor(&wk), file.tensor(&bk)) {
            (Ok(w), Ok(b)) => (w, b),
            (Err(_), Err(_)) => break,
            (Ok(_), Err(_)) => {
                return Err(Error::file(path, format!("missing key {bk} (found {wk})")))
            }
            (Err(_), Ok(_)) => {
                return Err(Error::file(path, format!("missing key {wk} (found {bk})")))
            }
        };
        let weight = read_f32(path, &wk, &w)?;
        let bias = read_f32(path, &bk, &b)?;
        let (out, inp) = weight.shape().as_matrix().ok_or_else(|| {
            Error::file(
                path,
                format!(
                    "{wk} must be [out, in], got {}{}",
                    weight.shape(),
                    if weight.rank() == 4 {
                        "; a convolutional model needs its architecture: the metadata's \"arch\" \
                         or --arch"
                    } else {
                        ""
                    }
                ),
            )
        })?;
        if bias.dims() != [out] {
            return Err(Error::file(
                path,
                format!(
                    "{bk} must be [{out}] to match {wk} {}, got {}",
                    weight.shape(),
                    bias.shape()
                ),
            ));
        }
        if let Some(prev) = layers.last().map(Linear::outputs) {
            if prev != inp {
                return Err(Error::file(
                    path,
                    format!("{wk} takes {inp} inputs but the previous layer gives {prev}"),
                ));
            }
        }
        layers.push(Linear { weight, bias });
    }
    if layers.is_empty() {
        return Err(Error::file(
            path,
            format!(
                "no layers: expected keys 0.weight, 0.bias, 2.weight, …; found {:?}",
                names.iter().take(8).collect::<Vec<_>>()
            ),
        ));
    }
    let known = 2 * layers.len();
    if let Some(extra) = names.iter().filter(|n| !state_key(n)).find(|n| {
        let idx = n.split('.').next().and_then(|i| i.parse::<usize>().ok());
        !matches!(idx, Some(i) if i % 2 == 0 && i < known)
    }) {
        return Err(Error::file(
            path,
            format!("unexpected key {extra}: not an MLP of Linear layers"),
        ));
    }
    let model = mlp_of(layers, activation);
    if let (Some(arch), Some(text)) = (arch, arch_text) {
        if arch.to_string() != model.arch() {
            return Err(Error::file(
                path,
                format!(
                    "metadata says arch {text} but the tensors describe {}",
                    model.arch()
                ),
            ));
        }
    }
    Ok(model)
}

/// The MLP of `linears` with `activation` between them.
fn mlp_of(linears: Vec<Linear>, activation: Activation) -> Model {
    let input = Input::Features(linears.first().map_or(0, Linear::inputs));
    let last = linears.len().saturating_sub(1);
    let mut layers = Vec::new();
    for (i, linear) in linears.into_iter().enumerate() {
        layers.push(Layer::Linear(linear));
        if i < last {
            layers.push(Layer::Activation(activation));
        }
    }
    Model {
        input,
        layers,
        activation,
    }
}

/// The model of `arch` with every parameter read from `file` under its
/// `nn.Sequential` name, each checked for its shape; any other key (but a
/// checkpoint's state) is an error.
fn load_layers(
    path: &Path,
    file: &SafeTensors<'_>,
    names: &[&String],
    arch: &Arch,
    activation: Activation,
) -> Result<Model> {
    let mut model = Model::build(arch, activation, |sizes| {
        Ok(match sizes {
            LayerSizes::Linear(i, o) => Layer::Linear(Linear {
                weight: Tensor::zeros([o, i], DType::F32),
                bias: Tensor::zeros([o], DType::F32),
            }),
            LayerSizes::Conv2d(i, o, k, stride, padding) => Layer::Conv2d(Conv2d {
                weight: Tensor::zeros([o, i, k, k], DType::F32),
                bias: Tensor::zeros([o], DType::F32),
                stride,
                padding,
            }),
        })
    })?;
    let expected = model.param_names();
    for (name, param) in expected.iter().zip(model.params_mut()) {
        let view = file.tensor(name).map_err(|_| {
            Error::file(
                path,
                format!("missing key {name}: the architecture {arch} has it"),
            )
        })?;
        let value = read_f32(path, name, &view)?;
        if value.dims() != param.dims() {
            return Err(Error::file(
                path,
                format!(
                    "{name} must be {} for the architecture {arch}, got {}",
                    param.shape(),
                    value.shape()
                ),
            ));
        }
        *param = value;
    }
    if let Some(extra) = names
        .iter()
        .filter(|n| !state_key(n))
        .find(|n| !expected.contains(n))
    {
        return Err(Error::file(
            path,
            format!("unexpected key {extra}: not a parameter of {arch}"),
        ));
    }
    Ok(model)
}

/// A training checkpoint holds the model plus state under its own
/// prefixes; those keys are not layers.
fn state_key(name: &str) -> bool {
    name.starts_with(crate::checkpoint::OPTIMIZER_PREFIX)
        || name.starts_with(crate::checkpoint::TRAIN_PREFIX)
}
