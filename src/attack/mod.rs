//! Adversarial attacks: the gradient of the loss with respect to the input,
//! used to fool a trained model.
//!
//! An attack takes a model, a batch `x: [N, d]` of pixels in `[0, 1]` and
//! its u32 labels `[N]`, and returns adversarial inputs `x'` with, for every
//! row, the perturbation inside the attack's [`Threat`] (the L∞ or L2 ball of
//! radius `eps` around `x`) and every pixel inside `[0, 1]`:
//!
//! `‖x'ᵢ − xᵢ‖ ≤ eps` and `x' ∈ [0, 1]^{N×d}`.
//!
//! | attack | norm | update rule (`g = ∇ₓL`, `Π` the projection on ball ∩ box) |
//! |---|---|---|
//! | [`Fgsm`] | L∞ | `x' = clip(x + eps·sign g)` |
//! | [`Fgm`] | L2 | `x' = Π(x + eps·g/‖g‖₂)` |
//! | [`Bim`] | L∞ | `xₜ₊₁ = Π(xₜ + α·sign gₜ)` from `x₀ = x` |
//! | [`Pgd`] | L∞ or L2 | as BIM (L2: `α·g/‖g‖₂`), random start, restarts |
//! | [`MiFgsm`] | L∞ | `mₜ₊₁ = μ·mₜ + gₜ/‖gₜ‖₁`, `xₜ₊₁ = Π(xₜ + α·sign mₜ₊₁)` |
//! | [`DeepFool`] | L2 | step to the nearest linearised decision boundary |
//! | [`CarliniWagner`] | L2 | `min ‖x'−x‖² + c·f(x')`, `x' = (tanh w + 1)/2`, Adam |
//! | [`Apgd`] | L∞ or L2 | PGD with momentum 0.75 and a step size that halves at checkpoints, on CE, DLR or targeted DLR |
//! | [`Fab`] | L∞ or L2 | minimum-norm steps onto the linearised boundary, biased towards `x` |
//! | [`Square`] | L∞ or L2 | random search over square windows, scores only (no gradient) |
//! | [`AutoAttack`] | L∞ or L2 | APGD-CE, APGD-T, FAB-T and Square, each on the examples still robust |
//!
//! Every attack is batched and works on the rows independently: an
//! example's adversarial does not depend on the other rows of its batch
//! (the gradients come from the *summed* loss, so no `1/N` factor enters;
//! only a random start draws its noise for the whole batch at once). The
//! randomness (random starts, random targets) comes from the seed passed to
//! [`Attack::run`], so a seed reproduces a batch. Without a random start
//! every attack is deterministic. The robustness-evaluation attacks (APGD,
//! FAB, Square, AutoAttack) draw their randomness per example, from the
//! seed and the example itself, so their result for an example does not
//! depend on its batch at all (see [`rowwise`]).
//!
//! ```no_run
//! use advgrad::attack::{Attack, Fgsm};
//! # fn demo(model: &advgrad::nn::Model, x: &advgrad::Tensor, y: &advgrad::Tensor) -> advgrad::Result<()> {
//! let attack = Attack::Fgsm(Fgsm::new(0.1));
//! let x_adv = attack.run(model, x, y, 0)?;
//! let fooled = model.predict(&x_adv)?;
//! # Ok(()) }
//! ```

mod apgd;
mod audit;
mod autoattack;
mod common;
mod cw;
mod deepfool;
mod fab;
mod fgsm;
mod metrics;
mod mifgsm;
mod model;
mod pgd;
pub mod rowwise;
mod square;

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::backend::Norm;
use crate::error::{Error, Result};
use crate::nn::Model;
use crate::rng::{splitmix64, Rng};
use crate::tensor::Tensor;

pub use apgd::{Apgd, ApgdLoss};
pub use audit::{audit, AuditOptions, AuditReport, Check};
pub use autoattack::{AutoAttack, EnsembleDetails, Point, Stage, Version};
pub use cw::CarliniWagner;
pub use deepfool::DeepFool;
pub use fab::Fab;
pub use fgsm::{Fgm, Fgsm};
pub use metrics::{
    evaluate_attack, evaluate_autoattack, perturbation_norms, AttackReport, EpsResult, EvalOptions,
    Sample,
};
pub use mifgsm::MiFgsm;
pub use model::Classifier;
pub use pgd::{Bim, Pgd};
pub use square::Square;

/// The threat model: the norm that bounds the perturbation `δ = x' − x`
/// of each example, and the radius `eps` of the ball.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub enum Threat {
    /// `‖δ‖∞ = maxⱼ |δⱼ| ≤ eps`.
    Linf(f64),
    /// `‖δ‖₂ = √(Σⱼ δⱼ²) ≤ eps`.
    L2(f64),
}

impl Threat {
    /// The radius.
    pub fn eps(self) -> f64 {
        match self {
            Threat::Linf(e) | Threat::L2(e) => e,
        }
    }

    /// The same norm with another radius.
    pub fn with_eps(self, eps: f64) -> Threat {
        match self {
            Threat::Linf(_) => Threat::Linf(eps),
            Threat::L2(_) => Threat::L2(eps),
        }
    }

    /// The threat of `norm` with radius `eps`.
    pub fn of(norm: Norm, eps: f64) -> Threat {
        match norm {
            Norm::Linf => Threat::Linf(eps),
            Norm::L2 => Threat::L2(eps),
        }
    }

    /// The norm, as the kernels name it.
    pub fn kernel_norm(self) -> Norm {
        match self {
            Threat::Linf(_) => Norm::Linf,
            Threat::L2(_) => Norm::L2,
        }
    }

    /// The norm's name: `Linf` or `L2`.
    pub fn norm_name(self) -> &'static str {
        match self {
            Threat::Linf(_) => "Linf",
            Threat::L2(_) => "L2",
        }
    }

    /// Checks the radius for inputs of `d` pixels in `[0, 1]`: `eps ≥ 0`,
    /// and, since no two such images are further apart than 1 in L∞ or
    /// `√d` in L2, an L∞ radius above 1 (an L2 budget given to an L∞
    /// attack, most likely) or an L2 radius above `√d` is an error too.
    /// An infinite L2 radius means "unbounded" (minimal-perturbation
    /// attacks).
    pub fn validate(self, d: usize) -> Result<()> {
        let eps = self.eps();
        if eps.is_nan() || eps < 0.0 {
            return Err(Error::invalid(format!(
                "attack: eps must be ≥ 0, got {eps}"
            )));
        }
        match self {
            Threat::Linf(e) if e > 1.0 => Err(Error::invalid(format!(
                "attack: an L∞ eps of {e} is larger than the whole pixel range [0, 1]; \
                 L∞ budgets for [0, 1] images are like 0.03–0.3 (was this an L2 budget? \
                 the L2 attacks are fgm, pgd-l2, deepfool and cw, and the others with --norm l2)"
            ))),
            Threat::L2(e) if e.is_finite() && e > (d as f64).sqrt() => {
                Err(Error::invalid(format!(
                    "attack: an L2 eps of {e} is larger than the distance between any two \
                 images of {d} pixels in [0, 1] (at most √{d} = {:.2})",
                    (d as f64).sqrt()
                )))
            }
            _ => Ok(()),
        }
    }
}

impl fmt::Display for Threat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Threat::Linf(e) => write!(f, "L∞ ≤ {e}"),
            Threat::L2(e) => write!(f, "L2 ≤ {e}"),
        }
    }
}

/// Which class an attack pushes each example towards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Target {
    /// Any wrong class: maximise the loss of the true label.
    #[default]
    Untargeted,
    /// This class for every example (examples already of that class keep
    /// it as their target and count as successes once classified so).
    Class(u32),
    /// A class drawn uniformly among the other classes, per example, from
    /// the attack's seed.
    RandomOther,
}

impl Target {
    /// Whether the attack is targeted.
    pub fn is_targeted(self) -> bool {
        !matches!(self, Target::Untargeted)
    }

    /// The class each example is pushed to: `None` when untargeted. With
    /// [`Target::RandomOther`] row `i` gets
    /// `(yᵢ + 1 + r) mod C`, `r` uniform in `0..C−1` drawn from
    /// `Rng::new(seed)` in row order.
    ///
    /// # Errors
    /// A target class outside `0..classes`, or a random target with fewer
    /// than two classes.
    pub fn targets(self, labels: &[u32], classes: usize, seed: u64) -> Result<Option<Vec<u32>>> {
        match self {
            Target::Untargeted => Ok(None),
            Target::Class(k) if (k as usize) < classes => Ok(Some(vec![k; labels.len()])),
            Target::Class(k) => Err(Error::invalid(format!(
                "attack: target class {k} is out of range for a model of {classes} classes"
            ))),
            Target::RandomOther if classes < 2 => Err(Error::invalid(
                "attack: a random other class needs at least two classes",
            )),
            Target::RandomOther => {
                let mut rng = Rng::new(seed ^ 0x7a26_e7c0_ffee_0001);
                let c = classes as u64;
                Ok(Some(
                    labels
                        .iter()
                        .map(|&y| ((u64::from(y) + 1 + rng.below(c - 1)) % c) as u32)
                        .collect(),
                ))
            }
        }
    }
}

/// The settings the command line gives every attack; each attack takes
/// what applies to it (see [`Attack::build`]). `None` picks the attack's
/// documented default.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct AttackOptions {
    /// Iterations (BIM, PGD, MI-FGSM, DeepFool) or Adam steps per binary
    /// search step (C&W).
    pub steps: Option<usize>,
    /// Step size α (BIM, PGD, MI-FGSM) or Adam's learning rate (C&W).
    pub alpha: Option<f64>,
    /// Start PGD from a uniform random point of the ball.
    pub random_start: bool,
    /// PGD restarts (the best per example is kept); at least 1.
    pub restarts: Option<usize>,
    /// Untargeted, or the target.
    pub target: Target,
    /// The norm of APGD, FAB, Square and AutoAttack (`None`: L∞).
    pub norm: Option<Norm>,
    /// AutoAttack's version (`None`: standard).
    pub version: Option<Version>,
    /// Square's query budget (also Square inside AutoAttack).
    pub queries: Option<usize>,
    /// Target classes of APGD-T and FAB-T (`None`: 9, at most classes − 1).
    pub targets: Option<usize>,
    /// Scale Square's `p` schedule to its query budget (square, autoattack).
    pub rescale_schedule: bool,
}

/// One configured attack. Each variant's struct documents its update rule
/// and defaults; [`Attack::run`] checks the inputs, runs it, and enforces
/// the threat model on the result.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Attack {
    /// Fast gradient sign method (L∞).
    Fgsm(Fgsm),
    /// Fast gradient method (L2).
    Fgm(Fgm),
    /// Basic iterative method / I-FGSM (L∞).
    Bim(Bim),
    /// Projected gradient descent (L∞ or L2).
    Pgd(Pgd),
    /// Momentum iterative FGSM (L∞).
    MiFgsm(MiFgsm),
    /// DeepFool (L2).
    DeepFool(DeepFool),
    /// Carlini–Wagner L2.
    CarliniWagner(CarliniWagner),
    /// Auto-PGD on CE, DLR or targeted DLR (L∞ or L2).
    Apgd(Apgd),
    /// FAB or FAB-T (L∞ or L2).
    Fab(Fab),
    /// The Square attack (L∞ or L2, scores only).
    Square(Square),
    /// The AutoAttack ensemble.
    AutoAttack(AutoAttack),
}

/// The attack names [`Attack::build`] knows, as the command line spells
/// them.
pub const ATTACK_NAMES: [&str; 15] = [
    "fgsm",
    "fgm",
    "bim",
    "pgd",
    "pgd-l2",
    "mifgsm",
    "deepfool",
    "cw",
    "apgd-ce",
    "apgd-dlr",
    "apgd-t",
    "fab",
    "fab-t",
    "square",
    "autoattack",
];

/// The attacks that take `--norm` (and draw their randomness per example).
pub const EVALUATION_ATTACKS: [&str; 7] = [
    "apgd-ce",
    "apgd-dlr",
    "apgd-t",
    "fab",
    "fab-t",
    "square",
    "autoattack",
];

impl Attack {
    /// The attack called `name` (one of [`ATTACK_NAMES`]) with radius `eps`
    /// and the applicable `options`.
    ///
    /// # Errors
    /// An unknown name, a targeted request for DeepFool (untargeted only),
    /// `steps` or `restarts` of 0, or a non-positive `alpha`.
    pub fn build(name: &str, eps: f64, options: &AttackOptions) -> Result<Attack> {
        if options.steps == Some(0) {
            return Err(Error::invalid("attack: steps must be at least 1"));
        }
        if options.restarts == Some(0) {
            return Err(Error::invalid("attack: restarts must be at least 1"));
        }
        if let Some(a) = options.alpha {
            if !(a > 0.0 && a.is_finite()) {
                return Err(Error::invalid(format!(
                    "attack: the step size alpha must be positive, got {a}"
                )));
            }
        }
        if !EVALUATION_ATTACKS.contains(&name)
            && (options.norm.is_some()
                || options.version.is_some()
                || options.queries.is_some()
                || options.targets.is_some()
                || options.rescale_schedule)
        {
            return Err(Error::invalid(format!(
                "attack: {name} takes no norm, version, queries or targets \
                 (those are for {})",
                EVALUATION_ATTACKS.join(", ")
            )));
        }
        let target = options.target;
        let iterative_only = |what: &str| -> Result<()> {
            if options.random_start || options.restarts.is_some_and(|r| r > 1) {
                return Err(Error::invalid(format!(
                    "attack: {what} has no random start or restarts (pgd and pgd-l2 do)"
                )));
            }
            Ok(())
        };
        let attack = match name {
            "fgsm" => {
                iterative_only("fgsm")?;
                Attack::Fgsm(Fgsm { eps, target })
            }
            "fgm" => {
                iterative_only("fgm")?;
                Attack::Fgm(Fgm { eps, target })
            }
            "bim" | "ifgsm" | "i-fgsm" => {
                iterative_only("bim")?;
                let d = Bim::new(eps);
                Attack::Bim(Bim {
                    steps: options.steps.unwrap_or(d.steps),
                    alpha: options.alpha,
                    target,
                    ..d
                })
            }
            "pgd" | "pgd-linf" | "pgd-l2" => {
                let threat = if name == "pgd-l2" {
                    Threat::L2(eps)
                } else {
                    Threat::Linf(eps)
                };
                let d = Pgd::new(threat);
                Attack::Pgd(Pgd {
                    steps: options.steps.unwrap_or(d.steps),
                    alpha: options.alpha,
                    random_start: options.random_start,
                    restarts: options.restarts.unwrap_or(1),
                    target,
                    ..d
                })
            }
            "mifgsm" | "mi-fgsm" => {
                iterative_only("mifgsm")?;
                let d = MiFgsm::new(eps);
                Attack::MiFgsm(MiFgsm {
                    steps: options.steps.unwrap_or(d.steps),
                    alpha: options.alpha,
                    target,
                    ..d
                })
            }
            "deepfool" => {
                iterative_only("deepfool")?;
                if target.is_targeted() {
                    return Err(Error::invalid(
                        "attack: deepfool is untargeted (it steps to the nearest decision boundary)",
                    ));
                }
                let d = DeepFool::new(Some(eps));
                Attack::DeepFool(DeepFool {
                    max_iter: options.steps.unwrap_or(d.max_iter),
                    ..d
                })
            }
            "cw" | "carlini-wagner" => {
                iterative_only("cw")?;
                let d = CarliniWagner::new(Some(eps));
                Attack::CarliniWagner(CarliniWagner {
                    steps: options.steps.unwrap_or(d.steps),
                    lr: options.alpha.unwrap_or(d.lr),
                    target,
                    ..d
                })
            }
            "apgd-ce" | "apgd-dlr" | "apgd-t" | "fab" | "fab-t" | "square" | "autoattack" => {
                evaluation_attack(
                    name,
                    Threat::of(options.norm.unwrap_or(Norm::Linf), eps),
                    options,
                )?
            }
            other => {
                return Err(Error::invalid(format!(
                    "unknown attack `{other}`: expected one of {}",
                    ATTACK_NAMES.join(", ")
                )))
            }
        };
        Ok(attack)
    }

    /// The attack's name, as the command line spells it.
    pub fn name(&self) -> &'static str {
        match self {
            Attack::Fgsm(_) => "fgsm",
            Attack::Fgm(_) => "fgm",
            Attack::Bim(_) => "bim",
            Attack::Pgd(p) if matches!(p.threat, Threat::L2(_)) => "pgd-l2",
            Attack::Pgd(_) => "pgd",
            Attack::MiFgsm(_) => "mifgsm",
            Attack::DeepFool(_) => "deepfool",
            Attack::CarliniWagner(_) => "cw",
            Attack::Apgd(a) => a.name(),
            Attack::Fab(a) => a.name(),
            Attack::Square(_) => "square",
            Attack::AutoAttack(_) => "autoattack",
        }
    }

    /// The threat model the result is guaranteed to satisfy (an unbounded
    /// DeepFool or C&W reports `L2(∞)`).
    pub fn threat(&self) -> Threat {
        match self {
            Attack::Fgsm(a) => Threat::Linf(a.eps),
            Attack::Fgm(a) => Threat::L2(a.eps),
            Attack::Bim(a) => Threat::Linf(a.eps),
            Attack::Pgd(a) => a.threat,
            Attack::MiFgsm(a) => Threat::Linf(a.eps),
            Attack::DeepFool(a) => Threat::L2(a.eps.unwrap_or(f64::INFINITY)),
            Attack::CarliniWagner(a) => Threat::L2(a.eps.unwrap_or(f64::INFINITY)),
            Attack::Apgd(a) => a.threat,
            Attack::Fab(a) => a.threat,
            Attack::Square(a) => a.threat,
            Attack::AutoAttack(a) => a.threat,
        }
    }

    /// The same attack with radius `eps` (step sizes left at their default
    /// follow it).
    pub fn with_eps(&self, eps: f64) -> Attack {
        let mut a = self.clone();
        match &mut a {
            Attack::Fgsm(c) => c.eps = eps,
            Attack::Fgm(c) => c.eps = eps,
            Attack::Bim(c) => c.eps = eps,
            Attack::Pgd(c) => c.threat = c.threat.with_eps(eps),
            Attack::MiFgsm(c) => c.eps = eps,
            Attack::DeepFool(c) => c.eps = Some(eps),
            Attack::CarliniWagner(c) => c.eps = Some(eps),
            Attack::Apgd(c) => c.threat = c.threat.with_eps(eps),
            Attack::Fab(c) => c.threat = c.threat.with_eps(eps),
            Attack::Square(c) => c.threat = c.threat.with_eps(eps),
            Attack::AutoAttack(c) => c.threat = c.threat.with_eps(eps),
        }
        a
    }

    /// The attack's goal.
    pub fn target(&self) -> Target {
        match self {
            Attack::Fgsm(a) => a.target,
            Attack::Fgm(a) => a.target,
            Attack::Bim(a) => a.target,
            Attack::Pgd(a) => a.target,
            Attack::MiFgsm(a) => a.target,
            Attack::DeepFool(_) => Target::Untargeted,
            Attack::CarliniWagner(a) => a.target,
            Attack::Apgd(_) | Attack::Fab(_) | Attack::Square(_) | Attack::AutoAttack(_) => {
                Target::Untargeted
            }
        }
    }

    /// The targets [`Attack::run`] uses for these labels and this seed
    /// (`None` when untargeted).
    ///
    /// # Errors
    /// As [`Target::targets`].
    pub fn targets(&self, labels: &[u32], classes: usize, seed: u64) -> Result<Option<Vec<u32>>> {
        self.target().targets(labels, classes, seed)
    }

    /// Adversarial inputs for the batch `x: [N, d]` (pixels in `[0, 1]`,
    /// f32 or f64, on the model's device) with u32 `labels: [N]`.
    ///
    /// The result lies in the attack's [`Threat`] around `x` and in
    /// `[0, 1]`; with `eps = 0` it is `x` itself. `x` is never modified.
    /// `seed` fixes the random start and the random targets.
    ///
    /// # Errors
    /// A negative or NaN eps, an eps too large for the norm (see
    /// [`Threat::validate`]), inputs not `[N, model inputs]` or outside
    /// `[0, 1]`, labels not u32 `[N]` or out of range, a bad target or step
    /// setting, and any error of the underlying ops.
    pub fn run(&self, model: &Model, x: &Tensor, labels: &Tensor, seed: u64) -> Result<Tensor> {
        if self.is_evaluation() {
            return Ok(self.outcome(model, x, labels, seed)?.adv);
        }
        let (_, d, host_labels) = common::check_batch(model, x, labels)?;
        let threat = self.threat();
        threat.validate(d)?;
        let targets = self.targets(&host_labels, model.classes(), seed)?;
        if threat.eps() == 0.0 {
            return Ok(x.clone());
        }
        // The classes the objective is measured against: the targets when
        // targeted, else the labels.
        let goal = match &targets {
            Some(t) => Tensor::from_vec(t.clone(), [t.len()])?.to_device(x.device())?,
            None => labels.clone(),
        };
        let goal = Goal {
            classes: &goal,
            host: targets.as_deref().unwrap_or(&host_labels),
            targeted: targets.is_some(),
        };
        let x_adv = match self {
            Attack::Fgsm(a) => a.perturb(model, x, &goal)?,
            Attack::Fgm(a) => a.perturb(model, x, &goal)?,
            Attack::Bim(a) => a.as_pgd().perturb(model, x, &goal, seed)?,
            Attack::Pgd(a) => a.perturb(model, x, &goal, seed)?,
            Attack::MiFgsm(a) => a.perturb(model, x, &goal)?,
            Attack::DeepFool(a) => a.perturb(model, x, &host_labels)?,
            Attack::CarliniWagner(a) => a.perturb(model, x, &goal)?,
            Attack::Apgd(_) | Attack::Fab(_) | Attack::Square(_) | Attack::AutoAttack(_) => {
                unreachable!("the evaluation attacks returned above")
            }
        };
        // The L∞ sign-step attacks end with `sign_step`, the projection onto
        // exactly this set; the others are projected here.
        let projected = match self {
            Attack::Fgsm(_) | Attack::Bim(_) | Attack::MiFgsm(_) => true,
            Attack::Pgd(p) => matches!(p.threat, Threat::Linf(_)),
            _ => false,
        };
        if projected {
            Ok(x_adv)
        } else {
            enforce(threat, x_adv, x)
        }
    }
}

impl Attack {
    /// Whether this is one of the robustness-evaluation attacks (APGD,
    /// FAB, Square, AutoAttack), which take any [`Classifier`].
    pub fn is_evaluation(&self) -> bool {
        matches!(
            self,
            Attack::Apgd(_) | Attack::Fab(_) | Attack::Square(_) | Attack::AutoAttack(_)
        )
    }

    /// Runs a robustness-evaluation attack on any classifier: checks the
    /// batch (`x: [N, inputs]` in `[0, 1]`, u32 `labels: [N]`), runs it,
    /// enforces the threat model, and says which examples the model
    /// misclassifies on the result.
    ///
    /// # Errors
    /// An attack that is not an evaluation attack, a bad batch or eps, and
    /// any error of the ops.
    pub fn outcome<M: Classifier + ?Sized>(
        &self,
        model: &M,
        x: &Tensor,
        labels: &Tensor,
        seed: u64,
    ) -> Result<Outcome> {
        let (_, d, host) = common::check_batch(model, x, labels)?;
        let host = &host[..];
        let threat = self.threat();
        threat.validate(d)?;
        if threat.eps() == 0.0 || host.is_empty() {
            let pred = rowwise::predictions(model, x)?;
            return Ok(Outcome {
                adv: x.clone(),
                fooled: pred.iter().zip(host).map(|(p, y)| p != y).collect(),
            });
        }
        let raw = match self {
            Attack::Apgd(a) => a.attack(model, x, labels, host, seed)?,
            Attack::Fab(a) => a.attack(model, x, host, seed)?,
            Attack::Square(a) => a.attack(model, x, host, seed)?,
            Attack::AutoAttack(a) => a.attack(model, x, labels, host, seed)?.0,
            other => {
                return Err(Error::invalid(format!(
                    "{} is not one of the evaluation attacks ({})",
                    other.name(),
                    EVALUATION_ATTACKS.join(", ")
                )))
            }
        };
        let adv = enforce(threat, raw.adv, x)?;
        let pred = rowwise::predictions(model, &adv)?;
        Ok(Outcome {
            adv,
            fooled: pred.iter().zip(host).map(|(p, y)| p != y).collect(),
        })
    }
}

/// What a robustness-evaluation attack returns for a batch.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The adversarial inputs (within the threat model, in `[0, 1]`).
    pub adv: Tensor,
    /// Per example: misclassified on `adv`.
    pub fooled: Vec<bool>,
}

impl Outcome {
    /// Before any run: the clean inputs, the examples whose first-ranked
    /// class (`ranked[i][0]`) is not the label counted as fooled.
    pub(crate) fn start(x: &Tensor, ranked: &[Vec<u32>], labels: &[u32]) -> Outcome {
        Outcome {
            adv: x.clone(),
            fooled: ranked.iter().zip(labels).map(|(r, &y)| r[0] != y).collect(),
        }
    }

    /// The examples not fooled yet.
    pub(crate) fn unfooled(&self) -> Vec<usize> {
        (0..self.fooled.len())
            .filter(|&i| !self.fooled[i])
            .collect()
    }

    /// Takes in a run on the examples `active`: its adversarials `run_adv`
    /// (one row per active example) replace ours where `take[k]`, and
    /// `broke[k]` marks active example k as fooled.
    pub(crate) fn absorb(
        &mut self,
        active: &[usize],
        run_adv: &Tensor,
        take: &[bool],
        broke: &[bool],
    ) -> Result<()> {
        let from: Vec<usize> = (0..active.len()).filter(|&k| take[k]).collect();
        let rows: Vec<usize> = from.iter().map(|&k| active[k]).collect();
        for (k, &b) in broke.iter().enumerate() {
            self.fooled[active[k]] |= b;
        }
        rowwise::put_rows(&mut self.adv, &rows, &rowwise::take_rows(run_adv, &from)?)
    }
}

/// Builds APGD, FAB, Square or AutoAttack from the command-line options.
fn evaluation_attack(name: &str, threat: Threat, options: &AttackOptions) -> Result<Attack> {
    if options.target.is_targeted() {
        return Err(Error::invalid(format!(
            "attack: {name} is untargeted (apgd-t and fab-t pick their target classes \
             themselves; --targets sets how many)"
        )));
    }
    if options.random_start || options.alpha.is_some() {
        return Err(Error::invalid(format!(
            "attack: {name} has no --random-start or --alpha (its step size adapts itself)"
        )));
    }
    if options.queries == Some(0) || options.targets == Some(0) {
        return Err(Error::invalid(
            "attack: queries and targets must be at least 1",
        ));
    }
    let only = |what: bool, flag: &str, attacks: &str| -> Result<()> {
        if what {
            return Err(Error::invalid(format!(
                "attack: {flag} applies to {attacks}, not {name}"
            )));
        }
        Ok(())
    };
    only(
        options.version.is_some() && name != "autoattack",
        "--version",
        "autoattack",
    )?;
    only(
        options.queries.is_some() && !matches!(name, "square" | "autoattack"),
        "--queries",
        "square and autoattack",
    )?;
    only(
        options.targets.is_some() && !matches!(name, "apgd-t" | "fab-t"),
        "--targets",
        "apgd-t and fab-t",
    )?;
    only(
        options.rescale_schedule && !matches!(name, "square" | "autoattack"),
        "--rescale-schedule",
        "square and autoattack",
    )?;
    let steps = |d: usize| options.steps.unwrap_or(d);
    let restarts = |d: usize| options.restarts.unwrap_or(d);
    Ok(match name {
        "apgd-ce" | "apgd-dlr" | "apgd-t" => {
            let loss = match name {
                "apgd-ce" => ApgdLoss::CrossEntropy,
                "apgd-dlr" => ApgdLoss::Dlr,
                _ => ApgdLoss::TargetedDlr,
            };
            let d = Apgd::new(threat, loss);
            Attack::Apgd(Apgd {
                steps: steps(d.steps),
                restarts: restarts(d.restarts),
                targets: options.targets.unwrap_or(d.targets),
                ..d
            })
        }
        "fab" | "fab-t" => {
            let d = Fab::new(threat, name == "fab-t");
            Attack::Fab(Fab {
                steps: steps(d.steps),
                restarts: restarts(d.restarts),
                targets: options.targets.unwrap_or(d.targets),
                ..d
            })
        }
        "square" => {
            only(
                options.steps.is_some(),
                "--steps",
                "apgd and fab (square counts --queries)",
            )?;
            let d = Square::new(threat);
            Attack::Square(Square {
                queries: options.queries.unwrap_or(d.queries),
                restarts: restarts(d.restarts),
                rescale_schedule: options.rescale_schedule,
                ..d
            })
        }
        _ => {
            only(
                options.restarts.is_some(),
                "--restarts",
                "apgd, fab and square",
            )?;
            Attack::AutoAttack(AutoAttack {
                steps: options.steps,
                queries: options.queries,
                rescale_schedule: options.rescale_schedule,
                ..AutoAttack::new(threat, options.version.unwrap_or_default())
            })
        }
    })
}

impl fmt::Display for Attack {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.name(), self.threat())
    }
}

/// What an attack aims for, resolved for one batch.
pub(crate) struct Goal<'a> {
    /// The u32 classes `[N]` the objective is measured against, on the
    /// device: the targets when targeted, else the labels.
    pub classes: &'a Tensor,
    /// The same on the host.
    pub host: &'a [u32],
    /// Whether the attack descends towards `classes` instead of ascending
    /// away from them.
    pub targeted: bool,
}

/// Enforces the promise of [`Attack::run`]: projects onto the ball and the
/// box whatever an attack produced (a no-op, bit for bit, on results that
/// already satisfy it).
fn enforce(threat: Threat, x_adv: Tensor, x: &Tensor) -> Result<Tensor> {
    match threat {
        Threat::Linf(eps) => x_adv.project_linf(x, eps, 0.0, 1.0),
        Threat::L2(eps) if eps.is_finite() => common::enforce_l2(x_adv.clamp(0.0, 1.0)?, x, eps),
        Threat::L2(_) => x_adv.clamp(0.0, 1.0),
    }
}

/// The seed of restart `r` (and of its random start) for an attack run
/// with `seed`: restart `r` of a run with seed `s` draws exactly what
/// restart 0 of a run with seed `s + r` draws.
pub fn restart_seed(seed: u64, restart: usize) -> u64 {
    let mut s = seed.wrapping_add(restart as u64);
    splitmix64(&mut s)
}
