//! Chapter 4, attacks by hand: FGSM and PGD written from the input
//! gradient, checked against advgrad's own attacks bit for bit.
//!
//! ```text
//! cargo run --release --example 04_attacks_by_hand [model.safetensors]
//! ```
//!
//! Training asks the tape for the gradient of the loss with respect to the
//! parameters; an attack asks for the gradient with respect to the *input*
//! and moves the input uphill, inside a budget:
//!
//! ```text
//! FGSM    x' = clip₀¹(x + ε·sign ∇ₓL(x))
//! PGD     x₀ = x,  xₜ₊₁ = Π(xₜ + α·sign ∇ₓL(xₜ)),  Π(z) = min(max(z, x − ε, 0), x + ε, 1)
//! ```
//!
//! with `L` the summed cross-entropy of the batch against the true labels
//! (advgrad's attacks take the sum, so each example's gradient does not
//! shrink with the batch size; the sign is the same for the mean). With a
//! model file (from `advgrad train`) it attacks that model; without, it
//! first trains a small MLP for one epoch on 10,000 images (a few seconds).
//! It prints a few images' predictions, the accuracies, and whether the
//! hand-written attacks and `Attack::run` agree in every bit.

use advgrad::attack::{Attack, Fgsm, Pgd, Threat};
use advgrad::data::{default_data_dir, Dataset, Split, FASHION_MNIST_CLASSES as NAMES};
use advgrad::nn::{load_model, Activation, Model};
use advgrad::optim::{OptimConfig, OptimizerKind, Schedule};
use advgrad::train::{train, TrainConfig};
use advgrad::{Error, Result, Tape, Tensor};

const EPS: f64 = 0.1;
const PGD_STEPS: usize = 10;
const PGD_ALPHA: f64 = 0.025;

/// `∇ₓ Σᵢ CE(f(xᵢ), yᵢ)`: the batch's summed cross-entropy differentiated
/// with respect to the input. The parameters go on the tape as constants.
fn input_gradient(model: &Model, x: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let mut tape = Tape::new();
    let xv = tape.var(x.clone());
    let logits = model.forward(&mut tape, xv, false)?.logits;
    let mean = tape.softmax_cross_entropy(logits, labels)?;
    let sum = tape.scale(mean, x.dims()[0] as f64)?;
    tape.backward(sum)?;
    tape.grad(xv)
        .cloned()
        .ok_or_else(|| Error::invalid("the input received no gradient"))
}

/// One signed step of size `eps`, clipped to the image range.
fn fgsm_by_hand(model: &Model, x: &Tensor, labels: &Tensor, eps: f64) -> Result<Tensor> {
    let g = input_gradient(model, x, labels)?;
    x.add(&g.sign()?.scale(eps)?)?.clamp(0.0, 1.0)
}

/// `steps` signed steps of size `alpha` from `x`, each projected back onto
/// the L∞ ball of radius `eps` around `x` and onto `[0, 1]`.
fn pgd_by_hand(
    model: &Model,
    x: &Tensor,
    labels: &Tensor,
    eps: f64,
    steps: usize,
    alpha: f64,
) -> Result<Tensor> {
    let mut adv = x.clone();
    for _ in 0..steps {
        let g = input_gradient(model, &adv, labels)?;
        let stepped = adv.add(&g.sign()?.scale(alpha)?)?;
        adv = stepped.project_linf(x, eps, 0.0, 1.0)?;
    }
    Ok(adv)
}

fn main() -> Result<()> {
    let dir = default_data_dir();
    let model = match std::env::args().nth(1) {
        Some(path) => load_model(path.as_ref(), None)?,
        None => train_quickly(&Dataset::load(&dir, Split::Train)?.limit(10_000))?,
    };
    let test = Dataset::load(&dir, Split::Test)?.limit(500);
    let x = Tensor::from_vec(test.images().to_vec(), [test.rows(), test.features()])?;
    let y = Tensor::from_vec(test.labels().to_vec(), [test.rows()])?;
    println!(
        "Chapter 4: attacks by hand, on {} test images, eps {EPS}\n",
        test.rows()
    );

    let fgsm = fgsm_by_hand(&model, &x, &y, EPS)?;
    let pgd = pgd_by_hand(&model, &x, &y, EPS, PGD_STEPS, PGD_ALPHA)?;
    let fgsm_lib = Attack::Fgsm(Fgsm::new(EPS)).run(&model, &x, &y, 0)?;
    let pgd_lib = Attack::Pgd(Pgd {
        steps: PGD_STEPS,
        alpha: Some(PGD_ALPHA),
        ..Pgd::new(Threat::Linf(EPS))
    })
    .run(&model, &x, &y, 0)?;

    let clean = model.predict(&x)?.to_vec::<u32>()?;
    let after_fgsm = model.predict(&fgsm)?.to_vec::<u32>()?;
    let after_pgd = model.predict(&pgd)?.to_vec::<u32>()?;
    println!(
        "{:<12} {:<12} {:<12} {:<12}",
        "true", "clean", "FGSM", "PGD-10"
    );
    for i in 0..8 {
        let name = |c: u32| NAMES[c as usize];
        let fooled = if after_pgd[i] != test.labels()[i] {
            "  <- fooled"
        } else {
            ""
        };
        println!(
            "{:<12} {:<12} {:<12} {:<12}{fooled}",
            name(test.labels()[i]),
            name(clean[i]),
            name(after_fgsm[i]),
            name(after_pgd[i])
        );
    }
    let accuracy = |pred: &[u32]| {
        let right = pred
            .iter()
            .zip(test.labels())
            .filter(|(p, t)| p == t)
            .count();
        100.0 * right as f64 / test.rows() as f64
    };
    println!(
        "\naccuracy: clean {:.1}%, FGSM {:.1}%, PGD-10 (step {PGD_ALPHA}) {:.1}%",
        accuracy(&clean),
        accuracy(&after_fgsm),
        accuracy(&after_pgd)
    );
    let linf = |adv: &Tensor| -> Result<f64> {
        adv.sub(&x)?
            .to_f64_vec()
            .map(|d| d.iter().fold(0.0, |m, v| v.abs().max(m)))
    };
    println!(
        "largest pixel change: FGSM {:.4}, PGD {:.4} (budget {EPS})",
        linf(&fgsm)?,
        linf(&pgd)?
    );

    for (name, mine, theirs) in [("FGSM", &fgsm, &fgsm_lib), ("PGD-10", &pgd, &pgd_lib)] {
        let bits = |t: &Tensor| -> Result<Vec<u32>> {
            Ok(t.to_vec::<f32>()?.iter().map(|v| v.to_bits()).collect())
        };
        let differ = bits(mine)?
            .iter()
            .zip(&bits(theirs)?)
            .filter(|(a, b)| a != b)
            .count();
        if differ > 0 {
            return Err(Error::invalid(format!(
                "{name} by hand differs from advgrad's in {differ} pixels"
            )));
        }
        println!(
            "{name} by hand equals advgrad's {name} in every bit ({} pixels)",
            x.numel()
        );
    }
    Ok(())
}

/// One epoch of plain SGD (lr 0.1, batches of 64) on `784-128-10`.
fn train_quickly(train_set: &Dataset) -> Result<Model> {
    let mut model = Model::new("784-128-10", Activation::Relu, 0)?;
    let cfg = TrainConfig {
        epochs: 1,
        batch_size: 64,
        optim: OptimConfig::new(OptimizerKind::Sgd, 0.1),
        schedule: Schedule::Constant,
        seed: 0,
        adversarial: None,
        quiet: true,
    };
    train(&mut model, train_set, None, &cfg)?;
    Ok(model)
}
