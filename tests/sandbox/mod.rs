//! A sandboxed machine for the tests that run the binary: the binary with a
//! controlled environment, small data sets written on the spot, and a
//! loopback HTTP server. (Each test file that needs it says `mod sandbox;`.)

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use advgrad::data::{idx::encode_idx, Split};

/// Environment variables that would change where the binary looks for
/// data or how it reaches the network.
const CLEARED_ENV: [&str; 10] = [
    "ADVGRAD_DATA",
    "ADVGRAD_DATA_URL",
    "ADVGRAD_SYSTEM_DATA",
    "ALL_PROXY",
    "all_proxy",
    "HTTPS_PROXY",
    "https_proxy",
    "HTTP_PROXY",
    "http_proxy",
    "XDG_CACHE_HOME",
];

/// The `advgrad` binary with the data and network environment cleared, so
/// a test sees only what it sets.
pub fn advgrad() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_advgrad"));
    for var in CLEARED_ENV {
        cmd.env_remove(var);
    }
    cmd.env("NO_PROXY", "*");
    cmd
}

/// The binary as a machine without the data would run it: no system data
/// folder, and its cache under `home`.
pub fn advgrad_on_a_fresh_machine(home: &Path) -> Command {
    let mut cmd = advgrad();
    cmd.env("ADVGRAD_SYSTEM_DATA", home.join("no-system-data"))
        .env("XDG_CACHE_HOME", home.join("cache"))
        .env("HOME", home);
    cmd
}

/// Exit code, stdout and stderr of a finished command.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    /// Runs `cmd` to completion.
    pub fn of(cmd: &mut Command) -> Run {
        Run::from(cmd.output().expect("the binary runs"))
    }

    /// The first stderr line that starts with `error:`, if any.
    pub fn error_line(&self) -> Option<&str> {
        self.stderr.lines().find(|l| l.starts_with("error:"))
    }
}

impl From<Output> for Run {
    fn from(out: Output) -> Run {
        Run {
            code: out.status.code(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }
}

/// A fresh temporary folder, removed when dropped.
pub fn temp_dir() -> tempfile::TempDir {
    tempfile::Builder::new()
        .prefix("advgrad-test-")
        .tempdir()
        .expect("a temporary folder")
}

/// Gzip-compresses `bytes`.
pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    enc.write_all(bytes).expect("gzip");
    enc.finish().expect("gzip")
}

/// Writes a small Fashion-MNIST-shaped data set into `dir`: `train` and
/// `test` examples of `side`×`side` pixels, gzipped, under the standard
/// names. Each class has its own bright band, so a model can learn it.
pub fn write_synthetic_data(dir: &Path, train: usize, test: usize, side: usize) {
    std::fs::create_dir_all(dir).expect("data folder");
    for (split, n, seed) in [(Split::Train, train, 1u64), (Split::Test, test, 2)] {
        let mut state = seed;
        let mut next = move || {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let labels: Vec<u8> = (0..n).map(|_| (next() % 10) as u8).collect();
        let mut pixels = Vec::with_capacity(n * side * side);
        for &label in &labels {
            for row in 0..side {
                for _ in 0..side {
                    let band = row * 10 / side == label as usize;
                    let noise = (next() % 64) as u8;
                    pixels.push(if band { 191 + noise } else { noise });
                }
            }
        }
        let images = encode_idx(&[n, side, side], &pixels).expect("images");
        let labels = encode_idx(&[n], &labels).expect("labels");
        write_file(
            &dir.join(format!("{}.gz", split.images_file())),
            &gzip(&images),
        );
        write_file(
            &dir.join(format!("{}.gz", split.labels_file())),
            &gzip(&labels),
        );
    }
}

/// Writes `bytes` to `path`.
pub fn write_file(path: &Path, bytes: &[u8]) {
    std::fs::write(path, bytes).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The names in `dir`, sorted.
pub fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

/// What the loopback server answers for one path.
#[derive(Clone, Debug)]
pub enum Reply {
    /// `200 OK` with these bytes and their length.
    Body(Vec<u8>),
    /// `200 OK` announcing `announced` bytes, then only `bytes` before the
    /// connection closes.
    CutShort { bytes: Vec<u8>, announced: usize },
    /// `200 OK` with no length: these bytes, then the connection closes.
    Unannounced(Vec<u8>),
    /// An error status with an empty body.
    Status(u16),
}

/// An HTTP/1.1 server on 127.0.0.1 serving fixed replies, one thread per
/// connection, for the life of the test process.
pub struct Server {
    /// `http://127.0.0.1:PORT/`
    pub url: String,
    requests: Arc<AtomicUsize>,
}

impl Server {
    /// Starts serving `replies` (keyed by path without the leading `/`);
    /// other paths get 404.
    pub fn start(replies: HashMap<String, Reply>) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind loopback");
        let url = format!("http://{}/", listener.local_addr().expect("address"));
        let requests = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&requests);
        let replies = Arc::new(replies);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let replies = Arc::clone(&replies);
                let counter = Arc::clone(&counter);
                std::thread::spawn(move || {
                    let _ = serve(stream, &replies, &counter);
                });
            }
        });
        Server { url, requests }
    }

    /// Requests answered so far.
    pub fn requests(&self) -> usize {
        self.requests.load(Ordering::SeqCst)
    }
}

/// Answers the requests on one connection.
fn serve(
    stream: TcpStream,
    replies: &HashMap<String, Reply>,
    counter: &AtomicUsize,
) -> std::io::Result<()> {
    let mut reader = BufReader::new(stream.try_clone()?);
    let mut out = stream;
    loop {
        let mut request_line = String::new();
        if reader.read_line(&mut request_line)? == 0 {
            return Ok(());
        }
        let mut header = String::new();
        while reader.read_line(&mut header)? > 2 {
            header.clear();
        }
        counter.fetch_add(1, Ordering::SeqCst);
        let path = request_line
            .split_whitespace()
            .nth(1)
            .unwrap_or("/")
            .trim_start_matches('/');
        match replies.get(path).cloned().unwrap_or(Reply::Status(404)) {
            Reply::Body(bytes) => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\n\r\n",
                    bytes.len()
                )?;
                out.write_all(&bytes)?;
            }
            Reply::CutShort { bytes, announced } => {
                write!(
                    out,
                    "HTTP/1.1 200 OK\r\nContent-Length: {announced}\r\nConnection: close\r\n\r\n"
                )?;
                out.write_all(&bytes)?;
                return Ok(());
            }
            Reply::Unannounced(bytes) => {
                write!(out, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")?;
                out.write_all(&bytes)?;
                return Ok(());
            }
            Reply::Status(code) => {
                write!(
                    out,
                    "HTTP/1.1 {code} Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                )?;
                return Ok(());
            }
        }
        out.flush()?;
    }
}

/// The four files of Debian's `dataset-fashion-mnist`, if installed.
pub fn debian_files() -> Option<HashMap<String, Reply>> {
    let dir = PathBuf::from(advgrad::data::SYSTEM_DATA_DIR);
    advgrad::data::STANDARD_FILES
        .iter()
        .map(|name| {
            let mut bytes = Vec::new();
            std::fs::File::open(dir.join(name))
                .and_then(|mut f| f.read_to_end(&mut bytes))
                .ok()?;
            Some((name.to_string(), Reply::Body(bytes)))
        })
        .collect()
}

/// Debian's Fashion-MNIST files, or `None` after a note that the calling
/// test skips; under `CI=true` (CI installs the package) their absence
/// fails the test instead.
pub fn debian_files_or_skip(test: &str) -> Option<HashMap<String, Reply>> {
    let files = debian_files();
    if files.is_none() {
        let why = format!(
            "{test}: Debian's dataset-fashion-mnist is not installed in {}",
            advgrad::data::SYSTEM_DATA_DIR
        );
        let ci = std::env::var("CI").is_ok_and(|v| !v.is_empty() && v != "false" && v != "0");
        if ci {
            panic!("{why}, and CI=true");
        }
        eprintln!("skipping {why}");
    }
    files
}

/// Saves a freshly initialised `arch` ReLU model to `path`.
pub fn write_model(path: &Path, arch: &str) {
    let model = advgrad::nn::Model::new(arch, advgrad::nn::Activation::Relu, 0).expect("model");
    advgrad::nn::save_model(&model, path).expect("save model");
}
