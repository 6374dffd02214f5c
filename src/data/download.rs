//! Downloading Fashion-MNIST on first use, verified by SHA-256.
//!
//! Each file is fetched over HTTP(S) ([`ureq`] with rustls), hashed while
//! it streams into a temporary file in the destination folder, and renamed
//! into place ([`crate::atomic_file`]) only once its length and digest match
//! a known-good copy: a
//! corrupt, truncated or oversized transfer leaves nothing behind, and the
//! error names the file, the URL and both digests.
//!
//! Proxies come from the environment as [`ureq`] reads it: the first of
//! `ALL_PROXY`, `HTTPS_PROXY`, `HTTP_PROXY` (or their lower-case forms) that
//! is set, for every URL, and `NO_PROXY` for the hosts that bypass it.
//! Timeouts: 30 s to connect, 60 s for the response to start and for each
//! read of the body (a slow but moving transfer is never cut off).

use std::io::Read;
use std::path::Path;
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};

use crate::atomic_file::write_atomic;
use crate::error::{Error, Result};

/// The canonical Fashion-MNIST location (Zalando Research's bucket); the
/// four file names are appended to it.
pub const FASHION_MNIST_URL: &str = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/";

/// The environment variable that replaces [`FASHION_MNIST_URL`]: a base URL
/// to which the file names are appended (a mirror, or a local server).
pub const DATA_URL_ENV: &str = "ADVGRAD_DATA_URL";

/// One known-good copy of a file: its length and SHA-256.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct KnownCopy {
    /// Where this copy comes from, for messages.
    pub source: &'static str,
    /// Length in bytes.
    pub bytes: u64,
    /// SHA-256, lower-case hex.
    pub sha256: &'static str,
}

/// A file to download and the copies of it that are accepted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RemoteFile {
    /// The file name, appended to the base URL and used in the folder.
    pub name: &'static str,
    /// Accepted copies; a download must match one of them exactly.
    pub copies: &'static [KnownCopy],
}

impl RemoteFile {
    /// The most bytes any accepted copy has.
    fn max_bytes(&self) -> u64 {
        self.copies.iter().map(|c| c.bytes).max().unwrap_or(0)
    }
}

/// Fashion-MNIST's four files. Each has two accepted copies with the same
/// images and labels: the files at [`FASHION_MNIST_URL`] (digests as
/// published by data loaders that fetch from it), and the copies in Debian's
/// `dataset-fashion-mnist`, whose gzip headers were normalised (no file
/// name, a fixed time stamp) around the very same deflate streams, so a
/// mirror of either verifies.
pub const FASHION_MNIST_FILES: [RemoteFile; 4] = [
    RemoteFile {
        name: "train-images-idx3-ubyte.gz",
        copies: &[
            KnownCopy {
                source: "fashion-mnist.s3",
                bytes: 26_421_880,
                sha256: "08dc20ab1689590a0bcd66e874647b6ee8464e2d501b5a3f1f78831db19a3fdc",
            },
            KnownCopy {
                source: "Debian dataset-fashion-mnist",
                bytes: 26_421_856,
                sha256: "b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7",
            },
        ],
    },
    RemoteFile {
        name: "train-labels-idx1-ubyte.gz",
        copies: &[
            KnownCopy {
                source: "fashion-mnist.s3",
                bytes: 29_515,
                sha256: "b0197879cbda89f3dc7b894f9fd52b858e68ea4182b6947c9d8c2b67e5f18dcc",
            },
            KnownCopy {
                source: "Debian dataset-fashion-mnist",
                bytes: 29_491,
                sha256: "0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056",
            },
        ],
    },
    RemoteFile {
        name: "t10k-images-idx3-ubyte.gz",
        copies: &[
            KnownCopy {
                source: "fashion-mnist.s3",
                bytes: 4_422_102,
                sha256: "78dcbbfb5a27efaf1b6c1d616caca68560be8766c5bffcb2791df9273a534229",
            },
            KnownCopy {
                source: "Debian dataset-fashion-mnist",
                bytes: 4_422_079,
                sha256: "cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa",
            },
        ],
    },
    RemoteFile {
        name: "t10k-labels-idx1-ubyte.gz",
        copies: &[
            KnownCopy {
                source: "fashion-mnist.s3",
                bytes: 5_148,
                sha256: "42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf",
            },
            KnownCopy {
                source: "Debian dataset-fashion-mnist",
                bytes: 5_125,
                sha256: "8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05",
            },
        ],
    },
];

/// The base URL to download from: `$ADVGRAD_DATA_URL` if set and not
/// empty, else [`FASHION_MNIST_URL`].
pub fn data_url() -> String {
    match std::env::var(DATA_URL_ENV) {
        Ok(url) if !url.is_empty() => url,
        _ => FASHION_MNIST_URL.to_string(),
    }
}

/// `base` and `name` joined by exactly one `/`.
fn join_url(base: &str, name: &str) -> String {
    format!("{}/{name}", base.trim_end_matches('/'))
}

/// Downloads each of `files` missing from `dir` (created if needed) from
/// `base_url`, verifying each against its known copies before it appears
/// under its name; files already present are kept. Progress bars go to
/// stderr unless `quiet`.
///
/// # Errors
/// [`Error::Download`] naming the URL when the server cannot be reached (the
/// message says how to install the data without a network), answers with an
/// error status, or sends a file whose length or SHA-256 matches no known
/// copy (both digests are named; nothing is written); [`Error::Io`] if
/// `dir` cannot be created or written.
pub fn download_missing(
    base_url: &str,
    dir: &Path,
    files: &[RemoteFile],
    quiet: bool,
) -> Result<()> {
    let missing: Vec<&RemoteFile> = files
        .iter()
        .filter(|f| !dir.join(f.name).is_file())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(dir).map_err(|source| Error::Io {
        path: dir.to_path_buf(),
        source,
    })?;
    if !quiet {
        let total: u64 = missing.iter().map(|f| f.max_bytes()).sum();
        eprintln!(
            "downloading {} file(s), {}, from {base_url} into {} (each verified by SHA-256)",
            missing.len(),
            indicatif::HumanBytes(total),
            dir.display()
        );
    }
    let agent = agent();
    for file in missing {
        download_one(&agent, base_url, dir, file, quiet)?;
    }
    Ok(())
}

/// An HTTP agent with advgrad's timeouts and the environment's proxy.
fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("advgrad/", env!("CARGO_PKG_VERSION")))
        .build()
        .into()
}

/// How to get the data without a network, for error messages.
pub fn offline_help() -> String {
    format!(
        "Without network access, install Debian's package instead: \
         `sudo apt-get install dataset-fashion-mnist` (it puts the files in {}), \
         or copy the four files into a folder and pass --data DIR",
        super::SYSTEM_DATA_DIR
    )
}

fn download_one(
    agent: &ureq::Agent,
    base_url: &str,
    dir: &Path,
    file: &RemoteFile,
    quiet: bool,
) -> Result<()> {
    let url = join_url(base_url, file.name);
    let fail = |msg: String| Error::Download {
        url: url.clone(),
        msg,
    };
    let response = agent.get(&url).call().map_err(|e| match e {
        ureq::Error::StatusCode(code) => fail(format!("the server answered HTTP {code}")),
        other => fail(format!("{other}. {}", offline_help())),
    })?;
    let most = file.max_bytes();
    let announced = response.body().content_length();
    if let Some(len) = announced.filter(|&len| len > most) {
        return Err(fail(format!(
            "the server announces {len} bytes, more than the {most} of any known copy of {}",
            file.name
        )));
    }
    let bar = byte_bar(announced.unwrap_or(most), file.name, quiet);
    let target = dir.join(file.name);
    let mut body = response.into_body().into_reader().take(most + 1);
    let mut digest = String::new();
    let mut received = 0u64;
    let written = write_atomic(&target, |out| {
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 64 << 10];
        loop {
            let n = match body.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    return Err(fail(format!(
                        "the transfer broke off after {received} bytes: {e}; nothing was written"
                    )))
                }
            };
            hasher.update(&buf[..n]);
            out.write_all(&buf[..n]).map_err(|source| Error::Io {
                path: target.clone(),
                source,
            })?;
            received += n as u64;
            bar.set_position(received);
        }
        if received > most {
            return Err(fail(format!(
                "more than the {most} bytes of any known copy of {}; nothing was written",
                file.name
            )));
        }
        digest = format!("{:x}", hasher.finalize());
        verify(file, received, &digest).map_err(fail)
    });
    bar.finish_and_clear();
    written?;
    if !quiet {
        eprintln!(
            "  {}: {received} bytes, SHA-256 {digest} verified",
            file.name
        );
    }
    Ok(())
}

/// Checks a received file's length and digest against the known copies;
/// the error says what was expected and what came.
fn verify(file: &RemoteFile, received: u64, digest: &str) -> std::result::Result<(), String> {
    if file
        .copies
        .iter()
        .any(|c| c.bytes == received && c.sha256 == digest)
    {
        return Ok(());
    }
    let expected = file
        .copies
        .iter()
        .map(|c| format!("{} bytes with SHA-256 {} ({})", c.bytes, c.sha256, c.source))
        .collect::<Vec<_>>()
        .join(" or ");
    let what = if file.copies.iter().all(|c| received < c.bytes) {
        "truncated transfer"
    } else {
        "SHA-256 mismatch"
    };
    Err(format!(
        "{what} for {}: received {received} bytes with SHA-256 {digest}, expected {expected}; \
         nothing was written",
        file.name
    ))
}

/// A progress bar of bytes on stderr (hidden when `quiet` or when stderr
/// is not a terminal).
fn byte_bar(len: u64, name: &str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(
            "  {prefix} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ({eta})",
        )
        .expect("the template is valid")
        .progress_chars("=> "),
    );
    bar.set_prefix(name.to_string());
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_join_with_one_slash() {
        assert_eq!(join_url("http://h/a/", "f.gz"), "http://h/a/f.gz");
        assert_eq!(join_url("http://h/a", "f.gz"), "http://h/a/f.gz");
    }

    #[test]
    fn verification_names_truncation_and_mismatch() {
        let file = &FASHION_MNIST_FILES[3];
        let copy = file.copies[0];
        assert!(verify(file, copy.bytes, copy.sha256).is_ok());
        let msg = verify(file, 100, "00").unwrap_err();
        assert!(
            msg.starts_with("truncated transfer for t10k-labels"),
            "{msg}"
        );
        let msg = verify(file, copy.bytes, "00").unwrap_err();
        assert!(
            msg.starts_with("SHA-256 mismatch") && msg.contains(copy.sha256),
            "{msg}"
        );
    }

    #[test]
    fn the_debian_copies_verify_where_installed() {
        let dir = Path::new(super::super::SYSTEM_DATA_DIR);
        if !dir.is_dir() {
            println!("skipped: {} is not installed", dir.display());
            return;
        }
        for file in &FASHION_MNIST_FILES {
            let bytes = std::fs::read(dir.join(file.name)).unwrap();
            let digest = format!("{:x}", Sha256::digest(&bytes));
            assert_eq!(
                verify(file, bytes.len() as u64, &digest),
                Ok(()),
                "{}",
                file.name
            );
        }
    }
}
