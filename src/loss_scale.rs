//! Dynamic loss scaling for f16 training, with the semantics of PyTorch's
//! `torch.amp.GradScaler`.
//!
//! f16 holds magnitudes from 2⁻²⁴ to 65504 only, so under f16 autocast the
//! small gradients of the backward products would round to zero. The loss
//! is multiplied by a scale `S` before the backward pass (so every
//! gradient is too) and the gradients are divided by `S` (exactly: `S` is a
//! power of two) before the optimiser sees them. When a scaled gradient
//! overflows — some gradient is infinite or NaN — the step is skipped (the
//! parameters, the optimiser state and its step count stay as they were)
//! and `S` is halved; after [`LossScaler::growth_interval`] clean steps in a
//! row `S` is doubled. `S` starts at 2¹⁶.
//!
//! bf16 has f32's range and needs none of this; [`crate::train`] scales
//! only under f16.

use crate::error::{Error, Result};
use crate::nn::{gradients_of, Model, Params};
use crate::optim::Optimizer;
use crate::tape::Tape;
use crate::tensor::Tensor;
use crate::train::StepStats;

/// The state of dynamic loss scaling (see the [module docs](self)).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct LossScaler {
    scale: f64,
    growth_tracker: u32,
    growth_interval: u32,
}

impl Default for LossScaler {
    fn default() -> Self {
        LossScaler::new()
    }
}

impl LossScaler {
    /// GradScaler's `init_scale`: 2¹⁶.
    pub const INIT_SCALE: f64 = 65536.0;
    /// GradScaler's `growth_interval`: 2000 clean steps.
    pub const GROWTH_INTERVAL: u32 = 2000;

    /// A scaler at 2¹⁶ that doubles after 2000 clean steps.
    pub fn new() -> LossScaler {
        LossScaler {
            scale: Self::INIT_SCALE,
            growth_tracker: 0,
            growth_interval: Self::GROWTH_INTERVAL,
        }
    }

    /// The same with another growth interval (at least 1).
    pub fn with_growth_interval(self, interval: u32) -> LossScaler {
        LossScaler {
            growth_interval: interval.max(1),
            ..self
        }
    }

    /// A scaler restored from a checkpoint: its scale and the clean steps
    /// since the scale last changed.
    ///
    /// # Errors
    /// A scale that is not a positive, finite power of two.
    pub fn restored(scale: f64, growth_tracker: u32) -> Result<LossScaler> {
        let power_of_two = scale > 0.0 && scale.is_finite() && scale.log2().fract() == 0.0;
        if !power_of_two {
            return Err(Error::invalid(format!(
                "loss scale {scale} is not a positive power of two"
            )));
        }
        Ok(LossScaler {
            scale,
            growth_tracker,
            ..LossScaler::new()
        })
    }

    /// The current scale `S`.
    pub fn scale(&self) -> f64 {
        self.scale
    }

    /// Clean steps since the scale last changed.
    pub fn growth_tracker(&self) -> u32 {
        self.growth_tracker
    }

    /// Clean steps in a row after which the scale doubles.
    pub fn growth_interval(&self) -> u32 {
        self.growth_interval
    }

    /// Records a step's outcome; returns whether to take it (`false` when
    /// `found_inf`). GradScaler's `update`: on an overflow the scale halves
    /// and the count of clean steps restarts; on a clean step the count
    /// grows, and reaching the interval doubles the scale and restarts it.
    pub fn update(&mut self, found_inf: bool) -> bool {
        if found_inf {
            self.scale *= 0.5;
            self.growth_tracker = 0;
            return false;
        }
        self.growth_tracker += 1;
        if self.growth_tracker >= self.growth_interval {
            self.scale *= 2.0;
            self.growth_tracker = 0;
        }
        true
    }
}

/// What a scaled step did.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ScaledStep {
    /// The batch's loss (unscaled) and correct predictions, before the
    /// update.
    pub stats: StepStats,
    /// Whether the step was skipped because a scaled gradient overflowed.
    pub skipped: bool,
    /// The scale the step's backward pass used.
    pub scale: f64,
}

/// [`crate::train::gradient_step`] with the loss scaled by `scaler`: the
/// backward pass of `S·loss`, then, if every gradient is finite, the
/// optimiser step on the gradients divided by `S`; otherwise no update.
/// The scaler is updated either way (see [`LossScaler::update`]). A loss
/// that is itself NaN or infinite counts as an overflow.
pub fn scaled_gradient_step(
    model: &mut Model,
    optimizer: &mut Optimizer,
    tape: &mut Tape,
    x: Tensor,
    labels: &Tensor,
    lr: f64,
    scaler: &mut LossScaler,
) -> Result<ScaledStep> {
    let scale = scaler.scale();
    tape.clear();
    let xv = tape.constant(x);
    let fwd = model.forward(tape, xv, true)?;
    let loss = tape.softmax_cross_entropy(fwd.logits, labels)?;
    let stats = StepStats {
        loss: tape.value(loss)?.to_scalar()?,
        correct: tape.value(fwd.logits)?.argmax_rows()?.count_equal(labels)?,
    };
    let grads = if stats.loss.is_finite() && (stats.loss * scale).is_finite() {
        let scaled = tape.scale(loss, scale)?;
        tape.backward(scaled)?;
        let grads = gradients_of(tape, &fwd.params)?;
        all_finite(&grads)?.then_some(grads)
    } else {
        None
    };
    tape.clear();
    let take = scaler.update(grads.is_none());
    if let Some(grads) = grads {
        let unscaled = grads
            .iter()
            .map(|g| g.scale(1.0 / scale))
            .collect::<Result<Params<_>>>()?;
        optimizer.step(&mut model.params_mut(), &unscaled, lr)?;
    }
    Ok(ScaledStep {
        stats,
        skipped: !take,
        scale,
    })
}

/// Whether every element of every tensor is finite.
fn all_finite(tensors: &[Tensor]) -> Result<bool> {
    for t in tensors {
        if t.first_outside(f64::MIN, f64::MAX)?.is_some() {
            return Ok(false);
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_scale_follows_gradscalers_rule() {
        let mut s = LossScaler::new().with_growth_interval(3);
        assert_eq!(s.scale(), 65536.0);
        assert!(!s.update(true));
        assert_eq!((s.scale(), s.growth_tracker()), (32768.0, 0));
        for _ in 0..2 {
            assert!(s.update(false));
        }
        assert_eq!((s.scale(), s.growth_tracker()), (32768.0, 2));
        assert!(!s.update(true)); // an overflow restarts the count
        assert_eq!((s.scale(), s.growth_tracker()), (16384.0, 0));
        for _ in 0..3 {
            s.update(false);
        }
        assert_eq!((s.scale(), s.growth_tracker()), (32768.0, 0));
        let d = LossScaler::default();
        assert_eq!(d.growth_interval(), 2000);
        assert!(LossScaler::restored(3.0, 0).is_err());
        assert_eq!(LossScaler::restored(1024.0, 7).unwrap().growth_tracker(), 7);
    }
}
