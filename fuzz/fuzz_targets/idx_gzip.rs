//! The IDX reader on gzip streams: the input as a (usually corrupt) gzip
//! file, and the input gzip-compressed (a valid stream of arbitrary IDX
//! contents), which must read exactly as the raw input does.
#![no_main]

use std::io::Write;
use std::path::Path;

use advgrad::data::parse_idx;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = parse_idx(Path::new("fuzz.gz"), data);
    if data.starts_with(&[0x1f, 0x8b]) {
        return;
    }
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(data).expect("in-memory gzip");
    let gz = enc.finish().expect("in-memory gzip");
    let raw = parse_idx(Path::new("raw"), data);
    let zipped = parse_idx(Path::new("raw"), &gz);
    match (raw, zipped) {
        (Ok(a), Ok(b)) => assert_eq!(a, b),
        (Err(_), Err(_)) => {}
        (a, b) => panic!("raw {a:?} but gzipped {b:?}"),
    }
});
