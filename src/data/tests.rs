//! Tests of the data layer on small IDX files written to a temporary folder.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::idx::{encode_idx, parse_idx, read_idx, IdxReader};
use super::*;

/// A fresh folder under the system temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        static COUNTER: AtomicUsize = AtomicUsize::new(0);
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!(
            "advgrad-data-test-{}-{name}-{n}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `bytes` to `name` in the folder, gzip-compressed if `gz`.
    fn write(&self, name: &str, bytes: &[u8], gz: bool) -> PathBuf {
        let path = self.0.join(name);
        let contents = if gz { gzip(bytes) } else { bytes.to_vec() };
        std::fs::write(&path, contents).expect("write test file");
        path
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// `n` 2×3 images whose pixels are `(13 * i + j) % 256`, and labels `i % 10`.
fn small_split(n: usize) -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..n * 6).map(|k| ((13 * k) % 256) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    (
        encode_idx(&[n, 2, 3], &pixels).expect("encode images"),
        encode_idx(&[n], &labels).expect("encode labels"),
    )
}

/// Writes a split's two files under their standard names.
fn write_split(dir: &TempDir, split: Split, images: &[u8], labels: &[u8], gz: bool) {
    let ext = if gz { ".gz" } else { "" };
    dir.write(&format!("{}{ext}", split.images_file()), images, gz);
    dir.write(&format!("{}{ext}", split.labels_file()), labels, gz);
}

fn err_text<T: std::fmt::Debug>(r: crate::error::Result<T>) -> String {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn idx_round_trip_raw_and_gz() {
    let dir = TempDir::new("roundtrip");
    let data: Vec<u8> = (0..24).collect();
    let bytes = encode_idx(&[2, 3, 4], &data).unwrap();
    for gz in [false, true] {
        // A misleading name: compression is detected by content.
        let path = dir.write(if gz { "a.idx" } else { "b.gz" }, &bytes, gz);
        let arr = read_idx(&path).unwrap();
        assert_eq!(arr.dims, vec![2, 3, 4]);
        assert_eq!(arr.data, data);
        assert_eq!(arr.count(), 2);
        assert_eq!(arr.item_len(), 12);
    }
}

#[test]
fn idx_bad_magic() {
    let dir = TempDir::new("magic");
    let mut bytes = encode_idx(&[4], &[1, 2, 3, 4]).unwrap();
    bytes[0] = 0x12;
    let path = dir.write("bad", &bytes, false);
    let msg = err_text(read_idx(&path));
    assert!(msg.contains("bad magic"), "{msg}");
    assert!(msg.contains(&path.display().to_string()), "{msg}");
    let msg = err_text(parse_idx(Path::new("tiny"), &[0, 0]));
    assert!(msg.contains("tiny") && msg.contains("truncated"), "{msg}");
}

#[test]
fn idx_wrong_type_byte() {
    // A well-formed IDX file of one f32 (type 0x0D).
    let mut bytes = vec![0, 0, 0x0D, 1, 0, 0, 0, 1];
    bytes.extend_from_slice(&1.0f32.to_be_bytes());
    let msg = err_text(parse_idx(Path::new("f.idx"), &bytes));
    assert!(msg.contains("0x0d") && msg.contains("f32"), "{msg}");
    assert!(msg.contains("f.idx"), "{msg}");
}

#[test]
fn idx_truncated_and_trailing() {
    let dir = TempDir::new("trunc");
    let bytes = encode_idx(&[3, 2, 2], &[7; 12]).unwrap();
    // Truncated data, raw and gzip.
    for gz in [false, true] {
        let path = dir.write("t", &bytes[..bytes.len() - 1], gz);
        let msg = err_text(read_idx(&path));
        assert!(msg.contains("truncated") && msg.contains("11"), "{msg}");
        assert!(msg.contains(&path.display().to_string()), "{msg}");
    }
    // Truncated header.
    let msg = err_text(parse_idx(Path::new("h"), &bytes[..9]));
    assert!(msg.contains("truncated header"), "{msg}");
    // Trailing bytes.
    let mut long = bytes.clone();
    long.push(0);
    let msg = err_text(parse_idx(Path::new("l"), &long));
    assert!(msg.contains("1 trailing"), "{msg}");
    // Zero dimensions.
    let msg = err_text(parse_idx(Path::new("z"), &[0, 0, 8, 0]));
    assert!(msg.contains("0 dimensions"), "{msg}");
    // A truncated gzip stream.
    let gz = gzip(&bytes);
    let path = dir.write("cut.gz", &gz[..gz.len() / 2], false);
    let msg = err_text(read_idx(&path));
    assert!(msg.contains("gzip"), "{msg}");
}

#[test]
fn dataset_load_raw_and_gz() {
    let (images, labels) = small_split(5);
    for gz in [false, true] {
        let dir = TempDir::new("load");
        write_split(&dir, Split::Test, &images, &labels, gz);
        let ds = Dataset::load(dir.path(), Split::Test).unwrap();
        assert_eq!(ds.rows(), 5);
        assert_eq!(ds.features(), 6);
        assert_eq!(ds.image_dims(), &[2, 3]);
        assert_eq!(ds.classes(), 10);
        assert_eq!(ds.labels(), &[0, 1, 2, 3, 4]);
        assert_eq!(ds.images()[1], 13.0 / 255.0);
        assert!(ds.images().iter().all(|&x| (0.0..=1.0).contains(&x)));
        // Only the requested split is read: the train files are absent.
        let msg = err_text(Dataset::load(dir.path(), Split::Train));
        assert!(msg.contains("train-images-idx3-ubyte.gz"), "{msg}");
    }
}

#[test]
fn dataset_prefers_gz() {
    let dir = TempDir::new("prefer");
    let (images, labels) = small_split(4);
    write_split(&dir, Split::Train, &images, &labels, true);
    // Uncompressed copies that are broken: must not be read.
    dir.write(Split::Train.images_file(), b"junk", false);
    dir.write(Split::Train.labels_file(), b"junk", false);
    let ds = Dataset::load(dir.path(), Split::Train).unwrap();
    assert_eq!(ds.rows(), 4);
}

#[test]
fn dataset_count_mismatch() {
    let dir = TempDir::new("count");
    let (images, _) = small_split(5);
    let (_, labels) = small_split(4);
    write_split(&dir, Split::Test, &images, &labels, false);
    let msg = err_text(Dataset::load(dir.path(), Split::Test));
    assert!(msg.contains("4 labels for 5 images"), "{msg}");
    assert!(msg.contains("t10k-labels-idx1-ubyte"), "{msg}");
}

#[test]
fn dataset_label_out_of_range() {
    let dir = TempDir::new("label");
    let (images, _) = small_split(3);
    let labels = encode_idx(&[3], &[1, 10, 2]).unwrap();
    write_split(&dir, Split::Test, &images, &labels, true);
    let msg = err_text(Dataset::load(dir.path(), Split::Test));
    assert!(
        msg.contains("label 10 at index 1") && msg.contains("10 classes"),
        "{msg}"
    );
    assert!(msg.contains("t10k-labels-idx1-ubyte.gz"), "{msg}");
}

#[test]
fn dataset_wrong_rank() {
    let dir = TempDir::new("rank");
    let (_, labels) = small_split(3);
    // Images written with rank 2, labels swapped in for images.
    let images = encode_idx(&[3, 6], &[0; 18]).unwrap();
    write_split(&dir, Split::Test, &images, &labels, false);
    let msg = err_text(Dataset::load(dir.path(), Split::Test));
    assert!(msg.contains("rank 3"), "{msg}");
    write_split(&dir, Split::Test, &labels, &labels, false);
    let msg = err_text(Dataset::load(dir.path(), Split::Test));
    assert!(msg.contains("rank 3"), "{msg}");
}

#[test]
fn missing_data_error_says_how_to_get_it() {
    let dir = TempDir::new("missing");
    for d in [dir.path().to_path_buf(), dir.path().join("nope")] {
        let msg = err_text(Dataset::load(&d, Split::Test));
        assert!(
            msg.contains("sudo apt-get install dataset-fashion-mnist"),
            "{msg}"
        );
        assert!(
            msg.contains("ADVGRAD_DATA") && msg.contains("--data"),
            "{msg}"
        );
        for f in STANDARD_FILES {
            assert!(msg.contains(f), "{msg}");
        }
    }
}

#[test]
fn limit_keeps_file_order() {
    let dir = TempDir::new("limit");
    let (images, labels) = small_split(7);
    write_split(&dir, Split::Train, &images, &labels, false);
    let full = Dataset::load(dir.path(), Split::Train).unwrap();
    let ds = full.clone().limit(3);
    assert_eq!(ds.rows(), 3);
    assert_eq!(ds.labels(), &full.labels()[..3]);
    assert_eq!(ds.images(), &full.images()[..18]);
    assert_eq!(full.clone().limit(100), full);
}

#[test]
fn gather_and_batches() {
    let ds = Dataset::from_parts(
        (0..10).map(|v| v as f32).collect(),
        vec![0, 1, 2, 3, 4],
        2,
        5,
    )
    .unwrap();
    let (mut x, mut y) = (vec![9.0; 3], vec![7]);
    ds.gather_into(&[4, 0, 2], &mut x, &mut y).unwrap();
    assert_eq!(x, vec![8.0, 9.0, 0.0, 1.0, 4.0, 5.0]);
    assert_eq!(y, vec![4, 0, 2]);
    assert!(ds.gather_into(&[5], &mut x, &mut y).is_err());
    assert!(x.is_empty() && y.is_empty());

    let order: Vec<usize> = (0..10).collect();
    let b: Vec<&[usize]> = Batches::new(&order, 4, false).unwrap().collect();
    assert_eq!(b, vec![&[0, 1, 2, 3][..], &[4, 5, 6, 7], &[8, 9]]);
    let it = Batches::new(&order, 4, true).unwrap();
    assert_eq!(it.len(), 2);
    assert_eq!(it.flatten().count(), 8);
    assert_eq!(Batches::new(&order, 5, true).unwrap().len(), 2);
    assert_eq!(Batches::new(&order[..0], 5, false).unwrap().count(), 0);
    assert!(Batches::new(&order, 0, false).is_err());
    assert_eq!(num_batches(60000, 128, false), 469);
    assert_eq!(num_batches(60000, 128, true), 468);
    assert!(Dataset::from_parts(vec![0.0; 3], vec![0], 2, 5).is_err());
    assert!(Dataset::from_parts(vec![0.0; 2], vec![5], 2, 5).is_err());
}

#[test]
fn rng_is_deterministic_and_shuffles() {
    // Reference values of SplitMix64 from seed 1234567 (Vigna's reference
    // implementation).
    let mut s = 1234567u64;
    let first: Vec<u64> = (0..3).map(|_| splitmix64(&mut s)).collect();
    assert_eq!(
        first,
        vec![
            6457827717110365317,
            3203168211198807973,
            9817491932198370423
        ]
    );

    // xoshiro256** seeded by SplitMix64(42), checked against an independent
    // implementation.
    let mut a = Rng::new(42);
    let first: Vec<u64> = (0..3).map(|_| a.next_u64()).collect();
    assert_eq!(
        first,
        vec![
            1546998764402558742,
            6990951692964543102,
            12544586762248559009
        ]
    );

    let mut a = Rng::new(42);
    let mut b = Rng::new(42);
    let mut c = Rng::new(43);
    let pa = a.permutation(1000);
    assert_eq!(pa, b.permutation(1000));
    assert_ne!(pa, c.permutation(1000));
    let mut sorted = pa.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..1000).collect::<Vec<_>>());
    // A second draw from the same generator is a different permutation.
    assert_ne!(pa, a.permutation(1000));

    let mut r = Rng::new(7);
    let mut counts = [0usize; 6];
    for _ in 0..60000 {
        counts[r.below(6) as usize] += 1;
        let f = r.next_f32();
        assert!((0.0..1.0).contains(&f));
        let d = r.next_f64();
        assert!((0.0..1.0).contains(&d));
    }
    assert!(
        counts.iter().all(|&k| (9500..10500).contains(&k)),
        "{counts:?}"
    );
    assert_eq!(r.below(0), 0);
}

#[test]
fn split_names() {
    assert_eq!("test".parse::<Split>().unwrap(), Split::Test);
    assert_eq!("Train".parse::<Split>().unwrap(), Split::Train);
    assert!("val".parse::<Split>().is_err());
    assert_eq!(Split::Test.to_string(), "test");
    assert_eq!(FASHION_MNIST_CLASSES[9], "Ankle boot");
}

#[test]
fn real_fashion_mnist_test_split() {
    let dir = Path::new(SYSTEM_DATA_DIR);
    if !dir.is_dir() {
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        assert!(!ci, "CI=true but {SYSTEM_DATA_DIR} is not installed");
        println!(
            "skipped: {SYSTEM_DATA_DIR} not installed (apt-get install dataset-fashion-mnist)"
        );
        return;
    }
    let ds = Dataset::load(dir, Split::Test).unwrap();
    assert_eq!(ds.rows(), 10000);
    assert_eq!(ds.features(), 784);
    assert_eq!(ds.image_dims(), &[28, 28]);
    assert_eq!(ds.images().len(), 10000 * 784);
    assert!(ds.labels().iter().all(|&l| l < 10));
    // The test split is balanced: 1000 examples per class.
    let mut counts = [0usize; 10];
    for &l in ds.labels() {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [1000; 10]);
    // The first test example is an ankle boot.
    assert_eq!(ds.label(0), Some(9));
    assert!(ds.images().iter().all(|&x| (0.0..=1.0).contains(&x)));
}

/// An IDX header of unsigned bytes with `dims`, followed by nothing.
fn header(dims: &[u32]) -> Vec<u8> {
    let mut out = vec![0, 0, super::idx::IDX_UBYTE, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
}

#[test]
fn a_gzip_stream_longer_than_its_header_promises_is_refused_early() {
    // The header promises 10 bytes; the stream inflates to 8 MiB of zeros.
    let mut bomb = header(&[10]);
    bomb.resize(bomb.len() + (8 << 20), 0);
    let gz = gzip(&bomb);
    let reader = IdxReader::from_bytes(Path::new("bomb.gz"), &gz).unwrap();
    assert_eq!(reader.dims(), &[10]);
    let msg = err_text(reader.read());
    assert!(
        msg.contains("bomb.gz") && msg.contains("goes on past") && msg.contains("11 bytes"),
        "{msg}"
    );
}

#[test]
fn header_sizes_are_checked_before_anything_is_allocated() {
    // A raw file whose header promises 4 GiB.
    let msg = err_text(parse_idx(Path::new("huge"), &header(&[65536, 65536])));
    assert!(
        msg.contains("truncated") && msg.contains("4294967296"),
        "{msg}"
    );
    // Dimensions whose product overflows.
    let msg = err_text(parse_idx(
        Path::new("overflow"),
        &header(&[u32::MAX, u32::MAX, u32::MAX]),
    ));
    assert!(msg.contains("overflow"), "{msg}");
    // A gzip stream that could never inflate to what its header promises.
    let gz = gzip(&header(&[60000, 280, 280]));
    let msg = err_text(parse_idx(Path::new("small.gz"), &gz));
    assert!(msg.contains("1032:1") && msg.contains("small.gz"), "{msg}");
}

#[test]
fn dataset_headers_are_compared_before_the_data_is_read() {
    let dir = TempDir::new("headers");
    let (images, _) = small_split(5);
    // Gzipped labels whose header says 4 but whose data is cut short: the
    // count mismatch is reported, not the truncation the data would show.
    let mut labels = header(&[4]);
    labels.push(1);
    write_split(&dir, Split::Test, &images, &labels, true);
    let msg = err_text(Dataset::load(dir.path(), Split::Test));
    assert!(msg.contains("4 labels for 5 images"), "{msg}");
}

#[test]
fn from_idx_bytes_matches_loading_files() {
    let dir = TempDir::new("bytes");
    let (images, labels) = small_split(6);
    write_split(&dir, Split::Train, &images, &labels, true);
    let from_files = Dataset::load(dir.path(), Split::Train).unwrap();
    let from_bytes = Dataset::from_idx_bytes(
        (Path::new("images"), &gzip(&images)),
        (Path::new("labels"), &labels),
        10,
    )
    .unwrap();
    assert_eq!(from_files, from_bytes);
}
