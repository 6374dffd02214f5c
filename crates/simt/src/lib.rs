//! CPU SIMT emulation of advgrad's CUDA kernels, for tests on machines
//! without a GPU.
//!
//! The build script compiles the very same `kernels/*.cu` sources that
//! `build.rs` of advgrad turns into PTX, but as C++, against a shim header
//! (`csrc/simt.h`) that gives every CUDA thread its own OS thread with its
//! own `threadIdx`, turns `__syncthreads` into a block barrier and the warp
//! shuffles into exchanges through a warp barrier, and gives each block its
//! own shared memory. [`run`] executes one [`plan::LaunchPlan`] — the plan
//! the CUDA backend launches on the GPU — on those threads.
//!
//! What [`run`] checks and does, so that kernel bugs show up as test
//! failures:
//! - the plan's parameter list matches the kernel's C++ signature, type by
//!   type, and every buffer is at least as long as the plan says;
//! - block sizes are whole warps (at most 1024 threads);
//! - output buffers ([`plan::Access::Write`]) and all shared memory are
//!   filled with 0xFF bytes (NaN) before the kernel runs;
//! - every buffer is copied into an allocation with 0xFF guard zones on both
//!   sides; a kernel that writes into a guard zone gets an error;
//! - threads that wait at different barriers (a `__syncthreads` inside a
//!   branch, a shuffle some lanes skip) are reported at once, and a barrier
//!   that does not complete within the watchdog time is an error instead of
//!   a hang.
//!
//! Launches run one at a time (a global lock), one block after another.
//! Safety rests on the kernel touching only the elements the plan declares
//! (plus the guard zones): that is the contract every plan states.

#[path = "../../../src/backend/cuda/plan.rs"]
pub mod plan;

use std::alloc::{self, Layout};
use std::ffi::{c_char, c_int, c_long, c_uint, c_void, CStr, CString};
use std::fmt;
use std::time::Duration;

use plan::{Access, Elem, LaunchPlan, Param, Scalar};

mod ffi {
    use super::*;
    extern "C" {
        pub fn simt_kernel_signature(name: *const c_char, buf: *mut c_char, len: usize) -> c_long;
        pub fn simt_kernel_name(i: usize) -> *const c_char;
        #[allow(clippy::too_many_arguments)]
        pub fn simt_launch(
            name: *const c_char,
            grid: *const c_uint,
            block: *const c_uint,
            dyn_bytes: usize,
            args: *mut *mut c_void,
            nargs: usize,
            watchdog_ms: c_uint,
            err: *mut c_char,
            errlen: usize,
        ) -> c_int;
    }
}

/// A launch that could not run or failed while running.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SimtError(pub String);

impl fmt::Display for SimtError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SimtError {}

fn err<T>(msg: impl Into<String>) -> Result<T, SimtError> {
    Err(SimtError(msg.into()))
}

/// A buffer passed to a kernel: read-only or writable, by element type.
#[derive(Debug)]
pub enum Buf<'a> {
    /// `const float*`.
    F32(&'a [f32]),
    /// `float*`.
    F32Mut(&'a mut [f32]),
    /// `const double*`.
    F64(&'a [f64]),
    /// `double*`.
    F64Mut(&'a mut [f64]),
    /// `const unsigned*`.
    U32(&'a [u32]),
    /// `unsigned*`.
    U32Mut(&'a mut [u32]),
}

impl Buf<'_> {
    fn elem(&self) -> Elem {
        match self {
            Buf::F32(_) | Buf::F32Mut(_) => Elem::F32,
            Buf::F64(_) | Buf::F64Mut(_) => Elem::F64,
            Buf::U32(_) | Buf::U32Mut(_) => Elem::U32,
        }
    }

    fn len(&self) -> usize {
        match self {
            Buf::F32(s) => s.len(),
            Buf::F32Mut(s) => s.len(),
            Buf::F64(s) => s.len(),
            Buf::F64Mut(s) => s.len(),
            Buf::U32(s) => s.len(),
            Buf::U32Mut(s) => s.len(),
        }
    }

    fn is_mut(&self) -> bool {
        matches!(self, Buf::F32Mut(_) | Buf::F64Mut(_) | Buf::U32Mut(_))
    }

    fn bytes(&self) -> &[u8] {
        // SAFETY: f32, f64 and u32 have no padding and every byte pattern of
        // them is a valid u8; the byte slice covers exactly the same memory.
        unsafe {
            match self {
                Buf::F32(s) => std::slice::from_raw_parts(s.as_ptr().cast(), s.len() * 4),
                Buf::F32Mut(s) => std::slice::from_raw_parts(s.as_ptr().cast(), s.len() * 4),
                Buf::F64(s) => std::slice::from_raw_parts(s.as_ptr().cast(), s.len() * 8),
                Buf::F64Mut(s) => std::slice::from_raw_parts(s.as_ptr().cast(), s.len() * 8),
                Buf::U32(s) => std::slice::from_raw_parts(s.as_ptr().cast(), s.len() * 4),
                Buf::U32Mut(s) => std::slice::from_raw_parts(s.as_ptr().cast(), s.len() * 4),
            }
        }
    }

    fn bytes_mut(&mut self) -> Option<&mut [u8]> {
        // SAFETY: as in `bytes`; any byte pattern written back is a valid
        // f32, f64 or u32, and the slice is uniquely borrowed.
        unsafe {
            match self {
                Buf::F32Mut(s) => Some(std::slice::from_raw_parts_mut(
                    s.as_mut_ptr().cast(),
                    s.len() * 4,
                )),
                Buf::F64Mut(s) => Some(std::slice::from_raw_parts_mut(
                    s.as_mut_ptr().cast(),
                    s.len() * 8,
                )),
                Buf::U32Mut(s) => Some(std::slice::from_raw_parts_mut(
                    s.as_mut_ptr().cast(),
                    s.len() * 4,
                )),
                _ => None,
            }
        }
    }
}

/// Bytes of 0xFF before and after every buffer.
const GUARD: usize = 4096;
/// Alignment of every emulated device buffer (as cudaMalloc gives).
const ALIGN: usize = 256;

/// A copy of a buffer between two poisoned guard zones.
struct Guarded {
    ptr: *mut u8,
    layout: Layout,
    len: usize,
}

impl Guarded {
    fn new(data: &[u8], poison: bool) -> Guarded {
        let layout =
            Layout::from_size_align(GUARD + data.len().next_multiple_of(ALIGN) + GUARD, ALIGN)
                .expect("buffer too large to emulate");
        // SAFETY: the layout has a non-zero size (two guard zones).
        let ptr = unsafe { alloc::alloc(layout) };
        if ptr.is_null() {
            alloc::handle_alloc_error(layout);
        }
        // SAFETY: ptr is valid for layout.size() bytes; the copy stays within
        // [GUARD, GUARD + data.len()) and does not overlap `data`.
        unsafe {
            std::ptr::write_bytes(ptr, 0xFF, layout.size());
            if !poison {
                std::ptr::copy_nonoverlapping(data.as_ptr(), ptr.add(GUARD), data.len());
            }
        }
        Guarded {
            ptr,
            layout,
            len: data.len(),
        }
    }

    fn data_ptr(&self) -> *mut u8 {
        // SAFETY: GUARD is within the allocation.
        unsafe { self.ptr.add(GUARD) }
    }

    fn all(&self) -> &[u8] {
        // SAFETY: ptr is valid and initialised for layout.size() bytes; no
        // thread of the (finished) launch writes to it any more.
        unsafe { std::slice::from_raw_parts(self.ptr, self.layout.size()) }
    }

    /// Whether the kernel left both guard zones (and the tail padding) alone.
    fn guards_intact(&self) -> bool {
        let all = self.all();
        all[..GUARD].iter().all(|&b| b == 0xFF)
            && all[GUARD + self.len..].iter().all(|&b| b == 0xFF)
    }

    fn data(&self) -> &[u8] {
        &self.all()[GUARD..GUARD + self.len]
    }
}

impl Drop for Guarded {
    fn drop(&mut self) {
        // SAFETY: allocated in `new` with this layout, freed once.
        unsafe { alloc::dealloc(self.ptr, self.layout) }
    }
}

fn type_name(elem: Elem, access: Access) -> String {
    let t = match elem {
        Elem::F32 => "f32",
        Elem::F64 => "f64",
        Elem::U32 => "u32",
    };
    match access {
        Access::Read => format!("*const {t}"),
        Access::Write | Access::ReadWrite => format!("*mut {t}"),
    }
}

fn scalar_slot(v: Scalar) -> (u64, &'static str) {
    let mut b = [0u8; 8];
    let t = match v {
        Scalar::I32(x) => {
            b[..4].copy_from_slice(&x.to_ne_bytes());
            "i32"
        }
        Scalar::U32(x) => {
            b[..4].copy_from_slice(&x.to_ne_bytes());
            "u32"
        }
        Scalar::U64(x) => {
            b.copy_from_slice(&x.to_ne_bytes());
            "u64"
        }
        Scalar::F32(x) => {
            b[..4].copy_from_slice(&x.to_ne_bytes());
            "f32"
        }
        Scalar::F64(x) => {
            b.copy_from_slice(&x.to_ne_bytes());
            "f64"
        }
    };
    (u64::from_ne_bytes(b), t)
}

/// The parameter types of kernel `name` (Rust spelling, e.g. `*const f32`),
/// or `None` when the emulator has no such kernel.
pub fn signature(name: &str) -> Option<Vec<String>> {
    let c = CString::new(name).ok()?;
    let mut buf = vec![0u8; 1024];
    // SAFETY: `c` is NUL-terminated; buf is writable for its length, and the
    // callee writes at most len bytes including the NUL.
    let n = unsafe { ffi::simt_kernel_signature(c.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    if n < 0 {
        return None;
    }
    let s = CStr::from_bytes_until_nul(&buf).ok()?.to_str().ok()?;
    Some(if s.is_empty() {
        Vec::new()
    } else {
        s.split(',').map(str::to_string).collect()
    })
}

/// The names of every kernel the emulator was built with.
pub fn kernels() -> Vec<String> {
    let mut v = Vec::new();
    for i in 0.. {
        // SAFETY: the callee returns null past the end, else a pointer to a
        // NUL-terminated string literal that lives for the whole program.
        let p = unsafe { ffi::simt_kernel_name(i) };
        if p.is_null() {
            break;
        }
        // SAFETY: non-null, NUL-terminated, static (see above).
        v.push(unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned());
    }
    v
}

/// The watchdog time: `SIMT_WATCHDOG_MS` or 20 s.
fn default_watchdog() -> Duration {
    std::env::var("SIMT_WATCHDOG_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(Duration::from_secs(20))
}

/// Runs `plan` with `bufs` — one per [`Param::Buffer`] of the plan, in order
/// — and copies the writable buffers back.
pub fn run(plan: &LaunchPlan, bufs: &mut [Buf<'_>]) -> Result<(), SimtError> {
    run_with_watchdog(plan, bufs, default_watchdog())
}

/// [`run`] with an explicit watchdog time.
pub fn run_with_watchdog(
    plan: &LaunchPlan,
    bufs: &mut [Buf<'_>],
    watchdog: Duration,
) -> Result<(), SimtError> {
    let k = &plan.kernel;
    let Some(sig) = signature(k) else {
        return err(format!("the emulator has no kernel named {k}"));
    };
    if sig.len() != plan.params.len() {
        return err(format!(
            "{k}: the plan has {} parameters, the kernel {}",
            plan.params.len(),
            sig.len()
        ));
    }
    let nbufs = plan.buffers().count();
    if bufs.len() != nbufs {
        return err(format!(
            "{k}: the plan takes {nbufs} buffers, got {}",
            bufs.len()
        ));
    }

    // Check every parameter, copy buffers into guarded memory, fill slots.
    let mut guarded: Vec<(usize, Guarded, &'static str)> = Vec::new();
    let mut slots: Vec<u64> = Vec::with_capacity(plan.params.len());
    let mut next_buf = 0;
    for (i, (p, want)) in plan.params.iter().zip(&sig).enumerate() {
        match *p {
            Param::Buffer {
                name,
                elem,
                len,
                access,
            } => {
                let have = type_name(elem, access);
                if &have != want {
                    return err(format!(
                        "{k}: parameter {i} `{name}` is {want}, the plan passes {have}"
                    ));
                }
                let b = &bufs[next_buf];
                if b.elem() != elem {
                    return err(format!(
                        "{k}: buffer `{name}` must hold {elem:?}, got {:?}",
                        b.elem()
                    ));
                }
                if b.len() < len {
                    return err(format!(
                        "{k}: buffer `{name}` has {} elements, the plan needs {len}",
                        b.len()
                    ));
                }
                if access != Access::Read && !b.is_mut() {
                    return err(format!("{k}: buffer `{name}` is written, pass it mutably"));
                }
                let g = Guarded::new(b.bytes(), access == Access::Write);
                slots.push(g.data_ptr() as usize as u64);
                guarded.push((next_buf, g, name));
                next_buf += 1;
            }
            Param::Scalar { name, value } => {
                let (slot, t) = scalar_slot(value);
                if t != want {
                    return err(format!(
                        "{k}: parameter {i} `{name}` is {want}, the plan passes {t}"
                    ));
                }
                slots.push(slot);
            }
        }
    }

    let mut args: Vec<*mut c_void> = slots.iter_mut().map(|s| (s as *mut u64).cast()).collect();
    let name = CString::new(k.as_str()).map_err(|_| SimtError(format!("bad kernel name {k:?}")))?;
    let mut msg = vec![0u8; 2048];
    let wd = c_uint::try_from(watchdog.as_millis())
        .unwrap_or(c_uint::MAX)
        .max(1);
    // SAFETY: `args` holds one pointer per kernel parameter (count and types
    // checked against the kernel's signature above), each to an 8-byte slot
    // holding the value; buffer slots point into live guarded allocations at
    // least as long as the plan declares, and the plan's contract is that the
    // kernel touches no more. grid/block point to 3 values each; `msg` is
    // writable for its length. The call returns after every thread joined.
    let rc = unsafe {
        ffi::simt_launch(
            name.as_ptr(),
            plan.grid.as_ptr(),
            plan.block.as_ptr(),
            plan.shared_bytes as usize,
            args.as_mut_ptr(),
            args.len(),
            wd,
            msg.as_mut_ptr().cast(),
            msg.len(),
        )
    };
    if rc != 0 {
        let m = CStr::from_bytes_until_nul(&msg)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_else(|_| "launch failed".into());
        return err(m);
    }
    for (idx, g, name) in &guarded {
        if !g.guards_intact() {
            return err(format!("{k}: the kernel wrote outside buffer `{name}`"));
        }
        if let Some(out) = bufs[*idx].bytes_mut() {
            out[..g.len].copy_from_slice(g.data());
        }
    }
    Ok(())
}
