//! The built-in gradient checks: every op of the core, plus a small MLP,
//! on random f64 inputs of odd sizes. `advgrad gradcheck` and the test suite
//! both run these.
//!
//! An op with a non-scalar output is checked through
//! `f = Σ op(x) ⊙ w` with a fixed random `w`, so every output element gets a
//! different weight and a wrong index in a backward rule cannot cancel out.
//!
//! A case runs on the device of its inputs ([`Case::to_device`]): the
//! constants it makes (weights, labels) follow them there.

use crate::backend::Activation;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::Result;
use crate::gradcheck::{gradcheck, GradcheckOptions, GradcheckReport};
use crate::precision::Precision;
use crate::tape::{Tape, Var};
use crate::tensor::Tensor;

/// A scalar function of tensors, built on a tape.
pub type CheckFn = Box<dyn Fn(&mut Tape, &[Var]) -> Result<Var>>;

/// One named gradient check: a function and the point to check it at.
pub struct Case {
    /// The op's name (as `advgrad gradcheck --op` knows it).
    pub name: &'static str,
    /// The inputs, all f64.
    pub inputs: Vec<Tensor>,
    /// The scalar function of the inputs.
    pub f: CheckFn,
}

impl Case {
    /// Runs the check with `options`.
    pub fn run(&self, options: &GradcheckOptions) -> Result<GradcheckReport> {
        gradcheck(&self.f, &self.inputs, options)
    }

    /// Runs the check of the function evaluated in f32 with its products
    /// in `precision`, against the f64 reference (see
    /// [`super::gradcheck_in`]).
    pub fn run_in(
        &self,
        options: &GradcheckOptions,
        precision: Precision,
    ) -> Result<GradcheckReport> {
        super::gradcheck_in(&self.f, &self.inputs, options, precision)
    }

    /// The same case with its inputs on `device`.
    pub fn to_device(mut self, device: Device) -> Result<Case> {
        for x in &mut self.inputs {
            *x = x.to_device(device)?;
        }
        Ok(self)
    }
}

/// The input sizes of a case.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CaseSize {
    /// The sizes above (odd, non-square): what every device checks by
    /// default.
    Full,
    /// Every extent halved, rounding up (7 → 4, 5 → 3, 3 → 2), still
    /// non-square: about a quarter of the finite differences, for a quicker
    /// run (`advgrad gradcheck --size small`).
    Small,
}

impl CaseSize {
    /// The extent `d` at this size.
    pub fn n(self, d: usize) -> usize {
        match self {
            CaseSize::Full => d,
            CaseSize::Small => d.div_ceil(2).max(2).min(d),
        }
    }

    /// A number of classes at this size.
    fn classes(self, c: u32) -> u32 {
        self.n(c as usize) as u32
    }

    /// A shape at this size.
    fn of(self, dims: &[usize]) -> Vec<usize> {
        dims.iter().map(|&d| self.n(d)).collect()
    }
}

/// The names of all built-in cases, in order.
pub const CASE_NAMES: [&str; 28] = [
    "matmul",
    "add",
    "sub",
    "mul",
    "scale",
    "relu",
    "sigmoid",
    "tanh",
    "gelu",
    "bias_act",
    "linear_act",
    "softmax_cross_entropy",
    "sum",
    "mean",
    "log_softmax",
    "exp",
    "ln",
    "pick",
    "kl_div",
    "dlr",
    "dlr_targeted",
    "mlp",
    "conv2d",
    "conv2d_same",
    "max_pool2d",
    "avg_pool2d",
    "reshape",
    "cnn",
];

fn uniform(dims: &[usize], seed: u64) -> Tensor {
    Tensor::rand_uniform(dims, -1.0, 1.0, seed, DType::F64)
}

/// Uniform in ±[0.05, 1]: far from ReLU's kink at 0.
fn away_from_zero(dims: &[usize], seed: u64) -> Result<Tensor> {
    let v: Vec<f64> = uniform(dims, seed)
        .to_f64_vec()?
        .into_iter()
        .map(|x| x.signum() * (0.05 + 0.95 * x.abs()))
        .collect();
    Tensor::from_vec(v, dims)
}

/// `Σ y ⊙ w` for a fixed random `w` shaped like `y`, of its type, on its
/// device.
fn weighted_sum(tape: &mut Tape, y: Var, seed: u64) -> Result<Var> {
    let value = tape.value(y)?;
    let w = uniform(value.dims(), seed)
        .to_dtype(value.dtype())?
        .to_device(value.device())?;
    let w = tape.constant(w);
    let p = tape.mul(y, w)?;
    tape.sum(p)
}

/// `k` (labels, indices) on the device of the recorded `z`.
fn beside(tape: &Tape, z: Var, k: &Tensor) -> Result<Tensor> {
    k.to_device(tape.value(z)?.device())
}

fn labels(n: usize, classes: u32, seed: u64) -> Result<Tensor> {
    let mut rng = crate::rng::Rng::new(seed);
    let v: Vec<u32> = (0..n).map(|_| rng.below(classes as u64) as u32).collect();
    Tensor::from_vec(v, [n])
}

fn unary_case(name: &'static str, op: fn(&mut Tape, Var) -> Result<Var>, x: Tensor) -> Case {
    Case {
        name,
        inputs: vec![x],
        f: Box::new(move |t, v| {
            let y = op(t, v[0])?;
            weighted_sum(t, y, 99)
        }),
    }
}

/// Like [`unary_case`] for an op that captures its own settings (labels,
/// indices).
fn unary_case_with(
    name: &'static str,
    op: impl Fn(&mut Tape, Var) -> Result<Var> + 'static,
    x: Tensor,
) -> Case {
    Case {
        name,
        inputs: vec![x],
        f: Box::new(move |t, v| {
            let y = op(t, v[0])?;
            weighted_sum(t, y, 99)
        }),
    }
}

/// The case named `name`, or `None` for an unknown name.
pub fn case(name: &str) -> Result<Option<Case>> {
    case_sized(name, CaseSize::Full)
}

/// The case named `name` with inputs of `size`, or `None` for an unknown
/// name.
pub fn case_sized(name: &str, size: CaseSize) -> Result<Option<Case>> {
    let c = match name {
        "matmul" => Case {
            // A: [7, 5] and B: [5, 3], used as A·B, A·(Bᵀ)ᵀ, (Aᵀ)ᵀ·B and (Aᵀ)ᵀ·(Bᵀ)ᵀ:
            // inputs 2 and 3 hold the transposes, read transposed.
            name: "matmul",
            inputs: vec![
                uniform(&size.of(&[7, 5]), 1),
                uniform(&size.of(&[5, 3]), 2),
                uniform(&size.of(&[5, 7]), 3),
                uniform(&size.of(&[3, 5]), 4),
            ],
            f: Box::new(|t, v| {
                let mut total = None;
                for (i, (a, b, ta, tb)) in [
                    (v[0], v[1], false, false),
                    (v[0], v[3], false, true),
                    (v[2], v[1], true, false),
                    (v[2], v[3], true, true),
                ]
                .into_iter()
                .enumerate()
                {
                    let y = t.matmul_ex(a, b, ta, tb)?;
                    let s = weighted_sum(t, y, 50 + i as u64)?;
                    total = Some(match total {
                        Some(acc) => t.add(acc, s)?,
                        None => s,
                    });
                }
                Ok(total.expect("four products"))
            }),
        },
        "add" => Case {
            name: "add",
            inputs: vec![
                uniform(&size.of(&[5, 7]), 4),
                uniform(&size.of(&[5, 7]), 5),
                uniform(&size.of(&[7]), 6),
            ],
            f: Box::new(|t, v| {
                let same = t.add(v[0], v[1])?;
                let bias = t.add(same, v[2])?;
                weighted_sum(t, bias, 7)
            }),
        },
        "sub" => Case {
            name: "sub",
            inputs: vec![uniform(&size.of(&[3, 9]), 8), uniform(&size.of(&[3, 9]), 9)],
            f: Box::new(|t, v| {
                let y = t.sub(v[0], v[1])?;
                weighted_sum(t, y, 10)
            }),
        },
        "mul" => Case {
            name: "mul",
            inputs: vec![
                uniform(&size.of(&[9, 3]), 11),
                uniform(&size.of(&[9, 3]), 12),
            ],
            f: Box::new(|t, v| {
                let y = t.mul(v[0], v[1])?;
                weighted_sum(t, y, 13)
            }),
        },
        "scale" => unary_case(
            "scale",
            |t, x| t.scale(x, -2.5),
            uniform(&size.of(&[5, 3]), 14),
        ),
        "relu" => unary_case("relu", Tape::relu, away_from_zero(&size.of(&[7, 9]), 15)?),
        "sigmoid" => unary_case(
            "sigmoid",
            Tape::sigmoid,
            uniform(&size.of(&[7, 9]), 16).scale(3.0)?,
        ),
        "tanh" => unary_case(
            "tanh",
            Tape::tanh,
            uniform(&size.of(&[7, 9]), 17).scale(2.0)?,
        ),
        // [−4, 4]: the curved middle and the tails where t is near ±1.
        "gelu" => unary_case(
            "gelu",
            Tape::gelu,
            uniform(&size.of(&[7, 9]), 67).scale(4.0)?,
        ),
        "bias_act" => Case {
            name: "bias_act",
            inputs: vec![
                uniform(&size.of(&[7, 9]), 18).scale(2.0)?,
                uniform(&size.of(&[9]), 19),
            ],
            f: Box::new(|t, v| {
                let y = t.bias_act(v[0], v[1], Activation::Tanh)?;
                weighted_sum(t, y, 22)
            }),
        },
        "linear_act" => Case {
            name: "linear_act",
            inputs: vec![
                uniform(&size.of(&[7, 9]), 23),
                uniform(&size.of(&[5, 9]), 24),
                uniform(&size.of(&[5]), 25),
            ],
            f: Box::new(|t, v| {
                let y = t.linear_act(v[0], v[1], v[2], Activation::Sigmoid)?;
                weighted_sum(t, y, 26)
            }),
        },
        "softmax_cross_entropy" => {
            let y = labels(size.n(9), size.classes(7), 18)?;
            Case {
                name: "softmax_cross_entropy",
                inputs: vec![uniform(&size.of(&[9, 7]), 19).scale(3.0)?],
                f: Box::new(move |t, v| {
                    let y = y.to_device(t.value(v[0])?.device())?;
                    t.softmax_cross_entropy(v[0], &y)
                }),
            }
        }
        "sum" => Case {
            name: "sum",
            inputs: vec![uniform(&size.of(&[5, 11]), 20)],
            f: Box::new(|t, v| t.sum(v[0])),
        },
        "mean" => Case {
            name: "mean",
            inputs: vec![uniform(&size.of(&[11, 5]), 21)],
            f: Box::new(|t, v| t.mean(v[0])),
        },
        "log_softmax" => unary_case(
            "log_softmax",
            Tape::log_softmax,
            uniform(&size.of(&[6, 7]), 60).scale(3.0)?,
        ),
        "exp" => unary_case("exp", Tape::exp, uniform(&size.of(&[5, 4]), 61).scale(2.0)?),
        "ln" => unary_case(
            "ln",
            Tape::ln,
            uniform(&size.of(&[5, 4]), 62).affine(0.9, 1.1)?,
        ),
        "pick" => {
            let k = labels(size.n(7), size.classes(5), 63)?;
            unary_case_with(
                "pick",
                move |t, z| {
                    let k = beside(t, z, &k)?;
                    t.pick(z, &k)
                },
                uniform(&size.of(&[7, 5]), 64),
            )
        }
        "kl_div" => Case {
            name: "kl_div",
            inputs: vec![
                uniform(&size.of(&[6, 5]), 65).scale(2.0)?,
                uniform(&size.of(&[6, 5]), 66).scale(2.0)?,
            ],
            f: Box::new(|t, v| {
                let kl = t.kl_div(v[0], v[1])?;
                weighted_sum(t, kl, 67)
            }),
        },
        // DLR keeps its 6 classes at every size (the targeted loss needs
        // at least 4).
        "dlr" => {
            let y = labels(size.n(8), 6, 68)?;
            unary_case_with(
                "dlr",
                move |t, z| {
                    let y = beside(t, z, &y)?;
                    t.dlr(z, &y)
                },
                uniform(&[size.n(8), 6], 69).scale(3.0)?,
            )
        }
        "dlr_targeted" => {
            let y = labels(size.n(8), 6, 70)?;
            let targets = labels(size.n(8), 6, 71)?;
            unary_case_with(
                "dlr_targeted",
                move |t, z| {
                    let (y, targets) = (beside(t, z, &y)?, beside(t, z, &targets)?);
                    t.dlr_targeted(z, &y, &targets)
                },
                uniform(&[size.n(8), 6], 72).scale(3.0)?,
            )
        }
        "mlp" => mlp_case(size)?,
        // Stride 2, padding 1, a non-square kernel on a non-square input.
        "conv2d" => conv_case("conv2d", size, [2, 3, 7, 6], [4, 3, 3, 2], 2, 1)?,
        // Stride 1 (the unfold's contiguous copies), padding 2.
        "conv2d_same" => conv_case("conv2d_same", size, [2, 2, 5, 7], [3, 2, 5, 3], 1, 2)?,
        "max_pool2d" => unary_case_with(
            "max_pool2d",
            |t, x| t.max_pool2d(x, 2),
            uniform(&size.of(&[2, 3, 7, 5]), 50),
        ),
        "avg_pool2d" => unary_case_with(
            "avg_pool2d",
            |t, x| t.avg_pool2d(x, 3),
            uniform(&size.of(&[2, 3, 7, 5]), 51),
        ),
        "reshape" => unary_case_with(
            "reshape",
            |t, x| {
                let y = t.flatten(x)?;
                t.tanh(y)
            },
            uniform(&size.of(&[3, 4, 5]), 52),
        ),
        "cnn" => cnn_case(size)?,
        _ => return Ok(None),
    };
    Ok(Some(c))
}

/// x → relu(xW₁+b₁) → sigmoid(·W₂+b₂) → tanh(·W₃+b₃) → ·W₄+b₄ → softmax
/// cross-entropy; checked with respect to the input and every parameter.
fn mlp_case(size: CaseSize) -> Result<Case> {
    let sizes = [11, 7, 6, 5, 4].map(|d| size.n(d));
    let mut inputs = vec![uniform(&[size.n(5), sizes[0]], 30)];
    for (l, w) in sizes.windows(2).enumerate() {
        let bound = 1.0 / (w[0] as f64).sqrt();
        let seed = 31 + 2 * l as u64;
        inputs.push(uniform(&[w[0], w[1]], seed).scale(bound * 2.0)?);
        inputs.push(uniform(&[w[1]], seed + 1).scale(bound)?);
    }
    let y = labels(size.n(5), sizes[4] as u32, 40)?;
    Ok(Case {
        name: "mlp",
        inputs,
        f: Box::new(move |t, v| {
            let mut h = v[0];
            let acts: [fn(&mut Tape, Var) -> Result<Var>; 3] =
                [Tape::relu, Tape::sigmoid, Tape::tanh];
            for l in 0..4 {
                let z = t.matmul(h, v[1 + 2 * l])?;
                h = t.add(z, v[2 + 2 * l])?;
                if l < 3 {
                    h = acts[l](t, h)?;
                }
            }
            let y = y.to_device(t.value(v[0])?.device())?;
            t.softmax_cross_entropy(h, &y)
        }),
    })
}

/// `Σ conv2d(x, W, b) ⊙ w` for `x` of `input` dims, `W` of `kernel` dims.
fn conv_case(
    name: &'static str,
    size: CaseSize,
    input: [usize; 4],
    kernel: [usize; 4],
    stride: usize,
    padding: usize,
) -> Result<Case> {
    let kernel = size.of(&kernel);
    Ok(Case {
        name,
        inputs: vec![
            uniform(&size.of(&input), 53),
            uniform(&kernel, 54),
            uniform(&[kernel[0]], 55),
        ],
        f: Box::new(move |t, v| {
            let y = t.conv2d(v[0], v[1], v[2], stride, padding)?;
            weighted_sum(t, y, 56)
        }),
    })
}

/// x → conv2d (padding 1) → relu → max_pool2d(2) → flatten → linear →
/// softmax cross-entropy; checked with respect to the input and every
/// parameter.
fn cnn_case(size: CaseSize) -> Result<Case> {
    let x = size.of(&[3, 2, 9, 8]);
    let w1 = size.of(&[4, 2, 3, 3]);
    // The convolution keeps `H + 2 − K + 1` rows (padding 1); the pool halves them.
    let conv = |d: usize, k: usize| d + 2 - k + 1;
    let (oh, ow) = (conv(x[2], w1[2]) / 2, conv(x[3], w1[3]) / 2);
    let (features, classes) = (w1[0] * oh * ow, size.n(5));
    let y = labels(x[0], classes as u32, 57)?;
    Ok(Case {
        name: "cnn",
        inputs: vec![
            uniform(&x, 58),
            uniform(&w1, 59).scale(0.5)?,
            uniform(&[w1[0]], 60).scale(0.2)?,
            uniform(&[classes, features], 61).scale(0.3)?,
            uniform(&[classes], 62).scale(0.2)?,
        ],
        f: Box::new(move |t, v| {
            let h = t.conv2d(v[0], v[1], v[2], 1, 1)?;
            let h = t.relu(h)?;
            let h = t.max_pool2d(h, 2)?;
            let h = t.flatten(h)?;
            let z = t.matmul_ex(h, v[3], false, true)?;
            let z = t.add(z, v[4])?;
            let y = y.to_device(t.value(v[0])?.device())?;
            t.softmax_cross_entropy(z, &y)
        }),
    })
}

/// Every built-in case, in [`CASE_NAMES`] order.
pub fn all_cases() -> Result<Vec<Case>> {
    CASE_NAMES
        .iter()
        .map(|n| case(n).map(|c| c.expect("every listed name has a case")))
        .collect()
}
