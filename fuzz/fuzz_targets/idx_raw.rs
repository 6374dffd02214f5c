//! The IDX reader on arbitrary bytes (raw, or gzip when they start with its
//! magic), and a data set built from two such files: every input is an
//! `Ok` or an `Err`, never a panic, and memory stays within what the bytes
//! can hold (libFuzzer's `-rss_limit_mb` checks it).
#![no_main]

use std::path::Path;

use advgrad::data::{parse_idx, Dataset};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(array) = parse_idx(Path::new("fuzz.idx"), data) {
        assert_eq!(array.data.len(), array.dims.iter().product::<usize>());
    }
    // The first two bytes split the rest into an images and a labels file.
    if let [hi, lo, rest @ ..] = data {
        let cut = usize::from(u16::from_be_bytes([*hi, *lo])).min(rest.len());
        let (images, labels) = rest.split_at(cut);
        let pair = |name, bytes| (Path::new(name), bytes);
        if let Ok(ds) = Dataset::from_idx_bytes(pair("images", images), pair("labels", labels), 10) {
            assert!(ds.labels().iter().all(|&l| l < 10));
            assert_eq!(ds.images().len(), ds.rows() * ds.features());
        }
    }
});
