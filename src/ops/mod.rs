//! The differentiable ops: each family's forward and backward side by side.
//!
//! Every rule, where `g` is the gradient flowing into the op's output:
//!
//! | op | forward | backward (vector–Jacobian product) |
//! |---|---|---|
//! | `matmul` | `C = A·B` | `dA = g·Bᵀ`, `dB = Aᵀ·g` (transposed operands: see [`matmul`]) |
//! | `add` | `a + b` | `da = g`, `db = g` |
//! | `add` (bias) | `y[i,j] = x[i,j] + b[j]` | `dx = g`, `db[j] = Σᵢ g[i,j]` |
//! | `sub` | `a − b` | `da = g`, `db = −g` |
//! | `mul` | `a ⊙ b` | `da = g ⊙ b`, `db = g ⊙ a` |
//! | `scale` | `s·x` | `dx = s·g` |
//! | `relu` | `max(x, 0)` | `dx = g ⊙ [x > 0]` |
//! | `sigmoid` | `y = 1/(1+e^{−x})` | `dx = g ⊙ y ⊙ (1 − y)` |
//! | `tanh` | `y = tanh x` | `dx = g ⊙ (1 − y²)` |
//! | `gelu` | `y = ½·x·(1 + t)`, `t = tanh(k·(x + a·x³))`, `k = √(2/π)`, `a = 0.044715` | `dx = g ⊙ (½·(1 + t) + ½·x·(1 − t²)·k·(1 + 3a·x²))`, from the saved input `x` |
//! | `bias_act` | `y = f(x + b)`, `b` a row | `z̄ = g ⊙ f'(y)`, `dx = z̄`, `db[j] = Σᵢ z̄[i,j]` |
//! | `linear_act` | `y = f(x·Wᵀ + b)` | `z̄ = g ⊙ f'(y)`, `dx = z̄·W`, `dW = z̄ᵀ·x`, `db[j] = Σᵢ z̄[i,j]` |
//! | `softmax_cross_entropy` | `L = (1/N) Σᵢ (lse(xᵢ) − xᵢ,yᵢ)` | `dx = g·(softmax(x) − onehot(y))/N` |
//! | `sum` | `Σᵢ xᵢ` | `dx = g·1` |
//! | `mean` | `(1/n) Σᵢ xᵢ` | `dx = (g/n)·1` |
//! | `log_softmax` | `yᵢⱼ = zᵢⱼ − ln Σₖ e^{zᵢₖ}` | `dzᵢⱼ = gᵢⱼ − e^{yᵢⱼ}·Σₖ gᵢₖ` |
//! | `exp` | `y = eˣ` | `dx = g ⊙ y` |
//! | `ln` | `y = ln x` | `dx = g ⊙ e^{−y}` |
//! | `pick` | `yᵢ = zᵢ,ₖᵢ` | `dzᵢⱼ = gᵢ·[j = kᵢ]` |
//! | `kl_div` | `KLᵢ = Σⱼ pᵢⱼ(ln pᵢⱼ − ln qᵢⱼ)`, `p = softmax(a)`, `q = softmax(b)` | `da = g·p ⊙ (ln p − ln q − KL)`, `db = g·(q − p)` |
//! | `dlr` | `−(z_y − max_{j≠y} z_j)/(z_π1 − z_π3 + 1e−12)` per row | see [`robust_loss`] |
//! | `dlr_targeted` | `−(z_y − z_t)/(z_π1 − (z_π3 + z_π4)/2 + 1e−12)` per row | see [`robust_loss`] |
//! | `conv2d` | `y[n,o,i,j] = b[o] + Σ_{c,p,q} W[o,c,p,q]·x[n,c,i·s+p−pad,j·s+q−pad]` | `dx[n,c,i·s+p−pad,j·s+q−pad] += g[n,o,i,j]·W[o,c,p,q]`, `dW[o,c,p,q] = Σ_{n,i,j} g[n,o,i,j]·x[n,c,i·s+p−pad,j·s+q−pad]`, `db[o] = Σ_{n,i,j} g[n,o,i,j]` (see [`conv`]) |
//! | `max_pool2d` | `y[n,c,i,j] = max_{a,b<K} x[n,c,iK+a,jK+b]` | `dx = g` at the first maximum of each window, 0 elsewhere |
//! | `avg_pool2d` | `y[n,c,i,j] = (1/K²) Σ_{a,b<K} x[n,c,iK+a,jK+b]` | `dx[n,c,iK+a,jK+b] = g[n,c,i,j]/K²` |
//! | `reshape` | `y = x` under another shape (no copy) | `dx = g` under the shape of `x` |
//!
//! The non-differentiable helpers the attacks use (`sign`, `clamp`,
//! `argmax_rows`, `project_linf`) live in [`helpers`] and work on tensors only.

pub mod activation;
pub mod arith;
pub mod conv;
pub mod helpers;
pub mod linear;
pub mod loss;
pub mod matmul;
pub mod pool;
pub mod reduce;
pub mod reshape;
pub mod robust_loss;

use std::fmt;
use std::sync::Arc;

use smallvec::{smallvec, SmallVec};

use crate::error::Result;
use crate::tensor::Tensor;

/// The gradients of an op's inputs, in argument order (`None` where an
/// input needs none); inline for up to three inputs.
pub type InputGrads = SmallVec<[Option<Tensor>; 3]>;

/// A user-defined differentiable op: the forward value is computed by the
/// caller and recorded with [`crate::Tape::custom`]; this trait supplies the
/// backward rule.
pub trait CustomOp: Send + Sync {
    /// The name shown when the tape is printed.
    fn name(&self) -> &str;
    /// The gradient with respect to each input, given the inputs, the
    /// recorded output and the gradient `grad` of the output. Return `None`
    /// for an input that has no gradient.
    fn backward(
        &self,
        inputs: &[&Tensor],
        output: &Tensor,
        grad: &Tensor,
    ) -> Result<Vec<Option<Tensor>>>;
}

/// What produced a tape node, with what its backward rule needs beyond the
/// input and output values.
#[derive(Clone)]
pub enum Op {
    /// An input, parameter or constant.
    Leaf,
    /// `op(A)·op(B)`, where `op` transposes the stored operand when its flag
    /// is set.
    Matmul {
        /// Whether A is read transposed.
        a_trans: bool,
        /// Whether B is read transposed.
        b_trans: bool,
        /// The autocast precision of the product and its backward products.
        precision: crate::precision::Precision,
    },
    /// `a + b`, same shapes.
    Add,
    /// `x + b` with `b` a row vector broadcast over the rows of `x`.
    AddRow,
    /// `a − b`.
    Sub,
    /// `a ⊙ b`.
    Mul,
    /// `s·x`.
    Scale(f64),
    /// `max(x, 0)`.
    Relu,
    /// `1/(1+e^{−x})`.
    Sigmoid,
    /// `tanh x`.
    Tanh,
    /// `½·x·(1 + tanh(k·(x + a·x³)))`, GELU's tanh form; the backward
    /// reads the input.
    Gelu,
    /// `f(x + b)` with a bias row `b` and the activation `f` (ReLU, sigmoid
    /// or tanh), fused.
    BiasAct(crate::backend::Activation),
    /// `f(x·Wᵀ + b)`: a linear layer (weight `[out, in]`) and its
    /// activation, fused, with the products in the recorded precision.
    LinearAct(crate::backend::Activation, crate::precision::Precision),
    /// Mean softmax cross-entropy of logits against integer labels.
    SoftmaxCrossEntropy {
        /// The labels (u32, one per row).
        labels: Tensor,
        /// The softmax probabilities saved by the forward pass.
        probs: Tensor,
    },
    /// `Σ x`.
    Sum,
    /// `mean x`.
    Mean,
    /// Row-wise log-softmax.
    LogSoftmax,
    /// `eˣ`.
    Exp,
    /// `ln x`.
    Ln,
    /// One entry per row at the saved u32 columns.
    Pick(Tensor),
    /// The per-row KL divergence between the softmax of two logit rows.
    KlDiv,
    /// The per-row DLR loss against the saved labels (and targets, when
    /// targeted).
    Dlr {
        /// The labels y (u32, one per row).
        labels: Tensor,
        /// The targets t of the targeted form.
        targets: Option<Tensor>,
    },
    /// 2-D convolution of `[x, W, b]` (NCHW), with its stride and zero
    /// padding.
    Conv2d {
        /// The stride along both axes.
        stride: usize,
        /// The zero padding on every side.
        padding: usize,
    },
    /// Max-pooling with this kernel = stride.
    MaxPool2d(usize),
    /// Average-pooling with this kernel = stride.
    AvgPool2d(usize),
    /// The input under another shape, sharing its buffer.
    Reshape,
    /// A user-defined op.
    Custom(Arc<dyn CustomOp>),
}

impl Op {
    /// The op's name, as printed and as `advgrad gradcheck --op` knows it.
    pub fn name(&self) -> &str {
        match self {
            Op::Leaf => "leaf",
            Op::Matmul { .. } => "matmul",
            Op::Add => "add",
            Op::AddRow => "add_row",
            Op::Sub => "sub",
            Op::Mul => "mul",
            Op::Scale(_) => "scale",
            Op::Relu => "relu",
            Op::Sigmoid => "sigmoid",
            Op::Tanh => "tanh",
            Op::Gelu => "gelu",
            Op::BiasAct(_) => "bias_act",
            Op::LinearAct(..) => "linear_act",
            Op::SoftmaxCrossEntropy { .. } => "softmax_cross_entropy",
            Op::Sum => "sum",
            Op::Mean => "mean",
            Op::LogSoftmax => "log_softmax",
            Op::Exp => "exp",
            Op::Ln => "ln",
            Op::Pick(_) => "pick",
            Op::KlDiv => "kl_div",
            Op::Dlr { targets: None, .. } => "dlr",
            Op::Dlr {
                targets: Some(_), ..
            } => "dlr_targeted",
            Op::Conv2d { .. } => "conv2d",
            Op::MaxPool2d(_) => "max_pool2d",
            Op::AvgPool2d(_) => "avg_pool2d",
            Op::Reshape => "reshape",
            Op::Custom(op) => op.name(),
        }
    }

    /// The gradients of the inputs (`None` where `needs[i]` is false), given
    /// the input values, the output value and the output gradient `g`.
    pub fn backward(
        &self,
        inputs: &[&Tensor],
        output: &Tensor,
        g: &Tensor,
        needs: &[bool],
    ) -> Result<InputGrads> {
        self.backward_updating(inputs, output, g, needs, None)
    }

    /// Whether [`Op::backward_updating`] can leave the gradient of the op's
    /// second input (a weight) as its product
    /// ([`matmul::GradientProduct`]).
    pub fn steps_weight(&self) -> bool {
        matches!(self, Op::Matmul { .. } | Op::LinearAct(..))
    }

    /// [`Op::backward`], with the second input's gradient left as its
    /// product in `update` instead of computed where [`Op::steps_weight`]
    /// (ignored elsewhere).
    pub fn backward_updating(
        &self,
        inputs: &[&Tensor],
        output: &Tensor,
        g: &Tensor,
        needs: &[bool],
        update: Option<matmul::WeightUpdate<'_>>,
    ) -> Result<InputGrads> {
        match self {
            Op::Leaf => Ok(InputGrads::new()),
            Op::Matmul {
                a_trans,
                b_trans,
                precision,
            } => matmul::backward(
                inputs[0],
                inputs[1],
                g,
                (*a_trans, *b_trans),
                *precision,
                needs,
                update,
            ),
            Op::Add => arith::add_backward(g, needs),
            Op::AddRow => arith::add_row_backward(g, needs),
            Op::Sub => arith::sub_backward(g, needs),
            Op::Mul => arith::mul_backward(inputs[0], inputs[1], g, needs),
            Op::Scale(s) => Ok(smallvec![Some(g.scale(*s)?)]),
            Op::Relu => Ok(smallvec![Some(g.relu_backward(inputs[0])?)]),
            Op::Sigmoid => Ok(smallvec![Some(g.sigmoid_backward(output)?)]),
            Op::Tanh => Ok(smallvec![Some(g.tanh_backward(output)?)]),
            Op::Gelu => Ok(smallvec![Some(g.gelu_backward(inputs[0])?)]),
            Op::BiasAct(act) => activation::bias_act_backward(output, g, *act, needs),
            Op::LinearAct(act, precision) => {
                linear::backward(inputs, output, g, *act, *precision, needs, update)
            }
            Op::SoftmaxCrossEntropy { labels, probs } => Ok(smallvec![Some(
                loss::softmax_cross_entropy_backward(probs, labels, g)?,
            )]),
            Op::Sum => Ok(smallvec![Some(reduce::sum_backward(inputs[0], g, 1.0)?)]),
            Op::Mean => {
                let n = inputs[0].numel().max(1) as f64;
                Ok(smallvec![Some(reduce::sum_backward(
                    inputs[0],
                    g,
                    1.0 / n
                )?)])
            }
            Op::LogSoftmax => Ok(smallvec![Some(robust_loss::log_softmax_backward(
                output, g
            )?)]),
            Op::Exp => Ok(smallvec![Some(g.mul(output)?)]),
            Op::Ln => Ok(smallvec![Some(robust_loss::ln_backward(output, g)?)]),
            Op::Pick(k) => Ok(smallvec![Some(robust_loss::pick_backward(
                inputs[0], k, g
            )?)]),
            Op::KlDiv => robust_loss::kl_div_backward(inputs[0], inputs[1], g, needs),
            Op::Dlr { labels, targets } => Ok(smallvec![Some(robust_loss::dlr_backward(
                inputs[0],
                labels,
                targets.as_ref(),
                g
            )?)]),
            Op::Conv2d { stride, padding } => conv::backward(inputs, g, *stride, *padding, needs),
            Op::MaxPool2d(k) => Ok(smallvec![Some(pool::max_pool2d_backward(
                inputs[0], g, *k
            )?)]),
            Op::AvgPool2d(k) => Ok(smallvec![Some(pool::avg_pool2d_backward(
                inputs[0], g, *k
            )?)]),
            Op::Reshape => Ok(smallvec![Some(g.reshape(inputs[0].shape().clone())?)]),
            Op::Custom(op) => op.backward(inputs, output, g).map(InputGrads::from_vec),
        }
    }
}

impl fmt::Debug for Op {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Op::Scale(s) => write!(f, "scale({s})"),
            Op::Conv2d { stride, padding } => write!(f, "conv2d(s{stride},p{padding})"),
            Op::MaxPool2d(k) => write!(f, "max_pool2d({k})"),
            Op::AvgPool2d(k) => write!(f, "avg_pool2d({k})"),
            Op::BiasAct(act) => write!(f, "bias_{}", format!("{act:?}").to_lowercase()),
            Op::LinearAct(act, precision) => write!(
                f,
                "linear_{}{}",
                format!("{act:?}").to_lowercase(),
                precision_tag(*precision)
            ),
            Op::Matmul {
                a_trans,
                b_trans,
                precision,
            } => {
                let t = |flag: &bool| if *flag { "ᵀ" } else { "" };
                write!(
                    f,
                    "matmul{}{}{}",
                    t(a_trans),
                    t(b_trans),
                    precision_tag(*precision)
                )
            }
            other => f.write_str(other.name()),
        }
    }
}

/// How a printed product shows an autocast precision: nothing for f32,
/// `@bf16` or `@f16` otherwise.
fn precision_tag(p: crate::precision::Precision) -> String {
    if p.is_half() {
        format!("@{p}")
    } else {
        String::new()
    }
}
