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
//!
//! **Bounded memory.** A file is read header first ([`IdxReader::open`]):
//! the dimensions are checked (no overflow; a raw file must hold exactly the
//! bytes they promise, a gzip file can promise at most what deflate's
//! 1032:1 ratio allows from its size) before any buffer is allocated, and
//! the data is then inflated only up to the promised length plus one byte,
//! so a gzip bomb is refused after a few kilobytes, whatever it would
//! inflate to.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};

use flate2::read::MultiGzDecoder;

use crate::error::{Error, Result};

/// The IDX element-type byte for unsigned bytes, the only type read here.
pub const IDX_UBYTE: u8 = 0x08;

/// The two bytes that start every gzip stream.
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

/// The most a deflate stream can expand: 258 bytes from one length/distance
/// pair of at least 2 bits, i.e. 1032 output bytes per input byte.
const MAX_INFLATE_RATIO: u64 = 1032;

/// The most bytes reserved up front for the data; larger data sets grow the
/// buffer as their bytes arrive, so memory follows what a stream really
/// holds, not what its header claims.
const MAX_PREALLOC: usize = 64 << 20;

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
    /// set); 0 for a rank-0 array, which the reader never returns.
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

/// How the bytes of an IDX file are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Encoding {
    /// Plain bytes: the source holds exactly `stored` bytes.
    Raw,
    /// A gzip stream of `stored` compressed bytes.
    Gzip,
}

/// An IDX file whose header has been read and checked and whose data has
/// not: [`IdxReader::dims`] tells what [`IdxReader::read`] will allocate.
pub struct IdxReader<'a> {
    path: PathBuf,
    dims: Vec<usize>,
    data_len: usize,
    encoding: Encoding,
    source: Box<dyn Read + 'a>,
}

impl std::fmt::Debug for IdxReader<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdxReader")
            .field("path", &self.path)
            .field("dims", &self.dims)
            .field("encoding", &self.encoding)
            .finish_non_exhaustive()
    }
}

impl IdxReader<'static> {
    /// Opens the file at `path` (gzip-compressed or raw) and reads and
    /// checks its header.
    ///
    /// # Errors
    /// [`Error::Io`] if the file cannot be opened or read; [`Error::File`],
    /// naming the file, for corrupt gzip, a bad magic number, an element type
    /// other than unsigned byte, no dimensions, dimensions whose product
    /// overflows, or a size the file cannot hold (see the module docs).
    pub fn open(path: &Path) -> Result<IdxReader<'static>> {
        let io = |source| Error::Io {
            path: path.to_path_buf(),
            source,
        };
        let mut file = File::open(path).map_err(io)?;
        let stored = file.metadata().map_err(io)?.len();
        let mut magic = [0u8; 2];
        let got = read_up_to(&mut file, &mut magic).map_err(io)?;
        let head = std::io::Cursor::new(magic[..got].to_vec());
        let source = head.chain(BufReader::new(file));
        let encoding = if magic[..got] == GZIP_MAGIC {
            Encoding::Gzip
        } else {
            Encoding::Raw
        };
        IdxReader::new(path, source, stored, encoding)
    }
}

impl<'a> IdxReader<'a> {
    /// Reads the header of the IDX file held in `bytes` (gzip-compressed or
    /// raw, detected as by [`IdxReader::open`]); `path` only names it in
    /// error messages.
    ///
    /// # Errors
    /// As [`IdxReader::open`].
    pub fn from_bytes(path: &Path, bytes: &'a [u8]) -> Result<IdxReader<'a>> {
        let encoding = if bytes.starts_with(&GZIP_MAGIC) {
            Encoding::Gzip
        } else {
            Encoding::Raw
        };
        IdxReader::new(path, bytes, bytes.len() as u64, encoding)
    }

    fn new(
        path: &Path,
        source: impl Read + 'a,
        stored: u64,
        encoding: Encoding,
    ) -> Result<IdxReader<'a>> {
        let mut source: Box<dyn Read + 'a> = match encoding {
            Encoding::Raw => Box::new(source),
            Encoding::Gzip => Box::new(MultiGzDecoder::new(source)),
        };
        let fail = |msg: String| Error::file(path, format!("IDX file: {msg}"));
        let mut magic = [0u8; 4];
        let got = read_full(path, encoding, &mut source, &mut magic)?;
        if got < 4 {
            return Err(fail(format!(
                "truncated: {got} bytes, too short for the 4-byte magic number"
            )));
        }
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
        let mut dim_bytes = vec![0u8; 4 * ndim];
        let got = read_full(path, encoding, &mut source, &mut dim_bytes)?;
        if got < dim_bytes.len() {
            return Err(fail(format!(
                "truncated header: {ndim} dimensions need {header_len} bytes, file has {}",
                4 + got
            )));
        }
        let dims: Vec<usize> = dim_bytes
            .chunks_exact(4)
            .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]) as usize)
            .collect();
        let data_len = dims
            .iter()
            .try_fold(1usize, |acc, &d| acc.checked_mul(d))
            .filter(|&n| isize::try_from(n).is_ok())
            .ok_or_else(|| fail(format!("dimensions {dims:?} overflow the address space")))?;
        let data_bytes = data_len as u64;
        match encoding {
            Encoding::Raw => {
                let held = stored.saturating_sub(header_len as u64);
                if held < data_bytes {
                    return Err(fail(format!(
                        "truncated: dimensions {dims:?} need {data_len} bytes of data, file has {held}"
                    )));
                }
                if held > data_bytes {
                    return Err(fail(format!(
                        "inconsistent: dimensions {dims:?} need {data_len} bytes of data, file has \
                         {held} ({} trailing bytes)",
                        held - data_bytes
                    )));
                }
            }
            Encoding::Gzip => {
                let most = stored.saturating_mul(MAX_INFLATE_RATIO);
                if data_bytes.saturating_add(header_len as u64) > most {
                    return Err(fail(format!(
                        "dimensions {dims:?} promise {data_len} bytes of data, more than a gzip \
                         stream of {stored} bytes can hold (deflate expands at most \
                         {MAX_INFLATE_RATIO}:1): truncated or corrupt"
                    )));
                }
            }
        }
        Ok(IdxReader {
            path: path.to_path_buf(),
            dims,
            data_len,
            encoding,
            source,
        })
    }

    /// The dimensions the header declares, outermost first.
    pub fn dims(&self) -> &[usize] {
        &self.dims
    }

    /// The number of data bytes the header promises (the product of the
    /// dimensions).
    pub fn data_len(&self) -> usize {
        self.data_len
    }

    /// The file's path, as given.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the data: exactly the promised bytes, never more than one
    /// beyond them.
    ///
    /// # Errors
    /// [`Error::File`] naming the file if the stream ends early (truncated),
    /// goes on past the promised length (a gzip bomb, or trailing bytes), or
    /// is corrupt gzip; [`Error::Io`] if the file cannot be read.
    pub fn read(self) -> Result<IdxArray> {
        let IdxReader {
            path,
            dims,
            data_len,
            encoding,
            source,
        } = self;
        let mut data = Vec::with_capacity(data_len.saturating_add(1).min(MAX_PREALLOC));
        let limit = data_len as u64 + 1;
        source
            .take(limit)
            .read_to_end(&mut data)
            .map_err(|e| read_error(&path, encoding, e))?;
        let fail = |msg: String| Error::file(&path, format!("IDX file: {msg}"));
        if data.len() < data_len {
            return Err(fail(format!(
                "truncated: dimensions {dims:?} need {data_len} bytes of data, file has {}",
                data.len()
            )));
        }
        if data.len() > data_len {
            return Err(fail(format!(
                "inconsistent: dimensions {dims:?} need {data_len} bytes of data, but the \
                 stream goes on past them (trailing bytes, or a gzip bomb); refused after \
                 reading {limit} bytes",
            )));
        }
        Ok(IdxArray { dims, data })
    }
}

/// Reads into `buf` until it is full or the source ends; returns the bytes
/// read.
fn read_up_to(source: &mut impl Read, buf: &mut [u8]) -> std::io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match source.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// [`read_up_to`] with its error named for the file.
fn read_full(
    path: &Path,
    encoding: Encoding,
    source: &mut impl Read,
    buf: &mut [u8],
) -> Result<usize> {
    read_up_to(source, buf).map_err(|e| read_error(path, encoding, e))
}

/// A read failure: corrupt data for a gzip stream, an I/O error otherwise.
fn read_error(path: &Path, encoding: Encoding, e: std::io::Error) -> Error {
    match encoding {
        Encoding::Gzip => Error::file(path, format!("corrupt or truncated gzip data: {e}")),
        Encoding::Raw => Error::Io {
            path: path.to_path_buf(),
            source: e,
        },
    }
}

/// Reads and validates the IDX file at `path` (gzip-compressed or raw),
/// header first, in bounded memory (see the module docs).
///
/// # Errors
/// As [`IdxReader::open`] and [`IdxReader::read`].
pub fn read_idx(path: &Path) -> Result<IdxArray> {
    IdxReader::open(path)?.read()
}

/// Parses and validates the bytes of an IDX file held in memory,
/// gzip-compressed or raw; `path` only names the file in error messages.
///
/// # Errors
/// As [`read_idx`].
pub fn parse_idx(path: &Path, bytes: &[u8]) -> Result<IdxArray> {
    IdxReader::from_bytes(path, bytes)?.read()
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
