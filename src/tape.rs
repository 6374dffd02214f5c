//! The tape: an arena of recorded ops and reverse-mode differentiation over
//! it.
//!
//! Every op called on a [`Tape`] computes its value at once and appends a
//! node (op, input ids, value). A [`Var`] is the index of a node. Because the
//! nodes are appended in evaluation order, the list is already a topological
//! order: [`Tape::backward`] walks it in reverse, asks each node's op for the
//! gradients of its inputs (the vector–Jacobian products in [`crate::ops`]),
//! and adds them into the inputs' gradients.

use std::fmt;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

use smallvec::SmallVec;

use crate::backend::BackendStorage;
use crate::error::{Error, Result};
use crate::ops::matmul::{GradientProduct, WeightUpdate};
use crate::ops::{CustomOp, Op};
use crate::tensor::Tensor;

/// A parameter for [`Tape::backward_deferring`]: its variable and, once
/// the pass has run, its gradient as a product to step it with.
#[derive(Debug)]
pub struct DeferredWeight {
    /// The parameter's variable on the tape.
    pub var: Var,
    /// The parameter's gradient as its product, if the pass left it so
    /// (then [`Tape::grad`] gives the parameter none).
    pub product: Option<GradientProduct>,
}

impl DeferredWeight {
    /// A parameter whose gradient the pass has not yet seen.
    pub fn new(var: Var) -> Self {
        DeferredWeight { var, product: None }
    }
}

/// A value recorded on a tape: the index of its node.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Var {
    index: u32,
    tape: u32,
}

impl Var {
    /// The node's index on its tape (the number shown as `%i`).
    pub fn index(self) -> usize {
        self.index as usize
    }
}

/// One recorded op.
#[derive(Clone, Debug)]
pub struct Node {
    /// What produced the value.
    pub op: Op,
    /// The nodes the op read, in argument order (inline for up to three).
    pub inputs: SmallVec<[Var; 3]>,
    /// The value computed by the forward pass.
    pub value: Tensor,
    /// Whether a gradient flows to this node (it is a leaf that asked for
    /// one, or depends on such a leaf).
    pub requires_grad: bool,
    /// An optional name, shown when the tape is printed.
    pub name: Option<String>,
    retain_grad: bool,
}

/// An arena of recorded ops; see the module documentation.
///
/// ```
/// use advgrad::{DType, Tape, Tensor};
/// let mut tape = Tape::new();
/// let x = tape.var(Tensor::from_vec(vec![1.0f64, -2.0, 3.0], [3])?);
/// let y = tape.relu(x)?;
/// let loss = tape.sum(y)?;
/// tape.backward(loss)?;
/// assert_eq!(tape.grad(x).unwrap().to_vec::<f64>()?, vec![1.0, 0.0, 1.0]);
/// # Ok::<(), advgrad::Error>(())
/// ```
pub struct Tape {
    id: u32,
    nodes: Vec<Node>,
    grads: Vec<Option<Tensor>>,
    retain_all: bool,
}

static NEXT_TAPE_ID: AtomicU32 = AtomicU32::new(0);

impl Default for Tape {
    fn default() -> Self {
        Tape::new()
    }
}

impl Tape {
    /// An empty tape.
    pub fn new() -> Tape {
        Tape {
            id: NEXT_TAPE_ID.fetch_add(1, Ordering::Relaxed),
            nodes: Vec::new(),
            grads: Vec::new(),
            retain_all: false,
        }
    }

    /// Removes every node and gradient, keeping the allocations; variables
    /// recorded before become invalid.
    pub fn clear(&mut self) {
        self.nodes.clear();
        self.grads.clear();
        self.id = NEXT_TAPE_ID.fetch_add(1, Ordering::Relaxed);
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Whether nothing has been recorded.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// The nodes, in the order they were recorded.
    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    /// The variable of every node, in the order they were recorded.
    pub fn vars(&self) -> impl Iterator<Item = Var> + '_ {
        (0..self.nodes.len() as u32).map(|index| Var {
            index,
            tape: self.id,
        })
    }

    /// Records a leaf that requires a gradient: a parameter, or an input
    /// whose gradient an attack wants.
    pub fn var(&mut self, value: Tensor) -> Var {
        self.push_leaf(value, true)
    }

    /// Records a leaf without a gradient (data, labels-as-floats, masks).
    pub fn constant(&mut self, value: Tensor) -> Var {
        self.push_leaf(value, false)
    }

    fn push_leaf(&mut self, value: Tensor, requires_grad: bool) -> Var {
        let requires_grad = requires_grad && value.dtype().is_float();
        self.push(Node {
            op: Op::Leaf,
            inputs: SmallVec::new(),
            value,
            requires_grad,
            name: None,
            retain_grad: false,
        })
    }

    fn push(&mut self, node: Node) -> Var {
        let index = u32::try_from(self.nodes.len()).expect("a tape holds fewer than 2³² nodes");
        self.nodes.push(node);
        Var {
            index,
            tape: self.id,
        }
    }

    /// Names a node, for printing and DOT export.
    pub fn set_name(&mut self, v: Var, name: impl Into<String>) -> Result<()> {
        self.check(v)?;
        self.nodes[v.index()].name = Some(name.into());
        Ok(())
    }

    fn check(&self, v: Var) -> Result<()> {
        if v.tape != self.id || v.index() >= self.nodes.len() {
            return Err(Error::Tape(format!(
                "variable %{} does not belong to this tape (it was cleared, or the variable comes from another tape)",
                v.index
            )));
        }
        Ok(())
    }

    /// The value of a recorded variable.
    pub fn value(&self, v: Var) -> Result<&Tensor> {
        self.check(v)?;
        Ok(&self.nodes[v.index()].value)
    }

    /// Appends a node for `op` applied to `inputs` with the already computed
    /// `value`. Ops call this; it is public so new op families can too.
    pub fn record(&mut self, op: Op, inputs: &[Var], value: Tensor) -> Result<Var> {
        for &v in inputs {
            self.check(v)?;
        }
        let requires_grad =
            value.dtype().is_float() && inputs.iter().any(|v| self.nodes[v.index()].requires_grad);
        Ok(self.push(Node {
            op,
            inputs: SmallVec::from_slice(inputs),
            value,
            requires_grad,
            name: None,
            retain_grad: false,
        }))
    }

    /// Records a user-defined op: `output` is its forward value, computed by
    /// the caller from the values of `inputs`; `op` supplies the backward
    /// rule.
    pub fn custom(&mut self, op: Arc<dyn CustomOp>, inputs: &[Var], output: Tensor) -> Result<Var> {
        self.record(Op::Custom(op), inputs, output)
    }

    /// Keeps the gradient of an intermediate node after [`Tape::backward`]
    /// (leaves that require a gradient always keep theirs).
    pub fn retain_grad(&mut self, v: Var) -> Result<()> {
        self.check(v)?;
        self.nodes[v.index()].retain_grad = true;
        Ok(())
    }

    /// Keeps the gradients of all nodes after [`Tape::backward`].
    pub fn set_retain_grads(&mut self, retain: bool) {
        self.retain_all = retain;
    }

    /// The gradient of `loss` (the last [`Tape::backward`]) with respect to
    /// `v`, where `v` requires a gradient and is a leaf or was retained.
    pub fn grad(&self, v: Var) -> Option<&Tensor> {
        if self.check(v).is_err() {
            return None;
        }
        self.grads.get(v.index()).and_then(Option::as_ref)
    }

    /// Computes `∂loss/∂v` for every node `v` that requires a gradient, by
    /// walking the tape backwards from the scalar `loss`; replaces the
    /// gradients of any earlier call.
    ///
    /// Fails if `loss` is not a one-element float tensor, or is NaN or
    /// infinite (the gradients would be meaningless).
    pub fn backward(&mut self, loss: Var) -> Result<()> {
        self.check_loss(loss)?;
        self.check_finite(loss)?;
        self.propagate(loss, None)
    }

    /// [`Tape::backward`] without reading the loss to check that it is
    /// finite, which on a device would wait for it: for loops that check a
    /// sum of their losses later ([`crate::tally::StepTally`]). A NaN or
    /// infinite loss gives NaN or infinite gradients instead of an error.
    pub fn backward_unchecked(&mut self, loss: Var) -> Result<()> {
        self.check_loss(loss)?;
        self.propagate(loss, None)
    }

    /// [`Tape::backward`], leaving the gradient of each parameter in
    /// `weights` as its product where it can: a parameter recorded as a
    /// leaf variable and consumed by exactly one op, as the weight (second
    /// input) of an f32 `matmul` or `linear_act`, gets its
    /// [`DeferredWeight::product`] (a [`GradientProduct`]) instead of a
    /// gradient on the tape. Once the tape lets go of the parameter
    /// ([`Tape::clear`]), [`GradientProduct::step`] steps it in place inside
    /// that product, with the bits of the gradient followed by the update.
    /// Every other parameter keeps `product` at `None` and its gradient as
    /// usual.
    pub fn backward_deferring(&mut self, loss: Var, weights: &mut [DeferredWeight]) -> Result<()> {
        self.check_loss(loss)?;
        self.check_finite(loss)?;
        self.backward_deferring_unchecked(loss, weights)
    }

    /// [`Tape::backward_deferring`] without reading the loss to check that
    /// it is finite (as [`Tape::backward_unchecked`]).
    pub fn backward_deferring_unchecked(
        &mut self,
        loss: Var,
        weights: &mut [DeferredWeight],
    ) -> Result<()> {
        for w in weights.iter_mut() {
            self.check(w.var)?;
            w.product = None;
        }
        self.check_loss(loss)?;
        self.propagate(loss, Some(weights))
    }

    /// Whether `v` is a leaf that requires a gradient and is read by
    /// exactly one op, as that op's second input.
    fn sole_weight_of(&self, v: Var, node: usize) -> bool {
        let leaf = &self.nodes[v.index()];
        matches!(leaf.op, Op::Leaf)
            && leaf.requires_grad
            && self.nodes[node].inputs.iter().position(|&i| i == v) == Some(1)
            && self.nodes.iter().filter(|n| n.inputs.contains(&v)).count() == 1
    }

    /// Fails unless `loss` is a node of this tape holding one float.
    fn check_loss(&self, loss: Var) -> Result<()> {
        self.check(loss)?;
        let root = &self.nodes[loss.index()];
        if root.value.numel() != 1 || !root.value.dtype().is_float() {
            return Err(Error::Tape(format!(
                "backward needs a scalar float loss, got shape {} of {}",
                root.value.shape(),
                root.value.dtype()
            )));
        }
        Ok(())
    }

    /// Fails if the scalar `loss` is NaN or infinite (a read of the loss,
    /// which on a device waits for it).
    fn check_finite(&self, loss: Var) -> Result<()> {
        let root = &self.nodes[loss.index()];
        let value = root.value.to_scalar()?;
        if !value.is_finite() {
            return Err(Error::NonFinite {
                op: "backward",
                what: format!("the loss (%{} = {}) is {value}", loss.index, root.op.name()),
            });
        }
        Ok(())
    }

    /// The gradients of every node requiring one, from the scalar `loss`,
    /// with those of `deferred` left as their products.
    fn propagate(&mut self, loss: Var, mut deferred: Option<&mut [DeferredWeight]>) -> Result<()> {
        let root = &self.nodes[loss.index()];
        self.grads.clear();
        self.grads.resize(self.nodes.len(), None);
        let seed = root.value.storage().full_like(1.0)?;
        self.grads[loss.index()] = Some(Tensor::from_storage(seed, root.value.shape().clone()));
        for i in (0..=loss.index()).rev() {
            let node = &self.nodes[i];
            if !node.requires_grad || matches!(node.op, Op::Leaf) {
                continue;
            }
            let Some(g) = self.grads[i].clone() else {
                continue;
            };
            let needs: SmallVec<[bool; 3]> = node
                .inputs
                .iter()
                .map(|v| self.nodes[v.index()].requires_grad)
                .collect();
            let inputs: SmallVec<[&Tensor; 3]> = node
                .inputs
                .iter()
                .map(|v| &self.nodes[v.index()].value)
                .collect();
            let update = match (&mut deferred, node.op.steps_weight()) {
                (Some(weights), true) => weights
                    .iter_mut()
                    .find(|w| node.inputs.get(1) == Some(&w.var) && self.sole_weight_of(w.var, i))
                    .map(|w| WeightUpdate {
                        deferred: &mut w.product,
                    }),
                _ => None,
            };
            let input_grads =
                node.op
                    .backward_updating(&inputs, &node.value, &g, &needs, update)?;
            for (k, (v, dg)) in node.inputs.iter().zip(input_grads).enumerate() {
                let Some(dg) = dg else { continue };
                if !needs[k] {
                    continue;
                }
                let target = &self.nodes[v.index()];
                if dg.shape() != target.value.shape() {
                    return Err(Error::Tape(format!(
                        "the backward rule of {} (node %{i}) returned a gradient of shape {} for input %{} of shape {}",
                        node.op.name(),
                        dg.shape(),
                        v.index,
                        target.value.shape()
                    )));
                }
                let slot = &mut self.grads[v.index()];
                *slot = Some(match slot.take() {
                    Some(acc) => acc.add(&dg)?,
                    None => dg,
                });
            }
            let node = &self.nodes[i];
            if !(self.retain_all || node.retain_grad) {
                self.grads[i] = None;
            }
        }
        Ok(())
    }

    /// The tape as Graphviz DOT: one box per node with its op, shape and
    /// dtype, and the gradient norm where a gradient is kept.
    pub fn to_dot(&self) -> String {
        let mut s = String::from(
            "digraph tape {\n  rankdir=LR;\n  node [shape=box, fontname=monospace];\n",
        );
        for (i, node) in self.nodes.iter().enumerate() {
            let mut label = format!("%{i} {}", node.op.name());
            if let Some(name) = &node.name {
                let _ = write!(label, " ({name})");
            }
            let _ = write!(label, "\\n{} {}", node.value.shape(), node.value.dtype());
            if let Some(Some(g)) = self.grads.get(i) {
                if let Ok(norm) = g.norm() {
                    let _ = write!(label, "\\n|grad| = {norm:.4e}");
                }
            }
            let style = match (&node.op, node.requires_grad) {
                (Op::Leaf, true) => ", style=filled, fillcolor=lightblue",
                (Op::Leaf, false) => ", style=filled, fillcolor=lightgrey",
                _ => "",
            };
            let _ = writeln!(s, "  n{i} [label=\"{label}\"{style}];");
            for v in &node.inputs {
                let _ = writeln!(s, "  n{} -> n{i};", v.index);
            }
        }
        s.push_str("}\n");
        s
    }
}

impl fmt::Display for Tape {
    /// One line per node: id, op, input ids, shape, dtype, and markers for
    /// leaves that require a gradient.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, node) in self.nodes.iter().enumerate() {
            let inputs: Vec<String> = node
                .inputs
                .iter()
                .map(|v| format!("%{}", v.index))
                .collect();
            let op = match &node.op {
                Op::Leaf if node.requires_grad => "var".to_string(),
                Op::Leaf => "constant".to_string(),
                other => format!("{other:?}"),
            };
            write!(
                f,
                "%{i:<3} = {:<24} {:<16} {} {}",
                format!("{op}({})", inputs.join(", ")),
                node.value.shape().to_string(),
                node.value.dtype(),
                if node.requires_grad { "grad" } else { "" }
            )?;
            if let Some(name) = &node.name {
                write!(f, "  # {name}")?;
            }
            writeln!(f)?;
        }
        Ok(())
    }
}
