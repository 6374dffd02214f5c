//! The crate's one error type.

use std::path::PathBuf;

use crate::dtype::DType;
use crate::shape::Shape;

/// Every fallible advgrad call returns this error; its message names the op
/// and the shapes (or the file) involved.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Two operands whose shapes do not fit together.
    #[error("{op}: shape mismatch: {lhs} vs {rhs}")]
    ShapeMismatch {
        /// The op that refused them.
        op: &'static str,
        /// The first operand's shape.
        lhs: Shape,
        /// The second operand's shape.
        rhs: Shape,
    },
    /// One operand with a shape the op does not accept.
    #[error("{op}: {msg}")]
    BadShape {
        /// The op that refused it.
        op: &'static str,
        /// What is wrong with the shape.
        msg: String,
    },
    /// Operands of different element types.
    #[error("{op}: dtype mismatch: {lhs} vs {rhs}")]
    DTypeMismatch {
        /// The op that refused them.
        op: &'static str,
        /// The first operand's element type.
        lhs: DType,
        /// The second operand's element type.
        rhs: DType,
    },
    /// An op asked of an element type it does not support.
    #[error("{op}: unsupported dtype {dtype}")]
    UnsupportedDType {
        /// The op that refused it.
        op: &'static str,
        /// The element type it was given.
        dtype: DType,
    },
    /// Operands on different devices.
    #[error("{op}: device mismatch: {lhs} vs {rhs}")]
    DeviceMismatch {
        /// The op that refused them.
        op: &'static str,
        /// The first operand's device.
        lhs: String,
        /// The second operand's device.
        rhs: String,
    },
    /// A class label outside `0..classes`.
    #[error("{op}: label {label} in row {row} is out of range for {classes} classes")]
    LabelOutOfRange {
        /// The op that read the label.
        op: &'static str,
        /// The row (example) it belongs to.
        row: usize,
        /// The label.
        label: u64,
        /// The number of classes, so labels lie in `0..classes`.
        classes: usize,
    },
    /// A NaN or infinity where a finite number is required.
    #[error("{op}: non-finite value: {what}")]
    NonFinite {
        /// The op or loop that found it.
        op: &'static str,
        /// Which value, and where.
        what: String,
    },
    /// An argument outside its documented domain.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A misuse of the tape (unknown variable, backward from a non-scalar...).
    #[error("tape: {0}")]
    Tape(String),
    /// A file that is missing, truncated, corrupt or inconsistent.
    #[error("{}: {msg}", path.display())]
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong with it.
        msg: String,
    },
    /// An I/O failure on a named file.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file or folder.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A download that failed: unreachable server, HTTP error, or a file
    /// whose length or digest is not the expected one.
    #[error("download {url}: {msg}")]
    Download {
        /// The URL that was fetched.
        url: String,
        /// What went wrong.
        msg: String,
    },
    /// Training stopped on Ctrl-C (SIGINT) or SIGTERM after saving a
    /// checkpoint, whose path and resume command the message gives.
    #[error("interrupted: {0}")]
    Interrupted(String),
    /// The CUDA backend is unavailable or a driver call failed.
    #[error("CUDA: {0}")]
    Cuda(String),
}

/// `Result` with [`Error`].
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// Shorthand for [`Error::InvalidArgument`].
    pub fn invalid(msg: impl Into<String>) -> Self {
        Error::InvalidArgument(msg.into())
    }

    /// Shorthand for [`Error::File`].
    pub fn file(path: impl Into<PathBuf>, msg: impl Into<String>) -> Self {
        Error::File {
            path: path.into(),
            msg: msg.into(),
        }
    }
}

impl From<kernels::ParseError> for Error {
    /// An unknown name (of an activation, say) is an invalid argument.
    fn from(e: kernels::ParseError) -> Self {
        Error::InvalidArgument(e.0)
    }
}
