//! `advgrad bench` end to end: every op it lists runs on the CPU and on the
//! emulated device (with small sizes), each kernel op beside its yardstick
//! and with the byte and FLOP counts its docs state, and a GPU it cannot
//! use is a clear error (or, for `--op machine`, a reason in the row).
//! The training and attack ops need Fashion-MNIST: without it they skip
//! with a note, and fail under `CI=true`.

mod support;

use std::process::Command;

use advgrad::data::Split;
use serde_json::Value;

fn bench(args: &[&str]) -> (bool, Vec<Value>, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_advgrad"))
        .arg("bench")
        .args(args)
        .output()
        .expect("the binary runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let rows = stdout
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    (out.status.success(), rows, stderr)
}

fn num(row: &Value, key: &str) -> f64 {
    row[key]
        .as_f64()
        .unwrap_or_else(|| panic!("`{key}` is not a number in {row}"))
}

/// The rows of a successful `--json` run after the machine row.
fn results(args: &[&str]) -> Vec<Value> {
    let mut all = vec!["--json", "--repeat", "1"];
    all.extend_from_slice(args);
    let (ok, rows, stderr) = bench(&all);
    assert!(ok, "advgrad bench {all:?} failed: {stderr}");
    assert_eq!(rows[0]["op"], "machine", "{rows:?}");
    assert!(rows[0]["cpu_threads"].as_u64().is_some_and(|n| n >= 1));
    let gemm = rows[0]["cpu_gemm"].as_str().unwrap_or_default();
    assert!(
        gemm.contains("f32 kernel") && gemm.contains("bf16 kernel"),
        "{rows:?}"
    );
    rows[1..].to_vec()
}

#[test]
fn every_kernel_and_model_op_is_listed() {
    let out = Command::new(env!("CARGO_BIN_EXE_advgrad"))
        .args(["bench", "--list-ops"])
        .output()
        .unwrap();
    let ops = String::from_utf8_lossy(&out.stdout);
    let ops: Vec<&str> = ops.lines().collect();
    assert_eq!(
        ops,
        [
            "matmul",
            "relu",
            "sigmoid",
            "tanh",
            "gelu",
            "softmax_cross_entropy",
            "train_step",
            "epoch",
            "fgsm",
            "pgd",
            "machine"
        ]
    );
}

#[test]
fn matmul_reports_gflops_and_why_cublas_is_absent() {
    for device in ["cpu", "emu"] {
        let rows = results(&["--op", "matmul", "--device", device, "--sizes", "16,3x5x7"]);
        assert_eq!(rows.len(), 2, "{rows:?}");
        for (row, (m, k, n)) in rows.iter().zip([(16, 16, 16), (3, 5, 7)]) {
            assert_eq!(row["op"], "matmul");
            assert_eq!(row["device"], device);
            assert_eq!(
                (row["m"].as_u64(), row["k"].as_u64(), row["n"].as_u64()),
                (Some(m), Some(k), Some(n))
            );
            let flop = 2.0 * (m * k * n) as f64;
            let gflops = num(row, "gflops");
            assert!((gflops - flop / num(row, "seconds") / 1e9).abs() <= 1e-9 * gflops.max(1.0));
            let why = row["cublas_unavailable"].as_str().unwrap_or_default();
            assert!(why.contains("runs on a GPU"), "{row}");
            assert!(row.get("cublas_gflops").is_none(), "{row}");
        }
        // In a half precision each size is timed with f32 operands and with
        // operands stored in the half type.
        let rows = results(&[
            "--op",
            "matmul",
            "--device",
            device,
            "--precision",
            "bf16",
            "--sizes",
            "3x5x7",
        ]);
        let operands: Vec<_> = rows.iter().map(|r| r["operands"].clone()).collect();
        assert_eq!(operands, ["f32", "bf16"], "{rows:?}");
        assert!(rows.iter().all(|r| r["precision"] == "bf16"), "{rows:?}");
    }
}

#[test]
fn memory_bound_ops_report_bandwidth_beside_a_copy() {
    for device in ["cpu", "emu"] {
        for op in ["relu", "sigmoid", "tanh", "gelu", "softmax_cross_entropy"] {
            let rows = results(&["--op", op, "--device", device, "--sizes", "9,3x17"]);
            assert_eq!(rows.len(), 2, "{op} {device}: {rows:?}");
            for (row, (r, c)) in rows.iter().zip([(9u64, 9u64), (3, 17)]) {
                assert_eq!(row["op"], op);
                let bytes = if op == "softmax_cross_entropy" {
                    (2 * r * c + r + 1) * 4
                } else {
                    2 * r * c * 4
                };
                assert_eq!(row["bytes"].as_u64(), Some(bytes), "{row}");
                let gbps = num(row, "gbps");
                assert!(
                    (gbps - bytes as f64 / num(row, "seconds") / 1e9).abs() <= 1e-9 * gbps.max(1.0)
                );
                let ratio = num(row, "ratio_to_copy");
                assert!(
                    (ratio - gbps / num(row, "copy_gbps")).abs() <= 1e-9 * ratio.max(1.0),
                    "{row}"
                );
                assert!(row["copy"].as_str().unwrap().starts_with("memcpy"), "{row}");
            }
        }
    }
}

#[test]
fn model_ops_run_on_the_cpu_and_the_emulated_device() {
    if support::fashion_mnist(Split::Test).is_none() {
        return;
    }
    for device in ["cpu", "emu"] {
        for (op, limit, name) in [
            ("train_step", "128", "train_step"),
            ("epoch", "128", "epoch"),
            ("fgsm", "64", "fgsm"),
            ("pgd", "8", "pgd2"),
        ] {
            let rows = results(&[
                "--op", op, "--device", device, "--limit", limit, "--steps", "2",
            ]);
            assert_eq!(rows.len(), 1, "{op} {device}: {rows:?}");
            assert_eq!(rows[0]["op"], name);
            assert_eq!(rows[0]["device"], device);
            assert!(num(&rows[0], "seconds") > 0.0);
            if op != "train_step" {
                assert_eq!(
                    rows[0]["examples"].as_u64(),
                    limit.parse().ok(),
                    "{}",
                    rows[0]
                );
            }
        }
    }
}

#[test]
fn a_gpu_that_cannot_be_used_is_a_clear_error() {
    let (ok, rows, stderr) = bench(&["--op", "machine", "--device", "cuda", "--json"]);
    assert!(ok, "{stderr}");
    if rows[0].get("gpu").is_some() {
        return; // a usable GPU: nothing to check here
    }
    let why = rows[0]["gpu_unavailable"].as_str().expect("a reason");
    assert!(why.starts_with("cuda:0: "), "{why}");
    let (ok, _, stderr) = bench(&["--op", "relu", "--device", "cuda", "--sizes", "8"]);
    assert!(!ok);
    assert!(
        stderr.contains("cuda:0") && !stderr.contains("panicked"),
        "{stderr}"
    );
}

#[test]
fn bad_sizes_and_ops_are_refused() {
    let (ok, _, stderr) = bench(&["--op", "matmul", "--device", "cpu", "--sizes", "3x5"]);
    assert!(!ok);
    assert!(
        stderr.contains("`3x5` is not a size for matmul"),
        "{stderr}"
    );
    let (ok, _, stderr) = bench(&["--op", "conv", "--device", "cpu"]);
    assert!(!ok);
    assert!(stderr.contains("possible values"), "{stderr}");
}

#[test]
fn the_lean_epoch_times_full_synthetic_batches_of_any_mlp() {
    // 100 examples of 784-24-24-10 in batches of 32.
    let lean = |device: &str| {
        results(&[
            "--op",
            "epoch",
            "--synthetic",
            "--device",
            device,
            "--arch",
            "784-24-24-10",
            "--batch",
            "32",
            "--limit",
            "100",
        ])
    };
    let rows = lean("cpu");
    let row = &rows[0];
    assert_eq!(row["protocol"], "lean", "{row}");
    assert_eq!(row["arch"], "784-24-24-10", "{row}");
    assert_eq!(
        num(row, "steps"),
        3.0,
        "100 examples make 3 full batches of 32: {row}"
    );
    assert_eq!(num(row, "examples"), 96.0, "{row}");
    assert!(
        num(row, "seconds") > 0.0 && num(row, "gflops") > 0.0,
        "{row}"
    );
    assert!(
        row["device_per_step"].is_null(),
        "no pool on the CPU: {row}"
    );

    // On a device the steps read nothing back, upload nothing (the batches
    // are there already, the backward pass's seed is filled there) and
    // allocate nothing once warm (the first product, 32×784·784×24, is
    // split: its workspace comes from the pool).
    let rows = lean("emu");
    let per_step = &rows[0]["device_per_step"];
    assert_eq!(num(per_step, "blocking_reads"), 0.0, "{per_step}");
    assert_eq!(num(per_step, "allocations"), 0.0, "{per_step}");
    assert_eq!(num(per_step, "uploads"), 0.0, "{per_step}");
    assert!(num(per_step, "kernel_outputs") > 10.0, "{per_step}");

    let (ok, _, stderr) = bench(&[
        "--op",
        "epoch",
        "--synthetic",
        "--device",
        "cpu",
        "--batch",
        "64",
        "--limit",
        "10",
    ]);
    assert!(!ok);
    assert!(stderr.contains("make no full batch of 64"), "{stderr}");
    let (ok, _, stderr) = bench(&["--op", "train_step", "--device", "cpu", "--batch", "0"]);
    assert!(!ok);
    assert!(stderr.contains("--batch must be at least 1"), "{stderr}");
}
