//! Optimisers (SGD, SGD with momentum or Nesterov momentum, Adam; L2 weight
//! decay) and learning-rate schedules.
//!
//! Each update runs as one in-place kernel per parameter on the parameter's
//! device (see [`UpdateRule`] for the formulas).

use std::fmt;
use std::str::FromStr;

use serde::Serialize;

use crate::backend::{BackendStorage, UpdateRule};
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Which update rule.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum OptimizerKind {
    /// `p ← p − lr·g`.
    Sgd,
    /// Heavy-ball momentum (Nesterov with [`OptimConfig::nesterov`]).
    Momentum,
    /// Adam (Kingma & Ba).
    Adam,
}

impl FromStr for OptimizerKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "sgd" => Ok(OptimizerKind::Sgd),
            "momentum" => Ok(OptimizerKind::Momentum),
            "adam" => Ok(OptimizerKind::Adam),
            _ => Err(Error::invalid(format!(
                "unknown optimiser `{s}`: expected sgd, momentum or adam"
            ))),
        }
    }
}

impl fmt::Display for OptimizerKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OptimizerKind::Sgd => "sgd",
            OptimizerKind::Momentum => "momentum",
            OptimizerKind::Adam => "adam",
        })
    }
}

/// Hyper-parameters of an optimiser.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct OptimConfig {
    /// The update rule.
    pub kind: OptimizerKind,
    /// Base learning rate (before the schedule).
    pub lr: f64,
    /// Momentum μ (momentum SGD).
    pub momentum: f64,
    /// Nesterov look-ahead (momentum SGD).
    pub nesterov: bool,
    /// L2 weight decay added to the gradient.
    pub weight_decay: f64,
    /// Adam's β₁.
    pub beta1: f64,
    /// Adam's β₂.
    pub beta2: f64,
    /// Adam's ε.
    pub eps: f64,
}

impl OptimConfig {
    /// The defaults for `kind` with learning rate `lr`: momentum 0.9,
    /// β = (0.9, 0.999), ε = 1e-8, no weight decay.
    pub fn new(kind: OptimizerKind, lr: f64) -> OptimConfig {
        OptimConfig {
            kind,
            lr,
            momentum: 0.9,
            nesterov: false,
            weight_decay: 0.0,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
        }
    }

    /// Checks every setting against its domain; the error names the first
    /// one outside it and its value.
    fn validate(&self) -> Result<()> {
        let checks = [
            (
                "learning rate (lr)",
                self.lr,
                self.lr > 0.0 && self.lr.is_finite(),
                "a positive finite number",
            ),
            (
                "momentum",
                self.momentum,
                (0.0..1.0).contains(&self.momentum),
                "in [0, 1)",
            ),
            (
                "weight decay",
                self.weight_decay,
                self.weight_decay >= 0.0 && self.weight_decay.is_finite(),
                "a finite number ≥ 0",
            ),
            (
                "Adam's beta1",
                self.beta1,
                (0.0..1.0).contains(&self.beta1),
                "in [0, 1)",
            ),
            (
                "Adam's beta2",
                self.beta2,
                (0.0..1.0).contains(&self.beta2),
                "in [0, 1)",
            ),
            (
                "Adam's eps",
                self.eps,
                self.eps > 0.0 && self.eps.is_finite(),
                "a positive finite number",
            ),
        ];
        match checks.iter().find(|(_, _, ok, _)| !ok) {
            None => Ok(()),
            Some((what, value, _, domain)) => Err(Error::invalid(format!(
                "optimiser: the {what} must be {domain}, got {value}"
            ))),
        }
    }
}

/// A learning-rate schedule over training steps.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Schedule {
    /// The base rate throughout.
    Constant,
    /// `lr·γ^⌊epoch / every⌋`.
    Step {
        /// Epochs between decays.
        every: usize,
        /// Decay factor.
        gamma: f64,
    },
    /// `lr·(1 + cos(π·t/T))/2` over the `T` steps of the run.
    Cosine,
}

impl Schedule {
    /// The rate at step `t` of `total` (in epoch `epoch`), from `base`.
    pub fn lr(&self, base: f64, epoch: usize, t: usize, total: usize) -> f64 {
        match *self {
            Schedule::Constant => base,
            Schedule::Step { every, gamma } => {
                let decays = epoch / every.max(1);
                match i32::try_from(decays) {
                    Ok(k) => base * gamma.powi(k),
                    Err(_) => base * gamma.powf(decays as f64),
                }
            }
            Schedule::Cosine => {
                let frac = t as f64 / total.max(1) as f64;
                base * 0.5 * (1.0 + (std::f64::consts::PI * frac).cos())
            }
        }
    }
}

impl FromStr for Schedule {
    type Err = Error;
    /// `constant`, `cosine`, or `step:EVERY:GAMMA` (e.g. `step:3:0.1`) with
    /// `EVERY ≥ 1` epochs and a finite `GAMMA > 0`.
    fn from_str(s: &str) -> Result<Self> {
        let parts: Vec<&str> = s.split(':').collect();
        match parts.as_slice() {
            ["constant"] => Ok(Schedule::Constant),
            ["cosine"] => Ok(Schedule::Cosine),
            ["step", every, gamma] => match (every.parse::<usize>(), gamma.parse::<f64>()) {
                (Ok(every), Ok(gamma)) if every >= 1 && gamma > 0.0 && gamma.is_finite() => {
                    Ok(Schedule::Step { every, gamma })
                }
                _ => Err(Error::invalid(format!(
                    "bad step schedule `{s}`: expected step:EVERY:GAMMA with EVERY ≥ 1 epochs \
                     and a finite GAMMA > 0, such as step:3:0.1"
                ))),
            },
            _ => Err(Error::invalid(format!(
                "unknown schedule `{s}`: expected constant, cosine or step:EVERY:GAMMA"
            ))),
        }
    }
}

/// An optimiser with its per-parameter state (velocity, Adam moments).
#[derive(Clone, Debug)]
pub struct Optimizer {
    config: OptimConfig,
    state: Vec<(Tensor, Tensor)>,
    t: u64,
}

impl Optimizer {
    /// An optimiser for parameters shaped like `params` (state buffers are
    /// allocated once, on the parameters' devices).
    pub fn new(config: OptimConfig, params: &[&Tensor]) -> Result<Optimizer> {
        config.validate()?;
        let state = params
            .iter()
            .map(|p| {
                let buffer = |used: bool| -> Result<Tensor> {
                    let shape = if used { p.dims().to_vec() } else { vec![0] };
                    Tensor::zeros(shape, p.dtype()).to_device(p.device())
                };
                let (m, v) = match config.kind {
                    OptimizerKind::Sgd => (false, false),
                    OptimizerKind::Momentum => (true, false),
                    OptimizerKind::Adam => (true, true),
                };
                Ok((buffer(m)?, buffer(v)?))
            })
            .collect::<Result<_>>()?;
        Ok(Optimizer {
            config,
            state,
            t: 0,
        })
    }

    /// The settings.
    pub fn config(&self) -> &OptimConfig {
        &self.config
    }

    /// Number of steps taken.
    pub fn steps(&self) -> u64 {
        self.t
    }

    /// The per-parameter state buffers (momentum velocity, or Adam's first
    /// and second moments; a buffer a rule does not use has shape `[0]`),
    /// in parameter order, for a checkpoint.
    pub fn buffers(&self) -> &[(Tensor, Tensor)] {
        &self.state
    }

    /// Continues from a checkpoint: `steps` taken and the state `buffers`
    /// ([`Optimizer::buffers`] of the saved optimiser), moved to the
    /// devices of this optimiser's own buffers.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if the number, shapes or dtypes of the
    /// buffers differ from this optimiser's.
    pub fn restore(&mut self, steps: u64, buffers: Vec<(Tensor, Tensor)>) -> Result<()> {
        if buffers.len() != self.state.len() {
            return Err(Error::invalid(format!(
                "optimizer: {} saved state buffers for {} parameters",
                buffers.len(),
                self.state.len()
            )));
        }
        let mut restored = Vec::with_capacity(buffers.len());
        for (i, ((m, v), (own_m, own_v))) in buffers.into_iter().zip(&self.state).enumerate() {
            let fit = |saved: Tensor, own: &Tensor| -> Result<Tensor> {
                if saved.shape() != own.shape() || saved.dtype() != own.dtype() {
                    return Err(Error::invalid(format!(
                        "optimizer: saved state of parameter {i} is {} {}, expected {} {}",
                        saved.shape(),
                        saved.dtype(),
                        own.shape(),
                        own.dtype()
                    )));
                }
                saved.to_device(own.device())
            };
            restored.push((fit(m, own_m)?, fit(v, own_v)?));
        }
        self.state = restored;
        self.t = steps;
        Ok(())
    }

    /// Updates every parameter in place from its gradient, with learning
    /// rate `lr` (the schedule's value for this step).
    pub fn step(&mut self, params: &mut [&mut Tensor], grads: &[Tensor], lr: f64) -> Result<()> {
        if params.len() != self.state.len() || grads.len() != self.state.len() {
            return Err(Error::invalid(format!(
                "optimizer: built for {} parameters, got {} parameters and {} gradients",
                self.state.len(),
                params.len(),
                grads.len()
            )));
        }
        let (rule, state) = self.begin_step(lr);
        for ((p, g), (s1, s2)) in params.iter_mut().zip(grads).zip(state) {
            step_param(p, g, s1, s2, rule)?;
        }
        Ok(())
    }

    /// Starts a step with learning rate `lr`: counts it and returns the
    /// rule for it with the state buffers of every parameter, in parameter
    /// order, for a caller that steps the parameters itself (with
    /// [`step_param`], or inside their gradients' products:
    /// [`crate::ops::matmul::GradientProduct::step`]).
    pub fn begin_step(&mut self, lr: f64) -> (UpdateRule, &mut [(Tensor, Tensor)]) {
        self.t += 1;
        let c = &self.config;
        let rule = match c.kind {
            OptimizerKind::Sgd | OptimizerKind::Momentum => UpdateRule::Sgd {
                lr,
                momentum: if c.kind == OptimizerKind::Sgd {
                    0.0
                } else {
                    c.momentum
                },
                nesterov: c.nesterov,
                weight_decay: c.weight_decay,
            },
            OptimizerKind::Adam => UpdateRule::Adam {
                lr,
                beta1: c.beta1,
                beta2: c.beta2,
                eps: c.eps,
                weight_decay: c.weight_decay,
                t: self.t,
            },
        };
        (rule, &mut self.state)
    }
}

/// Updates the parameter `p` in place from its gradient `g` by `rule`, with
/// its state buffers `s1`, `s2` (from [`Optimizer::begin_step`]).
pub fn step_param(
    p: &mut Tensor,
    g: &Tensor,
    s1: &mut Tensor,
    s2: &mut Tensor,
    rule: UpdateRule,
) -> Result<()> {
    if p.shape() != g.shape() {
        return Err(Error::ShapeMismatch {
            op: "optimizer step",
            lhs: p.shape().clone(),
            rhs: g.shape().clone(),
        });
    }
    p.storage_mut()
        .update(g.storage(), s1.storage_mut(), s2.storage_mut(), rule)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dtype::DType;

    /// Minimises f(p) = ½‖p − c‖² (gradient p − c) with each optimiser.
    fn minimise(config: OptimConfig, steps: usize) -> Vec<f64> {
        let c = Tensor::from_vec(vec![1.0f64, -2.0, 3.0], [3]).unwrap();
        let mut p = Tensor::zeros([3], DType::F64);
        let mut opt = Optimizer::new(config, &[&p]).unwrap();
        for _ in 0..steps {
            let g = p.sub(&c).unwrap();
            opt.step(&mut [&mut p], &[g], config.lr).unwrap();
        }
        p.to_vec::<f64>().unwrap()
    }

    #[test]
    fn every_optimiser_converges_on_a_quadratic() {
        for kind in [
            OptimizerKind::Sgd,
            OptimizerKind::Momentum,
            OptimizerKind::Adam,
        ] {
            let mut cfg = OptimConfig::new(kind, 0.1);
            for nesterov in [false, true] {
                cfg.nesterov = nesterov;
                let p = minimise(cfg, 500);
                for (x, c) in p.iter().zip([1.0, -2.0, 3.0]) {
                    assert!((x - c).abs() < 1e-3, "{kind} nesterov={nesterov}: {p:?}");
                }
            }
        }
    }

    #[test]
    fn sgd_step_is_exact() {
        let mut p = Tensor::from_vec(vec![1.0f64, 2.0], [2]).unwrap();
        let g = Tensor::from_vec(vec![0.5f64, -1.0], [2]).unwrap();
        let mut cfg = OptimConfig::new(OptimizerKind::Sgd, 0.1);
        cfg.weight_decay = 0.01;
        let mut opt = Optimizer::new(cfg, &[&p]).unwrap();
        opt.step(&mut [&mut p], &[g], 0.1).unwrap();
        let v = p.to_vec::<f64>().unwrap();
        assert!((v[0] - (1.0 - 0.1 * (0.5 + 0.01))).abs() < 1e-15);
        assert!((v[1] - (2.0 - 0.1 * (-1.0 + 0.02))).abs() < 1e-15);
    }

    #[test]
    fn adam_first_step_moves_by_lr() {
        // With bias correction, Adam's first step is lr·sign(g) (up to ε).
        let mut p = Tensor::from_vec(vec![0.0f64, 0.0], [2]).unwrap();
        let g = Tensor::from_vec(vec![3.0f64, -0.01], [2]).unwrap();
        let mut opt = Optimizer::new(OptimConfig::new(OptimizerKind::Adam, 0.01), &[&p]).unwrap();
        opt.step(&mut [&mut p], &[g], 0.01).unwrap();
        let v = p.to_vec::<f64>().unwrap();
        assert!(
            (v[0] + 0.01).abs() < 1e-8 && (v[1] - 0.01).abs() < 1e-6,
            "{v:?}"
        );
    }

    #[test]
    fn schedules() {
        assert_eq!(Schedule::Constant.lr(0.1, 5, 10, 100), 0.1);
        let step: Schedule = "step:2:0.5".parse().unwrap();
        assert_eq!(step.lr(0.1, 3, 0, 1), 0.05);
        assert!((Schedule::Cosine.lr(0.1, 0, 50, 100) - 0.05).abs() < 1e-15);
        assert!("bogus".parse::<Schedule>().is_err());
        for bad in [
            "step:0:0.5",
            "step:2:nan",
            "step:2:-1",
            "step:2:inf",
            "step:x:0.5",
        ] {
            assert!(bad.parse::<Schedule>().is_err(), "{bad}");
        }
        assert!(Optimizer::new(OptimConfig::new(OptimizerKind::Sgd, -1.0), &[]).is_err());
    }

    #[test]
    fn bad_settings_are_named_without_a_debug_dump() {
        let err = Optimizer::new(OptimConfig::new(OptimizerKind::Sgd, f64::NAN), &[])
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "invalid argument: optimiser: the learning rate (lr) must be a positive finite number, got NaN"
        );
        let mut cfg = OptimConfig::new(OptimizerKind::Momentum, 0.1);
        cfg.momentum = 1.5;
        let err = Optimizer::new(cfg, &[]).unwrap_err().to_string();
        assert!(err.contains("momentum must be in [0, 1), got 1.5"), "{err}");
        assert!(!err.contains("OptimConfig"), "{err}");
    }
}
