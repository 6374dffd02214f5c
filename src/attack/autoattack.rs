//! AutoAttack (Croce & Hein, ICML 2020): an ensemble of diverse
//! parameter-free attacks, each run only on the examples the previous ones
//! left robust, as in the reference implementation (`fra31/auto-attack`).
//!
//! | version | members, in order |
//! |---|---|
//! | `standard` | APGD-CE, APGD-T (9 targets), FAB-T (9 targets), Square (5000 queries) |
//! | `plus` | APGD-CE and APGD-DLR (5 restarts each), FAB (5 restarts), Square, APGD-T, FAB-T |
//! | `rand` | APGD-CE, APGD-DLR (for randomised models) |
//!
//! The reference's `rand` version averages each gradient over 20 draws of
//! a randomised model (EOT); advgrad's models are deterministic, so those
//! 20 gradients would be identical and one is computed.
//!
//! Every member draws its randomness per example (see
//! [`rowwise`](super::rowwise)), so an example's fate under a member does
//! not depend on which other examples are still in the batch: the ensemble
//! breaks every example that any member breaks on its own with the same
//! seed, and is never weaker than its strongest member.

use std::fmt;
use std::str::FromStr;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::apgd::{Apgd, ApgdLoss};
use super::fab::Fab;
use super::model::Classifier;
use super::rowwise::{predictions, put_rows, take_rows};
use super::square::Square;
use super::{Attack, Outcome, Threat};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Which members the ensemble runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum Version {
    /// APGD-CE, APGD-T, FAB-T, Square.
    #[default]
    Standard,
    /// APGD-CE, APGD-DLR, FAB, Square, APGD-T, FAB-T, with restarts.
    Plus,
    /// APGD-CE and APGD-DLR.
    Rand,
}

impl Version {
    /// `standard`, `plus` or `rand`.
    pub fn name(self) -> &'static str {
        match self {
            Version::Standard => "standard",
            Version::Plus => "plus",
            Version::Rand => "rand",
        }
    }
}

impl FromStr for Version {
    type Err = Error;
    fn from_str(s: &str) -> Result<Version> {
        match s {
            "standard" => Ok(Version::Standard),
            "plus" => Ok(Version::Plus),
            "rand" => Ok(Version::Rand),
            other => Err(Error::invalid(format!(
                "unknown AutoAttack version `{other}`: expected standard, plus or rand"
            ))),
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The AutoAttack ensemble in one threat model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AutoAttack {
    /// The norm and radius.
    pub threat: Threat,
    /// Which members.
    pub version: Version,
    /// Iterations of the gradient members (APGD, FAB); `None`: 100.
    pub steps: Option<usize>,
    /// Square's queries; `None`: 5000.
    pub queries: Option<usize>,
    /// Scale Square's `p` schedule to its queries (torchattacks' default;
    /// the reference AutoAttack does not).
    pub rescale_schedule: bool,
}

impl AutoAttack {
    /// The ensemble `version` in `threat`, with the reference settings.
    pub fn new(threat: Threat, version: Version) -> AutoAttack {
        AutoAttack {
            threat,
            version,
            steps: None,
            queries: None,
            rescale_schedule: false,
        }
    }

    /// The members, in the order they run, for a model of `classes`
    /// classes (target classes: at most `classes − 1`, at most 9).
    pub fn members(&self, classes: usize) -> Vec<Attack> {
        let targets = classes.saturating_sub(1).clamp(1, 9);
        let apgd = |loss, restarts| {
            let d = Apgd::new(self.threat, loss);
            Attack::Apgd(Apgd {
                steps: self.steps.unwrap_or(d.steps),
                restarts,
                targets,
                ..d
            })
        };
        let fab = |targeted, restarts| {
            let d = Fab::new(self.threat, targeted);
            Attack::Fab(Fab {
                steps: self.steps.unwrap_or(d.steps),
                restarts,
                targets,
                ..d
            })
        };
        let square = {
            let d = Square::new(self.threat);
            Attack::Square(Square {
                queries: self.queries.unwrap_or(d.queries),
                rescale_schedule: self.rescale_schedule,
                ..d
            })
        };
        match self.version {
            Version::Standard => vec![
                apgd(ApgdLoss::CrossEntropy, 1),
                apgd(ApgdLoss::TargetedDlr, 1),
                fab(true, 1),
                square,
            ],
            Version::Plus => vec![
                apgd(ApgdLoss::CrossEntropy, 5),
                apgd(ApgdLoss::Dlr, 5),
                fab(false, 5),
                square,
                apgd(ApgdLoss::TargetedDlr, 1),
                fab(true, 1),
            ],
            Version::Rand => vec![apgd(ApgdLoss::CrossEntropy, 1), apgd(ApgdLoss::Dlr, 1)],
        }
    }

    /// Runs the ensemble on a batch: the adversarials, and per example
    /// which member broke it (`None`: robust, or misclassified already).
    pub(crate) fn attack<M: Classifier + ?Sized>(
        &self,
        model: &M,
        x: &Tensor,
        y: &Tensor,
        labels: &[u32],
        seed: u64,
    ) -> Result<(Outcome, Vec<Option<usize>>)> {
        let mut state = Ensemble::start(model, x, labels)?;
        for (m, member) in self.members(model.classes()).iter().enumerate() {
            state.run(model, member, m, x, y, labels, seed)?;
        }
        Ok((
            Outcome {
                adv: state.adv,
                fooled: state.robust.iter().map(|r| !r).collect(),
            },
            state.broken_by,
        ))
    }
}

/// An ensemble in progress on a batch.
pub(crate) struct Ensemble {
    /// The adversarials so far (x where none was found).
    pub adv: Tensor,
    /// Still classified correctly.
    pub robust: Vec<bool>,
    /// The member that broke each example.
    pub broken_by: Vec<Option<usize>>,
}

impl Ensemble {
    /// The start: the clean predictions.
    pub(crate) fn start<M: Classifier + ?Sized>(
        model: &M,
        x: &Tensor,
        labels: &[u32],
    ) -> Result<Ensemble> {
        let pred = predictions(model, x)?;
        Ok(Ensemble {
            adv: x.clone(),
            robust: pred.iter().zip(labels).map(|(p, y)| p == y).collect(),
            broken_by: vec![None; labels.len()],
        })
    }

    /// Runs `member` (number `m`) on the examples still robust; returns
    /// how many it broke.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run<M: Classifier + ?Sized>(
        &mut self,
        model: &M,
        member: &Attack,
        m: usize,
        x: &Tensor,
        y: &Tensor,
        labels: &[u32],
        seed: u64,
    ) -> Result<usize> {
        let active: Vec<usize> = (0..labels.len()).filter(|&i| self.robust[i]).collect();
        if active.is_empty() {
            return Ok(0);
        }
        let out = member.outcome(
            model,
            &take_rows(x, &active)?,
            &take_rows(y, &active)?,
            seed,
        )?;
        let (rows, from): (Vec<usize>, Vec<usize>) = out
            .fooled
            .iter()
            .enumerate()
            .filter(|(_, &f)| f)
            .map(|(k, _)| (active[k], k))
            .unzip();
        for &i in &rows {
            self.robust[i] = false;
            self.broken_by[i] = Some(m);
        }
        put_rows(&mut self.adv, &rows, &take_rows(&out.adv, &from)?)?;
        Ok(rows.len())
    }
}

/// One member's line in an ensemble report.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Stage {
    /// The member's name (`apgd-ce`, …).
    pub attack: String,
    /// Robust accuracy over all examples after this member.
    pub robust_accuracy: f64,
    /// Examples this member broke.
    pub broken: usize,
    /// Wall-clock seconds this member took.
    pub seconds: f64,
}

/// What happened to one example under the ensemble.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// Its index in the data set.
    pub index: usize,
    /// The true class.
    pub label: u32,
    /// The prediction on the clean input.
    pub clean_pred: u32,
    /// The prediction on the final input (the adversarial, if any).
    pub adv_pred: u32,
    /// `clean` if misclassified without attack, the member that broke it,
    /// or `null` if it stayed robust.
    pub broken_by: Option<String>,
    /// `‖x' − x‖∞`.
    pub linf: f64,
    /// `‖x' − x‖₂`.
    pub l2: f64,
}

/// The ensemble's account of one eps: robust accuracy after each member
/// and the fate of every example.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct EnsembleDetails {
    /// `standard`, `plus` or `rand`.
    pub version: String,
    /// One line per member that ran, in order.
    pub stages: Vec<Stage>,
    /// One entry per example.
    pub points: Vec<Point>,
}

/// The stage line of a member that just finished, logged as the reference
/// implementation prints it.
pub(crate) fn timed_stage(
    name: &str,
    robust_after: usize,
    n: usize,
    broken: usize,
    start: Instant,
    log: &mut dyn FnMut(&str),
) -> Stage {
    let seconds = start.elapsed().as_secs_f64();
    let robust_accuracy = robust_after as f64 / n.max(1) as f64;
    log(&format!(
        "robust accuracy after {}: {:.2}% ({} broken, {:.1} s)",
        name.to_uppercase(),
        100.0 * robust_accuracy,
        broken,
        seconds
    ));
    Stage {
        attack: name.to_string(),
        robust_accuracy,
        broken,
        seconds,
    }
}
