//! The sequential model: layers in order, logits out (today linear layers
//! with one activation between them).

use smallvec::SmallVec;

pub use crate::backend::Activation;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::optim::{step_param, Optimizer};
use crate::rng::Rng;
use crate::tape::{ParamStep, Tape, Var};
use crate::tensor::Tensor;

use super::linear::Linear;

/// A multi-layer perceptron `784-256-256-10`: `Linear → act → … → Linear`,
/// logits out. Parameters are named as in a PyTorch `nn.Sequential` of
/// linear and activation layers: `0.weight`, `0.bias`, `2.weight`, …
#[derive(Clone, Debug)]
pub struct Model {
    /// The linear layers, input first.
    pub layers: Vec<Linear>,
    /// The activation after every layer but the last.
    pub activation: Activation,
}

/// One item per parameter, in [`Model::param_names`] order; inline (no heap
/// allocation) for up to four layers.
pub type Params<T> = SmallVec<[T; 8]>;

/// The result of recording a forward pass.
#[derive(Clone, Debug)]
pub struct Forward {
    /// The logits, `[N, classes]`.
    pub logits: Var,
    /// The parameter variables, in [`Model::param_names`] order.
    pub params: Params<Var>,
}

/// What [`Model::parameter_gradients`] returns.
#[derive(Clone, Debug)]
pub struct StepGradients {
    /// The mean loss (a scalar tensor).
    pub loss: Tensor,
    /// The logits `[N, classes]`.
    pub logits: Tensor,
    /// The gradient of the loss for each parameter, in
    /// [`Model::param_names`] order.
    pub grads: Params<Tensor>,
}

/// Parses an architecture spec such as `784-256-256-10` into layer widths.
pub fn parse_arch(spec: &str) -> Result<Vec<usize>> {
    let widths: std::result::Result<Vec<usize>, _> =
        spec.split('-').map(|w| w.trim().parse()).collect();
    match widths {
        Ok(w) if w.len() >= 2 && w.iter().all(|&x| x > 0) => Ok(w),
        _ => Err(Error::invalid(format!(
            "bad architecture `{spec}`: expected layer widths joined by '-', such as 784-256-256-10"
        ))),
    }
}

impl Model {
    /// A freshly initialised MLP (PyTorch's default init), fixed by `seed`.
    pub fn new(arch: &str, activation: Activation, seed: u64) -> Result<Model> {
        let widths = parse_arch(arch)?;
        let mut rng = Rng::new(seed);
        let layers = widths
            .windows(2)
            .map(|w| Linear::new(w[0], w[1], &mut rng))
            .collect::<Result<_>>()?;
        Ok(Model { layers, activation })
    }

    /// The architecture spec, e.g. `784-256-256-10`.
    pub fn arch(&self) -> String {
        let mut widths = vec![self.input_size()];
        widths.extend(self.layers.iter().map(Linear::outputs));
        widths
            .iter()
            .map(usize::to_string)
            .collect::<Vec<_>>()
            .join("-")
    }

    /// Number of input features.
    pub fn input_size(&self) -> usize {
        self.layers.first().map_or(0, Linear::inputs)
    }

    /// Number of classes (outputs).
    pub fn classes(&self) -> usize {
        self.layers.last().map_or(0, Linear::outputs)
    }

    /// Parameter names in PyTorch `nn.Sequential` style, in order.
    pub fn param_names(&self) -> Vec<String> {
        (0..self.layers.len())
            .flat_map(|l| [format!("{}.weight", 2 * l), format!("{}.bias", 2 * l)])
            .collect()
    }

    /// The parameters, in [`Model::param_names`] order.
    pub fn params(&self) -> Params<&Tensor> {
        self.layers
            .iter()
            .flat_map(|l| [&l.weight, &l.bias])
            .collect()
    }

    /// The parameters, mutable, in [`Model::param_names`] order.
    pub fn params_mut(&mut self) -> Params<&mut Tensor> {
        self.layers
            .iter_mut()
            .flat_map(|l| [&mut l.weight, &mut l.bias])
            .collect()
    }

    /// Total number of parameters.
    pub fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.numel()).sum()
    }

    /// The same model with its parameters on `device`.
    pub fn to_device(&self, device: Device) -> Result<Model> {
        let layers = self
            .layers
            .iter()
            .map(|l| {
                Ok(Linear {
                    weight: l.weight.to_device(device)?,
                    bias: l.bias.to_device(device)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Model {
            layers,
            activation: self.activation,
        })
    }

    /// The device of the parameters.
    pub fn device(&self) -> Device {
        self.layers
            .first()
            .map_or(Device::Cpu, |l| l.weight.device())
    }

    fn check_input(&self, x: &Tensor) -> Result<()> {
        match x.shape().as_matrix() {
            Some((_, f)) if f == self.input_size() => Ok(()),
            _ => Err(Error::BadShape {
                op: "model",
                msg: format!(
                    "the model {} expects inputs [N, {}], got {}",
                    self.arch(),
                    self.input_size(),
                    x.shape()
                ),
            }),
        }
    }

    /// Records the forward pass of the batch variable `x` on `tape`. With
    /// `param_grads` the parameters are recorded as variables that receive
    /// gradients (training); without, as constants (attacks, which only
    /// want the gradient of the input, skip the weight gradients).
    pub fn forward(&self, tape: &mut Tape, x: Var, param_grads: bool) -> Result<Forward> {
        self.check_input(tape.value(x)?)?;
        let mut params = Params::new();
        let mut h = x;
        for (i, layer) in self.layers.iter().enumerate() {
            let (w, b) = if param_grads {
                (tape.var(layer.weight.clone()), tape.var(layer.bias.clone()))
            } else {
                (
                    tape.constant(layer.weight.clone()),
                    tape.constant(layer.bias.clone()),
                )
            };
            params.extend([w, b]);
            h = if i + 1 < self.layers.len() {
                tape.linear_act(h, w, b, self.activation)?
            } else {
                Linear::record(tape, h, w, b)?
            };
        }
        Ok(Forward { logits: h, params })
    }

    /// The logits of a batch `[N, in] → [N, classes]`, without a tape.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        self.check_input(x)?;
        let mut h = x.clone();
        for (i, layer) in self.layers.iter().enumerate() {
            h = if i + 1 < self.layers.len() {
                h.linear_act(&layer.weight, &layer.bias, self.activation)?
            } else {
                layer.forward(&h)?
            };
        }
        Ok(h)
    }

    /// The predicted class of each row of a batch.
    pub fn predict(&self, x: &Tensor) -> Result<Tensor> {
        self.logits(x)?.argmax_rows()
    }

    /// One forward and backward pass of the mean cross-entropy of the batch
    /// `x` against `labels`, on `tape` (cleared before and after, so the
    /// parameters are not shared with it when an optimiser updates them in
    /// place): the loss, the logits and the gradient of every parameter.
    pub fn parameter_gradients(
        &self,
        tape: &mut Tape,
        x: Tensor,
        labels: &Tensor,
    ) -> Result<StepGradients> {
        self.gradients(tape, x, labels, true)
    }

    /// [`Model::parameter_gradients`] without the check that the loss is
    /// finite ([`Tape::backward_unchecked`]), which would read it back from
    /// a device: for loops that check the sum of their losses later.
    pub fn parameter_gradients_unchecked(
        &self,
        tape: &mut Tape,
        x: Tensor,
        labels: &Tensor,
    ) -> Result<StepGradients> {
        self.gradients(tape, x, labels, false)
    }

    fn gradients(
        &self,
        tape: &mut Tape,
        x: Tensor,
        labels: &Tensor,
        check_loss: bool,
    ) -> Result<StepGradients> {
        tape.clear();
        let xv = tape.constant(x);
        let fwd = self.forward(tape, xv, true)?;
        let loss = tape.softmax_cross_entropy(fwd.logits, labels)?;
        if check_loss {
            tape.backward(loss)?;
        } else {
            tape.backward_unchecked(loss)?;
        }
        let grads = gradients_of(tape, &fwd.params)?;
        let step = StepGradients {
            loss: tape.value(loss)?.clone(),
            logits: tape.value(fwd.logits)?.clone(),
            grads,
        };
        tape.clear();
        Ok(step)
    }

    /// One optimiser step on the mean cross-entropy of the batch `x`
    /// against `labels`, on `tape` (cleared before and after): the
    /// forward and backward pass, with every weight stepped inside the
    /// product that computes its gradient ([`Tape::backward_stepping`]),
    /// so its gradient never makes a pass over memory of its own, and the
    /// biases stepped from their gradients after. The parameters end as
    /// [`Model::parameter_gradients`] followed by [`Optimizer::step`] leaves
    /// them, bit for bit. Returns the loss (a scalar) and the logits, from
    /// before the step.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `optimizer` was built for other
    /// parameters; the errors of the forward and backward pass.
    pub fn optimizer_step(
        &mut self,
        tape: &mut Tape,
        x: Tensor,
        labels: &Tensor,
        optimizer: &mut Optimizer,
        lr: f64,
    ) -> Result<(Tensor, Tensor)> {
        tape.clear();
        let xv = tape.constant(x);
        let fwd = self.forward(tape, xv, true)?;
        let loss = tape.softmax_cross_entropy(fwd.logits, labels)?;
        let (rule, state) = optimizer.begin_step(lr);
        if state.len() != fwd.params.len() {
            return Err(Error::invalid(format!(
                "optimizer: built for {} parameters, the model has {}",
                state.len(),
                fwd.params.len()
            )));
        }
        let mut steps: Params<ParamStep<'_>> = fwd
            .params
            .iter()
            .zip(state.iter_mut())
            .map(|(&var, (s1, s2))| ParamStep {
                var,
                state: (s1, s2),
                stepped: None,
            })
            .collect();
        tape.backward_stepping(loss, rule, &mut steps)?;
        let grads: Params<Option<Tensor>> =
            fwd.params.iter().map(|&p| tape.grad(p).cloned()).collect();
        let values = (tape.value(loss)?.clone(), tape.value(fwd.logits)?.clone());
        // The tape lets go of the parameters, so that they are stepped in
        // place rather than copied.
        tape.clear();
        for ((step, grad), param) in steps.iter_mut().zip(grads).zip(self.params_mut()) {
            match (step.stepped.take(), grad) {
                (Some(stepped), _) => *param = stepped,
                (None, Some(grad)) => {
                    let (s1, s2) = &mut step.state;
                    step_param(param, &grad, s1, s2, rule)?
                }
                (None, None) => return Err(Error::Tape("a parameter received no gradient".into())),
            }
        }
        Ok(values)
    }

    /// The mean cross-entropy loss of a batch and the gradient of that loss
    /// with respect to the input batch (what every gradient attack needs).
    pub fn input_gradient(&self, x: &Tensor, labels: &Tensor) -> Result<(f64, Tensor)> {
        let mut tape = Tape::new();
        let xv = tape.var(x.clone());
        let fwd = self.forward(&mut tape, xv, false)?;
        let loss = tape.softmax_cross_entropy(fwd.logits, labels)?;
        tape.backward(loss)?;
        let value = tape.value(loss)?.to_scalar()?;
        let g = tape
            .grad(xv)
            .cloned()
            .ok_or_else(|| Error::Tape("the input received no gradient".into()))?;
        Ok((value, g))
    }
}

/// The gradients the last backward pass of `tape` left on `params`, in
/// order.
///
/// # Errors
/// [`Error::Tape`] if a parameter received none.
pub(crate) fn gradients_of(tape: &Tape, params: &[Var]) -> Result<Params<Tensor>> {
    params
        .iter()
        .map(|&p| {
            tape.grad(p)
                .cloned()
                .ok_or_else(|| Error::Tape("a parameter received no gradient".into()))
        })
        .collect()
}
