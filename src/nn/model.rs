//! The sequential model: layers in order, logits out, with parameters
//! named as in a PyTorch `nn.Sequential`.

use smallvec::SmallVec;

pub use crate::backend::Activation;
use crate::device::Device;
use crate::error::{Error, Result};
use crate::optim::{step_param, Optimizer};
use crate::rng::Rng;
use crate::tape::{DeferredWeight, Tape, Var};
use crate::tensor::Tensor;

use super::arch::{parse_arch, Arch, Input, LayerSpec};
use super::conv::Conv2d;
use super::linear::Linear;

/// One layer of a [`Model`], as one entry of a PyTorch `nn.Sequential`.
#[derive(Clone, Debug)]
pub enum Layer {
    /// A 2-D convolution.
    Conv2d(Conv2d),
    /// A fully connected layer.
    Linear(Linear),
    /// The model's activation.
    Activation(Activation),
    /// Max-pooling with this kernel = stride.
    MaxPool2d(usize),
    /// Average-pooling with this kernel = stride.
    AvgPool2d(usize),
    /// `[N, C, H, W] → [N, C·H·W]`, sharing the buffer.
    Flatten,
}

impl Layer {
    /// The layer's weight and bias, if it has parameters.
    fn params(&self) -> Option<[&Tensor; 2]> {
        match self {
            Layer::Conv2d(c) => Some([&c.weight, &c.bias]),
            Layer::Linear(l) => Some([&l.weight, &l.bias]),
            _ => None,
        }
    }

    /// The layer's weight and bias, mutable, if it has parameters.
    fn params_mut(&mut self) -> Option<[&mut Tensor; 2]> {
        match self {
            Layer::Conv2d(c) => Some([&mut c.weight, &mut c.bias]),
            Layer::Linear(l) => Some([&mut l.weight, &mut l.bias]),
            _ => None,
        }
    }
}

/// A sequential model, such as the MLP `784-256-256-10`
/// (`Linear → act → … → Linear`) or the CNN
/// `1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10` (see [`super::arch`]), logits
/// out. Its layers are the entries of the matching PyTorch
/// `nn.Sequential`, activations, pools and the flatten included, so the
/// parameters are named `0.weight`, `0.bias`, `2.weight`, … for an MLP and
/// `0.weight`, `0.bias`, `3.weight`, … for that CNN.
#[derive(Clone, Debug)]
pub struct Model {
    /// What the model takes: features, or images (given as `[N, C, H, W]`
    /// or flattened as `[N, C·H·W]`).
    pub input: Input,
    /// The layers, input first.
    pub layers: Vec<Layer>,
    /// The activation after every convolution and every linear layer but
    /// the last.
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

impl Model {
    /// A freshly initialised model (PyTorch's default init), fixed by
    /// `seed`, from an architecture spec (see [`super::arch`]).
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] naming the bad token of `arch`.
    pub fn new(arch: &str, activation: Activation, seed: u64) -> Result<Model> {
        let arch = parse_arch(arch)?;
        let mut rng = Rng::new(seed);
        Model::build(&arch, activation, |layer| match layer {
            LayerSizes::Linear(i, o) => Ok(Layer::Linear(Linear::new(i, o, &mut rng)?)),
            LayerSizes::Conv2d(i, o, k, s, p) => {
                Ok(Layer::Conv2d(Conv2d::new(i, o, k, s, p, &mut rng)?))
            }
        })
    }

    /// The model of `arch` with every parameterised layer made by `make`,
    /// in order.
    pub(super) fn build(
        arch: &Arch,
        activation: Activation,
        mut make: impl FnMut(LayerSizes) -> Result<Layer>,
    ) -> Result<Model> {
        let mut layers = Vec::new();
        let mut channels = match arch.input {
            Input::Features(_) => 0,
            Input::Image { channels, .. } => channels,
        };
        let mut image = !arch.is_mlp();
        let inputs = arch.layer_inputs();
        let last = arch.layers.len() - 1;
        for (i, spec) in arch.layers.iter().enumerate() {
            match *spec {
                LayerSpec::Conv2d {
                    out,
                    kernel,
                    stride,
                    padding,
                } => {
                    layers.push(make(LayerSizes::Conv2d(
                        channels, out, kernel, stride, padding,
                    ))?);
                    layers.push(Layer::Activation(activation));
                    channels = out;
                }
                LayerSpec::MaxPool2d(k) => layers.push(Layer::MaxPool2d(k)),
                LayerSpec::AvgPool2d(k) => layers.push(Layer::AvgPool2d(k)),
                LayerSpec::Linear(n) => {
                    if image {
                        layers.push(Layer::Flatten);
                        image = false;
                    }
                    layers.push(make(LayerSizes::Linear(inputs[i], n))?);
                    if i < last {
                        layers.push(Layer::Activation(activation));
                    }
                }
            }
        }
        Ok(Model {
            input: arch.input,
            layers,
            activation,
        })
    }

    /// The architecture, read back from the layers.
    pub fn architecture(&self) -> Arch {
        let layers = self
            .layers
            .iter()
            .filter_map(|layer| match layer {
                Layer::Conv2d(c) => Some(LayerSpec::Conv2d {
                    out: c.outputs(),
                    kernel: c.kernel(),
                    stride: c.stride,
                    padding: c.padding,
                }),
                Layer::Linear(l) => Some(LayerSpec::Linear(l.outputs())),
                Layer::MaxPool2d(k) => Some(LayerSpec::MaxPool2d(*k)),
                Layer::AvgPool2d(k) => Some(LayerSpec::AvgPool2d(*k)),
                Layer::Activation(_) | Layer::Flatten => None,
            })
            .collect();
        Arch {
            input: self.input,
            layers,
        }
    }

    /// The architecture spec, e.g. `784-256-256-10` or
    /// `1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10`.
    pub fn arch(&self) -> String {
        self.architecture().to_string()
    }

    /// Number of input features (`C·H·W` for images).
    pub fn input_size(&self) -> usize {
        self.input.size()
    }

    /// Number of classes (outputs).
    pub fn classes(&self) -> usize {
        self.layers
            .iter()
            .rev()
            .find_map(|l| match l {
                Layer::Linear(l) => Some(l.outputs()),
                _ => None,
            })
            .unwrap_or(0)
    }

    /// Parameter names in PyTorch `nn.Sequential` style, in order: the
    /// index of the layer, then `weight` or `bias`.
    pub fn param_names(&self) -> Vec<String> {
        self.layers
            .iter()
            .enumerate()
            .filter(|(_, l)| l.params().is_some())
            .flat_map(|(i, _)| [format!("{i}.weight"), format!("{i}.bias")])
            .collect()
    }

    /// The parameters, in [`Model::param_names`] order.
    pub fn params(&self) -> Params<&Tensor> {
        self.layers
            .iter()
            .filter_map(Layer::params)
            .flatten()
            .collect()
    }

    /// The parameters, mutable, in [`Model::param_names`] order.
    pub fn params_mut(&mut self) -> Params<&mut Tensor> {
        self.layers
            .iter_mut()
            .filter_map(Layer::params_mut)
            .flatten()
            .collect()
    }

    /// Total number of parameters.
    pub fn num_params(&self) -> usize {
        self.params().iter().map(|p| p.numel()).sum()
    }

    /// The same model with its parameters on `device`.
    pub fn to_device(&self, device: Device) -> Result<Model> {
        let mut model = self.clone();
        for p in model.params_mut() {
            *p = p.to_device(device)?;
        }
        Ok(model)
    }

    /// The device of the parameters.
    pub fn device(&self) -> Device {
        self.params().first().map_or(Device::Cpu, |p| p.device())
    }

    /// Whether the first layer is a linear one, so that a batch's values are
    /// read only as an operand of that layer's product (in the forward pass
    /// and for its weight's gradient).
    pub fn first_layer_is_linear(&self) -> bool {
        matches!(self.layers.first(), Some(Layer::Linear(_)))
    }

    /// The shape the first layer takes for a batch of `x`: `x`'s own, or
    /// `[N, C, H, W]` for an image model given flattened rows.
    fn input_shape(&self, x: &Tensor) -> Result<Option<[usize; 4]>> {
        let bad = || {
            Error::BadShape {
            op: "model",
            msg: match self.input {
                Input::Features(f) => format!(
                    "the model {} expects inputs [N, {f}], got {}",
                    self.arch(),
                    x.shape()
                ),
                Input::Image {
                    channels,
                    height,
                    width,
                } => format!(
                    "the model {} expects inputs [N, {channels}, {height}, {width}] or [N, {}], got {}",
                    self.arch(),
                    self.input_size(),
                    x.shape()
                ),
            },
        }
        };
        match (self.input, x.dims()) {
            (Input::Features(f), &[_, d]) if d == f => Ok(None),
            (Input::Image { .. }, &[n, d]) if d == self.input_size() => {
                let Input::Image {
                    channels,
                    height,
                    width,
                } = self.input
                else {
                    unreachable!()
                };
                Ok(Some([n, channels, height, width]))
            }
            (
                Input::Image {
                    channels,
                    height,
                    width,
                },
                &[_, c, h, w],
            ) if [c, h, w] == [channels, height, width] => Ok(None),
            _ => Err(bad()),
        }
    }

    /// Records the forward pass of the batch variable `x` on `tape`. With
    /// `param_grads` the parameters are recorded as variables that receive
    /// gradients (training); without, as constants (attacks, which only
    /// want the gradient of the input, skip the weight gradients). A linear
    /// layer and the activation after it are recorded as one op
    /// ([`Tape::linear_act`]).
    pub fn forward(&self, tape: &mut Tape, x: Var, param_grads: bool) -> Result<Forward> {
        let mut h = match self.input_shape(tape.value(x)?)? {
            Some(image) => tape.reshape(x, image)?,
            None => x,
        };
        let mut params = Params::new();
        let mut layers = self.layers.iter().peekable();
        while let Some(layer) = layers.next() {
            let vars = layer.params().map(|[w, b]| {
                if param_grads {
                    [tape.var(w.clone()), tape.var(b.clone())]
                } else {
                    [tape.constant(w.clone()), tape.constant(b.clone())]
                }
            });
            if let Some([w, b]) = vars {
                params.extend([w, b]);
            }
            h = match (layer, vars) {
                (Layer::Conv2d(c), Some([w, b])) => c.record(tape, h, w, b)?,
                (Layer::Linear(_), Some([w, b])) => match layers.peek() {
                    Some(Layer::Activation(act)) => {
                        layers.next();
                        tape.linear_act(h, w, b, *act)?
                    }
                    _ => Linear::record(tape, h, w, b)?,
                },
                (Layer::Activation(act), _) => tape.activation(*act, h)?,
                (Layer::MaxPool2d(k), _) => tape.max_pool2d(h, *k)?,
                (Layer::AvgPool2d(k), _) => tape.avg_pool2d(h, *k)?,
                (Layer::Flatten, _) => tape.flatten(h)?,
                (Layer::Conv2d(_) | Layer::Linear(_), None) => unreachable!("they have parameters"),
            };
        }
        Ok(Forward { logits: h, params })
    }

    /// The logits of a batch `[N, in] → [N, classes]` (or
    /// `[N, C, H, W] → [N, classes]`), without a tape.
    pub fn logits(&self, x: &Tensor) -> Result<Tensor> {
        let mut h = match self.input_shape(x)? {
            Some(image) => x.reshape(image)?,
            None => x.clone(),
        };
        let mut layers = self.layers.iter().peekable();
        while let Some(layer) = layers.next() {
            h = match layer {
                Layer::Conv2d(c) => c.forward(&h)?,
                Layer::Linear(l) => match layers.peek() {
                    Some(Layer::Activation(act)) => {
                        layers.next();
                        h.linear_act(&l.weight, &l.bias, *act)?
                    }
                    _ => l.forward(&h)?,
                },
                Layer::Activation(act) => h.activation(*act)?,
                Layer::MaxPool2d(k) => h.max_pool2d(*k)?,
                Layer::AvgPool2d(k) => h.avg_pool2d(*k)?,
                Layer::Flatten => {
                    let n = h.dims()[0];
                    h.reshape([n, h.numel() / n.max(1)])?
                }
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
    /// forward and backward pass, which leaves each weight's gradient as
    /// its product ([`Tape::backward_deferring`]); once the tape lets go
    /// of the weights, each is stepped in place inside that product, so its
    /// gradient is never stored whole and the update makes no pass over
    /// memory of its own; the biases are stepped from their gradients. The parameters end as
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
        self.optimizer_step_checking(tape, x, labels, optimizer, lr, true)
    }

    /// [`Model::optimizer_step`] without reading the loss to check that it
    /// is finite, which on a device would wait for it: for loops that check
    /// a sum of their losses later ([`crate::tally::StepTally`]). A NaN or
    /// infinite loss steps the parameters to NaN or infinite values.
    ///
    /// # Errors
    /// As [`Model::optimizer_step`], less the non-finite loss.
    pub fn optimizer_step_unchecked(
        &mut self,
        tape: &mut Tape,
        x: Tensor,
        labels: &Tensor,
        optimizer: &mut Optimizer,
        lr: f64,
    ) -> Result<(Tensor, Tensor)> {
        self.optimizer_step_checking(tape, x, labels, optimizer, lr, false)
    }

    fn optimizer_step_checking(
        &mut self,
        tape: &mut Tape,
        x: Tensor,
        labels: &Tensor,
        optimizer: &mut Optimizer,
        lr: f64,
        check_loss: bool,
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
        let mut weights: Params<DeferredWeight> = fwd
            .params
            .iter()
            .map(|&var| DeferredWeight::new(var))
            .collect();
        if check_loss {
            tape.backward_deferring(loss, &mut weights)?;
        } else {
            tape.backward_deferring_unchecked(loss, &mut weights)?;
        }
        let grads: Params<Option<Tensor>> =
            fwd.params.iter().map(|&p| tape.grad(p).cloned()).collect();
        let values = (tape.value(loss)?.clone(), tape.value(fwd.logits)?.clone());
        // The tape lets go of the parameters, so that they are stepped in
        // place rather than copied.
        tape.clear();
        let params = weights.iter().zip(grads).zip(self.params_mut());
        for (((weight, grad), param), (s1, s2)) in params.zip(state.iter_mut()) {
            match (&weight.product, grad) {
                (Some(product), _) => product.step(param, s1, s2, rule)?,
                (None, Some(grad)) => step_param(param, &grad, s1, s2, rule)?,
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

/// The sizes of a parameterised layer for [`Model::build`]:
/// `Linear(in, out)` or `Conv2d(in, out, kernel, stride, padding)`.
#[derive(Clone, Copy, Debug)]
pub(super) enum LayerSizes {
    /// A linear layer.
    Linear(usize, usize),
    /// A convolution.
    Conv2d(usize, usize, usize, usize, usize),
}
