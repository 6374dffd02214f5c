//! The training loop: epochs of shuffled mini-batches, gradient descent on
//! the mean softmax cross-entropy, test accuracy after each epoch, and
//! optionally adversarial training.
//!
//! The same seed gives the same model on the CPU backend: the
//! initialisation, the shuffles and the random starts of adversarial
//! training all come from seeded generators, and the CPU kernels are
//! bit-identical for any thread count.
//!
//! **Mixed precision.** A run inside [`crate::precision::autocast`] (the
//! CLI's `--precision`) makes its matrix products in bf16 or f16 while the
//! parameters, the optimiser state and everything else stay f32. Under f16
//! the steps scale the loss ([`crate::loss_scale`]): overflowing steps are
//! skipped and the scaler's state goes into checkpoints. On the CPU, where
//! the model's first layer is linear (and no attack perturbs the batch),
//! each batch is rounded to the half type as it is gathered, on a thread
//! that would otherwise wait: the first layer's two products read it in
//! that type anyway, so the bits are those of rounding it inside them.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use serde::{Deserialize, Serialize};

use crate::attack::{Attack, Pgd, Threat};
use crate::backend::cpu::{on_worker, with_idle_work, with_spinning_workers};
use crate::backend::pool;
use crate::checkpoint::{self, Checkpoint, Progress, Snapshot};
use crate::data::{Batches, Dataset};
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::loss_scale::{scaled_gradient_step, LossScaler};
use crate::nn::Model;
use crate::optim::{OptimConfig, Optimizer, OptimizerKind, Schedule};
use crate::precision::Precision;
use crate::rng::Rng;
use crate::tally::StepTally;
use crate::tape::Tape;
use crate::tensor::Tensor;

/// Adversarial training: each batch is replaced by adversarial examples
/// against the current model before the gradient step.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AdvTraining {
    /// FGSM with a random start ("Fast is better than free", Wong et al.
    /// 2020): `δ ~ U(−ε, ε)`, `x' = Π(x + δ + α·sign ∇ₓL(x + δ))` with
    /// `α = 1.25ε`, where `Π` projects onto the ε-ball and `[0, 1]`.
    FgsmRs {
        /// The L∞ budget ε.
        eps: f64,
    },
    /// Madry et al. PGD: a random start in the ε-ball, then `steps`
    /// iterations of `x' ← Π(x' + α·sign ∇ₓL(x'))`.
    Pgd {
        /// The L∞ budget ε.
        eps: f64,
        /// Number of steps.
        steps: usize,
        /// Step size α.
        alpha: f64,
    },
    /// TRADES: `CE(f(x), y) + β·KL(p(x) ‖ p(x'))`, `x'` maximising the KL
    /// divergence (see [`crate::robust_training`]).
    Trades {
        /// The L∞ budget ε.
        eps: f64,
        /// Steps of the inner maximisation.
        steps: usize,
        /// Their step size α.
        alpha: f64,
        /// The weight β of the KL term.
        beta: f64,
    },
    /// MART: a boosted cross-entropy on `x'` plus `β·KL` weighted by
    /// `1 − p(x)_y` (see [`crate::robust_training`]).
    Mart {
        /// The L∞ budget ε.
        eps: f64,
        /// Steps of the inner PGD.
        steps: usize,
        /// Their step size α.
        alpha: f64,
        /// The weight β of the KL term.
        beta: f64,
    },
}

impl AdvTraining {
    /// The attack that makes the training batch of FGSM-RS and PGD
    /// training: L∞ PGD from a random start (FGSM-RS is its one-step case
    /// with `α = 1.25ε`); `None` for TRADES and MART, whose inner
    /// maximisation is their own ([`AdvTraining::inner_maximum`]).
    pub fn attack(&self) -> Option<Attack> {
        let (eps, steps, alpha) = match *self {
            AdvTraining::FgsmRs { eps } => (eps, 1, 1.25 * eps),
            AdvTraining::Pgd { eps, steps, alpha } => (eps, steps, alpha),
            AdvTraining::Trades { .. } | AdvTraining::Mart { .. } => return None,
        };
        Some(Attack::Pgd(Pgd {
            alpha: Some(alpha),
            random_start: true,
            steps,
            ..Pgd::new(Threat::Linf(eps))
        }))
    }

    /// Adversarial examples for the batch `x` (in `[0, 1]`) with `labels`,
    /// the random start drawn from `rng`.
    pub fn perturb(
        &self,
        model: &Model,
        x: &Tensor,
        labels: &Tensor,
        rng: &mut Rng,
    ) -> Result<Tensor> {
        let seed = rng.next_u64();
        match self.attack() {
            Some(attack) => attack.run(model, x, labels, seed),
            None => self
                .inner_maximum(model, x, labels, seed)?
                .ok_or_else(|| Error::invalid("adversarial training: no inner maximisation")),
        }
    }

    /// [`AdvTraining::step`] adding the batch's statistics to `tally`.
    /// FGSM-RS and PGD read nothing back to the host (the batch comes from
    /// a training set checked once, [`check_pixels`]); TRADES and MART
    /// read their loss and predictions each step.
    #[allow(clippy::too_many_arguments)]
    pub fn tallied_step(
        &self,
        model: &mut Model,
        optimizer: &mut Optimizer,
        tape: &mut Tape,
        x: Tensor,
        labels: &Tensor,
        lr: f64,
        rng: &mut Rng,
        tally: &mut StepTally,
    ) -> Result<()> {
        match self.attack() {
            Some(Attack::Pgd(pgd)) => {
                let x = pgd.run_on_checked_batch(model, &x, labels, rng.next_u64())?;
                tallied_step(model, optimizer, tape, x, labels, lr, tally)
            }
            _ => {
                let rows = labels.numel();
                let stats = self.step(model, optimizer, tape, x, labels, lr, rng)?;
                tally.add_host(stats.loss, rows, stats.correct)
            }
        }
    }
}

/// Settings of a training run.
#[derive(Clone, Debug)]
pub struct TrainConfig {
    /// Passes over the training set.
    pub epochs: usize,
    /// Examples per mini-batch (the last batch of an epoch may be smaller).
    pub batch_size: usize,
    /// The optimiser.
    pub optim: OptimConfig,
    /// The learning-rate schedule.
    pub schedule: Schedule,
    /// Seed of the shuffles and adversarial random starts.
    pub seed: u64,
    /// Adversarial training, if any.
    pub adversarial: Option<AdvTraining>,
    /// Hide the progress bar.
    pub quiet: bool,
}

/// Statistics of one epoch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpochStats {
    /// Epoch number, from 1.
    pub epoch: usize,
    /// Mean training loss over the epoch's batches (on the adversarial
    /// inputs when training adversarially; TRADES and MART: their whole
    /// objective).
    pub train_loss: f64,
    /// Training accuracy over the epoch's batches (on the inputs the loss
    /// was taken on; TRADES and MART: on the clean inputs).
    pub train_accuracy: f64,
    /// Test accuracy after the epoch, if a test set was given.
    pub test_accuracy: Option<f64>,
    /// Seconds spent in training steps this epoch.
    pub seconds: f64,
}

/// The result of [`train`].
#[derive(Clone, Debug, Serialize)]
pub struct TrainReport {
    /// Per-epoch statistics.
    pub epochs: Vec<EpochStats>,
    /// Total seconds spent in training steps (evaluation excluded).
    pub seconds: f64,
    /// Training examples processed per second of training steps.
    pub examples_per_second: f64,
}

/// Accuracy and mean loss of a model on a dataset.
#[derive(Clone, Copy, Debug, Serialize, PartialEq)]
pub struct EvalStats {
    /// Fraction of examples classified correctly.
    pub accuracy: f64,
    /// Mean cross-entropy loss.
    pub loss: f64,
    /// Number of examples.
    pub n: usize,
}

/// Copies the examples `idx` of `data` into tensors on `device`:
/// `x: [b, features]` f32 and `labels: [b]` u32. On the CPU the examples
/// go straight into the tensors' buffers (`images` and `labels` are left
/// alone); for a device they are staged in `images` and `labels`.
pub fn batch_tensors(
    data: &Dataset,
    idx: &[usize],
    device: Device,
    images: &mut Vec<f32>,
    labels: &mut Vec<u32>,
) -> Result<(Tensor, Tensor)> {
    if device.is_cpu() {
        return cpu_batch(data, idx, usize::MAX, || {}, DType::F32);
    }
    data.gather_into(idx, images, labels)?;
    let x = Tensor::from_slice(images, [idx.len(), data.features()])?.to_device(device)?;
    let y = Tensor::from_slice(labels, [idx.len()])?.to_device(device)?;
    Ok((x, y))
}

/// [`batch_tensors`] on the CPU: the examples gathered straight into pooled
/// tensor buffers, calling `pause()` after every `every` examples (see
/// [`Dataset::gather_into_pausing`]), the pixels then rounded to `dtype`
/// where it is a half type (see [`batch_dtype`]).
fn cpu_batch(
    data: &Dataset,
    idx: &[usize],
    every: usize,
    pause: impl FnMut(),
    dtype: DType,
) -> Result<(Tensor, Tensor)> {
    let mut pixels = pool::take(idx.len() * data.features());
    let mut classes = pool::take(idx.len());
    data.gather_into_pausing(idx, &mut pixels, &mut classes, every, pause)?;
    // A cast rounds to nearest, ties to even, into a recycled buffer; the
    // f32 one goes back to the pool as its tensor drops.
    let x = Tensor::from_vec(pixels, [idx.len(), data.features()])?.to_dtype(dtype)?;
    Ok((x, Tensor::from_vec(classes, [idx.len()])?))
}

/// The dtype a CPU training step's batch is gathered in: the half type of
/// a bf16 or f16 run whose model has f32 parameters and a linear first
/// layer, f32 otherwise (adversarial training perturbs the batch in f32).
///
/// The batch's only reader is then that layer's product, which rounds it
/// to the half type anyway, in the forward pass and for the weight's
/// gradient. Rounding it once as it is gathered, on a thread that would
/// otherwise wait, gives the same bits and spares both products the
/// rounding.
fn batch_dtype(model: &Model, cfg: &TrainConfig, precision: Precision) -> DType {
    let f32_model = model.params().iter().all(|p| p.dtype() == DType::F32);
    let rounds = precision.is_half()
        && cfg.adversarial.is_none()
        && model.device().is_cpu()
        && model.first_layer_is_linear()
        && f32_model;
    if rounds {
        precision.dtype()
    } else {
        DType::F32
    }
}

/// Examples a background gather copies between two looks for the step's
/// parallel tasks.
const GATHER_PAUSE_ROWS: usize = 8;

/// [`cpu_batch`] run in the background: every few examples it runs
/// whatever task of the step is waiting for a thread (`rayon::yield_now`),
/// so that the step never waits for the gather.
fn background_batch(data: &Dataset, idx: &[usize], dtype: DType) -> Result<(Tensor, Tensor)> {
    let pause = || {
        rayon::yield_now();
    };
    cpu_batch(data, idx, GATHER_PAUSE_ROWS, pause, dtype)
}

/// The labels of `data` in the epoch's `order`, uploaded to `device` in
/// one piece, from which each batch takes its slice on the device; `None`
/// on the CPU, where a batch takes its labels from the host for free.
fn labels_on_device(data: &Dataset, order: &[usize], device: Device) -> Result<Option<Tensor>> {
    if device.is_cpu() {
        return Ok(None);
    }
    let all = data.labels();
    let labels: Vec<u32> = order.iter().map(|&i| all[i]).collect();
    let n = labels.len();
    Ok(Some(Tensor::from_vec(labels, [n])?.to_device(device)?))
}

/// What one training step saw of its batch.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct StepStats {
    /// The batch's mean loss before the update.
    pub loss: f64,
    /// Examples of the batch the model classified correctly before the
    /// update.
    pub correct: usize,
}

/// One step of gradient descent: the forward and backward pass of the mean
/// cross-entropy of the batch `x` against `labels`, then one update of every
/// parameter of `model` in place, with learning rate `lr`.
///
/// `tape` is cleared and reused. On the CPU, once the sizes have been seen,
/// a step makes no heap allocation: buffers come back from
/// [`crate::backend::pool`] (`tests/alloc_free.rs` counts them).
///
/// ```
/// use advgrad::nn::{Activation, Model};
/// use advgrad::optim::{OptimConfig, Optimizer, OptimizerKind};
/// use advgrad::train::gradient_step;
/// use advgrad::{DType, Tape, Tensor};
/// let mut model = Model::new("4-8-3", Activation::Relu, 0)?;
/// let config = OptimConfig::new(OptimizerKind::Sgd, 0.1);
/// let mut optimizer = Optimizer::new(config, &model.params())?;
/// let mut tape = Tape::new();
/// let x = Tensor::rand_uniform([5, 4], 0.0, 1.0, 1, DType::F32);
/// let labels = Tensor::from_vec(vec![0u32, 1, 2, 1, 0], [5])?;
/// let mut step = || gradient_step(&mut model, &mut optimizer, &mut tape, x.clone(), &labels, 0.1);
/// let first = step()?;
/// for _ in 0..100 {
///     step()?;
/// }
/// assert!(step()?.loss < first.loss);
/// # Ok::<(), advgrad::Error>(())
/// ```
pub fn gradient_step(
    model: &mut Model,
    optimizer: &mut Optimizer,
    tape: &mut Tape,
    x: Tensor,
    labels: &Tensor,
    lr: f64,
) -> Result<StepStats> {
    if !fused_updates(optimizer) {
        let pass = model.parameter_gradients(tape, x, labels)?;
        let stats = StepStats {
            loss: pass.loss.to_scalar()?,
            correct: pass.logits.argmax_rows()?.count_equal(labels)?,
        };
        optimizer.step(&mut model.params_mut(), &pass.grads, lr)?;
        return Ok(stats);
    }
    let (loss, logits) = model.optimizer_step(tape, x, labels, optimizer, lr)?;
    Ok(StepStats {
        loss: loss.to_scalar()?,
        correct: logits.argmax_rows()?.count_equal(labels)?,
    })
}

/// Whether [`gradient_step`] steps each weight of a model trained by
/// `optimizer` inside the product that computes its gradient
/// ([`Model::optimizer_step`]; the same bits, and neither the gradient's
/// store nor the update's pass over memory): by default for SGD and
/// momentum, not for Adam, whose update in the product made training
/// epochs 5–8 % longer on the machine it was timed on, where SGD's epochs
/// were up to 9 % shorter and momentum's level (`benches/RESULTS.md`).
/// `ADVGRAD_FUSED_UPDATE=1` fuses every rule, `0` none.
pub fn fused_updates(optimizer: &Optimizer) -> bool {
    static FORCED: std::sync::OnceLock<Option<bool>> = std::sync::OnceLock::new();
    let forced = FORCED.get_or_init(|| match std::env::var("ADVGRAD_FUSED_UPDATE").as_deref() {
        Ok("1") => Some(true),
        Ok("0") => Some(false),
        _ => None,
    });
    forced.unwrap_or(optimizer.config().kind != OptimizerKind::Adam)
}

/// [`gradient_step`] that adds the batch's loss and correct count to
/// `tally` instead of returning them: on a device the step reads nothing
/// back to the host. The loss is not checked here: a NaN or infinite loss
/// still updates the model, and [`StepTally::read`] reports it. With
/// [`fused_updates`] the step is [`Model::optimizer_step_unchecked`]'s.
pub fn tallied_step(
    model: &mut Model,
    optimizer: &mut Optimizer,
    tape: &mut Tape,
    x: Tensor,
    labels: &Tensor,
    lr: f64,
    tally: &mut StepTally,
) -> Result<()> {
    if fused_updates(optimizer) {
        let (loss, logits) = model.optimizer_step_unchecked(tape, x, labels, optimizer, lr)?;
        return tally.add(&loss, &logits, labels);
    }
    let pass = model.parameter_gradients_unchecked(tape, x, labels)?;
    tally.add(&pass.loss, &pass.logits, labels)?;
    optimizer.step(&mut model.params_mut(), &pass.grads, lr)
}

/// Fails unless every pixel of `data` lies in `[0, 1]`, which the attacks
/// of adversarial training require of their inputs: checked once on the
/// host instead of on each batch on the device.
pub fn check_pixels(data: &Dataset) -> Result<()> {
    let d = data.features().max(1);
    match data.images().iter().position(|v| !(0.0..=1.0).contains(v)) {
        None => Ok(()),
        Some(i) => Err(Error::invalid(format!(
            "adversarial training: inputs must lie in [0, 1] (pixel / 255), but example {} feature {} is {}",
            i / d,
            i % d,
            data.images()[i]
        ))),
    }
}

fn check_model_fits(model: &Model, data: &Dataset) -> Result<()> {
    if model.input_size() != data.features() {
        return Err(Error::invalid(format!(
            "the model {} takes {} inputs but the data has {} features per example",
            model.arch(),
            model.input_size(),
            data.features()
        )));
    }
    if model.classes() < data.classes() {
        return Err(Error::invalid(format!(
            "the model {} has {} outputs but the data has {} classes",
            model.arch(),
            model.classes(),
            data.classes()
        )));
    }
    Ok(())
}

/// Accuracy and mean loss of `model` on `data`, in batches of `batch_size`.
///
/// # Errors
/// A model that does not fit the data; [`Error::NonFinite`] if the loss of
/// a batch is NaN or infinite (finite but huge weights can overflow).
pub fn evaluate(model: &Model, data: &Dataset, batch_size: usize) -> Result<EvalStats> {
    check_model_fits(model, data)?;
    let order: Vec<usize> = (0..data.rows()).collect();
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    let (mut correct, mut loss_sum) = (0usize, 0.0f64);
    for idx in Batches::new(&order, batch_size, false)? {
        let (x, y) = batch_tensors(data, idx, model.device(), &mut images, &mut labels)?;
        let logits = model.logits(&x)?;
        let (loss, _) = logits.softmax_cross_entropy(&y)?;
        let loss = loss.to_scalar()?;
        if !loss.is_finite() {
            return Err(Error::NonFinite {
                op: "evaluate",
                what: format!(
                    "the loss on examples {}..{} is {loss}: the model's outputs overflow",
                    idx[0],
                    idx[0] + idx.len()
                ),
            });
        }
        loss_sum += loss * idx.len() as f64;
        correct += logits.argmax_rows()?.count_equal(&y)?;
    }
    let n = data.rows().max(1) as f64;
    Ok(EvalStats {
        accuracy: correct as f64 / n,
        loss: loss_sum / n,
        n: data.rows(),
    })
}

/// A progress bar on stderr with `len` steps, labelled `prefix`, showing
/// its message (running loss, accuracy…); hidden when `quiet` (indicatif
/// also hides it when stderr is not a terminal).
pub fn progress_bar(len: u64, prefix: impl Into<String>, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})")
            .expect("the template is valid")
            .progress_chars("=> "),
    );
    bar.set_prefix(prefix.into());
    bar
}

/// Trains `model` in place on `train_set`, reporting test accuracy on
/// `test_set` (if given) after each epoch.
pub fn train(
    model: &mut Model,
    train_set: &Dataset,
    test_set: Option<&Dataset>,
    cfg: &TrainConfig,
) -> Result<TrainReport> {
    train_with(model, train_set, test_set, cfg, Checkpointing::default())
}

/// How often, at most, a training loop on a device reads its
/// [`StepTally`] for the progress bar (besides the end of each epoch, each
/// checkpoint and a stop). On the CPU it reads after every step, which
/// costs nothing.
pub const BAR_REFRESH: std::time::Duration = std::time::Duration::from_millis(500);

/// The error of a training loss found NaN or infinite in epoch `epoch`
/// (from 0), within steps `first..=last` of the run (from 1).
fn non_finite_loss(epoch: usize, first: usize, last: usize) -> Error {
    let steps = if first == last {
        format!("step {last}")
    } else {
        format!("steps {first}..={last}")
    };
    Error::NonFinite {
        op: "train",
        what: format!(
            "the training loss became NaN or infinite in epoch {} ({steps}): \
             lower the learning rate or check the data",
            epoch + 1
        ),
    }
}

/// When a run saves checkpoints on its own.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SaveEvery {
    /// Only when stopped (see [`Checkpointing::stop`]).
    #[default]
    Never,
    /// After each epoch.
    Epoch,
    /// Every this many steps (counted over the whole run).
    Steps(usize),
}

/// Checkpoints and resumption of a run (see [`crate::checkpoint`]).
#[derive(Debug, Default)]
pub struct Checkpointing<'a> {
    /// Where checkpoints go; each one replaces the last, atomically.
    pub path: Option<PathBuf>,
    /// When to save besides a stop.
    pub every: SaveEvery,
    /// A checkpoint to continue from: the run ends with the same bits as
    /// one never interrupted, on the CPU backend.
    pub resume: Option<Checkpoint>,
    /// Checked after every step (a Ctrl-C handler sets it): once set, the
    /// run saves a checkpoint to `path` and returns
    /// [`Error::Interrupted`].
    pub stop: Option<&'a AtomicBool>,
}

/// The settings a checkpoint must share with a run that resumes it: the
/// model's shape, the whole [`TrainConfig`] but `quiet`, and the training
/// data's size and a fingerprint of its labels.
pub fn run_settings(model: &Model, train_set: &Dataset, cfg: &TrainConfig) -> serde_json::Value {
    // FNV-1a over the labels: a different --limit or data set shows.
    let fingerprint = train_set
        .labels()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325u64, |h, &l| {
            (h ^ u64::from(l)).wrapping_mul(0x100_0000_01b3)
        });
    let mut settings = serde_json::json!({
        "arch": model.arch(),
        "activation": model.activation.name(),
        "dtype": model.params().first().map(|p| p.dtype().to_string()),
        "epochs": cfg.epochs,
        "batch_size": cfg.batch_size,
        "optim": cfg.optim,
        "schedule": cfg.schedule,
        "seed": cfg.seed,
        "adversarial": cfg.adversarial,
        "train_examples": train_set.rows(),
        "features": train_set.features(),
        "labels_fnv1a": format!("{fingerprint:016x}"),
    });
    // Named only when not f32, so checkpoints from before mixed precision
    // still resume.
    let precision = Precision::current();
    if precision.is_half() {
        settings["precision"] = precision.name().into();
    }
    settings
}

/// [`train`] with checkpoints: saved as `ckpt` says, resumed from
/// `ckpt.resume` (whose model replaces `model`'s parameters), and stopped
/// cleanly when `ckpt.stop` is set.
///
/// # Errors
/// As [`train`]; [`Error::InvalidArgument`] if the checkpoint to resume was
/// written with other settings (each one is named); [`Error::Interrupted`]
/// after a stop, once the checkpoint is saved.
pub fn train_with(
    model: &mut Model,
    train_set: &Dataset,
    test_set: Option<&Dataset>,
    cfg: &TrainConfig,
    ckpt: Checkpointing<'_>,
) -> Result<TrainReport> {
    let device = model.device();
    with_loop_threads(device, || {
        train_on_worker(model, train_set, test_set, cfg, ckpt)
    })
}

/// Runs `f`, a training loop on `device`, as [`train`] runs its own: on the
/// CPU with the pool's other threads spinning ([`with_spinning_workers`]),
/// elsewhere on a pool thread ([`on_worker`]), since a GPU's loop leaves
/// the pool nothing to pick up.
pub fn with_loop_threads<R: Send>(device: Device, f: impl FnOnce() -> R + Send) -> R {
    if device.is_cpu() {
        with_spinning_workers(f)
    } else {
        on_worker(f)
    }
}

fn train_on_worker(
    model: &mut Model,
    train_set: &Dataset,
    test_set: Option<&Dataset>,
    cfg: &TrainConfig,
    ckpt: Checkpointing<'_>,
) -> Result<TrainReport> {
    check_model_fits(model, train_set)?;
    if cfg.epochs == 0 || cfg.batch_size == 0 {
        return Err(Error::invalid("epochs and batch size must be at least 1"));
    }
    if train_set.is_empty() {
        return Err(Error::invalid("no training examples"));
    }
    if model
        .params()
        .iter()
        .any(|p| p.dtype() != DType::F32 && p.dtype() != DType::F64)
    {
        return Err(Error::invalid("model parameters must be f32 or f64"));
    }
    let device = model.device();
    let precision = Precision::current();
    if precision == Precision::F16 && cfg.adversarial.is_some() {
        return Err(Error::invalid(
            "f16 training scales the loss of plain training only; adversarial training in \
             mixed precision runs with --precision bf16",
        ));
    }
    let mut scaler = (precision == Precision::F16).then(LossScaler::new);
    let input_dtype = batch_dtype(model, cfg, precision);
    let settings = run_settings(model, train_set, cfg);
    let mut optimizer = Optimizer::new(cfg.optim, &model.params())?;
    let steps_per_epoch = crate::data::num_batches(train_set.rows(), cfg.batch_size, false);
    let total_steps = steps_per_epoch * cfg.epochs;
    let (mut rng, mut order, mut progress) = match ckpt.resume {
        None => (Rng::new(cfg.seed), Vec::new(), Progress::default()),
        Some(saved) => {
            saved.check_settings(&settings)?;
            *model = saved.model.to_device(device)?;
            optimizer.restore(saved.optimizer_steps, saved.optimizer_buffers)?;
            if scaler.is_some() {
                scaler = Some(saved.loss_scaler.ok_or_else(|| {
                    Error::invalid("the f16 checkpoint holds no loss-scaler state")
                })?);
            }
            (saved.rng, saved.order, saved.progress)
        }
    };
    if progress.epoch > cfg.epochs || progress.batch > steps_per_epoch {
        return Err(Error::invalid(format!(
            "the checkpoint stands at epoch {} batch {}, beyond a run of {} epochs of {steps_per_epoch} batches",
            progress.epoch, progress.batch, cfg.epochs
        )));
    }
    let save = |model: &Model,
                optimizer: &Optimizer,
                rng: &Rng,
                order: &[usize],
                progress: &Progress,
                loss_scaler: Option<&LossScaler>| {
        let Some(path) = &ckpt.path else {
            return Ok(());
        };
        let snap = Snapshot {
            model,
            optimizer,
            rng,
            order,
            progress,
            settings: &settings,
            loss_scaler,
        };
        checkpoint::save(path, &snap)
    };
    let stopped = || ckpt.stop.is_some_and(|s| s.load(Ordering::SeqCst));
    let interrupted = |progress: &Progress| {
        Error::Interrupted(match &ckpt.path {
            Some(path) => format!(
                "training stopped after step {} (epoch {}, batch {} of {steps_per_epoch}); \
                 checkpoint saved to {}",
                progress.step,
                progress.epoch + 1,
                progress.batch,
                path.display()
            ),
            None => format!(
                "training stopped after step {}; no checkpoint path was given",
                progress.step
            ),
        })
    };
    if cfg.adversarial.is_some() {
        check_pixels(train_set)?;
    }
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    let mut tape = Tape::new();
    let mut tally = StepTally::new(device)?;
    let mut last_read = Instant::now();

    while progress.epoch < cfg.epochs {
        let epoch = progress.epoch;
        if progress.batch == 0 {
            order = rng.permutation(train_set.rows());
        }
        let prefix = format!("epoch {}/{}", epoch + 1, cfg.epochs);
        let bar = progress_bar(steps_per_epoch as u64, prefix, cfg.quiet);
        bar.set_position(progress.batch as u64);
        tally.set(progress.loss_sum, progress.correct)?;
        let epoch_labels = labels_on_device(train_set, &order, device)?;
        // The steps since `progress` last took the tally's sums.
        let mut unread = 0;
        let mut batches = Batches::new(&order, cfg.batch_size, false)?
            .skip(progress.batch)
            .peekable();
        // On the CPU, the next batch, copied out by a spinning thread while
        // this step runs (`with_idle_work`).
        let mut ahead: Option<Result<(Tensor, Tensor)>> = None;
        while let Some(idx) = batches.next() {
            let start = Instant::now();
            let (x, y) = match (ahead.take(), &epoch_labels) {
                (Some(batch), _) => batch?,
                // Only on the CPU do the labels stay on the host.
                (None, None) => cpu_batch(train_set, idx, usize::MAX, || {}, input_dtype)?,
                (None, Some(all)) => {
                    let lo = progress.batch * cfg.batch_size;
                    let (x, _) =
                        batch_tensors(train_set, idx, Device::Cpu, &mut images, &mut labels)?;
                    (x.to_device(device)?, all.rows(lo..lo + idx.len())?)
                }
            };
            let lr = cfg
                .schedule
                .lr(cfg.optim.lr, epoch, progress.step, total_steps);
            if !lr.is_finite() {
                return Err(Error::NonFinite {
                    op: "train",
                    what: format!(
                        "the schedule gives a learning rate of {lr} at epoch {}",
                        epoch + 1
                    ),
                });
            }
            let step = || -> Result<()> {
                match (&cfg.adversarial, &mut scaler) {
                    (Some(adv), _) => {
                        let (opt, t) = (&mut optimizer, &mut tape);
                        adv.tallied_step(model, opt, t, x, &y, lr, &mut rng, &mut tally)
                    }
                    (None, Some(s)) => {
                        let step =
                            scaled_gradient_step(model, &mut optimizer, &mut tape, x, &y, lr, s)?;
                        tally.add_host(step.stats.loss, idx.len(), step.stats.correct)
                    }
                    (None, None) => {
                        tallied_step(model, &mut optimizer, &mut tape, x, &y, lr, &mut tally)
                    }
                }
            };
            let next = batches.peek().copied().filter(|_| device.is_cpu());
            let gather_next = || next.map(|idx| background_batch(train_set, idx, input_dtype));
            let stepped;
            (stepped, ahead) = with_idle_work(step, gather_next);
            stepped?;
            progress.step += 1;
            progress.batch += 1;
            progress.seen += idx.len();
            unread += 1;
            let due = matches!(ckpt.every, SaveEvery::Steps(n) if progress.step % n.max(1) == 0);
            let stop = stopped();
            let refresh = !bar.is_hidden() && last_read.elapsed() >= BAR_REFRESH;
            let epoch_end = progress.batch == steps_per_epoch;
            if tally.on_host() || refresh || due || stop || epoch_end {
                let (loss_sum, correct) = tally.read().map_err(|e| match e {
                    Error::NonFinite { .. } => {
                        non_finite_loss(epoch, progress.step + 1 - unread, progress.step)
                    }
                    e => e,
                })?;
                (progress.loss_sum, progress.correct, unread) = (loss_sum, correct, 0);
                last_read = Instant::now();
                if !bar.is_hidden() {
                    bar.set_message(format!(
                        "loss {:.4} acc {:.2}%",
                        progress.loss_sum / progress.seen as f64,
                        100.0 * progress.correct as f64 / progress.seen as f64
                    ));
                }
            }
            progress.epoch_seconds += start.elapsed().as_secs_f64();
            bar.set_position(progress.batch as u64);
            if due || stop {
                save(model, &optimizer, &rng, &order, &progress, scaler.as_ref())?;
            }
            if stop {
                bar.finish_and_clear();
                return Err(interrupted(&progress));
            }
        }
        bar.finish_and_clear();
        let test_accuracy = test_set
            .map(|t| evaluate(model, t, 1000).map(|s| s.accuracy))
            .transpose()?;
        let stats = EpochStats {
            epoch: epoch + 1,
            train_loss: progress.loss_sum / progress.seen.max(1) as f64,
            train_accuracy: progress.correct as f64 / progress.seen.max(1) as f64,
            test_accuracy,
            seconds: progress.epoch_seconds,
        };
        if !cfg.quiet {
            eprintln!(
                "epoch {:>3}: train loss {:.4}, train acc {:.2}%{}, {:.2} s",
                stats.epoch,
                stats.train_loss,
                100.0 * stats.train_accuracy,
                stats
                    .test_accuracy
                    .map_or(String::new(), |a| format!(", test acc {:.2}%", 100.0 * a)),
                stats.seconds
            );
        }
        progress.next_epoch(stats);
        order.clear();
        let stop = stopped() && progress.epoch < cfg.epochs;
        if ckpt.every == SaveEvery::Epoch || stop {
            save(model, &optimizer, &rng, &order, &progress, scaler.as_ref())?;
        }
        if stop {
            return Err(interrupted(&progress));
        }
    }
    let seconds = progress.train_seconds;
    Ok(TrainReport {
        epochs: progress.epochs,
        seconds,
        examples_per_second: (train_set.rows() * cfg.epochs) as f64 / seconds.max(1e-9),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::nn::Activation;

    fn config(adversarial: Option<AdvTraining>) -> TrainConfig {
        TrainConfig {
            epochs: 1,
            batch_size: 8,
            optim: OptimConfig::new(OptimizerKind::Sgd, 0.1),
            schedule: Schedule::Constant,
            seed: 0,
            adversarial,
            quiet: true,
        }
    }

    #[test]
    fn batches_are_gathered_rounded_only_for_an_f32_mlp_in_mixed_precision() {
        let mlp = Model::new("16-8-4", Activation::Relu, 0).unwrap();
        let cnn = Model::new("1x4x4-c2k3p1-4", Activation::Relu, 0).unwrap();
        let (plain, fgsm) = (config(None), config(Some(AdvTraining::FgsmRs { eps: 0.1 })));
        assert_eq!(batch_dtype(&mlp, &plain, Precision::Bf16), DType::BF16);
        assert_eq!(batch_dtype(&mlp, &plain, Precision::F16), DType::F16);
        assert_eq!(batch_dtype(&mlp, &plain, Precision::F32), DType::F32);
        assert_eq!(
            batch_dtype(&mlp, &fgsm, Precision::Bf16),
            DType::F32,
            "attacks perturb f32"
        );
        assert_eq!(
            batch_dtype(&cnn, &plain, Precision::Bf16),
            DType::F32,
            "a convolution first"
        );
        let mut f64_mlp = mlp.clone();
        for p in f64_mlp.params_mut().iter_mut() {
            **p = p.to_dtype(DType::F64).unwrap();
        }
        assert_eq!(batch_dtype(&f64_mlp, &plain, Precision::Bf16), DType::F32);
    }
}
