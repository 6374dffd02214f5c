//! With the `cuda` feature: every embedded PTX module assembles with ptxas
//! for sm_80 and sm_90 without a single register spill.
//!
//! ptxas comes from `eval "$(scripts/cuda-env.sh)"` (it sets
//! `ADVGRAD_PTXAS`), or from `PATH`. `scripts/ptxas-check.sh` runs the same
//! check and also writes the register report, `kernels/ptxas-report.txt`.
#![cfg(feature = "cuda")]

use std::process::Command;

use advgrad::backend::cuda::ptx::PTX_MODULES;

#[test]
fn every_kernel_assembles_without_spills() {
    let ptxas = std::env::var("ADVGRAD_PTXAS").unwrap_or_else(|_| "ptxas".into());
    let dir = std::env::temp_dir().join(format!("advgrad-ptxas-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    assert!(!PTX_MODULES.is_empty());
    for (name, ptx) in PTX_MODULES {
        let file = dir.join(format!("{name}.ptx"));
        std::fs::write(&file, ptx).unwrap();
        for arch in ["sm_80", "sm_90"] {
            let out = Command::new(&ptxas)
                .args(["-v", &format!("-arch={arch}"), "-o", "/dev/null"])
                .arg(&file)
                .output()
                .unwrap_or_else(|e| {
                    panic!(
                        "cannot run `{ptxas}` ({e}): run `eval \"$(scripts/cuda-env.sh)\"` first"
                    )
                });
            let log = String::from_utf8_lossy(&out.stderr);
            assert!(out.status.success(), "ptxas {arch} {name}:\n{log}");
            for line in log.lines().filter(|l| l.contains("spill")) {
                let spills = line.split(',').any(|part| {
                    let part = part.trim();
                    part.contains("spill") && !part.starts_with('0')
                });
                assert!(!spills, "{name} spills registers on {arch}: {line}");
            }
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
