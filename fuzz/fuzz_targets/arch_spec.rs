//! The architecture-spec parser (and the other small option parsers:
//! activation, schedule, optimiser, split) on arbitrary text.
#![no_main]

use advgrad::data::Split;
use advgrad::nn::{parse_arch, Activation, Model};
use advgrad::optim::{OptimizerKind, Schedule};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(widths) = parse_arch(text) {
        assert!(widths.len() >= 2 && widths.iter().all(|&w| w > 0));
        let params = widths
            .windows(2)
            .try_fold(0usize, |n, w| n.checked_add(w[0].checked_mul(w[1])?));
        if params.is_some_and(|p| p <= 100_000) {
            let model = Model::new(text, Activation::Relu, 0).expect("a parsed spec builds");
            assert_eq!(model.input_size(), widths[0]);
            assert_eq!(model.classes(), *widths.last().unwrap());
        }
    }
    let _ = text.parse::<Activation>();
    if let Ok(schedule) = text.parse::<Schedule>() {
        for epoch in [0, 1, 7, 1 << 40, usize::MAX] {
            // A growing step schedule may reach infinity (training refuses
            // it), never NaN or a negative rate.
            let lr = schedule.lr(0.1, epoch, epoch, 10);
            assert!(lr >= 0.0, "{schedule:?} at {epoch}: {lr}");
        }
    }
    let _ = text.parse::<OptimizerKind>();
    let _ = text.parse::<Split>();
});
