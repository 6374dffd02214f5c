//! What the robustness-evaluation attacks (APGD, FAB, Square, AutoAttack)
//! ask of a model: its sizes, its logits, and its forward pass recorded on
//! a tape (for input gradients). A score-based attack such as Square only
//! calls [`Classifier::logits`].

use crate::error::Result;
use crate::nn::Model;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// A classifier of inputs `[N, input_size]` into `classes` logits.
pub trait Classifier: Sync {
    /// Features per input row.
    fn input_size(&self) -> usize;
    /// Number of classes (logits per row).
    fn classes(&self) -> usize;
    /// A short description for error messages, such as `784-256-256-10`.
    fn describe(&self) -> String;
    /// The logits `[N, classes]` of a batch, without a tape.
    fn logits(&self, x: &Tensor) -> Result<Tensor>;
    /// Records the forward pass of the batch variable `x` on `tape` (the
    /// parameters as constants) and returns the logits.
    fn record_logits(&self, tape: &mut Tape, x: Var) -> Result<Var>;
}

impl Classifier for Model {
    fn input_size(&self) -> usize {
        Model::input_size(self)
    }
    fn classes(&self) -> usize {
        Model::classes(self)
    }
    fn describe(&self) -> String {
        self.arch()
    }
    fn logits(&self, x: &Tensor) -> Result<Tensor> {
        Model::logits(self, x)
    }
    fn record_logits(&self, tape: &mut Tape, x: Var) -> Result<Var> {
        Ok(self.forward(tape, x, false)?.logits)
    }
}
