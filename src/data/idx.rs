//! Reader for IDX files, the format of MNIST and Fashion-MNIST.
//!
//! An IDX file is a header followed by the elements, row-major, big-endian:
//!
//! ```text
//! 0x00 0x00 TYPE NDIM   magic: two zero bytes, the element type, the rank
//! DIM_0 .. DIM_{n-1}    one big-endian u32 per dimension
//! data                  DIM_0 * .. * DIM_{n-1} elements
//! ```
//!
//! Files may be gzip-compressed; compression is detected by the gzip magic
//! bytes `1f 8b`, not by the file name. Only the unsigned-byte element type
//! (`0x08`), the one MNIST-style data sets use, is supported. Every problem
//! with a file's contents comes back as [`Error::File`] naming the file.

use std::io::Read;
use std::path::Path;

use crate::error::{Error, Result};

/// The IDX element-type byte for unsigned bytes, the only type read here.
pub const IDX_UBYTE: u8 = 0x08;

/// The two bytes that start every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// Most bytes a gzip trailer's size field may reserve up front (1 GiB), so a
/// corrupt trailer cannot request an absurd allocation.
const MAX_PREALLOC: usize = 1 << 30;

/// The contents of one IDX file of unsigned bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdxArray {
    /// The dimensions from the header, outermost first (e.g. `[60000, 28, 28]`).
    pub dims: Vec<usize>,
    /// The elements in file (row-major) order; `data.len()` is the product of
    /// `dims`.
    pub data: Vec<u8>,
}

impl IdxArray {
    /// The number of items along the first dimension (examples, for a data
    /// set); 0 for a rank-0 array, which [`parse_idx`] never returns.
    pub fn count(&self) -> usize {
        self.dims.first().copied().unwrap_or(0)
    }

    /// The number of elements per item: the product of all dimensions but
    /// the first (784 for 28×28 images, 1 for labels).
    pub fn item_len(&self) -> usize {
        self.dims.iter().skip(1).product()
    }
}

/// A readable name for an IDX element-type byte, for error messages.
fn type_name(ty: u8) -> &'static str {
    match ty {
        0x08 => "unsigned byte",
        0x09 => "signed byte",
        0x0B => "i16",
        0x0C => "i32",
        0x0D => "f32",
        0x0E => "f64",
        _ => "not an IDX type",
    }
}

/// Reads the file at `path`, gunzipping it when it starts with the gzip
/// magic bytes, and returns the raw (decompressed) bytes.
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::File`] if it looks like
/// gzip but the stream is corrupt or truncated.
pub fn read_maybe_gz(path: &Path) -> Result<Vec<u8>> {
    let raw = std::fs::read(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    if !raw.starts_with(&GZIP_MAGIC) {
        return Ok(raw);
    }
    // The gzip trailer's last four bytes hold the uncompressed size mod 2^32:
    // a good capacity hint for files under 4 GiB.
    let hint = raw
        .len()
        .checked_sub(4)
        .and_then(|i| raw.get(i..))
        .and_then(|b| <[u8; 4]>::try_from(b).ok())
        .map_or(0, |b| u32::from_le_bytes(b) as usize)
        .min(MAX_PREALLOC);
    let mut out = Vec::with_capacity(hint);
    flate2::read::MultiGzDecoder::new(raw.as_slice())
        .read_to_end(&mut out)
        .map_err(|e| Error::file(path, format!("corrupt or truncated gzip data: {e}")))?;
    Ok(out)
}

/// Reads and validates the IDX file at `path` (gzip-compressed or raw).
///
/// # Errors
/// [`Error::Io`] if the file cannot be read; [`Error::File`], naming the
/// file, if it is corrupt gzip, has a bad magic number, an element type other
/// than unsigned byte, no dimensions, or a data length that differs from the
/// one its header declares.
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    let bytes = read_maybe_gz(path)?;
    parse_idx(path, &bytes)
}

/// Parses and validates the (already decompressed) bytes of an IDX file;
/// `path` only names the file in error messages.
///
/// # Errors
/// [`Error::File`] for a bad magic number, an unsupported element type, a
/// rank of 0, dimensions whose product overflows, or a data section shorter
/// (truncated) or longer (trailing bytes) than the header declares.
pub fn parse_idx(path: &Path, bytes: &[u8]) -> Result<IdxArray> {
    let fail = |msg: String| Error::file(path, format!("IDX file: {msg}"));
    let magic: [u8; 4] = bytes
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| {
            fail(format!(
                "truncated: {} bytes, too short for the 4-byte magic number",
                bytes.len()
            ))
        })?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(fail(format!(
            "bad magic number {:02x} {:02x} {:02x} {:02x} (expected 00 00 <type> <ndim>); \
             not an IDX file",
            magic[0], magic[1], magic[2], magic[3]
        )));
    }
    let ty = magic[2];
    if ty != IDX_UBYTE {
        return Err(fail(format!(
            "unsupported element type 0x{ty:02x} ({}); only 0x08 (unsigned byte) is supported",
            type_name(ty)
        )));
    }
    let ndim = usize::from(magic[3]);
    if ndim == 0 {
        return Err(fail("header declares 0 dimensions".into()));
    }
    let header_len = 4 + 4 * ndim;
    let dim_bytes = bytes.get(4..header_len).ok_or_else(|| {
        fail(format!(
            "truncated header: {ndim} dimensions need {header_len} bytes, file has {}",
            bytes.len()
        ))
    })?;
    let dims: Vec<usize> = dim_bytes
        .chunks_exact(4)
        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
        .collect();
    let expected = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .ok_or_else(|| fail(format!("dimensions {dims:?} overflow the address space")))?;
    let data = &bytes[header_len..];
    if data.len() < expected {
        return Err(fail(format!(
            "truncated: dimensions {dims:?} need {expected} bytes of data, file has {}",
            data.len()
        )));
    }
    if data.len() > expected {
        return Err(fail(format!(
            "inconsistent: dimensions {dims:?} need {expected} bytes of data, file has {} \
             ({} trailing bytes)",
            data.len(),
            data.len() - expected
        )));
    }
    Ok(IdxArray {
        dims,
        data: data.to_vec(),
    })
}

/// Encodes `dims` and `data` as an uncompressed IDX file of unsigned bytes
/// (the inverse of [`parse_idx`]); used to write small test files.
///
/// # Errors
/// [`Error::InvalidArgument`] if there are no or more than 255 dimensions, a
/// dimension exceeds `u32::MAX`, or `data.len()` is not their product.
pub fn encode_idx(dims: &[usize], data: &[u8]) -> Result<Vec<u8>> {
    let ndim = u8::try_from(dims.len())
        .ok()
        .filter(|&n| n > 0)
        .ok_or_else(|| Error::invalid(format!("IDX needs 1..=255 dimensions, got {dims:?}")))?;
    let product = dims
        .iter()
        .try_fold(1usize, |acc, &d| acc.checked_mul(d))
        .filter(|&p| p == data.len())
        .ok_or_else(|| {
            Error::invalid(format!(
                "IDX dimensions {dims:?} do not match {} data bytes",
                data.len()
            ))
        })?;
    let mut out = Vec::with_capacity(4 + 4 * dims.len() + product);
    out.extend_from_slice(&[0, 0, IDX_UBYTE, ndim]);
    for &d in dims {
        let d = u32::try_from(d)
            .map_err(|_| Error::invalid(format!("IDX dimension {d} exceeds u32::MAX")))?;
        out.extend_from_slice(&d.to_be_bytes());
    }
    out.extend_from_slice(data);
    Ok(out)
}
