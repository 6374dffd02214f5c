//! [`StepTally`]: the running loss sum and correct count of a training
//! loop, kept on the model's device so that a step reads nothing back to
//! the host.
//!
//! Each step adds `loss·N` and the number of rows whose largest logit is
//! the label (one small kernel on a device, `kernels/tally.cu`); the host
//! reads the two sums only when it reports progress, one blocking read for
//! any number of steps. A NaN or infinite loss makes the sum non-finite,
//! so the finiteness check of the losses happens at that read
//! ([`StepTally::read`]).
//!
//! ```
//! use advgrad::tally::StepTally;
//! use advgrad::{Device, Tensor};
//! let mut tally = StepTally::new(Device::Cpu)?;
//! let logits = Tensor::from_vec(vec![0.1f32, 0.9, 0.8, 0.2], [2, 2])?;
//! let labels = Tensor::from_vec(vec![1u32, 1], [2])?;
//! let loss = Tensor::from_vec(vec![0.5f32], [1])?;
//! tally.add(&loss, &logits, &labels)?;
//! tally.add(&loss, &logits, &labels)?;
//! assert_eq!(tally.read()?, (2.0, 2)); // 0.5·2 twice; one hit a step
//! # Ok::<(), advgrad::Error>(())
//! ```

use crate::backend::BackendStorage;
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::tensor::Tensor;

/// Running `(Σ loss·N, Σ correct)` of a loop, on one device.
#[derive(Debug)]
pub struct StepTally {
    /// `[loss sum, correct count]`, f64.
    sums: Tensor,
}

impl StepTally {
    /// A tally at zero on `device`.
    pub fn new(device: Device) -> Result<StepTally> {
        Ok(StepTally {
            sums: Tensor::zeros([2], DType::F64).to_device(device)?,
        })
    }

    /// Sets the sums (an upload on a device, no read): at the start of an
    /// epoch, or to continue a resumed one.
    pub fn set(&mut self, loss_sum: f64, correct: usize) -> Result<()> {
        self.sums =
            Tensor::from_vec(vec![loss_sum, correct as f64], [2])?.to_device(self.sums.device())?;
        Ok(())
    }

    /// Adds one batch: `loss·N` to the loss sum, where `loss` is its mean
    /// loss (one element), and to the count the rows of `logits` (`[N, C]`)
    /// whose largest value (the first on ties) is at the u32 label of
    /// `labels` (`[N]`). All three on the tally's device; nothing is read.
    pub fn add(&mut self, loss: &Tensor, logits: &Tensor, labels: &Tensor) -> Result<()> {
        let (rows, cols) = logits.shape().as_matrix().ok_or_else(|| Error::BadShape {
            op: "tally",
            msg: format!("logits must be a matrix, got {}", logits.shape()),
        })?;
        if loss.numel() != 1 || labels.dims() != [rows] || labels.dtype() != DType::U32 {
            return Err(Error::BadShape {
                op: "tally",
                msg: format!(
                    "a one-element loss and u32 labels [{rows}] for logits {}, got a loss {} and labels {} {}",
                    logits.shape(),
                    loss.shape(),
                    labels.dtype(),
                    labels.shape()
                ),
            });
        }
        self.sums
            .storage_mut()
            .tally_step(loss.storage(), logits.storage(), labels.storage(), cols)
    }

    /// Adds statistics the host already has (`loss` the batch's mean loss
    /// over `rows` rows): `loss·rows` and `correct`, in the order
    /// [`StepTally::add`] adds them. On a device this reads the sums.
    pub fn add_host(&mut self, loss: f64, rows: usize, correct: usize) -> Result<()> {
        let (sum, count) = self.sums_now()?;
        self.set(sum + loss * rows as f64, count + correct)
    }

    /// The sums `(Σ loss·N, Σ correct)`: one blocking read on a device.
    ///
    /// # Errors
    /// [`Error::NonFinite`] if the loss sum is NaN or infinite: some loss
    /// added since the tally was set was.
    pub fn read(&self) -> Result<(f64, usize)> {
        let (sum, count) = self.sums_now()?;
        if !sum.is_finite() {
            return Err(Error::NonFinite {
                op: "tally",
                what: format!("the sum of the losses is {sum}"),
            });
        }
        Ok((sum, count))
    }

    /// Whether the sums live in host memory (reading them costs nothing).
    pub fn on_host(&self) -> bool {
        self.sums.device().is_cpu()
    }

    fn sums_now(&self) -> Result<(f64, usize)> {
        // Borrowed on the host (no allocation), one copy from a device.
        let v = self.sums.storage().on_host()?;
        Ok((v.get_f64(0), v.get_f64(1) as usize))
    }
}
