//! The architecture-spec parser (and the other small option parsers:
//! activation, schedule, optimiser, split) on arbitrary text.
#![no_main]

use advgrad::data::Split;
use advgrad::nn::{parse_arch, Activation, Model};
use advgrad::optim::{OptimizerKind, Schedule};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    if let Ok(arch) = parse_arch(text) {
        assert!(!arch.layers.is_empty() && arch.input_size() > 0 && arch.classes() > 0);
        let canonical = arch.to_string();
        assert_eq!(parse_arch(&canonical).expect("the canonical spec parses"), arch);
        // The multiply-adds bound the weights: build only small models.
        let macs: f64 = arch.layer_macs().iter().map(|(m, _)| m).sum();
        if macs <= 100_000.0 {
            let model = Model::new(text, Activation::Relu, 0).expect("a parsed spec builds");
            assert_eq!(model.input_size(), arch.input_size());
            assert_eq!(model.classes(), arch.classes());
            assert_eq!(model.arch(), canonical);
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
