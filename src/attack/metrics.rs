//! Measuring an attack over a data set: clean and robust accuracy, success
//! rate, perturbation sizes and speed, per eps.

use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::autoattack::{timed_stage, Ensemble, EnsembleDetails, Point};
use super::rowwise::predictions;
use super::{Attack, AutoAttack};
use crate::data::{Batches, Dataset};
use crate::error::{Error, Result};
use crate::nn::Model;
use crate::rng::splitmix64;
use crate::tensor::Tensor;

/// How [`evaluate_attack`] batches and seeds the run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EvalOptions {
    /// Examples per attacked batch.
    pub batch_size: usize,
    /// The seed; batch `b` is attacked with a seed derived from it and `b`.
    pub seed: u64,
    /// How many examples (the first ones) to keep, with their images, for
    /// pictures ([`EpsResult::samples`]).
    pub keep_samples: usize,
}

impl Default for EvalOptions {
    fn default() -> Self {
        EvalOptions {
            batch_size: 256,
            seed: 0,
            keep_samples: 0,
        }
    }
}

/// One example, kept for pictures.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The true class.
    pub label: u32,
    /// The class aimed at, for a targeted attack.
    pub target: Option<u32>,
    /// The model's prediction on the clean image.
    pub clean_pred: u32,
    /// The model's prediction on the adversarial image.
    pub adv_pred: u32,
    /// The clean image, `d` pixels in `[0, 1]`.
    pub clean: Vec<f32>,
    /// The adversarial image.
    pub adv: Vec<f32>,
}

/// The attack's results at one eps, over all examples.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EpsResult {
    /// The radius.
    pub eps: f64,
    /// Fraction of all examples still classified correctly after the attack.
    pub robust_accuracy: f64,
    /// Among the examples classified correctly before the attack, the
    /// fraction the attack fooled (untargeted: now misclassified; targeted:
    /// now classified as the target). 0 when none was correct.
    pub success_rate: f64,
    /// Largest `‖x' − x‖∞` over the examples.
    pub max_linf: f64,
    /// Mean `‖x' − x‖∞`.
    pub mean_linf: f64,
    /// Largest `‖x' − x‖₂`.
    pub max_l2: f64,
    /// Mean `‖x' − x‖₂`.
    pub mean_l2: f64,
    /// Wall-clock seconds spent attacking and classifying the adversarials.
    pub seconds: f64,
    /// Examples attacked per second.
    pub examples_per_second: f64,
    /// The first [`EvalOptions::keep_samples`] examples, for pictures.
    #[serde(skip)]
    pub samples: Vec<Sample>,
    /// For AutoAttack: robust accuracy after each member and which member
    /// broke each example.
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub ensemble: Option<EnsembleDetails>,
}

/// An attack measured at several eps on one data set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AttackReport {
    /// The attack's name (`fgsm`, `pgd`, …).
    pub attack: String,
    /// `Linf` or `L2`.
    pub norm: String,
    /// Number of examples.
    pub n: usize,
    /// Fraction classified correctly without attack.
    pub clean_accuracy: f64,
    /// One entry per eps, in the order given.
    pub results: Vec<EpsResult>,
}

/// The L∞ and L2 norms of `x'ᵢ − xᵢ` for each row, computed in f64 from
/// the stored values.
///
/// # Errors
/// Shapes that differ or are not matrices.
pub fn perturbation_norms(x: &Tensor, x_adv: &Tensor) -> Result<Vec<(f64, f64)>> {
    if x.shape() != x_adv.shape() || x.rank() != 2 {
        return Err(Error::ShapeMismatch {
            op: "perturbation_norms",
            lhs: x.shape().clone(),
            rhs: x_adv.shape().clone(),
        });
    }
    let d = x.dims()[1].max(1);
    let (a, b) = (x.to_f64_vec()?, x_adv.to_f64_vec()?);
    Ok(a.chunks(d)
        .zip(b.chunks(d))
        .map(|(a, b)| {
            a.iter().zip(b).fold((0.0f64, 0.0f64), |(inf, sq), (a, b)| {
                let v = (b - a).abs();
                (inf.max(v), sq + v * v)
            })
        })
        .map(|(inf, sq)| (inf, sq.sqrt()))
        .collect())
}

/// Every example of `data` (in file order) in batches of `batch_size` on
/// the model's device: inputs, labels, and the labels on the host.
fn device_batches(
    model: &Model,
    data: &Dataset,
    batch_size: usize,
    op: &'static str,
) -> Result<Vec<(Tensor, Tensor, Vec<u32>)>> {
    if data.is_empty() {
        return Err(Error::invalid(format!("{op}: the data set is empty")));
    }
    if data.features() != model.input_size() {
        return Err(Error::BadShape {
            op,
            msg: format!(
                "the model {} expects {} input features, the data has {}",
                model.arch(),
                model.input_size(),
                data.features()
            ),
        });
    }
    let order: Vec<usize> = (0..data.rows()).collect();
    let d = data.features();
    Batches::new(&order, batch_size, false)?
        .map(|idx| {
            let (x, y) = data.gather(idx)?;
            let x = Tensor::from_vec(x, [idx.len(), d])?.to_device(model.device())?;
            let yt = Tensor::from_vec(y.clone(), [idx.len()])?.to_device(model.device())?;
            Ok((x, yt, y))
        })
        .collect()
}

/// The seed of batch `b` in a run seeded with `seed`.
fn batch_seed(seed: u64, b: usize) -> u64 {
    let mut s = seed ^ (b as u64).wrapping_mul(0xd1b5_4a32_d192_ed03);
    splitmix64(&mut s)
}

/// Attacks every example of `data` (in file order, batches of
/// [`EvalOptions::batch_size`]) with `attack` at each radius of `eps`, on
/// the model's device, and measures the result. `progress(done, total)` is
/// called after each attacked batch, counting batches over all eps.
///
/// # Errors
/// An empty data set or eps list, a batch size of 0, a data set whose
/// examples do not fit the model, and any error of [`Attack::run`].
pub fn evaluate_attack(
    model: &Model,
    data: &Dataset,
    attack: &Attack,
    eps: &[f64],
    options: &EvalOptions,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<AttackReport> {
    if eps.is_empty() {
        return Err(Error::invalid("evaluate_attack: no eps given"));
    }
    let xs = device_batches(model, data, options.batch_size, "evaluate_attack")?;
    let d = data.features();
    let mut clean_pred = Vec::with_capacity(data.rows());
    for (x, _, _) in &xs {
        clean_pred.extend(model.predict(x)?.to_vec::<u32>()?);
    }
    let labels = data.labels();
    let correct: Vec<bool> = clean_pred.iter().zip(labels).map(|(p, y)| p == y).collect();
    let n = data.rows();
    let n_correct = correct.iter().filter(|&&c| c).count();

    let total = xs.len() * eps.len();
    let mut done = 0;
    let mut results = Vec::with_capacity(eps.len());
    for &e in eps {
        let attack = attack.with_eps(e);
        let (mut robust, mut fooled) = (0usize, 0usize);
        let (mut max_linf, mut sum_linf, mut max_l2, mut sum_l2) = (0.0f64, 0.0, 0.0f64, 0.0);
        let mut seconds = 0.0;
        let mut samples = Vec::new();
        let mut row0 = 0;
        for (b, (x, yt, y)) in xs.iter().enumerate() {
            let seed = batch_seed(options.seed, b);
            let start = Instant::now();
            let x_adv = attack.run(model, x, yt, seed)?;
            let pred = model.predict(&x_adv)?.to_vec::<u32>()?;
            seconds += start.elapsed().as_secs_f64();
            let targets = attack.targets(y, model.classes(), seed)?;
            for (i, (&p, &label)) in pred.iter().zip(y).enumerate() {
                robust += usize::from(p == label);
                if correct[row0 + i] {
                    let hit = match &targets {
                        Some(t) => p == t[i],
                        None => p != label,
                    };
                    fooled += usize::from(hit);
                }
            }
            for (linf, l2) in perturbation_norms(x, &x_adv)? {
                max_linf = max_linf.max(linf);
                max_l2 = max_l2.max(l2);
                sum_linf += linf;
                sum_l2 += l2;
            }
            if samples.len() < options.keep_samples {
                let take = (options.keep_samples - samples.len()).min(y.len());
                let (cx, ax) = (x.to_vec::<f32>()?, x_adv.to_vec::<f32>()?);
                for i in 0..take {
                    samples.push(Sample {
                        label: y[i],
                        target: targets.as_ref().map(|t| t[i]),
                        clean_pred: clean_pred[row0 + i],
                        adv_pred: pred[i],
                        clean: cx[i * d..(i + 1) * d].to_vec(),
                        adv: ax[i * d..(i + 1) * d].to_vec(),
                    });
                }
            }
            row0 += y.len();
            done += 1;
            progress(done, total);
        }
        results.push(EpsResult {
            eps: e,
            robust_accuracy: robust as f64 / n as f64,
            success_rate: if n_correct == 0 {
                0.0
            } else {
                fooled as f64 / n_correct as f64
            },
            max_linf,
            mean_linf: sum_linf / n as f64,
            max_l2,
            mean_l2: sum_l2 / n as f64,
            seconds,
            examples_per_second: if seconds > 0.0 {
                n as f64 / seconds
            } else {
                0.0
            },
            samples,
            ensemble: None,
        });
    }
    Ok(AttackReport {
        attack: attack.name().to_string(),
        norm: attack.threat().norm_name().to_string(),
        n,
        clean_accuracy: n_correct as f64 / n as f64,
        results,
    })
}

/// Runs the AutoAttack ensemble `attack` over every example of `data` at
/// each radius of `eps`, member by member as the reference implementation
/// does: each member attacks, in batches, the examples every earlier
/// member left robust. Every batch uses `options.seed` (the members draw
/// per example). `progress(member, done, total)` follows each member's
/// batches; `log` receives one line per member with the robust accuracy
/// after it.
///
/// # Errors
/// As [`evaluate_attack`].
pub fn evaluate_autoattack(
    model: &Model,
    data: &Dataset,
    attack: &AutoAttack,
    eps: &[f64],
    options: &EvalOptions,
    progress: &mut dyn FnMut(&str, usize, usize),
    log: &mut dyn FnMut(&str),
) -> Result<AttackReport> {
    if eps.is_empty() {
        return Err(Error::invalid("evaluate_autoattack: no eps given"));
    }
    let xs = device_batches(model, data, options.batch_size, "evaluate_autoattack")?;
    let d = data.features();
    let n = data.rows();
    let mut results = Vec::with_capacity(eps.len());
    let mut clean_correct = 0;
    for &e in eps {
        let aa = AutoAttack {
            threat: attack.threat.with_eps(e),
            ..*attack
        };
        attack.threat.with_eps(e).validate(d)?;
        let members = aa.members(model.classes());
        let start = Instant::now();
        let mut states = xs
            .iter()
            .map(|(x, _, y)| Ensemble::start(model, x, y))
            .collect::<Result<Vec<_>>>()?;
        let robust_now = |states: &[Ensemble]| {
            states
                .iter()
                .map(|s| s.robust.iter().filter(|&&r| r).count())
                .sum::<usize>()
        };
        clean_correct = robust_now(&states);
        log(&format!(
            "AutoAttack ({}, {}) on {n} examples: clean accuracy {:.2}%",
            aa.version,
            aa.threat,
            100.0 * clean_correct as f64 / n as f64
        ));
        let mut stages = Vec::with_capacity(members.len());
        if e > 0.0 {
            for (m, member) in members.iter().enumerate() {
                if robust_now(&states) == 0 {
                    break;
                }
                let member_start = Instant::now();
                let mut broken = 0;
                for (b, ((x, yt, y), state)) in xs.iter().zip(&mut states).enumerate() {
                    broken += state.run(model, member, m, x, yt, y, options.seed)?;
                    progress(member.name(), b + 1, xs.len());
                }
                stages.push(timed_stage(
                    member.name(),
                    robust_now(&states),
                    n,
                    broken,
                    member_start,
                    log,
                ));
            }
        }
        let seconds = start.elapsed().as_secs_f64();
        results.push(ensemble_result(
            model,
            &xs,
            &states,
            &members,
            stages,
            e,
            seconds,
            options.keep_samples,
            aa.version.name(),
        )?);
    }
    Ok(AttackReport {
        attack: "autoattack".into(),
        norm: attack.threat.norm_name().to_string(),
        n,
        clean_accuracy: clean_correct as f64 / n as f64,
        results,
    })
}

/// The metrics of one eps from the ensemble's final states.
#[allow(clippy::too_many_arguments)]
fn ensemble_result(
    model: &Model,
    xs: &[(Tensor, Tensor, Vec<u32>)],
    states: &[Ensemble],
    members: &[Attack],
    stages: Vec<super::Stage>,
    eps: f64,
    seconds: f64,
    keep_samples: usize,
    version: &str,
) -> Result<EpsResult> {
    let (mut points, mut samples) = (Vec::new(), Vec::new());
    let (mut robust, mut clean_ok, mut fooled) = (0usize, 0usize, 0usize);
    let (mut max_linf, mut sum_linf, mut max_l2, mut sum_l2) = (0.0f64, 0.0, 0.0f64, 0.0);
    let d = xs.first().map_or(1, |(x, _, _)| x.dims()[1]);
    for ((x, _, y), state) in xs.iter().zip(states) {
        let clean_pred = predictions(model, x)?;
        let adv_pred = predictions(model, &state.adv)?;
        let norms = perturbation_norms(x, &state.adv)?;
        let (cx, ax) = if samples.len() < keep_samples {
            (x.to_vec::<f32>()?, state.adv.to_vec::<f32>()?)
        } else {
            (Vec::new(), Vec::new())
        };
        for i in 0..y.len() {
            let correct = clean_pred[i] == y[i];
            clean_ok += usize::from(correct);
            robust += usize::from(adv_pred[i] == y[i]);
            fooled += usize::from(correct && adv_pred[i] != y[i]);
            let (linf, l2) = norms[i];
            max_linf = max_linf.max(linf);
            max_l2 = max_l2.max(l2);
            sum_linf += linf;
            sum_l2 += l2;
            let broken_by = match state.broken_by[i] {
                Some(m) => Some(members[m].name().to_string()),
                None if !correct => Some("clean".to_string()),
                None => None,
            };
            points.push(Point {
                index: points.len(),
                label: y[i],
                clean_pred: clean_pred[i],
                adv_pred: adv_pred[i],
                broken_by,
                linf,
                l2,
            });
            if samples.len() < keep_samples {
                samples.push(Sample {
                    label: y[i],
                    target: None,
                    clean_pred: clean_pred[i],
                    adv_pred: adv_pred[i],
                    clean: cx[i * d..(i + 1) * d].to_vec(),
                    adv: ax[i * d..(i + 1) * d].to_vec(),
                });
            }
        }
    }
    let n = points.len().max(1) as f64;
    Ok(EpsResult {
        eps,
        robust_accuracy: robust as f64 / n,
        success_rate: if clean_ok == 0 {
            0.0
        } else {
            fooled as f64 / clean_ok as f64
        },
        max_linf,
        mean_linf: sum_linf / n,
        max_l2,
        mean_l2: sum_l2 / n,
        seconds,
        examples_per_second: if seconds > 0.0 { n / seconds } else { 0.0 },
        samples,
        ensemble: Some(EnsembleDetails {
            version: version.to_string(),
            stages,
            points,
        }),
    })
}
