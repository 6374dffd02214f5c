//! Chapter 1, the tape by hand: a two-layer network on a tiny batch.
//!
//! ```text
//! cargo run --release --example 01_tape_by_hand
//! ```
//!
//! The network is `logits = relu(x·W₁ + b₁)·W₂ + b₂` with the mean softmax
//! cross-entropy as the loss. The example records it on a [`Tape`], prints
//! the tape (one line per recorded op), runs `backward`, and then derives
//! every gradient again by hand, in plain loops over `f64`, with the chain
//! rule written out one line per node, walking the tape backwards:
//!
//! ```text
//! p        = softmax(logits)                dlogits = (p − onehot(y)) / N
//! logits   = h·W₂ + b₂                      dW₂ = hᵀ·dlogits,  db₂ = Σᵢ dlogitsᵢ,  dh = dlogits·W₂ᵀ
//! h        = relu(z₁)                       dz₁ = dh ⊙ [z₁ > 0]
//! z₁       = x·W₁ + b₁                      dW₁ = xᵀ·dz₁,      db₁ = Σᵢ dz₁ᵢ,      dx = dz₁·W₁ᵀ
//! ```
//!
//! Both sets of gradients are printed side by side with their largest
//! difference, and finally `gradcheck` compares the tape against finite
//! differences of the same function.

use advgrad::{gradcheck, DType, GradcheckOptions, Result, Tape, Tensor, Var};

/// A dense row-major matrix of `f64`, just enough for the hand derivation.
#[derive(Clone)]
struct Mat {
    rows: usize,
    cols: usize,
    v: Vec<f64>,
}

impl Mat {
    fn of(t: &Tensor) -> Result<Mat> {
        let dims = t.dims();
        let (rows, cols) = match dims {
            [n] => (1, *n),
            [r, c] => (*r, *c),
            _ => unreachable!("the example only has vectors and matrices"),
        };
        Ok(Mat {
            rows,
            cols,
            v: t.to_f64_vec()?,
        })
    }
    fn at(&self, i: usize, j: usize) -> f64 {
        self.v[i * self.cols + j]
    }
    /// `self·other`, or with `ta`/`tb` the transposes in their place.
    fn mul(&self, ta: bool, other: &Mat, tb: bool) -> Mat {
        let (m, k) = if ta {
            (self.cols, self.rows)
        } else {
            (self.rows, self.cols)
        };
        let n = if tb { other.rows } else { other.cols };
        let a = |i: usize, p: usize| if ta { self.at(p, i) } else { self.at(i, p) };
        let b = |p: usize, j: usize| if tb { other.at(j, p) } else { other.at(p, j) };
        let v = (0..m * n)
            .map(|ij| (0..k).map(|p| a(ij / n, p) * b(p, ij % n)).sum())
            .collect();
        Mat {
            rows: m,
            cols: n,
            v,
        }
    }
    /// Adds the row vector `b` to every row.
    fn add_row(&self, b: &Mat) -> Mat {
        let v = self
            .v
            .iter()
            .enumerate()
            .map(|(i, x)| x + b.v[i % self.cols])
            .collect();
        Mat { v, ..*self }
    }
    /// The sum of the rows, as a row vector.
    fn sum_rows(&self) -> Mat {
        let v = (0..self.cols)
            .map(|j| (0..self.rows).map(|i| self.at(i, j)).sum())
            .collect();
        Mat {
            rows: 1,
            cols: self.cols,
            v,
        }
    }
}

/// logits = relu(x·W₁ + b₁)·W₂ + b₂; loss = mean softmax cross-entropy.
fn two_layer(tape: &mut Tape, v: &[Var], labels: &Tensor) -> Result<Var> {
    let (x, w1, b1, w2, b2) = (v[0], v[1], v[2], v[3], v[4]);
    let z1 = tape.matmul(x, w1)?;
    let z1 = tape.add(z1, b1)?;
    let h = tape.relu(z1)?;
    let z2 = tape.matmul(h, w2)?;
    let logits = tape.add(z2, b2)?;
    tape.softmax_cross_entropy(logits, labels)
}

/// The gradients of x, W₁, b₁, W₂, b₂, derived by hand (see the module
/// documentation).
fn gradients_by_hand(p: &[Mat], labels: &[u32]) -> Vec<Mat> {
    let (x, w1, b1, w2, b2) = (&p[0], &p[1], &p[2], &p[3], &p[4]);
    let z1 = x.mul(false, w1, false).add_row(b1);
    let h = Mat {
        v: z1.v.iter().map(|z| z.max(0.0)).collect(),
        ..z1
    };
    let logits = h.mul(false, w2, false).add_row(b2);
    let n = x.rows as f64;
    let mut dlogits = logits.clone();
    for (i, row) in dlogits.v.chunks_mut(logits.cols).enumerate() {
        let top = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = row.iter().map(|z| (z - top).exp()).sum();
        for (j, z) in row.iter_mut().enumerate() {
            let onehot = if j == labels[i] as usize { 1.0 } else { 0.0 };
            *z = ((*z - top).exp() / total - onehot) / n;
        }
    }
    let dw2 = h.mul(true, &dlogits, false);
    let db2 = dlogits.sum_rows();
    let dh = dlogits.mul(false, w2, true);
    let dz1 = Mat {
        v: dh
            .v
            .iter()
            .zip(&z1.v)
            .map(|(g, z)| if *z > 0.0 { *g } else { 0.0 })
            .collect(),
        ..dh
    };
    let dw1 = x.mul(true, &dz1, false);
    let db1 = dz1.sum_rows();
    let dx = dz1.mul(false, w1, true);
    vec![dx, dw1, db1, dw2, db2]
}

fn main() -> Result<()> {
    // A batch of 3 examples with 4 features, 5 hidden units, 3 classes.
    let inputs = vec![
        Tensor::rand_uniform([3, 4], 0.0, 1.0, 1, DType::F64),
        Tensor::rand_uniform([4, 5], -0.5, 0.5, 2, DType::F64),
        Tensor::rand_uniform([5], -0.1, 0.1, 3, DType::F64),
        Tensor::rand_uniform([5, 3], -0.5, 0.5, 4, DType::F64),
        Tensor::rand_uniform([3], -0.1, 0.1, 5, DType::F64),
    ];
    let names = ["x", "W1", "b1", "W2", "b2"];
    let labels = vec![2u32, 0, 1];
    let label_tensor = Tensor::from_vec(labels.clone(), [3])?;

    println!("Chapter 1: the tape by hand");
    println!("logits = relu(x·W1 + b1)·W2 + b2, loss = mean softmax cross-entropy\n");
    let mut tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|t| tape.var(t.clone())).collect();
    for (v, name) in vars.iter().zip(names) {
        tape.set_name(*v, name)?;
    }
    let loss = two_layer(&mut tape, &vars, &label_tensor)?;
    tape.backward(loss)?;
    println!("The tape, one line per node, in the order the forward pass ran:\n{tape}");
    println!("loss = {:.6}", tape.value(loss)?.to_scalar()?);
    println!("backward walked it from the last node to the first.\n");

    let params: Vec<Mat> = inputs.iter().map(Mat::of).collect::<Result<_>>()?;
    let by_hand = gradients_by_hand(&params, &labels);
    let mut worst = 0.0f64;
    for ((v, name), hand) in vars.iter().zip(names).zip(&by_hand) {
        let g = tape.grad(*v).expect("every input requires a gradient");
        let tape_grad = Mat::of(g)?;
        println!("d loss / d {name} {}   tape | by hand", g.shape());
        for (row, hand_row) in tape_grad
            .v
            .chunks(tape_grad.cols)
            .zip(hand.v.chunks(hand.cols))
        {
            let cells = |r: &[f64]| {
                r.iter()
                    .map(|x| format!("{x:+.6}"))
                    .collect::<Vec<_>>()
                    .join(" ")
            };
            println!("  {}  |  {}", cells(row), cells(hand_row));
        }
        let diff = tape_grad.v.iter().zip(&hand.v).map(|(a, b)| (a - b).abs());
        worst = diff.fold(worst, f64::max);
    }
    println!("\nlargest |tape − by hand| over every gradient: {worst:.1e}");
    assert!(worst < 1e-12, "the tape and the hand derivation disagree");

    let report = gradcheck(
        |t, v| two_layer(t, v, &label_tensor),
        &inputs,
        &GradcheckOptions::default(),
    )?;
    println!(
        "\nGradient check against finite differences (input order x, W1, b1, W2, b2):\n{report}"
    );
    println!("`tape.to_dot()` gives the graph as Graphviz; chapter 5 draws it.");
    report.ensure_passed()?;
    Ok(())
}
