//! The lean protocol's synthetic data: MNIST's shape, values anyone can
//! regenerate (`benches/peers/lean.py` makes the same arrays with NumPy).

use advgrad::{Device, Result, Tensor};

/// Rows of the synthetic training set (MNIST's 60000).
pub(super) const ROWS: usize = 60_000;

/// Pixel `(i, j)` of a set with `features` columns: the top byte of the
/// multiplicative hash `(i·features + j)·2654435761 mod 2³²`, over 255.
fn pixel(i: usize, j: usize, features: usize) -> f32 {
    let index = (i * features + j) as u64;
    let hash = index.wrapping_mul(2_654_435_761) & 0xffff_ffff;
    (hash >> 24) as f32 / 255.0
}

/// The first `rows` examples cut into full batches of `batch` (a last,
/// partial batch is dropped), each `(x [batch, features], labels [batch])`
/// on `device`; the label of row `i` is `i mod classes`.
pub(super) fn batches(
    rows: usize,
    features: usize,
    classes: usize,
    batch: usize,
    device: Device,
) -> Result<Vec<(Tensor, Tensor)>> {
    (0..rows / batch)
        .map(|b| {
            let first = b * batch;
            let x: Vec<f32> = (first..first + batch)
                .flat_map(|i| (0..features).map(move |j| pixel(i, j, features)))
                .collect();
            let y: Vec<u32> = (first..first + batch)
                .map(|i| (i % classes) as u32)
                .collect();
            let x = Tensor::from_vec(x, [batch, features])?.to_device(device)?;
            let y = Tensor::from_vec(y, [batch])?.to_device(device)?;
            Ok((x, y))
        })
        .collect()
}
