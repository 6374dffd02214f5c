//! An in-memory image-classification data set.

use std::path::Path;

use super::idx::IdxReader;
use super::{find_data_file, Split, FASHION_MNIST_CLASSES};
use crate::error::{Error, Result};

/// How many examples ahead of the one it copies [`Dataset::gather_into`]
/// asks the CPU to start loading.
const PREFETCH_ROWS_AHEAD: usize = 4;

/// Images as `f32` in `[0, 1]` (pixel / 255), row-major `[rows, features]`,
/// and their class labels, in file order.
#[derive(Debug, Clone, PartialEq)]
pub struct Dataset {
    images: Vec<f32>,
    labels: Vec<u32>,
    rows: usize,
    features: usize,
    image_dims: Vec<usize>,
    classes: usize,
}

impl Dataset {
    /// Loads one split of Fashion-MNIST (or MNIST) from `dir`, reading only
    /// that split's two files (`.gz` preferred, uncompressed accepted).
    ///
    /// # Errors
    /// [`Error::File`] if a file is missing (the message says how to get the
    /// data), corrupt, truncated or inconsistent: images not of rank 3,
    /// labels not of rank 1, different example counts, no examples, or a
    /// label ≥ 10. [`Error::Io`] if a file cannot be read.
    pub fn load(dir: &Path, split: Split) -> Result<Dataset> {
        let images_path = find_data_file(dir, split.images_file())?;
        let labels_path = find_data_file(dir, split.labels_file())?;
        Self::load_files(&images_path, &labels_path, FASHION_MNIST_CLASSES.len())
    }

    /// Loads an images IDX file (`[n, height, width]` unsigned bytes) and a
    /// labels IDX file (`[n]` unsigned bytes, each `< classes`). Both headers
    /// are read and checked against each other before any data is.
    ///
    /// # Errors
    /// As [`Dataset::load`], with `classes` in place of 10.
    pub fn load_files(images_path: &Path, labels_path: &Path, classes: usize) -> Result<Dataset> {
        let images = IdxReader::open(images_path)?;
        let labels = IdxReader::open(labels_path)?;
        Self::from_readers(images, labels, classes)
    }

    /// Builds a data set from the bytes of an images and a labels IDX file
    /// held in memory (gzip-compressed or raw), checked as
    /// [`Dataset::load_files`] checks files; the paths only name them in
    /// error messages.
    ///
    /// # Errors
    /// As [`Dataset::load_files`].
    pub fn from_idx_bytes(
        images: (&Path, &[u8]),
        labels: (&Path, &[u8]),
        classes: usize,
    ) -> Result<Dataset> {
        Self::from_readers(
            IdxReader::from_bytes(images.0, images.1)?,
            IdxReader::from_bytes(labels.0, labels.1)?,
            classes,
        )
    }

    /// Checks the two headers against each other, then reads the data.
    fn from_readers(
        images: IdxReader<'_>,
        labels: IdxReader<'_>,
        classes: usize,
    ) -> Result<Dataset> {
        if images.dims().len() != 3 {
            return Err(Error::file(
                images.path(),
                format!(
                    "expected images of rank 3 [count, height, width], header declares {:?}",
                    images.dims()
                ),
            ));
        }
        if labels.dims().len() != 1 {
            return Err(Error::file(
                labels.path(),
                format!(
                    "expected labels of rank 1 [count], header declares {:?}",
                    labels.dims()
                ),
            ));
        }
        let (n, n_labels) = (images.dims()[0], labels.dims()[0]);
        if n != n_labels {
            return Err(Error::file(
                labels.path(),
                format!(
                    "inconsistent with {}: {n_labels} labels for {n} images",
                    images.path().display()
                ),
            ));
        }
        if n == 0 {
            return Err(Error::file(images.path(), "contains no examples"));
        }
        let image_dims = images.dims()[1..].to_vec();
        if image_dims.contains(&0) {
            return Err(Error::file(
                images.path(),
                format!("images of size {image_dims:?} have no pixels"),
            ));
        }
        let labels_path = labels.path().to_path_buf();
        let labels = labels.read()?;
        if let Some((row, &label)) = labels
            .data
            .iter()
            .enumerate()
            .find(|(_, &l)| usize::from(l) >= classes)
        {
            return Err(Error::file(
                &labels_path,
                format!("label {label} at index {row} is out of range for {classes} classes"),
            ));
        }
        let images = images.read()?;
        Ok(Dataset {
            images: images.data.iter().map(|&p| f32::from(p) / 255.0).collect(),
            labels: labels.data.iter().map(|&l| u32::from(l)).collect(),
            rows: n,
            features: images.item_len(),
            image_dims,
            classes,
        })
    }

    /// Builds a data set from memory: `images` holds `labels.len()` rows of
    /// `features` values each; every label is `< classes`.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if `features` is 0, the lengths disagree,
    /// or a label is out of range.
    pub fn from_parts(
        images: Vec<f32>,
        labels: Vec<u32>,
        features: usize,
        classes: usize,
    ) -> Result<Dataset> {
        if features == 0 {
            return Err(Error::invalid("dataset: features must be at least 1"));
        }
        let rows = labels.len();
        if Some(images.len()) != rows.checked_mul(features) {
            return Err(Error::invalid(format!(
                "dataset: {} image values are not {rows} labels × {features} features",
                images.len()
            )));
        }
        if let Some((row, &label)) = labels
            .iter()
            .enumerate()
            .find(|(_, &l)| l as usize >= classes)
        {
            return Err(Error::invalid(format!(
                "dataset: label {label} at index {row} is out of range for {classes} classes"
            )));
        }
        Ok(Dataset {
            images,
            labels,
            rows,
            features,
            image_dims: vec![features],
            classes,
        })
    }

    /// Keeps only the first `n` examples, in file order (all of them if there
    /// are fewer than `n`).
    pub fn limit(mut self, n: usize) -> Dataset {
        self.truncate(n);
        self
    }

    /// Keeps only the first `n` examples in place (as [`Dataset::limit`]).
    pub fn truncate(&mut self, n: usize) {
        if n < self.rows {
            self.rows = n;
            self.images.truncate(n * self.features);
            self.labels.truncate(n);
        }
    }

    /// The number of examples.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Whether the data set holds no examples (only after
    /// [`Dataset::limit`]`(0)` or [`Dataset::from_parts`] with no labels).
    pub fn is_empty(&self) -> bool {
        self.rows == 0
    }

    /// The number of values per example (784 for 28×28 images).
    pub fn features(&self) -> usize {
        self.features
    }

    /// The shape of one example: `[height, width]` for loaded images,
    /// `[features]` for a data set built with [`Dataset::from_parts`].
    pub fn image_dims(&self) -> &[usize] {
        &self.image_dims
    }

    /// The number of classes (10 for Fashion-MNIST).
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// All images, row-major `[rows, features]`, values in `[0, 1]`.
    pub fn images(&self) -> &[f32] {
        &self.images
    }

    /// All labels, one per row, each `< classes`.
    pub fn labels(&self) -> &[u32] {
        &self.labels
    }

    /// The image of example `i` (`features` values), or `None` past the end.
    pub fn image(&self, i: usize) -> Option<&[f32]> {
        let start = i.checked_mul(self.features)?;
        self.images.get(start..start.checked_add(self.features)?)
    }

    /// Asks the CPU to start loading example `i`'s pixels into cache (a
    /// hint: nothing happens past the end or off x86-64). The examples of a
    /// shuffled batch lie far apart in memory, so each copy would otherwise
    /// start with a wait for memory.
    fn prefetch_image(&self, i: usize) {
        #[cfg(target_arch = "x86_64")]
        if let Some(x) = self.image(i) {
            use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
            for line in x.chunks(16) {
                // SAFETY: a prefetch is a hint that never faults; the address
                // lies inside the image anyway.
                unsafe { _mm_prefetch::<_MM_HINT_T0>(line.as_ptr().cast()) };
            }
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = i;
    }

    /// The label of example `i`, or `None` past the end.
    pub fn label(&self, i: usize) -> Option<u32> {
        self.labels.get(i).copied()
    }

    /// Copies the examples `idx` into contiguous buffers: `images` becomes
    /// `[idx.len() * features]`, `labels` `[idx.len()]`. The buffers are
    /// cleared first and reuse their capacity, so a training loop allocates
    /// nothing per step.
    ///
    /// # Errors
    /// [`Error::InvalidArgument`] if an index is `>= rows` (the buffers are
    /// then left empty).
    pub fn gather_into(
        &self,
        idx: &[usize],
        images: &mut Vec<f32>,
        labels: &mut Vec<u32>,
    ) -> Result<()> {
        self.gather_into_pausing(idx, images, labels, usize::MAX, || {})
    }

    /// [`Dataset::gather_into`], calling `pause()` after every `every`
    /// examples: a thread that gathers a batch in the background runs other
    /// work there first (the training loop's gather yields to the step's
    /// parallel tasks this way).
    ///
    /// # Errors
    /// As [`Dataset::gather_into`].
    pub fn gather_into_pausing(
        &self,
        idx: &[usize],
        images: &mut Vec<f32>,
        labels: &mut Vec<u32>,
        every: usize,
        mut pause: impl FnMut(),
    ) -> Result<()> {
        images.clear();
        labels.clear();
        images.reserve(idx.len().saturating_mul(self.features));
        labels.reserve(idx.len());
        for (n, &i) in idx.iter().enumerate() {
            if n > 0 && n % every.max(1) == 0 {
                pause();
            }
            if let Some(&ahead) = idx.get(n + PREFETCH_ROWS_AHEAD) {
                self.prefetch_image(ahead);
            }
            match (self.image(i), self.label(i)) {
                (Some(x), Some(y)) => {
                    images.extend_from_slice(x);
                    labels.push(y);
                }
                _ => {
                    images.clear();
                    labels.clear();
                    return Err(Error::invalid(format!(
                        "dataset: example index {i} out of range for {} rows",
                        self.rows
                    )));
                }
            }
        }
        Ok(())
    }

    /// Like [`Dataset::gather_into`], into new buffers.
    ///
    /// # Errors
    /// As [`Dataset::gather_into`].
    pub fn gather(&self, idx: &[usize]) -> Result<(Vec<f32>, Vec<u32>)> {
        let (mut images, mut labels) = (Vec::new(), Vec::new());
        self.gather_into(idx, &mut images, &mut labels)?;
        Ok((images, labels))
    }
}
