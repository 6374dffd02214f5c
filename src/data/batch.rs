//! Mini-batches of example indices.

use crate::error::{Error, Result};

/// An iterator over consecutive mini-batches of an index order (typically a
/// shuffled permutation from [`crate::data::Rng::permutation`]).
///
/// Each item is a slice of at most `batch_size` indices. The last, partial
/// batch is yielded unless `drop_last` was asked for.
#[derive(Debug, Clone)]
pub struct Batches<'a> {
    order: &'a [usize],
    batch_size: usize,
    drop_last: bool,
    pos: usize,
}

impl<'a> Batches<'a> {
    /// Batches of `batch_size` indices taken from `order`, in order; with
    /// `drop_last`, a final batch shorter than `batch_size` is skipped.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `batch_size` is 0.
    pub fn new(order: &'a [usize], batch_size: usize, drop_last: bool) -> Result<Self> {
        if batch_size == 0 {
            return Err(Error::invalid("batch size must be at least 1"));
        }
        Ok(Batches {
            order,
            batch_size,
            drop_last,
            pos: 0,
        })
    }

    /// The batch size these batches were made with (the last batch may be
    /// shorter).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
}

impl<'a> Iterator for Batches<'a> {
    type Item = &'a [usize];

    fn next(&mut self) -> Option<&'a [usize]> {
        let rest = self.order.get(self.pos..)?;
        if rest.is_empty() || (self.drop_last && rest.len() < self.batch_size) {
            return None;
        }
        let take = rest.len().min(self.batch_size);
        self.pos += take;
        Some(&rest[..take])
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let n = self.len();
        (n, Some(n))
    }
}

impl ExactSizeIterator for Batches<'_> {
    fn len(&self) -> usize {
        num_batches(
            self.order.len().saturating_sub(self.pos),
            self.batch_size,
            self.drop_last,
        )
    }
}

/// The number of batches of `batch_size` that `n` examples make: `n /
/// batch_size` rounded up, or down with `drop_last`. 0 when `batch_size` is 0.
pub fn num_batches(n: usize, batch_size: usize, drop_last: bool) -> usize {
    if batch_size == 0 {
        0
    } else if drop_last {
        n / batch_size
    } else {
        n.div_ceil(batch_size)
    }
}
