//! The attack options as the command line gives them (a name, budgets,
//! steps, step size, random start, restarts, target), built into an attack
//! and run on a tiny model: `Ok` or `Err`, never a panic, and an attack
//! that runs keeps its promises (inside the budget, pixels in [0, 1]).
#![no_main]

use advgrad::attack::{Attack, AttackOptions, Target, Threat, ATTACK_NAMES};
use advgrad::nn::{Activation, Model};
use advgrad::Tensor;
use arbitrary::Arbitrary;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
struct Options {
    name: Name,
    eps: Vec<f64>,
    steps: Option<u8>,
    alpha: Option<f64>,
    random_start: bool,
    restarts: Option<u8>,
    target: TargetChoice,
    seed: u64,
    pixels: [u8; 8],
}

#[derive(Arbitrary, Debug)]
enum Name {
    Known(u8),
    Other(String),
}

#[derive(Arbitrary, Debug)]
enum TargetChoice {
    Untargeted,
    RandomOther,
    Class(u32),
}

fuzz_target!(|o: Options| {
    let name = match &o.name {
        Name::Known(i) => ATTACK_NAMES[usize::from(*i) % ATTACK_NAMES.len()].to_string(),
        Name::Other(s) => s.clone(),
    };
    let options = AttackOptions {
        // Few steps keep an execution short; every step count is the same code.
        steps: o.steps.map(|s| usize::from(s % 6)),
        alpha: o.alpha,
        random_start: o.random_start,
        restarts: o.restarts.map(|r| usize::from(r % 3)),
        target: match o.target {
            TargetChoice::Untargeted => Target::Untargeted,
            TargetChoice::RandomOther => Target::RandomOther,
            TargetChoice::Class(k) => Target::Class(k),
        },
        ..AttackOptions::default()
    };
    let first = o.eps.first().copied().unwrap_or(0.0);
    let Ok(attack) = Attack::build(&name, first, &options) else {
        return;
    };
    let model = Model::new("4-5-3", Activation::Tanh, 1).expect("a tiny model");
    let x: Vec<f32> = o.pixels.iter().map(|&p| f32::from(p) / 255.0).collect();
    let x = Tensor::from_vec(x, [2, 4]).expect("a 2×4 batch");
    let labels = Tensor::from_vec(vec![0u32, 2], [2]).expect("two labels");
    for &eps in o.eps.iter().take(3) {
        let attack = attack.with_eps(eps);
        let Ok(x_adv) = attack.run(&model, &x, &labels, o.seed) else {
            continue;
        };
        let (a, b) = (x.to_vec::<f32>().unwrap(), x_adv.to_vec::<f32>().unwrap());
        assert!(b.iter().all(|v| (0.0..=1.0).contains(v)), "{name} eps {eps}: {b:?}");
        let slack = 1e-5;
        match attack.threat() {
            Threat::Linf(e) => {
                let linf = a.iter().zip(&b).map(|(p, q)| (p - q).abs()).fold(0.0, f32::max);
                assert!(f64::from(linf) <= e + slack, "{name}: L∞ {linf} > {e}");
            }
            Threat::L2(e) => {
                for (ra, rb) in a.chunks(4).zip(b.chunks(4)) {
                    let l2: f32 = ra.iter().zip(rb).map(|(p, q)| (p - q) * (p - q)).sum::<f32>().sqrt();
                    assert!(f64::from(l2) <= e * (1.0 + 1e-5) + slack, "{name}: L2 {l2} > {e}");
                }
            }
        }
    }
});
