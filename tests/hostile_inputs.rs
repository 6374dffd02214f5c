//! The binary over hostile files: every one is refused with exit code 1
//! and an `error:` line naming the file, never a panic; a gzip bomb is
//! refused in bounded memory.

mod sandbox;

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use advgrad::data::idx::encode_idx;
use sandbox::{advgrad, gzip, Run};

const IMAGES: &str = "t10k-images-idx3-ubyte.gz";
const LABELS: &str = "t10k-labels-idx1-ubyte.gz";

/// A valid test split of `n` 28×28 images: (images, labels), uncompressed.
fn valid_split(n: usize) -> (Vec<u8>, Vec<u8>) {
    let pixels: Vec<u8> = (0..n * 784).map(|i| (i % 251) as u8).collect();
    let labels: Vec<u8> = (0..n).map(|i| (i % 10) as u8).collect();
    (
        encode_idx(&[n, 28, 28], &pixels).unwrap(),
        encode_idx(&[n], &labels).unwrap(),
    )
}

/// An IDX header of unsigned bytes with `dims` and no data.
fn header(dims: &[u32]) -> Vec<u8> {
    let mut out = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        out.extend_from_slice(&d.to_be_bytes());
    }
    out
}

/// A data folder whose test split is valid except `file`, which holds
/// `bytes`; and a valid model beside it.
struct Case {
    home: tempfile::TempDir,
    bad: PathBuf,
}

impl Case {
    fn with(file: &str, bytes: &[u8]) -> Case {
        let home = sandbox::temp_dir();
        let data = home.path().join("data");
        std::fs::create_dir_all(&data).unwrap();
        let (images, labels) = valid_split(20);
        sandbox::write_file(&data.join(IMAGES), &gzip(&images));
        sandbox::write_file(&data.join(LABELS), &gzip(&labels));
        let bad = data.join(file);
        sandbox::write_file(&bad, bytes);
        sandbox::write_model(&home.path().join("model.safetensors"), "784-16-10");
        Case { home, bad }
    }

    fn data(&self) -> PathBuf {
        self.home.path().join("data")
    }

    fn model(&self) -> PathBuf {
        self.home.path().join("model.safetensors")
    }

    fn eval(&self) -> Command {
        let mut cmd = advgrad();
        cmd.args(["eval", "--device", "cpu", "--data"])
            .arg(self.data())
            .arg("--model")
            .arg(self.model());
        cmd
    }
}

/// Asserts exit code 1 and an `error:` line naming `file` that contains
/// `what`.
fn assert_refused(run: &Run, file: &Path, what: &str, case: &str) {
    assert_eq!(run.code, Some(1), "{case}: {}", run.stderr);
    assert!(!run.stderr.contains("panicked"), "{case}: {}", run.stderr);
    let line = run
        .error_line()
        .unwrap_or_else(|| panic!("{case}: no error line in {}", run.stderr));
    assert!(
        line.contains(&file.display().to_string()),
        "{case}: the error does not name {}: {line}",
        file.display()
    );
    assert!(line.contains(what), "{case}: expected {what:?} in {line}");
}

#[test]
fn hostile_idx_files_are_refused_naming_the_file() {
    let (images, labels) = valid_split(20);
    let gz_images = gzip(&images);
    let mut wrong_magic = images.clone();
    wrong_magic[0] = 0x42;
    let mut wrong_type = images.clone();
    wrong_type[2] = 0x0D;
    let (_, nine_labels) = valid_split(19);
    let mut out_of_range = labels.clone();
    *out_of_range.last_mut().unwrap() = 10;
    let cases: Vec<(&str, &str, Vec<u8>, &str)> = vec![
        ("empty", IMAGES, vec![], "truncated"),
        (
            "truncated data",
            IMAGES,
            images[..images.len() - 100].to_vec(),
            "truncated",
        ),
        (
            "truncated header",
            IMAGES,
            images[..10].to_vec(),
            "truncated header",
        ),
        ("wrong magic", IMAGES, wrong_magic, "bad magic"),
        (
            "wrong type",
            IMAGES,
            gzip(&wrong_type),
            "unsupported element type 0x0d",
        ),
        (
            "huge dimensions",
            IMAGES,
            header(&[4_000_000, 28, 28]),
            "truncated",
        ),
        (
            "huge dimensions, gzipped",
            IMAGES,
            gzip(&header(&[4_000_000, 28, 28])),
            "1032:1",
        ),
        (
            "overflowing dimensions",
            IMAGES,
            header(&[u32::MAX, u32::MAX, u32::MAX, u32::MAX]),
            "overflow",
        ),
        (
            "count mismatch",
            LABELS,
            gzip(&nine_labels),
            "19 labels for 20 images",
        ),
        (
            "labels out of range",
            LABELS,
            gzip(&out_of_range),
            "label 10 at index 19",
        ),
        (
            "not gzip",
            IMAGES,
            b"this is not gzip, nor IDX".to_vec(),
            "bad magic",
        ),
        (
            "half a gzip",
            IMAGES,
            gz_images[..gz_images.len() / 2].to_vec(),
            "gzip",
        ),
        ("labels for images", IMAGES, gzip(&labels), "rank 3"),
    ];
    for (case, file, bytes, what) in cases {
        let c = Case::with(file, &bytes);
        let run = Run::of(&mut c.eval());
        assert_refused(&run, &c.bad, what, case);
    }
}

/// Runs `cmd` to completion and returns it with the child's peak resident
/// memory in bytes (from `wait4`, for this child alone).
#[cfg(target_os = "linux")]
#[allow(clippy::zombie_processes)] // reaped by wait4, which std does not see
fn run_measuring_peak_rss(cmd: &mut Command) -> (Run, u64) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (mut stdout, mut stderr) = (String::new(), String::new());
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut stderr)
        .unwrap();
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value of this plain C struct.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waits for the child this function spawned and nothing else
    // reaps; `status` and `usage` are valid for writes.
    let pid = unsafe { libc::wait4(child.id() as libc::pid_t, &mut status, 0, &mut usage) };
    assert_eq!(pid, child.id() as libc::pid_t, "wait4");
    let code = libc::WIFEXITED(status).then(|| libc::WEXITSTATUS(status));
    // ru_maxrss is in KiB on Linux.
    let peak = usage.ru_maxrss as u64 * 1024;
    (
        Run {
            code,
            stdout,
            stderr,
        },
        peak,
    )
}

#[cfg(target_os = "linux")]
#[test]
fn a_gzip_bomb_is_refused_in_bounded_memory() {
    // A valid gzip stream whose IDX header promises 10 images but which
    // inflates to 1 GiB of zeros (about 5 MB compressed).
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    let zeros = vec![0u8; 1 << 20];
    std::io::Write::write_all(&mut enc, &header(&[10, 28, 28])).unwrap();
    for _ in 0..1024 {
        std::io::Write::write_all(&mut enc, &zeros).unwrap();
    }
    let bomb = enc.finish().unwrap();
    let c = Case::with(IMAGES, &bomb);
    sandbox::write_file(&c.data().join(LABELS), &gzip(&valid_split(10).1));
    let (run, peak) = run_measuring_peak_rss(&mut c.eval());
    assert_refused(&run, &c.bad, "goes on past", "gzip bomb");
    eprintln!(
        "peak RSS while refusing a 1 GiB gzip bomb: {:.1} MB",
        peak as f64 / 1e6
    );
    assert!(peak < 200_000_000, "peak RSS {peak} bytes");
}

/// A safetensors file with ReLU metadata from raw tensors.
fn safetensors_file(tensors: &[(&str, safetensors::Dtype, Vec<usize>, Vec<u8>)]) -> Vec<u8> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, d, s, b)| {
            (
                n.to_string(),
                safetensors::tensor::TensorView::new(*d, s.clone(), b).unwrap(),
            )
        })
        .collect();
    let meta = HashMap::from([("activation".to_string(), "relu".to_string())]);
    safetensors::serialize(views, &Some(meta)).unwrap()
}

fn f32s(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn hostile_model_files_are_refused_naming_the_file() {
    use safetensors::Dtype::{F32, I32};
    let good = {
        let c = Case::with(LABELS, &gzip(&valid_split(20).1));
        std::fs::read(c.model()).unwrap()
    };
    let mut nan_weights = vec![0.1f32; 16 * 784];
    nan_weights[5] = f32::NAN;
    let layer = |w: Vec<u8>, wd: safetensors::Dtype, b: Vec<u8>| {
        safetensors_file(&[
            ("0.weight", wd, vec![10, 784], w),
            ("0.bias", F32, vec![10], b),
        ])
    };
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("empty", vec![], "not a safetensors file"),
        (
            "garbage",
            b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage".to_vec(),
            "safetensors",
        ),
        ("truncated", good[..good.len() / 2].to_vec(), "safetensors"),
        (
            "wrongly shaped",
            safetensors_file(&[
                ("0.weight", F32, vec![10, 784], f32s(&[0.0; 7840])),
                ("0.bias", F32, vec![3], f32s(&[0.0; 3])),
            ]),
            "0.bias must be [10]",
        ),
        (
            "non-finite",
            safetensors_file(&[
                ("0.weight", F32, vec![16, 784], f32s(&nan_weights)),
                ("0.bias", F32, vec![16], f32s(&[0.0; 16])),
                ("2.weight", F32, vec![10, 16], f32s(&[0.0; 160])),
                ("2.bias", F32, vec![10], f32s(&[f32::INFINITY; 10])),
            ]),
            "0.weight is not finite: 1 NaN and 0 infinite of 12544 values",
        ),
        (
            "finite weights whose outputs overflow",
            layer(f32s(&[3e38; 7840]), F32, f32s(&[0.0; 10])),
            "the model's outputs overflow",
        ),
        (
            "integer",
            layer(vec![0u8; 7840 * 4], I32, f32s(&[0.0; 10])),
            "0.weight has dtype I32",
        ),
    ];
    for (case, bytes, what) in cases {
        let c = Case::with(LABELS, &gzip(&valid_split(20).1));
        sandbox::write_file(&c.model(), &bytes);
        let run = Run::of(&mut c.eval());
        assert_refused(&run, &c.model(), what, case);
    }
}

#[test]
fn attack_and_grads_refuse_a_non_finite_model_too() {
    let c = Case::with(LABELS, &gzip(&valid_split(20).1));
    let mut w = vec![0.0f32; 7840];
    w[0] = f32::NEG_INFINITY;
    sandbox::write_file(
        &c.model(),
        &safetensors_file(&[
            ("0.weight", safetensors::Dtype::F32, vec![10, 784], f32s(&w)),
            (
                "0.bias",
                safetensors::Dtype::F32,
                vec![10],
                f32s(&[0.0; 10]),
            ),
        ]),
    );
    let data = c.data();
    let model = c.model();
    let out = c.home.path().join("g.safetensors");
    let commands: [Vec<&std::ffi::OsStr>; 2] = [
        vec![
            "attack".as_ref(),
            "--attack".as_ref(),
            "fgsm".as_ref(),
            "--eps".as_ref(),
            "0.1".as_ref(),
        ],
        vec!["grads".as_ref(), "--out".as_ref(), out.as_os_str()],
    ];
    for args in commands {
        let run = Run::of(
            advgrad()
                .args(&args)
                .args(["--device", "cpu", "--data"])
                .arg(&data)
                .arg("--model")
                .arg(&model),
        );
        assert_refused(
            &run,
            &model,
            "0 NaN and 1 infinite",
            &format!("{:?}", args[0]),
        );
    }
    assert!(!out.exists());
}
