//! Tensors: a shape and a shared, device-tagged buffer.

use std::fmt;
use std::sync::{Arc, LazyLock};

use rayon::prelude::*;

use crate::backend::cpu::{CpuElement, CpuStorage};
use crate::backend::storage::{cell, recycle};
use crate::backend::{pool, BackendStorage, Storage};
use crate::device::Device;
use crate::dtype::DType;
use crate::error::{Error, Result};
use crate::rng::Rng;
use crate::shape::Shape;

/// An n-dimensional array of one element type on one device.
///
/// Clones are cheap: they share the buffer. Ops never modify their inputs;
/// the few in-place methods ([`Tensor::storage_mut`]) copy a shared buffer
/// first.
#[derive(Clone)]
pub struct Tensor {
    shape: Shape,
    storage: Arc<Storage>,
}

impl Tensor {
    /// A tensor from a buffer; the caller guarantees the lengths agree.
    pub(crate) fn from_storage(storage: Storage, shape: Shape) -> Tensor {
        debug_assert_eq!(storage.len(), shape.numel());
        Tensor {
            shape,
            storage: cell(storage),
        }
    }

    /// A CPU tensor holding `data` with `shape` (row-major).
    ///
    /// ```
    /// use advgrad::Tensor;
    /// let t = Tensor::from_vec(vec![1.0f32, 2.0, 3.0, 4.0, 5.0, 6.0], [2, 3])?;
    /// assert_eq!(t.dims(), &[2, 3]);
    /// # Ok::<(), advgrad::Error>(())
    /// ```
    pub fn from_vec<T: CpuElement>(data: Vec<T>, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if data.len() != shape.numel() {
            return Err(Error::BadShape {
                op: "from_vec",
                msg: format!(
                    "{} elements do not fill shape {shape} ({} elements)",
                    data.len(),
                    shape.numel()
                ),
            });
        }
        Ok(Tensor::from_storage(
            Storage::Cpu(T::into_storage(data)),
            shape,
        ))
    }

    /// A CPU tensor holding a copy of `data` with `shape` (row-major), in a
    /// recycled buffer when one fits.
    pub fn from_slice<T: CpuElement>(data: &[T], shape: impl Into<Shape>) -> Result<Tensor> {
        let mut buffer = pool::take(data.len());
        buffer.extend_from_slice(data);
        Tensor::from_vec(buffer, shape)
    }

    /// A tensor of `dtype` with every element equal to `value`.
    pub fn full(shape: impl Into<Shape>, value: f64, dtype: DType) -> Tensor {
        let shape = shape.into();
        let storage = CpuStorage::filled(shape.numel(), value, dtype);
        Tensor::from_storage(Storage::Cpu(storage), shape)
    }

    /// A tensor of zeros.
    pub fn zeros(shape: impl Into<Shape>, dtype: DType) -> Tensor {
        Tensor::full(shape, 0.0, dtype)
    }

    /// A one-element tensor of shape `[]`.
    pub fn scalar(value: f64, dtype: DType) -> Tensor {
        Tensor::full(Shape::scalar(), value, dtype)
    }

    /// Independent draws from `U(lo, hi)`, fixed by `seed`.
    pub fn rand_uniform(
        shape: impl Into<Shape>,
        lo: f64,
        hi: f64,
        seed: u64,
        dtype: DType,
    ) -> Tensor {
        let mut rng = Rng::new(seed);
        Tensor::from_fn(shape.into(), dtype, || rng.uniform_in(lo, hi))
    }

    /// Independent draws from `N(mean, std²)`, fixed by `seed`.
    pub fn rand_normal(
        shape: impl Into<Shape>,
        mean: f64,
        std: f64,
        seed: u64,
        dtype: DType,
    ) -> Tensor {
        let mut rng = Rng::new(seed);
        Tensor::from_fn(shape.into(), dtype, || mean + std * rng.normal())
    }

    fn from_fn(shape: Shape, dtype: DType, mut f: impl FnMut() -> f64) -> Tensor {
        let values: Vec<f64> = (0..shape.numel()).map(|_| f()).collect();
        Tensor::from_storage(
            Storage::Cpu(CpuStorage::from_f64_slice(&values, dtype)),
            shape,
        )
    }

    /// The shape.
    pub fn shape(&self) -> &Shape {
        &self.shape
    }

    /// The dimensions.
    pub fn dims(&self) -> &[usize] {
        self.shape.dims()
    }

    /// Number of axes.
    pub fn rank(&self) -> usize {
        self.shape.rank()
    }

    /// Number of elements.
    pub fn numel(&self) -> usize {
        self.shape.numel()
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.storage.dtype()
    }

    /// The device holding the buffer.
    pub fn device(&self) -> Device {
        self.storage.device()
    }

    /// The buffer.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// The buffer, for an in-place update; a buffer shared with other
    /// tensors is copied first, so they never see the change.
    pub fn storage_mut(&mut self) -> &mut Storage {
        Arc::make_mut(&mut self.storage)
    }

    /// Whether two tensors share one buffer.
    pub fn shares_storage(&self, other: &Tensor) -> bool {
        Arc::ptr_eq(&self.storage, &other.storage)
    }

    /// The same buffer seen with another shape of equal element count.
    pub fn reshape(&self, shape: impl Into<Shape>) -> Result<Tensor> {
        let shape = shape.into();
        if shape.numel() != self.numel() {
            return Err(Error::ShapeMismatch {
                op: "reshape",
                lhs: self.shape.clone(),
                rhs: shape,
            });
        }
        Ok(Tensor {
            shape,
            storage: self.storage.clone(),
        })
    }

    /// A copy on `device` (or `self` when it is already there).
    pub fn to_device(&self, device: Device) -> Result<Tensor> {
        if self.device() == device {
            return Ok(self.clone());
        }
        Ok(Tensor::from_storage(
            self.storage.to_device(device)?,
            self.shape.clone(),
        ))
    }

    /// A copy converted to `dtype`, on the same device (`self` when it
    /// already is `dtype`).
    ///
    /// Between float types each value is rounded once, to nearest with
    /// ties to even (IEEE 754: overflow to ±∞, subnormals kept, NaN stays
    /// NaN); widening is exact. To u32 values are truncated.
    ///
    /// ```
    /// use advgrad::{DType, Tensor};
    /// let x = Tensor::from_vec(vec![1.0f32, 1.0 + 1.0 / 128.0, 1.0 + 3.0 / 256.0, 1e6], [4])?;
    /// let b = x.to_dtype(DType::BF16)?;
    /// assert_eq!(b.to_f64_vec()?, [1.0, 1.0078125, 1.015625, 999424.0]);
    /// let h = x.to_dtype(DType::F16)?;
    /// assert_eq!(h.to_f64_vec()?[3], f64::INFINITY); // beyond f16's 65504
    /// # Ok::<(), advgrad::Error>(())
    /// ```
    pub fn to_dtype(&self, dtype: DType) -> Result<Tensor> {
        if self.dtype() == dtype {
            return Ok(self.clone());
        }
        let host = self.storage.on_host()?.cast(dtype);
        Tensor::from_storage(Storage::Cpu(host), self.shape.clone()).to_device(self.device())
    }

    /// The elements, copied to host memory, as `T` (which must be the dtype).
    pub fn to_vec<T: CpuElement>(&self) -> Result<Vec<T>> {
        T::slice(&*self.storage.on_host()?)
            .map(<[T]>::to_vec)
            .ok_or(Error::DTypeMismatch {
                op: "to_vec",
                lhs: self.dtype(),
                rhs: T::DTYPE,
            })
    }

    /// The elements converted to f64, in host memory.
    pub fn to_f64_vec(&self) -> Result<Vec<f64>> {
        Ok(self.storage.on_host()?.to_f64_vec())
    }

    /// The flat index and value of the first element outside `[lo, hi]`
    /// (NaN counts as outside), read without converting the whole buffer.
    pub fn first_outside(&self, lo: f64, hi: f64) -> Result<Option<(usize, f64)>> {
        /// Fixed chunks in parallel: each is first scanned without early exit
        /// (which vectorises), and searched only if it holds an outlier.
        fn find<T: Copy + Into<f64> + Sync>(v: &[T], lo: f64, hi: f64) -> Option<(usize, f64)> {
            const CHUNK: usize = 1 << 16;
            let outside = |x: T| {
                let x: f64 = x.into();
                x.is_nan() | (x < lo) | (x > hi)
            };
            v.par_chunks(CHUNK)
                .enumerate()
                .find_map_first(|(c, chunk)| {
                    if !chunk.iter().fold(false, |bad, &x| bad | outside(x)) {
                        return None;
                    }
                    let i = chunk.iter().position(|&x| outside(x))?;
                    Some((c * CHUNK + i, chunk[i].into()))
                })
        }
        Ok(match &*self.storage.on_host()? {
            CpuStorage::F32(v) => find(v, lo, hi),
            CpuStorage::F64(v) => find(v, lo, hi),
            CpuStorage::U32(v) => find(v, lo, hi),
            CpuStorage::F16(v) => find(v, lo, hi),
            CpuStorage::BF16(v) => find(v, lo, hi),
        })
    }

    /// The value of a one-element tensor, as f64.
    pub fn to_scalar(&self) -> Result<f64> {
        if self.numel() != 1 {
            return Err(Error::BadShape {
                op: "to_scalar",
                msg: format!("expected one element, got shape {}", self.shape),
            });
        }
        Ok(self.storage.on_host()?.get_f64(0))
    }

    /// The Euclidean norm of all elements (host computation).
    pub fn norm(&self) -> Result<f64> {
        Ok(self.to_f64_vec()?.iter().map(|v| v * v).sum::<f64>().sqrt())
    }
}

/// What a dropped tensor holds for the instant between handing its cell to
/// the pool and being freed.
static NO_STORAGE: LazyLock<Arc<Storage>> = LazyLock::new(|| Arc::new(Storage::empty()));

impl Drop for Tensor {
    /// The last tensor holding a buffer returns it, and its cell, to
    /// [`pool`] for the next tensor of a fitting size.
    fn drop(&mut self) {
        if Arc::get_mut(&mut self.storage).is_some() {
            recycle(std::mem::replace(&mut self.storage, NO_STORAGE.clone()));
        }
    }
}

impl fmt::Debug for Tensor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Tensor({}, {}, {}",
            self.shape,
            self.dtype(),
            self.device()
        )?;
        if self.device().is_cpu() && self.numel() <= 16 {
            if let Ok(v) = self.to_f64_vec() {
                write!(f, ", {v:?}")?;
            }
        }
        write!(f, ")")
    }
}
