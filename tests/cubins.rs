//! With the `cuda` feature: every embedded cubin is a CUDA ELF for the
//! architecture it is filed under, as NVIDIA's own `cuobjdump` reads it
//! (an independent check of the e_flags parsing that picks images at run
//! time), and holds the code of every entry point of its module.
//!
//! cuobjdump comes from `eval "$(scripts/cuda-env.sh)"` (it sets
//! `ADVGRAD_CUOBJDUMP`). Without it the test says so and passes, except
//! under `CI=true`, where a missing tool is a failure.
#![cfg(feature = "cuda")]

use std::process::Command;

use advgrad::backend::cuda::ptx::{CUBINS, CUBIN_ARCHS};

#[test]
fn cuobjdump_reads_each_cubin_as_its_architecture() {
    let Ok(cuobjdump) = std::env::var("ADVGRAD_CUOBJDUMP") else {
        let why = "ADVGRAD_CUOBJDUMP is unset: run `eval \"$(scripts/cuda-env.sh)\"` first";
        assert!(std::env::var("CI").is_err(), "{why}");
        eprintln!("skipped: {why}");
        return;
    };
    assert!(!CUBINS.is_empty() && !CUBIN_ARCHS.is_empty());
    let dir = std::env::temp_dir().join(format!("advgrad-cubins-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for &(module, arch, bytes) in CUBINS {
        let file = dir.join(format!("{module}.{arch}.cubin"));
        std::fs::write(&file, bytes).unwrap();
        let out = Command::new(&cuobjdump)
            .arg("-elf")
            .arg(&file)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{cuobjdump}`: {e}"));
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "cuobjdump -elf {module}.{arch}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // "64bit elf: type=2, abi=7, sm=90, toolkit=129, flags = 0x5a055a"
        let sm = arch.trim_start_matches("sm_");
        assert!(
            text.contains(&format!(", sm={sm},")),
            "{module}.{arch}: cuobjdump reads another architecture:\n{}",
            text.lines().take(3).collect::<Vec<_>>().join("\n")
        );
        let kernels = kernels::MODULES
            .iter()
            .find(|m| m.name == module)
            .unwrap_or_else(|| panic!("{module} is not a kernels module"));
        for entry in kernels.entry_points() {
            assert!(
                text.contains(&format!(".text.{entry}\n")),
                "{module}.{arch}: no code section for {entry}"
            );
        }
    }
    std::fs::remove_dir_all(&dir).ok();
}
