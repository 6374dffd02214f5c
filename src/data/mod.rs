//! The data layer: IDX files, the Fashion-MNIST data set, seeded shuffles and
//! mini-batches.
//!
//! ```no_run
//! use advgrad::data::{default_data_dir, Batches, Dataset, Rng, Split};
//! # fn main() -> advgrad::error::Result<()> {
//! let train = Dataset::load(&default_data_dir(), Split::Train)?;
//! let mut rng = Rng::new(0);
//! let (mut x, mut y) = (Vec::new(), Vec::new());
//! let order = rng.permutation(train.rows());
//! for idx in Batches::new(&order, 128, false)? {
//!     train.gather_into(idx, &mut x, &mut y)?; // x: [b * 784], y: [b]
//! }
//! # Ok(())
//! # }
//! ```

mod batch;
mod dataset;
pub mod download;
pub mod idx;
pub mod location;

#[cfg(test)]
mod tests;

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use crate::error::{Error, Result};

pub use crate::rng::{splitmix64, Rng};
pub use batch::{num_batches, Batches};
pub use dataset::Dataset;
pub use download::{DATA_URL_ENV, FASHION_MNIST_URL};
pub use idx::{parse_idx, read_idx, IdxArray, IdxReader};
pub use location::{default_data_dir, resolve_data_dir, Fetch, SYSTEM_DATA_ENV};

/// The ten Fashion-MNIST class names, indexed by label.
pub const FASHION_MNIST_CLASSES: [&str; 10] = [
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
];

/// The environment variable naming the data folder.
pub const DATA_ENV: &str = "ADVGRAD_DATA";

/// Where Debian's `dataset-fashion-mnist` package installs the data.
pub const SYSTEM_DATA_DIR: &str = "/usr/share/datasets/fashion-mnist";

/// The four standard Fashion-MNIST (and MNIST) file names, gzip-compressed.
/// The same names without `.gz` are accepted too.
pub const STANDARD_FILES: [&str; 4] = [
    "train-images-idx3-ubyte.gz",
    "train-labels-idx1-ubyte.gz",
    "t10k-images-idx3-ubyte.gz",
    "t10k-labels-idx1-ubyte.gz",
];

/// Which half of the data set: the 60 000 training or the 10 000 test
/// examples.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Split {
    /// The training examples (`train-*` files).
    Train,
    /// The test examples (`t10k-*` files).
    Test,
}

impl Split {
    /// The split's name as the command line spells it: `train` or `test`.
    pub fn name(self) -> &'static str {
        match self {
            Split::Train => "train",
            Split::Test => "test",
        }
    }

    /// The images file name without `.gz` (`train-images-idx3-ubyte`).
    pub fn images_file(self) -> &'static str {
        match self {
            Split::Train => "train-images-idx3-ubyte",
            Split::Test => "t10k-images-idx3-ubyte",
        }
    }

    /// The labels file name without `.gz` (`train-labels-idx1-ubyte`).
    pub fn labels_file(self) -> &'static str {
        match self {
            Split::Train => "train-labels-idx1-ubyte",
            Split::Test => "t10k-labels-idx1-ubyte",
        }
    }
}

impl fmt::Display for Split {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Split {
    type Err = Error;

    /// Parses `train` or `test` (also `t10k`), ignoring ASCII case.
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "train" => Ok(Split::Train),
            "test" | "t10k" => Ok(Split::Test),
            _ => Err(Error::invalid(format!(
                "unknown split {s:?}: expected train or test"
            ))),
        }
    }
}

/// Finds the file `name` (given without `.gz`) in `dir`: `name.gz` if it
/// exists, else `name`.
///
/// # Errors
/// [`Error::File`] naming the missing file, saying how to get the data.
pub fn find_data_file(dir: &Path, name: &str) -> Result<PathBuf> {
    let gz = dir.join(format!("{name}.gz"));
    if gz.is_file() {
        return Ok(gz);
    }
    let raw = dir.join(name);
    if raw.is_file() {
        return Ok(raw);
    }
    let what = if dir.is_dir() {
        format!("not found (nor {name} uncompressed)")
    } else {
        format!("not found: the folder {} does not exist", dir.display())
    };
    Err(Error::file(gz, format!("{what}. {}", missing_data_help())))
}

/// How to get the data, for error messages.
fn missing_data_help() -> String {
    format!(
        "To get Fashion-MNIST, add --download (advgrad fetches and verifies the four files), \
         or run `sudo apt-get install dataset-fashion-mnist` (it installs into \
         {SYSTEM_DATA_DIR}), or set {DATA_ENV} or pass --data DIR to a folder holding the \
         four standard files: {} (gzip-compressed or not)",
        STANDARD_FILES.join(", ")
    )
}
