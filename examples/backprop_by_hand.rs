//! Backprop by hand: a two-layer network on a tiny batch.
//!
//! Prints the tape (one line per recorded op), the loss, the gradient of
//! every parameter and of the input, and the gradient check of the same
//! function beside it.
//!
//! Run with `cargo run --example backprop_by_hand`.

use advgrad::{gradcheck, DType, GradcheckOptions, Result, Tape, Tensor, Var};

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
    let labels = Tensor::from_vec(vec![2u32, 0, 1], [3])?;

    let mut tape = Tape::new();
    let vars: Vec<Var> = inputs.iter().map(|t| tape.var(t.clone())).collect();
    for (v, name) in vars.iter().zip(names) {
        tape.set_name(*v, name)?;
    }
    let loss = two_layer(&mut tape, &vars, &labels)?;
    tape.backward(loss)?;

    println!("The tape, one line per node:\n{tape}");
    println!("loss = {:.6}\n", tape.value(loss)?.to_scalar()?);
    for (v, name) in vars.iter().zip(names) {
        let g = tape.grad(*v).expect("every input requires a gradient");
        println!("d loss / d {name} {}:", g.shape());
        for row in g.to_f64_vec()?.chunks(*g.dims().last().unwrap_or(&1)) {
            let cells: Vec<String> = row.iter().map(|x| format!("{x:+.6}")).collect();
            println!("  {}", cells.join(" "));
        }
    }

    let report = gradcheck(
        |t, v| two_layer(t, v, &labels),
        &inputs,
        &GradcheckOptions::default(),
    )?;
    println!(
        "\nGradient check against finite differences (input order x, W1, b1, W2, b2):\n{report}"
    );
    println!("Graphviz: `tape.to_dot()` gives the graph; pipe it to `dot -Tpng`.");
    report.ensure_passed()?;
    Ok(())
}
