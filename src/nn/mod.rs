//! Models: a sequential model of convolutions, pooling and linear layers
//! (an MLP is one), its architecture grammar, named parameters in
//! PyTorch's `nn.Sequential` layout and safetensors model files.

pub mod arch;
mod conv;
mod file;
mod linear;
mod model;

pub use arch::{parse_arch, Arch, Input, LayerSpec};
pub use conv::Conv2d;
pub use file::{le_bytes, save_tensors, write_safetensors, RawTensor};
pub use file::{load_model, load_model_arch, load_model_bytes, load_model_bytes_arch};
pub use file::{save_model, save_model_as};
pub use linear::Linear;
pub(crate) use model::gradients_of;
pub use model::{Activation, Forward, Layer, Model, Params, StepGradients};
