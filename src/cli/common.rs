//! Options and helpers shared by the subcommands.

use std::path::PathBuf;

use advgrad::data::{resolve_data_dir, Dataset, Fetch, Split};
use advgrad::nn::{load_model_arch, Activation, Model};
use advgrad::{autocast, Device, Error, Precision, Result};

/// Where the data is and which device to run on.
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Folder with the Fashion-MNIST IDX files [default: $ADVGRAD_DATA, else
    /// the first of /usr/share/datasets/fashion-mnist and
    /// ~/.cache/advgrad/fashion-mnist that holds them].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// cpu, cuda, cuda:N, emu (the CUDA backend on the CPU SIMT emulator:
    /// feature `emu`, slow), or auto (a GPU when built with CUDA and
    /// present, else the CPU).
    #[arg(long, default_value = "auto")]
    pub device: String,
    /// Download Fashion-MNIST, verified by SHA-256, if it is not found: into
    /// --data DIR, or advgrad's cache folder (`advgrad demo` always does).
    #[arg(long)]
    pub download: bool,
    /// Hide download progress (set by the command from its own --quiet).
    #[arg(skip)]
    pub quiet: bool,
}

impl DataArgs {
    /// Loads one split, keeping the first `limit` examples if given; finds
    /// (and with `--download` fetches) the data first.
    pub fn load(&self, split: Split, limit: Option<usize>) -> Result<Dataset> {
        if limit == Some(0) {
            return Err(Error::invalid("--limit must be at least 1"));
        }
        let fetch = if self.download {
            Fetch::IfMissing { quiet: self.quiet }
        } else {
            Fetch::Never
        };
        let dir = resolve_data_dir(self.data.as_deref(), &fetch)?;
        let data = Dataset::load(&dir, split)?;
        Ok(match limit {
            Some(n) => data.limit(n),
            None => data,
        })
    }

    /// The resolved device.
    pub fn device(&self) -> Result<Device> {
        Device::resolve(&self.device)
    }
}

/// Whether progress bars should be hidden: `--quiet`, or `--json` (whose
/// stdout is for machines).
pub fn quiet(quiet: bool, json: bool) -> bool {
    quiet || json
}

/// A saved model to load.
#[derive(clap::Args, Debug, Clone)]
pub struct ModelArgs {
    /// The model file (safetensors, PyTorch `nn.Sequential` layout).
    #[arg(long)]
    pub model: PathBuf,
    /// Activation (relu, sigmoid, tanh), if the file's metadata lacks one.
    #[arg(long)]
    pub act: Option<String>,
    /// The architecture, such as 1x28x28-c16k5p2-mp2-c32k5p2-mp2-128-10,
    /// if the file's metadata lacks one (a convolutional model's tensors do
    /// not tell its strides, padding and pooling; an MLP's do).
    #[arg(long)]
    pub arch: Option<String>,
}

impl ModelArgs {
    /// Loads the model onto `device`.
    pub fn load(&self, device: Device) -> Result<Model> {
        let act = self
            .act
            .as_deref()
            .map(str::parse::<Activation>)
            .transpose()?;
        load_model_arch(&self.model, act, self.arch.as_deref())?.to_device(device)
    }
}

/// A `progress(done, total)` callback that drives `bar`.
pub fn follow(bar: &indicatif::ProgressBar) -> impl FnMut(usize, usize) + '_ {
    |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }
}

/// The precision of the matrix products (`--precision`).
#[derive(clap::Args, Debug, Clone)]
pub struct PrecisionArgs {
    /// Matrix products in f32, bf16 or f16: operands rounded to it, sums
    /// and results in f32; weights, optimiser state, activations, losses
    /// and attack steps stay f32. f16 training scales the loss
    /// (GradScaler's rule). On a GPU the products run on the tensor cores.
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
}

impl PrecisionArgs {
    /// Runs `f` with this thread's products in the chosen precision.
    pub fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        autocast(self.precision, f)
    }
}
