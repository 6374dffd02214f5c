//! The data download on first use, against a loopback HTTP server: a good
//! download of the real files, the fresh-machine demo, and every way a
//! transfer can fail leaving nothing behind.

mod sandbox;

use std::collections::HashMap;
use std::path::Path;

use sandbox::{advgrad, advgrad_on_a_fresh_machine, entries, Reply, Run, Server};
use sha2::{Digest, Sha256};

const STANDARD: [&str; 4] = advgrad::data::STANDARD_FILES;

/// `advgrad eval --download --data DIR` with a small model, against `url`.
fn eval_downloading(dir: &Path, model: &Path, url: &str) -> Run {
    Run::of(
        advgrad()
            .env("ADVGRAD_DATA_URL", url)
            .args([
                "eval",
                "--download",
                "--limit",
                "50",
                "--device",
                "cpu",
                "--json",
            ])
            .arg("--data")
            .arg(dir)
            .arg("--model")
            .arg(model),
    )
}

/// A folder holding a model and every data file but `missing` (stand-ins:
/// present files are not downloaded again), and a server answering `reply`
/// for `missing`.
fn one_file_to_fetch(missing: &str, reply: Reply) -> (tempfile::TempDir, Server) {
    let home = sandbox::temp_dir();
    let data = home.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    for name in STANDARD.iter().filter(|n| **n != missing) {
        sandbox::write_file(&data.join(name), b"stand-in");
    }
    sandbox::write_model(&home.path().join("m.safetensors"), "784-10");
    let server = Server::start(HashMap::from([(missing.to_string(), reply)]));
    (home, server)
}

fn fetch_fails(missing: &str, reply: Reply) -> (Run, Vec<String>, String) {
    let (home, server) = one_file_to_fetch(missing, reply);
    let data = home.path().join("data");
    let run = eval_downloading(&data, &home.path().join("m.safetensors"), &server.url);
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let line = run.error_line().unwrap_or_default().to_string();
    (run, entries(&data), line)
}

#[test]
fn a_good_download_is_verified_and_not_repeated() {
    let Some(files) = sandbox::debian_files_or_skip("a_good_download") else {
        return;
    };
    let digests: HashMap<String, String> = files
        .iter()
        .map(|(name, reply)| match reply {
            Reply::Body(b) => (name.clone(), format!("{:x}", Sha256::digest(b))),
            other => panic!("{other:?}"),
        })
        .collect();
    let server = Server::start(files);
    let home = sandbox::temp_dir();
    let data = home.path().join("downloaded");
    let model = home.path().join("m.safetensors");
    sandbox::write_model(&model, "784-10");

    let run = eval_downloading(&data, &model, &server.url);
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(server.requests(), 4);
    assert_eq!(entries(&data), {
        let mut s = STANDARD.map(String::from).to_vec();
        s.sort();
        s
    });
    for name in STANDARD {
        let bytes = std::fs::read(data.join(name)).unwrap();
        assert_eq!(
            format!("{:x}", Sha256::digest(&bytes)),
            digests[name],
            "{name}"
        );
    }

    let again = eval_downloading(&data, &model, &server.url);
    assert_eq!(again.code, Some(0), "{}", again.stderr);
    assert_eq!(server.requests(), 4, "the second run downloads nothing");
}

#[test]
fn the_demo_downloads_verifies_and_runs_on_a_fresh_machine() {
    let Some(files) = sandbox::debian_files_or_skip("the_demo_on_a_fresh_machine") else {
        return;
    };
    let server = Server::start(files);
    let home = sandbox::temp_dir();
    let out = home.path().join("demo");
    let run = Run::of(
        advgrad_on_a_fresh_machine(home.path())
            .env("ADVGRAD_DATA_URL", &server.url)
            .args([
                "demo",
                "--epochs",
                "1",
                "--train-limit",
                "2000",
                "--limit",
                "200",
            ])
            .args(["--eps", "0.05", "--device", "cpu", "--quiet", "--out-dir"])
            .arg(&out),
    );
    assert_eq!(run.code, Some(0), "{}", run.stderr);
    assert_eq!(server.requests(), 4);
    let cache = home.path().join("cache/advgrad/fashion-mnist");
    for name in STANDARD {
        assert!(cache.join(name).is_file(), "{name} in {}", cache.display());
    }
    assert!(run.stdout.contains("adv-trained"), "{}", run.stdout);
    for file in ["grid.png", "curve.png", "results.json"] {
        assert!(out.join(file).is_file(), "{file}");
    }

    // Without the download (any other command), the same machine is told
    // how to get the data.
    let other = Run::of(
        advgrad_on_a_fresh_machine(&home.path().join("elsewhere"))
            .args(["train", "--epochs", "1", "--out"])
            .arg(home.path().join("m.safetensors")),
    );
    assert_eq!(other.code, Some(1), "{}", other.stderr);
    let line = other.error_line().unwrap_or_default();
    assert!(
        line.contains("--download") && line.contains("apt-get install dataset-fashion-mnist"),
        "{line}"
    );
}

#[test]
fn a_digest_mismatch_names_the_file_and_both_digests_and_writes_nothing() {
    let file = "t10k-labels-idx1-ubyte.gz";
    let garbage = vec![7u8; 5125];
    let got = format!("{:x}", Sha256::digest(&garbage));
    let (_, left, line) = fetch_fails(file, Reply::Body(garbage));
    assert!(
        line.contains("SHA-256 mismatch")
            && line.contains(file)
            && line.contains(&got)
            && line.contains("42bd18137a62d5998cdeae52bf3a0676ac6b706f5cf8439b47bb5b151ae3dccf"),
        "{line}"
    );
    assert!(!left.iter().any(|n| n.contains("t10k-labels")), "{left:?}");
}

#[test]
fn a_truncated_transfer_writes_nothing() {
    let file = "t10k-labels-idx1-ubyte.gz";
    let reply = Reply::CutShort {
        bytes: vec![1u8; 1000],
        announced: 5148,
    };
    let (_, left, line) = fetch_fails(file, reply);
    assert!(line.contains(file) && line.contains("1000 bytes"), "{line}");
    assert!(line.contains("nothing was written"), "{line}");
    assert!(!left.iter().any(|n| n.contains("t10k-labels")), "{left:?}");
}

#[test]
fn an_endless_or_oversized_transfer_is_cut_off() {
    let file = "t10k-labels-idx1-ubyte.gz";
    let (_, left, line) = fetch_fails(file, Reply::Unannounced(vec![0u8; 100_000]));
    assert!(line.contains("more than the 5148 bytes"), "{line}");
    assert!(!left.iter().any(|n| n.contains("t10k-labels")), "{left:?}");
    let (_, _, line) = fetch_fails(file, Reply::Body(vec![0u8; 100_000]));
    assert!(line.contains("announces 100000 bytes"), "{line}");
}

#[test]
fn an_http_error_is_named() {
    let (_, _, line) = fetch_fails("t10k-labels-idx1-ubyte.gz", Reply::Status(403));
    assert!(
        line.contains("HTTP 403") && line.contains("127.0.0.1"),
        "{line}"
    );
}

#[test]
fn an_unreachable_server_says_how_to_install_the_data_offline() {
    // A port that was just free: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap()
        .port();
    let home = sandbox::temp_dir();
    let model = home.path().join("m.safetensors");
    sandbox::write_model(&model, "784-10");
    let run = eval_downloading(
        &home.path().join("data"),
        &model,
        &format!("http://127.0.0.1:{port}/"),
    );
    assert_eq!(run.code, Some(1), "{}", run.stderr);
    let line = run.error_line().unwrap_or_default();
    assert!(
        line.contains("apt-get install dataset-fashion-mnist") && line.contains("--data DIR"),
        "{line}"
    );
}
