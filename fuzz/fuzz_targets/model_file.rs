//! The model-file and checkpoint loaders on arbitrary bytes: `Ok` or `Err`,
//! never a panic; a model that loads has finite parameters and computes
//! logits (which finite but huge weights may overflow).
#![no_main]

use std::path::Path;

use advgrad::checkpoint;
use advgrad::nn::{load_model_bytes, Activation};
use advgrad::{DType, Tensor};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.safetensors");
    for act in [None, Some(Activation::Tanh)] {
        if let Ok(model) = load_model_bytes(path, data, act) {
            for p in model.params() {
                let v = p.to_vec::<f32>().expect("f32 parameters");
                assert!(v.iter().all(|x| x.is_finite()), "a non-finite parameter loaded");
            }
            // Keep the forward pass cheap: the file's size already bounds
            // the weights, the input row is what this adds.
            if model.input_size() <= 1 << 16 && model.num_params() <= 1 << 20 {
                let x = Tensor::zeros([1, model.input_size()], DType::F32);
                let logits = model.logits(&x).expect("a loaded model computes logits");
                assert_eq!(logits.dims(), [1, model.classes()]);
            }
        }
    }
    if let Ok(c) = checkpoint::load_bytes(path, data) {
        assert_eq!(c.optimizer_buffers.len(), c.model.params().len());
    }
});
