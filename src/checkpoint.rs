//! Training checkpoints: everything a run needs to continue bit for bit.
//!
//! A checkpoint is a safetensors file (written atomically, see
//! [`crate::atomic_file`]) holding
//!
//! | key | what |
//! |---|---|
//! | `0.weight`, `0.bias`, … | the model, as in a model file (so `advgrad eval` reads a checkpoint too) |
//! | `optimizer.0.weight.m`, `….v` | the optimiser's per-parameter state (momentum, Adam moments), where used |
//! | `train.rng` | the state of the run's random generator (U64 `[4]`) |
//! | `train.order` | the current epoch's order of examples (U64), mid-epoch only |
//!
//! and, as metadata, the position (epoch, batch, step), the epoch's running
//! sums, the finished epochs' statistics, the run's settings and, for f16
//! training, the loss scaler's state (`loss_scale`,
//! `loss_scale_growth_tracker`). Resuming
//! checks the settings against the new run's and names any that differ.

use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde_json::Value;

use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::loss_scale::LossScaler;
use crate::nn::{le_bytes, load_model_bytes, write_safetensors, Model, RawTensor};
use crate::optim::Optimizer;
use crate::rng::Rng;
use crate::tensor::Tensor;
use crate::train::EpochStats;

/// The metadata key marking a checkpoint (its value is the format version).
const MARKER: &str = "advgrad_checkpoint";
/// The format version written.
const VERSION: &str = "1";
/// Prefix of the optimiser-state tensors.
pub const OPTIMIZER_PREFIX: &str = "optimizer.";
/// Prefix of the training-state tensors.
pub const TRAIN_PREFIX: &str = "train.";

/// Where a training run stands: the position and the running statistics.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Progress {
    /// The current epoch, from 0; equal to the number of epochs when done.
    pub epoch: usize,
    /// Batches of the current epoch already taken.
    pub batch: usize,
    /// Steps taken over the whole run.
    pub step: usize,
    /// Sum over the epoch's batches of mean loss × batch size.
    pub loss_sum: f64,
    /// Examples of the epoch classified correctly before their step.
    pub correct: usize,
    /// Examples of the epoch seen.
    pub seen: usize,
    /// Seconds of training steps in the current epoch.
    pub epoch_seconds: f64,
    /// Seconds of training steps in the finished epochs.
    pub train_seconds: f64,
    /// Statistics of the finished epochs.
    pub epochs: Vec<EpochStats>,
}

impl Progress {
    /// Starts the next epoch: the position moves on, the running sums reset.
    pub fn next_epoch(&mut self, finished: EpochStats) {
        self.train_seconds += self.epoch_seconds;
        self.epochs.push(finished);
        self.epoch += 1;
        self.batch = 0;
        self.loss_sum = 0.0;
        self.correct = 0;
        self.seen = 0;
        self.epoch_seconds = 0.0;
    }
}

/// What [`save`] writes, borrowed from a running training loop.
#[derive(Clone, Copy, Debug)]
pub struct Snapshot<'a> {
    /// The model being trained.
    pub model: &'a Model,
    /// Its optimiser.
    pub optimizer: &'a Optimizer,
    /// The run's generator, as it stands.
    pub rng: &'a Rng,
    /// The current epoch's order (empty between epochs).
    pub order: &'a [usize],
    /// The position and running statistics.
    pub progress: &'a Progress,
    /// The run's settings (see [`Checkpoint::check_settings`]).
    pub settings: &'a Value,
    /// The loss scaler of an f16 run.
    pub loss_scaler: Option<&'a LossScaler>,
}

/// A checkpoint read back by [`load`].
#[derive(Clone, Debug)]
pub struct Checkpoint {
    /// The model, on the CPU.
    pub model: Model,
    /// Optimiser steps taken.
    pub optimizer_steps: u64,
    /// The optimiser's state buffers, in parameter order (shape `[0]` where
    /// the rule uses none).
    pub optimizer_buffers: Vec<(Tensor, Tensor)>,
    /// The generator, where the run left it.
    pub rng: Rng,
    /// The current epoch's order (empty between epochs).
    pub order: Vec<usize>,
    /// The position and running statistics.
    pub progress: Progress,
    /// The settings of the run that wrote it.
    pub settings: Value,
    /// The loss scaler of an f16 run, as it stood.
    pub loss_scaler: Option<LossScaler>,
}

/// Writes a checkpoint of `snap` to `path`, atomically: an existing
/// checkpoint there is replaced only by a complete new one.
///
/// # Errors
/// [`Error::Io`] if the file cannot be written; [`Error::InvalidArgument`]
/// for parameters that are neither f32 nor f64.
pub fn save(path: &Path, snap: &Snapshot<'_>) -> Result<()> {
    let names = snap.model.param_names();
    let mut tensors = Vec::new();
    for (name, p) in names.iter().zip(snap.model.params()) {
        check_saved_dtype(name, p)?;
        tensors.push(RawTensor::from_tensor(name.clone(), p)?);
    }
    for (name, (m, v)) in names.iter().zip(snap.optimizer.buffers()) {
        for (suffix, t) in [("m", m), ("v", v)] {
            if t.numel() > 0 {
                let key = format!("{OPTIMIZER_PREFIX}{name}.{suffix}");
                check_saved_dtype(&key, t)?;
                tensors.push(RawTensor::from_tensor(key, t)?);
            }
        }
    }
    let u64s = |name: &str, values: Vec<u64>| RawTensor {
        name: format!("{TRAIN_PREFIX}{name}"),
        dtype: Dtype::U64,
        shape: vec![values.len()],
        bytes: le_bytes(&values, u64::to_le_bytes),
    };
    tensors.push(u64s("rng", snap.rng.state().to_vec()));
    if !snap.order.is_empty() {
        tensors.push(u64s(
            "order",
            snap.order.iter().map(|&i| i as u64).collect(),
        ));
    }
    write_safetensors(path, &tensors, metadata(snap))
}

/// Only f32 and f64 tensors are saved, in their own type.
fn check_saved_dtype(name: &str, t: &Tensor) -> Result<()> {
    match t.dtype() {
        DType::F32 | DType::F64 => Ok(()),
        dtype => Err(Error::invalid(format!(
            "checkpoint: tensor {name} has dtype {dtype}; only f32 and f64 are saved"
        ))),
    }
}

/// The metadata of a checkpoint: the model's, the position and running
/// sums (floats in Rust's shortest round-trip form), the finished epochs
/// and the settings, as JSON.
fn metadata(snap: &Snapshot<'_>) -> HashMap<String, String> {
    let p = snap.progress;
    let scaler = snap.loss_scaler.map(|s| {
        [
            ("loss_scale".to_string(), s.scale().to_string()),
            (
                "loss_scale_growth_tracker".to_string(),
                s.growth_tracker().to_string(),
            ),
        ]
    });
    let mut meta = HashMap::from([
        (MARKER.to_string(), VERSION.to_string()),
        ("format".to_string(), "pt".to_string()),
        ("arch".to_string(), snap.model.arch()),
        (
            "activation".to_string(),
            snap.model.activation.name().to_string(),
        ),
        (
            "optimizer_steps".to_string(),
            snap.optimizer.steps().to_string(),
        ),
        ("epoch".to_string(), p.epoch.to_string()),
        ("batch".to_string(), p.batch.to_string()),
        ("step".to_string(), p.step.to_string()),
        ("loss_sum".to_string(), p.loss_sum.to_string()),
        ("correct".to_string(), p.correct.to_string()),
        ("seen".to_string(), p.seen.to_string()),
        ("epoch_seconds".to_string(), p.epoch_seconds.to_string()),
        ("train_seconds".to_string(), p.train_seconds.to_string()),
        (
            "epochs".to_string(),
            serde_json::to_string(&p.epochs).expect("epoch statistics serialise"),
        ),
        ("settings".to_string(), snap.settings.to_string()),
    ]);
    meta.extend(scaler.into_iter().flatten());
    meta
}

/// Reads the checkpoint at `path`.
///
/// # Errors
/// [`Error::Io`] if it cannot be read; [`Error::File`] naming the file and
/// the key if it is not an advgrad checkpoint or any part is missing,
/// mis-shaped, non-finite or out of range (an order that is not a
/// permutation, an all-zero generator state).
pub fn load(path: &Path) -> Result<Checkpoint> {
    let bytes = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    load_bytes(path, &bytes)
}

/// [`load`] from bytes held in memory; `path` only names them in errors.
///
/// # Errors
/// As [`load`].
pub fn load_bytes(path: &Path, bytes: &[u8]) -> Result<Checkpoint> {
    let fail = |msg: String| Error::file(path, format!("checkpoint: {msg}"));
    let (_, header) = SafeTensors::read_metadata(bytes)
        .map_err(|e| fail(format!("not a safetensors file: {e}")))?;
    let meta = header.metadata().clone().unwrap_or_default();
    if meta.get(MARKER).map(String::as_str) != Some(VERSION) {
        return Err(fail(format!(
            "not an advgrad checkpoint (no \"{MARKER}\": \"{VERSION}\" in its metadata)"
        )));
    }
    let model = load_model_bytes(path, bytes, None)?;
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| fail(format!("corrupt safetensors file: {e}")))?;
    let field = |key: &str| -> Result<&String> {
        meta.get(key)
            .ok_or_else(|| fail(format!("metadata \"{key}\" is missing")))
    };
    let int = |key: &str| -> Result<usize> {
        field(key)?
            .parse()
            .map_err(|_| fail(format!("metadata \"{key}\" is not a count")))
    };
    let float = |key: &str| -> Result<f64> {
        field(key)?
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
            .ok_or_else(|| fail(format!("metadata \"{key}\" is not a finite number")))
    };
    let progress = Progress {
        epoch: int("epoch")?,
        batch: int("batch")?,
        step: int("step")?,
        loss_sum: float("loss_sum")?,
        correct: int("correct")?,
        seen: int("seen")?,
        epoch_seconds: float("epoch_seconds")?,
        train_seconds: float("train_seconds")?,
        epochs: serde_json::from_str(field("epochs")?)
            .map_err(|e| fail(format!("metadata \"epochs\": {e}")))?,
    };
    let settings: Value = serde_json::from_str(field("settings")?)
        .map_err(|e| fail(format!("metadata \"settings\": {e}")))?;
    let optimizer_steps = field("optimizer_steps")?
        .parse()
        .map_err(|_| fail("metadata \"optimizer_steps\" is not a count".into()))?;

    let mut optimizer_buffers = Vec::new();
    for (name, p) in model.param_names().iter().zip(model.params()) {
        let read = |suffix: &str| -> Result<Tensor> {
            let key = format!("{OPTIMIZER_PREFIX}{name}.{suffix}");
            match file.tensor(&key) {
                Err(_) => Ok(Tensor::zeros([0], p.dtype())),
                Ok(view) => {
                    let t = float_tensor(path, &key, &view)?;
                    if t.dims() != p.dims() {
                        return Err(fail(format!(
                            "{key} is {}, its parameter {name} is {}",
                            t.shape(),
                            p.shape()
                        )));
                    }
                    t.to_dtype(p.dtype())
                }
            }
        };
        optimizer_buffers.push((read("m")?, read("v")?));
    }
    let rng_words = u64_tensor(path, &file, &format!("{TRAIN_PREFIX}rng"))?
        .ok_or_else(|| fail(format!("tensor {TRAIN_PREFIX}rng is missing")))?;
    let rng = <[u64; 4]>::try_from(rng_words.as_slice())
        .ok()
        .and_then(Rng::from_state)
        .ok_or_else(|| fail(format!("tensor {TRAIN_PREFIX}rng is not a generator state")))?;
    let order: Vec<usize> = u64_tensor(path, &file, &format!("{TRAIN_PREFIX}order"))?
        .unwrap_or_default()
        .into_iter()
        .map(|i| usize::try_from(i).unwrap_or(usize::MAX))
        .collect();
    if !is_permutation(&order) {
        return Err(fail(format!(
            "tensor {TRAIN_PREFIX}order is not a permutation of 0..{}",
            order.len()
        )));
    }
    if (progress.batch == 0) != order.is_empty() {
        return Err(fail(format!(
            "batch {} of an epoch with {} examples in order: inconsistent",
            progress.batch,
            order.len()
        )));
    }
    let loss_scaler = match meta.get("loss_scale") {
        None => None,
        Some(_) => Some(
            LossScaler::restored(
                float("loss_scale")?,
                int("loss_scale_growth_tracker")? as u32,
            )
            .map_err(|e| fail(format!("metadata \"loss_scale\": {e}")))?,
        ),
    };
    Ok(Checkpoint {
        model,
        optimizer_steps,
        optimizer_buffers,
        rng,
        order,
        progress,
        settings,
        loss_scaler,
    })
}

/// Whether `order` holds each of `0..order.len()` once.
fn is_permutation(order: &[usize]) -> bool {
    let mut seen = vec![false; order.len()];
    order
        .iter()
        .all(|&i| i < seen.len() && !std::mem::replace(&mut seen[i], true))
}

/// A finite F32 or F64 tensor (kept in its type).
fn float_tensor(path: &Path, key: &str, view: &TensorView<'_>) -> Result<Tensor> {
    let data = view.data();
    let t = match view.dtype() {
        Dtype::F32 => Tensor::from_vec(
            data.chunks_exact(4)
                .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                .collect::<Vec<f32>>(),
            view.shape(),
        )?,
        Dtype::F64 => Tensor::from_vec(
            data.chunks_exact(8)
                .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
                .collect::<Vec<f64>>(),
            view.shape(),
        )?,
        other => {
            return Err(Error::file(
                path,
                format!("checkpoint: tensor {key} has dtype {other:?}, expected F32 or F64"),
            ))
        }
    };
    let values = t.to_dtype(DType::F64)?.to_vec::<f64>()?;
    if values.iter().any(|v| !v.is_finite()) {
        return Err(Error::file(
            path,
            format!("checkpoint: tensor {key} holds NaN or infinite values"),
        ));
    }
    Ok(t)
}

/// The U64 tensor `key` as a flat vector, `None` if absent.
fn u64_tensor(path: &Path, file: &SafeTensors<'_>, key: &str) -> Result<Option<Vec<u64>>> {
    let Ok(view) = file.tensor(key) else {
        return Ok(None);
    };
    if view.dtype() != Dtype::U64 || view.shape().len() != 1 {
        return Err(Error::file(
            path,
            format!(
                "checkpoint: tensor {key} must be a U64 vector, is {:?} {:?}",
                view.dtype(),
                view.shape()
            ),
        ));
    }
    Ok(Some(
        view.data()
            .chunks_exact(8)
            .map(|b| u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect(),
    ))
}

impl Checkpoint {
    /// Checks that this checkpoint was written by a run with the same
    /// `settings` (see `train::run_settings`).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming every setting that differs, with
    /// both values.
    pub fn check_settings(&self, settings: &Value) -> Result<()> {
        let (saved, now) = (flatten(&self.settings), flatten(settings));
        let mut keys: Vec<&String> = saved.keys().chain(now.keys()).collect();
        keys.sort();
        keys.dedup();
        let differences: Vec<String> = keys
            .into_iter()
            .filter(|k| saved.get(*k) != now.get(*k))
            .map(|k| {
                let show = |v: Option<&String>| v.cloned().unwrap_or_else(|| "(none)".into());
                format!(
                    "{k} is {} in the checkpoint, {} now",
                    show(saved.get(k)),
                    show(now.get(k))
                )
            })
            .collect();
        if differences.is_empty() {
            return Ok(());
        }
        Err(Error::invalid(format!(
            "the checkpoint was written by a different run: {}; resume with the settings it \
             was started with",
            differences.join("; ")
        )))
    }
}

/// A JSON value as `path → scalar` pairs (`optim.lr → 0.1`).
fn flatten(v: &Value) -> HashMap<String, String> {
    fn walk(prefix: &str, v: &Value, out: &mut HashMap<String, String>) {
        match v {
            Value::Object(map) => {
                for (k, v) in map {
                    let key = if prefix.is_empty() {
                        k.clone()
                    } else {
                        format!("{prefix}.{k}")
                    };
                    walk(&key, v, out);
                }
            }
            Value::String(s) => {
                out.insert(prefix.to_string(), s.clone());
            }
            other => {
                out.insert(prefix.to_string(), other.to_string());
            }
        }
    }
    let mut out = HashMap::new();
    walk("", v, &mut out);
    out
}
