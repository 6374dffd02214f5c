//! Options and helpers shared by the subcommands.

use std::path::PathBuf;

use advgrad::data::{default_data_dir, Dataset, Split};
use advgrad::nn::{load_model, Activation, Mlp};
use advgrad::{Device, Result};

/// Where the data is and which device to run on.
#[derive(clap::Args, Debug, Clone)]
pub struct DataArgs {
    /// Folder with the Fashion-MNIST IDX files [default: $ADVGRAD_DATA or
    /// /usr/share/datasets/fashion-mnist].
    #[arg(long)]
    pub data: Option<PathBuf>,
    /// cpu, cuda, cuda:N, emu (the CUDA backend on the CPU SIMT emulator:
    /// feature `emu`, slow), or auto (a GPU when built with CUDA and
    /// present, else the CPU).
    #[arg(long, default_value = "auto")]
    pub device: String,
}

impl DataArgs {
    /// Loads one split, keeping the first `limit` examples if given.
    pub fn load(&self, split: Split, limit: Option<usize>) -> Result<Dataset> {
        let dir = self.data.clone().unwrap_or_else(default_data_dir);
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
}

impl ModelArgs {
    /// Loads the model onto `device`.
    pub fn load(&self, device: Device) -> Result<Mlp> {
        let act = self
            .act
            .as_deref()
            .map(str::parse::<Activation>)
            .transpose()?;
        load_model(&self.model, act)?.to_device(device)
    }
}

/// A `progress(done, total)` callback that drives `bar`.
pub fn follow(bar: &indicatif::ProgressBar) -> impl FnMut(usize, usize) + '_ {
    |done, total| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    }
}
