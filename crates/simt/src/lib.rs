//! CPU SIMT emulation of advgrad's CUDA kernels: the launcher behind
//! advgrad's `--device emu`, and the kernel tests on machines without a GPU.
//!
//! The build script compiles the very same `kernels/*.cu` sources that
//! advgrad's `build.rs` turns into PTX, but as C++, against a shim header
//! (`csrc/simt.h`) that gives every CUDA thread of a cooperating block a
//! fiber of its own (its own stack and `threadIdx`, all on the launching OS
//! thread, switched at barriers), turns `__syncthreads` into a block barrier
//! and the warp shuffles into exchanges through a warp barrier, and gives
//! each block its own shared memory. [`launch`] executes one
//! [`LaunchPlan`] — the plan the CUDA backend launches on a GPU — with
//! emulated device buffers ([`DeviceBuffer`]); [`run`] does the same with
//! host slices.
//!
//! What a launch checks and does, so that kernel bugs show up as errors:
//! - the plan's parameter list matches the kernel's C++ signature, type by
//!   type, and every buffer holds the plan's element type and is at least as
//!   long as the plan says; written buffers are passed mutably;
//! - block sizes are whole warps (at most 1024 threads);
//! - output buffers ([`Access::Write`]) and all shared memory are filled
//!   with 0xFF bytes (NaN) before the kernel runs; fresh device buffers are
//!   too;
//! - every device buffer lies between 0xFF guard zones; a kernel that writes
//!   into one gets an error;
//! - threads that wait at different barriers (a `__syncthreads` inside a
//!   branch, a shuffle some lanes skip) are reported at once, and so are
//!   barriers that can never complete (no waiting thread can go on): the
//!   error names each one and how many threads wait there, never a hang;
//! - a plan that declares independent threads
//!   ([`Cooperation::Independent`]) runs them one after another, and a
//!   barrier, shuffle or shared memory in its kernel is an error;
//! - every 16-byte vector access (`float4`, `double2`) must be 16-byte
//!   aligned, in global and in shared memory: a misaligned one fails the
//!   launch with the kernel, the address and the thread;
//! - `cp.async` (global → shared, 16 bytes) checks both addresses and lands
//!   in shared memory only when the issuing thread waits for its group, so
//!   a read before the wait sees the poison; a thread may not end the
//!   kernel with copies it never waited for.
//!
//! Launches run one at a time (a global lock), one block after another.
//! Safety rests on the kernel touching only the elements the plan declares
//! (plus the guard zones): that is the contract every plan states.

use std::alloc::{self, Layout};
use std::ffi::{c_char, c_int, c_long, c_uint, c_void, CStr, CString};
use std::fmt;
use std::ptr::NonNull;

use kernels::{Access, Cooperation, DType, LaunchPlan, Param, Scalar};

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
            independent: c_int,
            args: *mut *mut c_void,
            nargs: usize,
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

/// The element types of kernel buffers.
pub trait Element: Copy + Send + Sync + 'static {
    /// The runtime tag.
    const DTYPE: DType;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
}
impl Element for f64 {
    const DTYPE: DType = DType::F64;
}
impl Element for u32 {
    const DTYPE: DType = DType::U32;
}
impl Element for half::f16 {
    const DTYPE: DType = DType::F16;
}
impl Element for half::bf16 {
    const DTYPE: DType = DType::BF16;
}

/// Bytes of 0xFF before and after every buffer.
const GUARD: usize = 4096;
/// Alignment of every emulated device buffer (as cudaMalloc gives).
const ALIGN: usize = 256;

/// A buffer in the emulated device's memory: `len` elements of one type in
/// a host allocation, 256-byte aligned, between two guard zones of 0xFF
/// bytes that a launch checks afterwards.
pub struct DeviceBuffer {
    ptr: NonNull<u8>,
    layout: Layout,
    dtype: DType,
    len: usize,
}

// SAFETY: a DeviceBuffer owns its allocation like a Vec<u8>; shared
// references only read it, and the emulator writes to it only through
// `&mut DeviceBuffer` (an `Arg::Out`).
unsafe impl Send for DeviceBuffer {}
// SAFETY: as above: no interior mutability behind `&DeviceBuffer`.
unsafe impl Sync for DeviceBuffer {}

impl DeviceBuffer {
    /// `len` elements of `dtype` whose every byte is 0xFF (NaN for floats),
    /// as uninitialised device memory reads on the emulator.
    pub fn poisoned(dtype: DType, len: usize) -> DeviceBuffer {
        let bytes = len
            .checked_mul(dtype.size())
            .expect("buffer too large to emulate");
        let layout = Layout::from_size_align(GUARD + bytes.next_multiple_of(ALIGN) + GUARD, ALIGN)
            .expect("buffer too large to emulate");
        // SAFETY: the layout has a non-zero size (two guard zones).
        let raw = unsafe { alloc::alloc(layout) };
        let Some(ptr) = NonNull::new(raw) else {
            alloc::handle_alloc_error(layout)
        };
        // SAFETY: ptr is valid for layout.size() bytes.
        unsafe { std::ptr::write_bytes(ptr.as_ptr(), 0xFF, layout.size()) };
        DeviceBuffer {
            ptr,
            layout,
            dtype,
            len,
        }
    }

    /// A buffer holding a copy of `data`.
    pub fn from_slice<T: Element>(data: &[T]) -> DeviceBuffer {
        let mut b = DeviceBuffer::poisoned(T::DTYPE, data.len());
        b.bytes_mut().copy_from_slice(as_bytes(data));
        b
    }

    /// The element type.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the buffer holds no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The first `n` elements, or `None` when `T` is not the buffer's type
    /// or `n` exceeds its length.
    pub fn to_vec<T: Element>(&self, n: usize) -> Option<Vec<T>> {
        if T::DTYPE != self.dtype || n > self.len {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        // SAFETY: the data region holds `len ≥ n` elements of `T` (checked
        // above), aligned to 256 bytes; `out` has room for `n` of them and
        // does not overlap the buffer; every bit pattern is a valid T.
        unsafe {
            std::ptr::copy_nonoverlapping(self.data_ptr().cast::<T>(), out.as_mut_ptr(), n);
            out.set_len(n);
        }
        Some(out)
    }

    /// Copies the elements into `out` (of the buffer's type and length).
    fn copy_to<T: Element>(&self, out: &mut [T]) {
        as_bytes_mut(out).copy_from_slice(self.bytes());
    }

    fn data_ptr(&self) -> *mut u8 {
        // SAFETY: GUARD is within the allocation.
        unsafe { self.ptr.as_ptr().add(GUARD) }
    }

    fn all(&self) -> &[u8] {
        // SAFETY: ptr is valid and initialised for layout.size() bytes, and
        // no launch writes to it while `self` is borrowed.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.layout.size()) }
    }

    fn bytes(&self) -> &[u8] {
        let n = self.len * self.dtype.size();
        &self.all()[GUARD..GUARD + n]
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let n = self.len * self.dtype.size();
        // SAFETY: the data region lies within the allocation and `self` is
        // borrowed uniquely.
        unsafe { std::slice::from_raw_parts_mut(self.data_ptr(), n) }
    }

    /// Whether both guard zones (and the tail padding) are untouched.
    fn guards_intact(&self) -> bool {
        let all = self.all();
        let end = GUARD + self.len * self.dtype.size();
        all[..GUARD].iter().all(|&b| b == 0xFF) && all[end..].iter().all(|&b| b == 0xFF)
    }

    /// Fills the elements with 0xFF bytes.
    fn poison(&mut self) {
        self.bytes_mut().fill(0xFF);
    }
}

impl Clone for DeviceBuffer {
    fn clone(&self) -> DeviceBuffer {
        let mut b = DeviceBuffer::poisoned(self.dtype, self.len);
        b.bytes_mut().copy_from_slice(self.bytes());
        b
    }
}

impl Drop for DeviceBuffer {
    fn drop(&mut self) {
        // SAFETY: allocated in `poisoned` with this layout, freed once.
        unsafe { alloc::dealloc(self.ptr.as_ptr(), self.layout) }
    }
}

impl fmt::Debug for DeviceBuffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeviceBuffer")
            .field("dtype", &self.dtype)
            .field("len", &self.len)
            .finish()
    }
}

fn as_bytes<T: Element>(v: &[T]) -> &[u8] {
    // SAFETY: f32, f64, u32, f16 and bf16 have no padding; the byte slice
    // covers exactly the same memory.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), std::mem::size_of_val(v)) }
}

fn as_bytes_mut<T: Element>(v: &mut [T]) -> &mut [u8] {
    // SAFETY: as in `as_bytes`; every byte pattern written back is a valid
    // f32, f64, u32, f16 or bf16, and the slice is uniquely borrowed.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), std::mem::size_of_val(v)) }
}

/// A device buffer argument of a launch.
#[derive(Debug)]
pub enum Arg<'a> {
    /// Only read by the kernel.
    In(&'a DeviceBuffer),
    /// Written (or read and written) by the kernel.
    Out(&'a mut DeviceBuffer),
}

impl Arg<'_> {
    fn buffer(&self) -> &DeviceBuffer {
        match self {
            Arg::In(b) => b,
            Arg::Out(b) => b,
        }
    }
}

fn type_name(dtype: DType, access: Access) -> String {
    match access {
        Access::Read => format!("*const {dtype}"),
        Access::Write | Access::ReadWrite => format!("*mut {dtype}"),
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

/// Runs `plan` with `args`, one per buffer parameter of the plan, in order.
/// Synchronous: the kernel has finished when this returns.
pub fn launch(plan: &LaunchPlan, args: &mut [Arg<'_>]) -> Result<(), SimtError> {
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
    if args.len() != nbufs {
        return err(format!(
            "{k}: the plan takes {nbufs} buffers, got {}",
            args.len()
        ));
    }

    // Check every parameter against the signature and its buffer, poison
    // the outputs, and fill the argument slots.
    let mut slots: Vec<u64> = Vec::with_capacity(plan.params.len());
    let mut next = args.iter_mut();
    for (i, (p, want)) in plan.params.iter().zip(&sig).enumerate() {
        match *p {
            Param::Buffer {
                name,
                dtype,
                len,
                access,
            } => {
                let have = type_name(dtype, access);
                if &have != want {
                    return err(format!(
                        "{k}: parameter {i} `{name}` is {want}, the plan passes {have}"
                    ));
                }
                let Some(arg) = next.next() else {
                    return err(format!("{k}: missing buffer `{name}`"));
                };
                let b = arg.buffer();
                if b.dtype() != dtype {
                    return err(format!(
                        "{k}: buffer `{name}` must hold {dtype}, got {}",
                        b.dtype()
                    ));
                }
                if b.len() < len {
                    return err(format!(
                        "{k}: buffer `{name}` has {} elements, the plan needs {len}",
                        b.len()
                    ));
                }
                match arg {
                    Arg::Out(b) if access == Access::Write => b.poison(),
                    Arg::In(_) if access != Access::Read => {
                        return err(format!("{k}: buffer `{name}` is written, pass it as Out"))
                    }
                    _ => {}
                }
                slots.push(arg.buffer().data_ptr() as usize as u64);
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

    let mut ptrs: Vec<*mut c_void> = slots.iter_mut().map(|s| (s as *mut u64).cast()).collect();
    let name = CString::new(k.as_str()).map_err(|_| SimtError(format!("bad kernel name {k:?}")))?;
    let mut msg = vec![0u8; 2048];
    let independent = c_int::from(plan.cooperation == Cooperation::Independent);
    // SAFETY: `ptrs` holds one pointer per kernel parameter (count and types
    // checked against the kernel's signature above), each to an 8-byte slot
    // holding the value; buffer slots point to the data of live device
    // buffers at least as long as the plan declares, borrowed mutably where
    // the kernel writes, and the plan's contract is that the kernel touches
    // no more (the guard zones catch a kernel that does). grid/block point
    // to 3 values each; `msg` is writable for its length. The call returns
    // after every thread of the launch has finished.
    let rc = unsafe {
        ffi::simt_launch(
            name.as_ptr(),
            plan.grid.as_ptr(),
            plan.block.as_ptr(),
            plan.shared_bytes as usize,
            independent,
            ptrs.as_mut_ptr(),
            ptrs.len(),
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
    for (arg, p) in args.iter().zip(plan.buffers()) {
        if !arg.buffer().guards_intact() {
            return err(format!("{k}: the kernel wrote outside buffer `{}`", p.name));
        }
    }
    Ok(())
}

/// A host slice passed to [`run`]: read-only or writable, by element type.
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
    fn upload(&self) -> DeviceBuffer {
        match self {
            Buf::F32(s) => DeviceBuffer::from_slice(s),
            Buf::F32Mut(s) => DeviceBuffer::from_slice(s),
            Buf::F64(s) => DeviceBuffer::from_slice(s),
            Buf::F64Mut(s) => DeviceBuffer::from_slice(s),
            Buf::U32(s) => DeviceBuffer::from_slice(s),
            Buf::U32Mut(s) => DeviceBuffer::from_slice(s),
        }
    }

    fn is_mut(&self) -> bool {
        matches!(self, Buf::F32Mut(_) | Buf::F64Mut(_) | Buf::U32Mut(_))
    }

    fn download(&mut self, from: &DeviceBuffer) {
        match self {
            Buf::F32Mut(s) => from.copy_to(s),
            Buf::F64Mut(s) => from.copy_to(s),
            Buf::U32Mut(s) => from.copy_to(s),
            _ => {}
        }
    }
}

/// Runs `plan` with host slices — one per buffer parameter of the plan, in
/// order — copied into device buffers, and copies the writable ones back.
pub fn run(plan: &LaunchPlan, bufs: &mut [Buf<'_>]) -> Result<(), SimtError> {
    let mut device: Vec<DeviceBuffer> = bufs.iter().map(Buf::upload).collect();
    let mut args: Vec<Arg<'_>> = device
        .iter_mut()
        .zip(bufs.iter())
        .map(|(d, b)| if b.is_mut() { Arg::Out(d) } else { Arg::In(d) })
        .collect();
    launch(plan, &mut args)?;
    for (b, d) in bufs.iter_mut().zip(&device) {
        b.download(d);
    }
    Ok(())
}
