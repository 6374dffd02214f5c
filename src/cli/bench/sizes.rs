//! The problem sizes of the kernel ops: `--sizes` items (`N`, `RxC`,
//! `MxKxN`, `mlp`) turned into matmul dimensions or tensor shapes.

use advgrad::{Device, Error, Result};

use super::Op;

/// One problem of a kernel op.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    /// `C[m, n] = A[m, k]·B[k, n]`.
    Matmul { m: usize, k: usize, n: usize },
    /// A `[rows, cols]` tensor (for softmax cross-entropy: rows of logits
    /// over `cols` classes).
    Tensor { rows: usize, cols: usize },
}

impl std::fmt::Display for Problem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Problem::Matmul { m, k, n } => write!(f, "{m}×{k}·{k}×{n}"),
            Problem::Tensor { rows, cols } => write!(f, "{rows}×{cols}"),
        }
    }
}

/// The shapes the 784-256-256-10 MLP gives `op`: its three layer products
/// at batch 128, and its hidden activations and logits at the training
/// batch (128) and the attack batch (1000).
fn mlp(op: Op) -> Vec<Problem> {
    let t = |rows, cols| Problem::Tensor { rows, cols };
    match op {
        Op::Matmul => [(784, 256), (256, 256), (256, 10)]
            .into_iter()
            .map(|(k, n)| Problem::Matmul { m: 128, k, n })
            .collect(),
        Op::SoftmaxCrossEntropy => vec![t(128, 10), t(1000, 10)],
        _ => vec![t(128, 256), t(1000, 256)],
    }
}

/// `--sizes` when not given: the headline squares and the MLP's shapes;
/// small squares on the (slow) emulator.
fn default_sizes(device: Device) -> Vec<String> {
    let squares: &[&str] = if device == Device::Emu {
        &["64"]
    } else {
        &["1024", "4096"]
    };
    squares
        .iter()
        .map(|s| s.to_string())
        .chain(["mlp".to_string()])
        .collect()
}

/// The problems `--sizes` names for `op` on `device`.
pub fn parse(sizes: Option<&[String]>, device: Device, op: Op) -> Result<Vec<Problem>> {
    let items = sizes.map_or_else(|| default_sizes(device), <[String]>::to_vec);
    let mut problems = Vec::new();
    for item in &items {
        let item = item.trim();
        if item == "mlp" {
            problems.extend(mlp(op));
            continue;
        }
        let dims = item
            .split(['x', '×'])
            .map(|d| d.trim().parse::<usize>().ok().filter(|&d| d > 0))
            .collect::<Option<Vec<usize>>>();
        let bad = || {
            let want = if op == Op::Matmul {
                "N, MxKxN or mlp"
            } else {
                "N, RxC or mlp"
            };
            Error::invalid(format!(
                "--sizes: `{item}` is not a size for {}: expected {want}, with positive integers",
                op.name()
            ))
        };
        let problem = match (op, dims.ok_or_else(bad)?.as_slice()) {
            (Op::Matmul, &[n]) => Problem::Matmul { m: n, k: n, n },
            (Op::Matmul, &[m, k, n]) => Problem::Matmul { m, k, n },
            (_, &[n]) if op != Op::Matmul => Problem::Tensor { rows: n, cols: n },
            (_, &[rows, cols]) if op != Op::Matmul => Problem::Tensor { rows, cols },
            _ => return Err(bad()),
        };
        problems.push(problem);
    }
    if problems.is_empty() {
        return Err(Error::invalid("--sizes: no sizes given"));
    }
    Ok(problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sizes(items: &[&str], op: Op) -> Result<Vec<Problem>> {
        let items: Vec<String> = items.iter().map(|s| s.to_string()).collect();
        parse(Some(&items), Device::Cpu, op)
    }

    #[test]
    fn squares_shapes_and_the_mlp() {
        let mm = |m, k, n| Problem::Matmul { m, k, n };
        let t = |rows, cols| Problem::Tensor { rows, cols };
        assert_eq!(
            sizes(&["64", "3x5x7"], Op::Matmul).unwrap(),
            [mm(64, 64, 64), mm(3, 5, 7)]
        );
        assert_eq!(
            sizes(&["mlp"], Op::Matmul).unwrap(),
            [mm(128, 784, 256), mm(128, 256, 256), mm(128, 256, 10)]
        );
        assert_eq!(sizes(&["8", "2×3"], Op::Relu).unwrap(), [t(8, 8), t(2, 3)]);
        assert_eq!(
            sizes(&["mlp"], Op::Gelu).unwrap(),
            [t(128, 256), t(1000, 256)]
        );
        assert_eq!(
            sizes(&["mlp"], Op::SoftmaxCrossEntropy).unwrap(),
            [t(128, 10), t(1000, 10)]
        );
        let defaults = parse(None, Device::Cpu, Op::Tanh).unwrap();
        assert_eq!(defaults[..2], [t(1024, 1024), t(4096, 4096)]);
        assert_eq!(
            parse(None, Device::Emu, Op::Matmul).unwrap()[0],
            mm(64, 64, 64)
        );
    }

    #[test]
    fn bad_sizes_say_what_is_expected() {
        let e = sizes(&["3x5"], Op::Matmul).unwrap_err().to_string();
        assert!(
            e.contains("`3x5` is not a size for matmul: expected N, MxKxN or mlp"),
            "{e}"
        );
        let e = sizes(&["3x5x7"], Op::Relu).unwrap_err().to_string();
        assert!(e.contains("expected N, RxC or mlp"), "{e}");
        assert!(sizes(&["0"], Op::Relu).is_err());
        assert!(sizes(&["big"], Op::Sigmoid).is_err());
    }
}
