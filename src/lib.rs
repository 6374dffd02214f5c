//! advgrad: a from-scratch, tape-based reverse-mode autodiff engine with
//! hand-written CUDA kernels and a rayon CPU backend, and on top of it
//! gradient-descent training and input-gradient adversarial attacks.
//!
//! The layers, bottom up: kernels ([`backend`]), tensors ([`Tensor`]), the
//! tape and its ops ([`Tape`], [`ops`]), gradient checking ([`gradcheck()`]),
//! then models, data, training and attacks. `ARCHITECTURE.md` in the
//! repository maps them to files and follows one op from its math to its
//! CUDA kernel. `examples/` is a course through the same layers, from the
//! tape by hand (chapter 1) to writing a CUDA kernel (chapter 6).
//!
//! ```
//! use advgrad::{DType, Tape, Tensor};
//! // loss = mean softmax cross-entropy of x·W against labels
//! let x = Tensor::rand_uniform([4, 3], -1.0, 1.0, 0, DType::F32);
//! let w = Tensor::rand_uniform([3, 5], -1.0, 1.0, 1, DType::F32);
//! let labels = Tensor::from_vec(vec![0u32, 4, 2, 1], [4])?;
//! let mut tape = Tape::new();
//! let (x, w) = (tape.constant(x), tape.var(w));
//! let logits = tape.matmul(x, w)?;
//! let loss = tape.softmax_cross_entropy(logits, &labels)?;
//! tape.backward(loss)?;
//! assert_eq!(tape.grad(w).unwrap().dims(), &[3, 5]);
//! # Ok::<(), advgrad::Error>(())
//! ```

#![deny(missing_docs)]

pub mod atomic_file;
pub mod attack;
pub mod backend;
pub mod checkpoint;
pub mod data;
pub mod device;
pub mod dtype;
pub mod error;
pub mod gradcheck;
pub mod loss_scale;
pub mod nn;
pub mod ops;
pub mod optim;
pub mod precision;
pub mod report;
pub mod rng;
pub mod robust_training;
pub mod shape;
pub mod tally;
pub mod tape;
pub mod tensor;
pub mod train;

pub use device::Device;
pub use dtype::{DType, Float};
pub use error::{Error, Result};
pub use gradcheck::{gradcheck, gradcheck_in, GradcheckOptions, GradcheckReport, InputReport};
pub use precision::{autocast, Precision};
pub use shape::Shape;
pub use tape::{Tape, Var};
pub use tensor::Tensor;

/// README.md's Rust snippets, compiled and run as doctests by `cargo test`
/// (its shell, Python and text blocks are marked as such and skipped).
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;
