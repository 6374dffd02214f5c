//! The device memory bookkeeping both launchers share: freed buffers kept
//! for reuse, and counters of what a loop costs the device.
//!
//! A buffer whose last [`CudaStorage`](super::CudaStorage) is dropped goes
//! back to its launcher's [`DeviceMemory`] instead of being freed, and the
//! next kernel output of the same element type and length takes it: in
//! steady state a training or attack step allocates no device memory. The
//! pool holds at most [`POOL_BYTES`]; beyond that a freed buffer is freed.
//!
//! The counters ([`DeviceStats`]) make the cost of a loop observable:
//! fresh allocations, reuses, host-to-device uploads and blocking
//! device-to-host reads. `tests/device_step.rs` asserts that a
//! steady-state training step and an attack step on `--device emu` make
//! no allocation and no blocking read.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, MutexGuard};

use serde::Serialize;

use super::launch::DeviceBuffer;
use crate::dtype::DType;

/// Most bytes of freed buffers a device keeps for reuse.
pub const POOL_BYTES: usize = 256 << 20;

/// What a device has done since it was created (see [`DeviceStats::since`]
/// for the cost of a stretch of work).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct DeviceStats {
    /// Fresh device allocations (kernel outputs the pool could not serve,
    /// copies made by copy-on-write); uploads are counted apart.
    pub allocations: u64,
    /// Kernel outputs served by a freed buffer of the pool.
    pub reused: u64,
    /// Host-to-device copies (each into a fresh allocation).
    pub uploads: u64,
    /// Device-to-host copies, each of which waits for the device.
    pub blocking_reads: u64,
}

impl DeviceStats {
    /// What happened between `earlier` and `self`.
    pub fn since(self, earlier: DeviceStats) -> DeviceStats {
        DeviceStats {
            allocations: self.allocations - earlier.allocations,
            reused: self.reused - earlier.reused,
            uploads: self.uploads - earlier.uploads,
            blocking_reads: self.blocking_reads - earlier.blocking_reads,
        }
    }
}

/// One device's pool of freed buffers and its counters.
#[derive(Debug)]
pub struct DeviceMemory<B> {
    free: Mutex<HashMap<(DType, usize), Vec<B>>>,
    pooled_bytes: AtomicUsize,
    allocations: AtomicU64,
    reused: AtomicU64,
    uploads: AtomicU64,
    blocking_reads: AtomicU64,
}

impl<B> Default for DeviceMemory<B> {
    fn default() -> Self {
        DeviceMemory {
            free: Mutex::new(HashMap::new()),
            pooled_bytes: AtomicUsize::new(0),
            allocations: AtomicU64::new(0),
            reused: AtomicU64::new(0),
            uploads: AtomicU64::new(0),
            blocking_reads: AtomicU64::new(0),
        }
    }
}

impl<B: DeviceBuffer> DeviceMemory<B> {
    fn free(&self) -> MutexGuard<'_, HashMap<(DType, usize), Vec<B>>> {
        // Every mutation is one push or pop: a poisoned lock is consistent.
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A freed buffer of exactly `len` (at least 1) elements of `dtype`, if
    /// the pool has one; counted as a reuse.
    pub(crate) fn take(&self, dtype: DType, len: usize) -> Option<B> {
        let buf = self.free().get_mut(&(dtype, len.max(1)))?.pop()?;
        self.pooled_bytes.fetch_sub(bytes(&buf), Ordering::Relaxed);
        self.reused.fetch_add(1, Ordering::Relaxed);
        Some(buf)
    }

    /// Keeps a buffer no storage uses any more, unless the pool is full
    /// (then it is dropped, which frees it).
    pub(crate) fn give(&self, buf: B) {
        let size = bytes(&buf);
        if self.pooled_bytes.load(Ordering::Relaxed) + size > POOL_BYTES {
            return;
        }
        self.pooled_bytes.fetch_add(size, Ordering::Relaxed);
        self.free()
            .entry((buf.dtype(), buf.capacity()))
            .or_default()
            .push(buf);
    }

    /// Counts a fresh allocation.
    pub(crate) fn note_allocation(&self) {
        self.allocations.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts an upload.
    pub(crate) fn note_upload(&self) {
        self.uploads.fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a blocking read.
    pub(crate) fn note_read(&self) {
        self.blocking_reads.fetch_add(1, Ordering::Relaxed);
    }

    /// The counters now.
    pub fn stats(&self) -> DeviceStats {
        DeviceStats {
            allocations: self.allocations.load(Ordering::Relaxed),
            reused: self.reused.load(Ordering::Relaxed),
            uploads: self.uploads.load(Ordering::Relaxed),
            blocking_reads: self.blocking_reads.load(Ordering::Relaxed),
        }
    }
}

fn bytes<B: DeviceBuffer>(buf: &B) -> usize {
    buf.capacity() * buf.dtype().size()
}
