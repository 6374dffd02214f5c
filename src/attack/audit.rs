//! A gradient-masking audit: the sanity checks of Carlini et al., "On
//! evaluating adversarial robustness" (2019), run on a model and a data
//! set with the robustness-evaluation attacks.
//!
//! | check | passes when |
//! |---|---|
//! | `eps-monotone` | APGD-CE's robust accuracy at eps/4, eps/2, eps, 2·eps, 4·eps (capped at the norm's largest sensible radius) never rises by more than the tolerance, and falls overall |
//! | `unbounded` | APGD-CE with an unbounded budget (L∞ 1, L2 √d) leaves no example correct |
//! | `black-box-weaker` | Square (scores only) leaves at least as many examples correct as APGD-CE followed by APGD-T |
//! | `more-steps` | APGD-CE with 4× the steps lowers robust accuracy by at most the tolerance |
//! | `more-restarts` | APGD-CE with 5 restarts lowers robust accuracy by at most the tolerance |
//!
//! A model that masks its gradients typically fails one of them: a
//! gradient attack stuck in a flat or shattered region gains from more
//! steps or restarts, cannot reach 0 % even with an unbounded budget, and
//! is beaten by a black-box attack that never looks at the gradient.

use serde::{Deserialize, Serialize};

use super::autoattack::Ensemble;
use super::{Apgd, ApgdLoss, Attack, Square, Threat};
use crate::data::{Batches, Dataset};
use crate::error::{Error, Result};
use crate::nn::Model;
use crate::tensor::Tensor;

/// Settings of [`audit`].
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AuditOptions {
    /// The threat model under audit.
    pub threat: Threat,
    /// Examples per attacked batch.
    pub batch_size: usize,
    /// The seed of every attack.
    pub seed: u64,
    /// How many percentage points of robust accuracy count as "little".
    pub tolerance: f64,
    /// APGD's iterations (the "more steps" check uses four times as many).
    pub steps: usize,
    /// Square's queries.
    pub queries: usize,
}

impl AuditOptions {
    /// The defaults for `threat`: batches of 1000, seed 0, a tolerance of
    /// 1 point, APGD 100 steps, Square 5000 queries.
    pub fn new(threat: Threat) -> AuditOptions {
        AuditOptions {
            threat,
            batch_size: 1000,
            seed: 0,
            tolerance: 1.0,
            steps: 100,
            queries: 5000,
        }
    }
}

/// One check's verdict and the numbers behind it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Check {
    /// The check's name (see the module documentation).
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What was measured, in words.
    pub detail: String,
    /// The robust accuracies it compared (fractions), in order.
    pub robust_accuracies: Vec<f64>,
}

/// The audit of one model.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AuditReport {
    /// `Linf` or `L2`.
    pub norm: String,
    /// The radius under audit.
    pub eps: f64,
    /// Examples.
    pub n: usize,
    /// Clean accuracy.
    pub clean_accuracy: f64,
    /// The checks, in the order of the module documentation.
    pub checks: Vec<Check>,
    /// Whether every check passed.
    pub passed: bool,
}

/// The batches of a data set on the model's device.
struct Batch {
    x: Tensor,
    y: Tensor,
    labels: Vec<u32>,
}

/// Runs the checks on every example of `data`; `log` receives a line per
/// finished check.
///
/// # Errors
/// An empty data set, a model that does not fit it, a bad eps, and any
/// error of the attacks.
pub fn audit(
    model: &Model,
    data: &Dataset,
    options: &AuditOptions,
    log: &mut dyn FnMut(&str),
) -> Result<AuditReport> {
    if data.is_empty() || options.batch_size == 0 {
        return Err(Error::invalid(
            "audit: an empty data set or a batch size of 0",
        ));
    }
    let d = data.features();
    options.threat.validate(d)?;
    let order: Vec<usize> = (0..data.rows()).collect();
    let mut batches = Vec::new();
    for idx in Batches::new(&order, options.batch_size, false)? {
        let (x, labels) = data.gather(idx)?;
        batches.push(Batch {
            x: Tensor::from_vec(x, [idx.len(), d])?.to_device(model.device())?,
            y: Tensor::from_vec(labels.clone(), [idx.len()])?.to_device(model.device())?,
            labels,
        });
    }
    let n = data.rows();
    let robust = |members: &[Attack]| -> Result<f64> {
        let mut left = 0;
        for b in &batches {
            let mut state = Ensemble::start(model, &b.x, &b.labels)?;
            for (m, member) in members.iter().enumerate() {
                state.run(model, member, m, &b.x, &b.y, &b.labels, options.seed)?;
            }
            left += state.robust.iter().filter(|&&r| r).count();
        }
        Ok(left as f64 / n as f64)
    };
    let clean_accuracy = robust(&[])?;
    let eps = options.threat.eps();
    let largest = match options.threat {
        Threat::Linf(_) => 1.0,
        Threat::L2(_) => (d as f64).sqrt(),
    };
    let apgd = |loss, e: f64, steps, restarts| {
        Attack::Apgd(Apgd {
            steps,
            restarts,
            ..Apgd::new(options.threat.with_eps(e), loss)
        })
    };
    let ce = |e: f64, steps, restarts| apgd(ApgdLoss::CrossEntropy, e, steps, restarts);
    let tol = options.tolerance / 100.0;
    let pct = |a: f64| format!("{:.2}%", 100.0 * a);
    let mut checks = Vec::new();
    let mut done = |check: Check, log: &mut dyn FnMut(&str)| {
        log(&format!(
            "{}: {} ({})",
            check.name,
            if check.passed { "pass" } else { "FAIL" },
            check.detail
        ));
        checks.push(check);
    };

    // 1. Robust accuracy falls as eps grows.
    let radii: Vec<f64> = [0.25, 0.5, 1.0, 2.0, 4.0]
        .iter()
        .map(|f| (f * eps).min(largest))
        .collect();
    let curve = radii
        .iter()
        .map(|&e| robust(&[ce(e, options.steps, 1)]))
        .collect::<Result<Vec<f64>>>()?;
    let at_eps = curve[2];
    let rises = curve.windows(2).any(|w| w[1] > w[0] + tol);
    done(
        Check {
            name: "eps-monotone".into(),
            passed: !rises && curve[4] < curve[0],
            detail: format!(
                "APGD-CE at eps {}: {}",
                radii
                    .iter()
                    .map(|e| format!("{e:.4}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                curve.iter().map(|&a| pct(a)).collect::<Vec<_>>().join(", ")
            ),
            robust_accuracies: curve.clone(),
        },
        log,
    );

    // 2. An unbounded attack reaches 0 %.
    let unbounded = robust(&[ce(largest, options.steps, 1)])?;
    done(
        Check {
            name: "unbounded".into(),
            passed: unbounded == 0.0,
            detail: format!("APGD-CE at eps {largest:.4}: {}", pct(unbounded)),
            robust_accuracies: vec![unbounded],
        },
        log,
    );

    // 3. The black-box attack is not stronger than the white-box ones.
    let white = robust(&[
        ce(eps, options.steps, 1),
        apgd(ApgdLoss::TargetedDlr, eps, options.steps, 1),
    ])?;
    let square = robust(&[Attack::Square(Square {
        queries: options.queries,
        ..Square::new(options.threat)
    })])?;
    done(
        Check {
            name: "black-box-weaker".into(),
            passed: square >= white,
            detail: format!(
                "Square ({} queries) {}, APGD-CE + APGD-T {}",
                options.queries,
                pct(square),
                pct(white)
            ),
            robust_accuracies: vec![square, white],
        },
        log,
    );

    // 4. More steps and restarts change little.
    let longer = robust(&[ce(eps, 4 * options.steps, 1)])?;
    done(
        Check {
            name: "more-steps".into(),
            passed: longer >= at_eps - tol,
            detail: format!(
                "APGD-CE {} steps {}, {} steps {}",
                options.steps,
                pct(at_eps),
                4 * options.steps,
                pct(longer)
            ),
            robust_accuracies: vec![at_eps, longer],
        },
        log,
    );
    let restarted = robust(&[ce(eps, options.steps, 5)])?;
    done(
        Check {
            name: "more-restarts".into(),
            passed: restarted >= at_eps - tol,
            detail: format!(
                "APGD-CE 1 restart {}, 5 restarts {}",
                pct(at_eps),
                pct(restarted)
            ),
            robust_accuracies: vec![at_eps, restarted],
        },
        log,
    );

    let passed = checks.iter().all(|c| c.passed);
    Ok(AuditReport {
        norm: options.threat.norm_name().into(),
        eps,
        n,
        clean_accuracy,
        checks,
        passed,
    })
}
