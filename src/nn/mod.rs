//! Models: linear layers and multi-layer perceptrons, with named parameters
//! in PyTorch's layout and safetensors model files.

mod file;
mod linear;
mod model;

pub use file::{le_bytes, save_tensors, write_safetensors, RawTensor};
pub use file::{load_model, load_model_bytes, save_model, save_model_as};
pub use linear::Linear;
pub(crate) use model::gradients_of;
pub use model::{parse_arch, Activation, Forward, Model, Params, StepGradients};
