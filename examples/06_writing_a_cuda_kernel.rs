//! Chapter 6, writing a CUDA kernel: GELU forward and backward, from CUDA C
//! to a checked kernel, with no GPU needed until the last step.
//!
//! ```text
//! cargo run --release --example 06_writing_a_cuda_kernel
//! ```
//!
//! The bring-your-own-kernel workflow, step by step, on
//! `GELU(x) = ½·x·(1 + tanh(k·(x + a·x³)))`, `k = √(2/π)`, `a = 0.044715`:
//!
//! 1. **Write the kernel in CUDA C++**: `kernels/gelu.cu`. A template on the
//!    element type `T`, one thread per element in the grid-stride loop
//!    `ADV_FOR_EACH` of `kernels/common.cuh` (which also gives `tanh_` for
//!    both types), and `extern "C"` wrappers `gelu_fwd_f32`, `gelu_fwd_f64`,
//!    `gelu_bwd_f32`, `gelu_bwd_f64`. The backward reads the forward's
//!    input `x` and the output gradient `g` and writes
//!    `dx = g·GELU'(x)`; the file's header states the math and what NaN
//!    and ±∞ give.
//! 2. **Describe its launches in Rust**: `kernels/gelu.rs`. A grid-stride
//!    kernel is data, a [`GridStride`](kernels::GridStride): its base name
//!    and its parameters in order (`input("x")`, `output("y")`,
//!    `Slot::Count`); `plan(dtype, extent, scalars)` turns it into the
//!    [`LaunchPlan`] (grid, block of 256 threads, arguments) that every
//!    launcher runs. List the file in `MODULES` in `kernels/lib.rs`: the
//!    `kernels` crate's tests fail if a `.cu` is missing from the list, and
//!    `build.rs`, the GPU loader and the emulator all go by it.
//! 3. **Run it on the SIMT emulator against a CPU reference** (this
//!    example, and `tests/simt_gelu.rs` in CI): `crates/simt` compiles every
//!    listed `.cu` as C++ and runs a plan on CPU threads with
//!    [`simt::run`], checking the arguments against the kernel's signature,
//!    poisoning outputs with NaN and guarding every buffer. Compare with a
//!    reference written from the math (`kernels::gelu::reference`), on odd
//!    sizes and on the values that break formulas (0, ±∞, NaN, large |x|).
//! 4. **Check the derivative**: the backward against central differences
//!    of the forward, here on the emulated kernels themselves, in f64.
//! 5. **Check for races**: `scripts/simt-tsan.sh` runs kernels on the
//!    emulator under ThreadSanitizer (a grid-stride kernel has no shared
//!    memory or barriers, so it has nothing to race on).
//! 6. **Compile it for a GPU and read ptxas's report**:
//!    `eval "$(scripts/cuda-env.sh)"` installs NVRTC and ptxas from PyPI;
//!    `cargo build --features cuda` makes `build.rs` compile the new file
//!    to PTX and cubins and embed them; `scripts/ptxas-check.sh` assembles
//!    every kernel for sm_80 and sm_90, fails on register spills and
//!    rewrites `kernels/ptxas-report.txt` (registers, shared memory,
//!    occupancy), which CI keeps current. This example runs ptxas on
//!    `target/ptx/gelu.ptx` when it finds both (`$ADVGRAD_PTXAS` or `ptxas`
//!    on `PATH`, `$ADVGRAD_PTX_DIR` or `target/ptx`), and otherwise says so
//!    and prints the committed report's rows for GELU.
//! 7. **Make it an op, and time it on a GPU**: a kernel that the tape's
//!    ops launch can be timed by `advgrad bench`. GELU is the op `gelu`:
//!    `Tensor::gelu`, `Tensor::gelu_backward(x)` and `Tape::gelu` in
//!    `src/ops/activation.rs`, `Op::Gelu` with its rule in `src/ops/mod.rs`
//!    (the backward reads the saved input `x`), `BackendStorage::gelu` and
//!    `gelu_backward` in `src/backend/mod.rs`, the same formula in the same
//!    order on the CPU (`src/backend/cpu/kernels.rs`), and the launches of
//!    `GELU_FWD` and `GELU_BWD` in `src/backend/cuda/ops.rs`, which run on
//!    a GPU and on `--device emu` alike (README, "Adding an op with its
//!    backward"). `tests/gradcheck_ops.rs` checks its rule in f64 and
//!    `tests/cuda_parity.rs` the CUDA backend against the CPU's;
//!    `src/cli/bench/kernels.rs` times it beside `relu`:
//!    `advgrad bench --op gelu --device cuda` reports GB/s beside a
//!    device-to-device copy of the same bytes (`--device cpu` or `emu`
//!    beside a memcpy). GELU is not an `Activation` (`--act`): the fused
//!    bias-and-activation kernels save their output, and GELU's input
//!    cannot be recovered from it. This example runs the op on the emulated
//!    device against the kernel above, prints the command that times it,
//!    and reports whether a GPU is present.

use std::path::{Path, PathBuf};
use std::process::Command;

use kernels::gelu::{reference, reference_derivative, GELU_BWD, GELU_FWD};
use kernels::grid_stride::Extent;
use kernels::{DType, LaunchPlan};
use simt::Buf;

type Failure = Box<dyn std::error::Error>;

/// Runs the forward kernel on the emulator: `y = GELU(x)`, in f64.
fn gelu_on_emulator(x: &[f64]) -> Result<Vec<f64>, Failure> {
    let plan = GELU_FWD.plan(DType::F64, Extent::flat(x.len()), &[])?;
    let mut y = vec![0.0; x.len()];
    simt::run(&plan, &mut [Buf::F64(x), Buf::F64Mut(&mut y)])?;
    Ok(y)
}

/// Runs the forward kernel on the emulator in f32.
fn gelu_on_emulator_f32(x: &[f32]) -> Result<Vec<f32>, Failure> {
    let plan = GELU_FWD.plan(DType::F32, Extent::flat(x.len()), &[])?;
    let mut y = vec![0.0f32; x.len()];
    simt::run(&plan, &mut [Buf::F32(x), Buf::F32Mut(&mut y)])?;
    Ok(y)
}

/// Runs the backward kernel on the emulator: `dx = g·GELU'(x)`, in f64.
fn gelu_grad_on_emulator(x: &[f64], g: &[f64]) -> Result<Vec<f64>, Failure> {
    let plan: LaunchPlan = GELU_BWD.plan(DType::F64, Extent::flat(x.len()), &[])?;
    let mut dx = vec![0.0; x.len()];
    simt::run(&plan, &mut [Buf::F64(x), Buf::F64(g), Buf::F64Mut(&mut dx)])?;
    Ok(dx)
}

/// The largest `|got − want| / max(|want|, 1)`, with NaN required to match
/// NaN and infinities to match exactly.
fn worst_error(got: &[f64], want: &[f64]) -> f64 {
    got.iter().zip(want).fold(0.0, |worst, (&g, &w)| {
        let e = if w.is_nan() || w.is_infinite() {
            if g.to_bits() == w.to_bits() || (g.is_nan() && w.is_nan()) {
                0.0
            } else {
                f64::INFINITY
            }
        } else {
            (g - w).abs() / w.abs().max(1.0)
        };
        worst.max(e)
    })
}

/// `n` inputs spread over `[−6, 6]` with a fixed irrational step, so no two
/// launches of different sizes see the same values.
fn inputs(n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| ((i as f64 * 0.618_033_988_75).fract() - 0.5) * 12.0)
        .collect()
}

fn main() -> Result<(), Failure> {
    println!("Chapter 6: writing a CUDA kernel (GELU, kernels/gelu.cu)\n");
    let plan = GELU_FWD.plan(DType::F32, Extent::flat(1_000_001), &[])?;
    println!(
        "launch plan of {} for 1000001 elements: grid {:?}, block {:?}",
        plan.kernel, plan.grid, plan.block
    );

    println!("\n1. The emulated kernels against the CPU reference (max error relative to max(|want|, 1)):");
    let specials = [
        0.0,
        -0.0,
        1e-30,
        40.0,
        -40.0,
        f64::INFINITY,
        f64::NEG_INFINITY,
        f64::NAN,
    ];
    let mut worst_fwd = 0.0f64;
    let mut worst_bwd = 0.0f64;
    for n in [1, 7, 255, 1000, 4099] {
        let mut x = inputs(n);
        x.extend(specials);
        let g: Vec<f64> = x.iter().map(|v| 0.5 + v.abs().min(3.0)).collect();
        let want: Vec<f64> = x.iter().map(|&v| reference(v)).collect();
        let want_grad: Vec<f64> = x
            .iter()
            .zip(&g)
            .map(|(&v, &g)| g * reference_derivative(v))
            .collect();
        let fwd = worst_error(&gelu_on_emulator(&x)?, &want);
        let bwd = worst_error(&gelu_grad_on_emulator(&x, &g)?, &want_grad);
        println!(
            "   f64, {:>5} elements: forward {fwd:.1e}, backward {bwd:.1e}",
            x.len()
        );
        worst_fwd = worst_fwd.max(fwd);
        worst_bwd = worst_bwd.max(bwd);
    }
    let x32: Vec<f32> = inputs(4099).iter().map(|&v| v as f32).collect();
    let want32: Vec<f64> = x32.iter().map(|&v| reference(f64::from(v))).collect();
    let got32: Vec<f64> = gelu_on_emulator_f32(&x32)?
        .iter()
        .map(|&v| f64::from(v))
        .collect();
    let f32_error = worst_error(&got32, &want32);
    println!("   f32,  4099 elements: forward {f32_error:.1e} (against the f64 reference)");
    if worst_fwd > 1e-12 || worst_bwd > 1e-12 || f32_error > 1e-5 {
        return Err("the kernel disagrees with the CPU reference".into());
    }
    println!("   every element agrees: f64 within 1e-12, f32 within 1e-5");

    println!("\n2. The backward kernel against central differences of the forward kernel (f64, h = 1e-6):");
    let x = inputs(101);
    let h = 1e-6;
    let up: Vec<f64> = x.iter().map(|v| v + h).collect();
    let down: Vec<f64> = x.iter().map(|v| v - h).collect();
    let (fu, fd) = (gelu_on_emulator(&up)?, gelu_on_emulator(&down)?);
    let numeric: Vec<f64> = fu
        .iter()
        .zip(&fd)
        .map(|(a, b)| (a - b) / (2.0 * h))
        .collect();
    let analytic = gelu_grad_on_emulator(&x, &vec![1.0; x.len()])?;
    let fd_error = worst_error(&analytic, &numeric);
    println!("   101 points in [-6, 6]: max error {fd_error:.1e}");
    if fd_error > 1e-7 {
        return Err("the backward kernel is not the derivative of the forward kernel".into());
    }

    println!("\n3. ptxas (registers, spills; sm_80 and sm_90):");
    print_ptxas_report()?;

    println!("\n4. The tape's op `gelu` (Tensor::gelu, Tape::gelu) and its timing:");
    the_op_launches_the_kernel()?;
    println!("   {}", gpu_status());
    Ok(())
}

/// `Tensor::gelu` and `gelu_backward` on the emulated device launch the
/// kernels above (the same bits); on the CPU they follow the reference.
fn the_op_launches_the_kernel() -> Result<(), Failure> {
    use advgrad::{Device, Tensor};
    let x = inputs(4099);
    let g: Vec<f64> = x.iter().map(|v| 0.5 + v.abs().min(3.0)).collect();
    let (xt, gt) = (
        Tensor::from_vec(x.clone(), [x.len()])?,
        Tensor::from_vec(g.clone(), [g.len()])?,
    );
    let on_cpu = worst_error(
        &xt.gelu()?.to_vec::<f64>()?,
        &x.iter().map(|&v| reference(v)).collect::<Vec<_>>(),
    );
    let (xe, ge) = (xt.to_device(Device::Emu)?, gt.to_device(Device::Emu)?);
    let same_bits = |a: &[f64], b: &[f64]| a.iter().zip(b).all(|(p, q)| p.to_bits() == q.to_bits());
    let fwd = same_bits(&xe.gelu()?.to_vec::<f64>()?, &gelu_on_emulator(&x)?);
    let bwd = same_bits(
        &ge.gelu_backward(&xe)?.to_vec::<f64>()?,
        &gelu_grad_on_emulator(&x, &g)?,
    );
    if !(fwd && bwd) || on_cpu > 1e-12 {
        return Err("the op disagrees with its kernel or with the reference".into());
    }
    println!("   on --device emu, Tensor::gelu and gelu_backward give the kernels' bits (4099 elements, f64);");
    println!("   on the CPU backend, Tensor::gelu is within {on_cpu:.1e} of the reference");
    println!(
        "   time it: advgrad bench --op gelu --device cuda   (GB/s beside a device-to-device copy)"
    );
    Ok(())
}

/// Runs ptxas on GELU's PTX when both are here; otherwise says which is
/// missing and prints the committed report's rows for GELU.
fn print_ptxas_report() -> Result<(), Failure> {
    let ptxas = std::env::var("ADVGRAD_PTXAS").unwrap_or_else(|_| "ptxas".into());
    let ptx_dir = std::env::var_os("ADVGRAD_PTX_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target/ptx"));
    let ptx = ptx_dir.join("gelu.ptx");
    let version = Command::new(&ptxas).arg("--version").output();
    match (version, ptx.exists()) {
        (Ok(v), true) if v.status.success() => {
            for arch in ["sm_80", "sm_90"] {
                let out = Command::new(&ptxas)
                    .args(["-v", "--gpu-name", arch])
                    .arg(&ptx)
                    .args(["-o", "/dev/null"])
                    .output()?;
                let log = String::from_utf8_lossy(&out.stderr);
                for line in log.lines().filter(|l| {
                    l.contains("Compiling") || l.contains("Used") || l.contains("spill")
                }) {
                    println!("   {arch}: {}", line.trim_start_matches("ptxas info    : "));
                }
            }
        }
        (version, found) => {
            let why = match (version, found) {
                (Err(e), _) => format!("`{ptxas}` cannot be run ({e})"),
                (Ok(_), false) => format!("{} does not exist", ptx.display()),
                _ => format!("`{ptxas} --version` failed"),
            };
            println!("   ptxas was not run here: {why}.");
            println!(
                "   (eval \"$(scripts/cuda-env.sh)\" && scripts/ptxas-check.sh provides both.)"
            );
            println!("   The committed report, kernels/ptxas-report.txt, has for GELU:");
            let report = std::fs::read_to_string(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("kernels/ptxas-report.txt"),
            )?;
            let header = report
                .lines()
                .find(|l| l.starts_with("arch "))
                .unwrap_or_default();
            println!("   {header}");
            let rows: Vec<&str> = report.lines().filter(|l| l.contains(" gelu_")).collect();
            if rows.is_empty() {
                return Err(
                    "kernels/ptxas-report.txt has no GELU rows: run scripts/ptxas-check.sh".into(),
                );
            }
            for row in rows {
                println!("   {row}");
            }
        }
    }
    Ok(())
}

/// Whether `cuda:0` can run kernels in this build, and what timing it
/// would take.
fn gpu_status() -> String {
    match advgrad::backend::cuda::probe(0) {
        Ok(()) => "cuda:0 is present: the command above times the kernel on it \
                   (this example does not run it)."
            .to_string(),
        Err(why) => format!(
            "not timed: no GPU in this run ({why}); `advgrad bench --op gelu --device emu` runs \
             the same launches on the emulator, which is for checking, not speed."
        ),
    }
}
