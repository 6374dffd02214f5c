//! The kernel ops of `advgrad bench`, each beside a yardstick timed the
//! same way on the same device and sizes:
//!
//! - `matmul`: GFLOP/s (`2·m·k·n` per product) in the `--precision`
//!   (f32 products, or bf16 / f16 ones with f32 sums: the CPU's half gemm,
//!   the tensor-core kernels on a GPU and the emulator) beside cuBLAS on a
//!   GPU — `cublasSgemm` for f32, `cublasGemmEx` with the operands in the
//!   half type, f32 compute and an f32 C otherwise — with the ratio and
//!   the largest difference between the two products (of f32 operands).
//!   In a half precision each size is timed twice: operands stored in f32
//!   (rounded as the product reads them, as autocast does) and stored in
//!   the half type (as GemmEx takes them). On the CPU and the
//!   emulator the cuBLAS columns are absent, with the reason.
//! - `relu`, `sigmoid`, `tanh`, `gelu`, `softmax_cross_entropy` (forward): GB/s of
//!   the bytes the op must move, beside a copy of as many bytes on the same
//!   device (`cuMemcpyDtoD` on a GPU, a memcpy on the CPU threads
//!   otherwise), and the ratio. See [`bytes_moved`] for the counts.

use rayon::prelude::*;

use advgrad::{DType, Device, Result, Tensor};

use super::sizes::Problem;
use super::{report, Op, Timer};

/// The bytes `op` must move on a `[rows, cols]` f32 input: every input
/// element read once and every output element written once (re-reads a
/// kernel makes, say of a row it keeps in cache, are not counted).
///
/// - `relu`, `sigmoid`, `tanh`, `gelu`: read `x`, write `y`: `2·rows·cols·4`;
/// - `softmax_cross_entropy` over `cols` classes: read the logits and the
///   u32 labels, write the probabilities and the loss:
///   `(2·rows·cols + rows + 1)·4`.
pub fn bytes_moved(op: Op, rows: usize, cols: usize) -> usize {
    match op {
        Op::SoftmaxCrossEntropy => (2 * rows * cols + rows + 1) * 4,
        _ => 2 * rows * cols * 4,
    }
}

/// A yardstick's result: its time per call, or why it was not run.
type Yardstick = std::result::Result<(f64, String), String>;

/// A rate with three significant digits (`12345`, `123`, `1.23`, `0.00123`),
/// right-aligned in 9 columns.
fn rate(v: f64) -> String {
    let digits = if v >= 100.0 {
        0
    } else {
        (2.0 - v.abs().max(1e-12).log10().floor()).clamp(0.0, 12.0) as usize
    };
    format!("{v:>9.digits$}")
}

/// Times `matmul` on every problem, beside cuBLAS on a GPU.
pub(super) fn matmul(problems: &[Problem], timer: Timer, json: bool) -> Result<()> {
    let device = timer.device;
    let cublas = gpu_gemm::Baseline::new(device);
    for &problem in problems {
        let Problem::Matmul { m, k, n } = problem else {
            continue;
        };
        let a_host = Tensor::rand_uniform([m, k], -1.0, 1.0, 1, DType::F32);
        let b_host = Tensor::rand_uniform([k, n], -1.0, 1.0, 2, DType::F32);
        let (a, b) = (a_host.to_device(device)?, b_host.to_device(device)?);
        let precision = advgrad::Precision::current();
        let flop = 2.0 * (m * k * n) as f64;
        let theirs = cublas.time(timer, &a_host, &b_host, &a.matmul(&b)?, (m, k, n))?;
        // f32 operands (rounded as the kernel stages them: autocast), and
        // in a half precision also operands stored in the half type, as
        // cuBLAS's GemmEx takes them.
        let mut storages = vec![DType::F32];
        if precision.dtype() != DType::F32 {
            storages.push(precision.dtype());
        }
        for storage in storages {
            let (a, b) = (a.to_dtype(storage)?, b.to_dtype(storage)?);
            let seconds = timer.per_call(|| a.matmul(&b).map(drop))?;
            let gflops = flop / seconds / 1e9;
            let mut fields = serde_json::json!({
                "m": m, "k": k, "n": n, "gflops": gflops, "precision": precision.name(),
                "operands": storage.to_string(),
            });
            let mut text = format!(
                "{:<20} {precision:<4} {:<4} operands {} GFLOP/s",
                problem.to_string(),
                storage.to_string(),
                rate(gflops)
            );
            let o = fields.as_object_mut().expect("an object");
            match &theirs {
                Ok(r) => {
                    let their_gflops = flop / r.seconds / 1e9;
                    let ratio = gflops / their_gflops;
                    o.insert("cublas_routine".into(), r.routine.into());
                    o.insert("cublas_version".into(), r.version.clone().into());
                    o.insert("cublas_seconds".into(), r.seconds.into());
                    o.insert("cublas_gflops".into(), their_gflops.into());
                    o.insert("ratio_to_cublas".into(), ratio.into());
                    o.insert("max_rel_diff_vs_cublas".into(), r.max_rel_diff.into());
                    text.push_str(&format!(
                        "   cuBLAS {} {} {} GFLOP/s   {ratio:.2}× cuBLAS   (max rel diff {:.1e})",
                        r.version,
                        r.routine,
                        rate(their_gflops),
                        r.max_rel_diff
                    ));
                }
                Err(why) => {
                    o.insert("cublas_unavailable".into(), why.clone().into());
                    text.push_str(&format!("   (no cuBLAS: {why})"));
                }
            }
            report(json, "matmul", device, seconds, fields, &text);
        }
    }
    Ok(())
}

/// Times a memory-bound `op` on every problem, beside a copy of as many
/// bytes on the same device.
pub(super) fn memory_bound(op: Op, problems: &[Problem], timer: Timer, json: bool) -> Result<()> {
    let device = timer.device;
    for &problem in problems {
        let Problem::Tensor { rows, cols } = problem else {
            continue;
        };
        let x = Tensor::rand_uniform([rows, cols], -4.0, 4.0, 3, DType::F32).to_device(device)?;
        let labels: Vec<u32> = (0..rows).map(|i| ((i * 7) % cols) as u32).collect();
        let labels = Tensor::from_vec(labels, [rows])?.to_device(device)?;
        let seconds = match op {
            Op::Relu => timer.per_call(|| x.relu().map(drop))?,
            Op::Sigmoid => timer.per_call(|| x.sigmoid().map(drop))?,
            Op::Tanh => timer.per_call(|| x.tanh().map(drop))?,
            Op::Gelu => timer.per_call(|| x.gelu().map(drop))?,
            _ => timer.per_call(|| x.softmax_cross_entropy(&labels).map(drop))?,
        };
        let bytes = bytes_moved(op, rows, cols);
        let gbps = bytes as f64 / seconds / 1e9;
        let mut fields = serde_json::json!({
            "rows": rows, "cols": cols, "bytes": bytes, "gbps": gbps,
        });
        let mut text = format!(
            "{:<12} {:>9.2} MB {} GB/s",
            problem.to_string(),
            bytes as f64 / 1e6,
            rate(gbps)
        );
        let o = fields.as_object_mut().expect("an object");
        match copy_yardstick(timer, bytes / 2)? {
            Ok((copy_seconds, what)) => {
                // A copy of bytes/2 reads and writes bytes/2: `bytes` moved.
                let copy_gbps = (bytes / 2 * 2) as f64 / copy_seconds / 1e9;
                let ratio = gbps / copy_gbps;
                o.insert("copy".into(), what.clone().into());
                o.insert("copy_seconds".into(), copy_seconds.into());
                o.insert("copy_gbps".into(), copy_gbps.into());
                o.insert("ratio_to_copy".into(), ratio.into());
                text.push_str(&format!(
                    "   {what} {} GB/s   {ratio:.2}× copy",
                    rate(copy_gbps)
                ));
            }
            Err(why) => {
                o.insert("copy_unavailable".into(), why.clone().into());
                text.push_str(&format!("   (no copy yardstick: {why})"));
            }
        }
        report(json, &op.name(), device, seconds, fields, &text);
    }
    Ok(())
}

/// Seconds per copy of `bytes` bytes on the timer's device, and what was
/// copied with.
fn copy_yardstick(timer: Timer, bytes: usize) -> Result<Yardstick> {
    match timer.device {
        #[cfg(feature = "cuda")]
        Device::Cuda(n) => {
            let gpu = advgrad::backend::cuda::gpu(n)?;
            let mut copy = advgrad::backend::cuda::DeviceCopy::new(&gpu, bytes)?;
            let seconds = timer.per_call(|| copy.run())?;
            Ok(Ok((seconds, "cuMemcpyDtoD".into())))
        }
        #[cfg(not(feature = "cuda"))]
        Device::Cuda(_) => Ok(Err("built without the `cuda` feature".into())),
        // The emulator's buffers are host memory: its copy is the CPU's.
        Device::Cpu | Device::Emu => {
            let src = vec![1u8; bytes.max(1)];
            let mut dst = vec![0u8; bytes.max(1)];
            let threads = rayon::current_num_threads().max(1);
            let chunk = bytes.div_ceil(threads).max(64 << 10);
            let seconds = timer.per_call(|| {
                dst.par_chunks_mut(chunk)
                    .zip(src.par_chunks(chunk))
                    .for_each(|(d, s)| d.copy_from_slice(s));
                Ok(())
            })?;
            Ok(Ok((seconds, format!("memcpy ({threads} threads)"))))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_keep_three_significant_digits() {
        assert_eq!(rate(12345.6), "    12346");
        assert_eq!(rate(123.4), "      123");
        assert_eq!(rate(12.34), "     12.3");
        assert_eq!(rate(1.234), "     1.23");
        assert_eq!(rate(0.001234), "  0.00123");
    }

    #[test]
    fn bytes_moved_count_each_input_and_output_once() {
        assert_eq!(bytes_moved(Op::Relu, 3, 5), 2 * 15 * 4);
        assert_eq!(bytes_moved(Op::Tanh, 3, 5), 2 * 15 * 4);
        assert_eq!(bytes_moved(Op::Gelu, 3, 5), 2 * 15 * 4);
        assert_eq!(
            bytes_moved(Op::SoftmaxCrossEntropy, 3, 5),
            (2 * 15 + 3 + 1) * 4
        );
    }
}

/// cuBLAS's SGEMM, or GemmEx in a half type, on a GPU only.
mod gpu_gemm {
    use advgrad::{Device, Result, Tensor};

    use super::super::Timer;

    /// cuBLAS's time on one problem.
    pub struct Measured {
        pub seconds: f64,
        /// `cublasSgemm`, or `cublasGemmEx bf16` / `f16`.
        pub routine: &'static str,
        pub version: String,
        /// `max |ours − cuBLAS| / max |cuBLAS|` over the product.
        pub max_rel_diff: f64,
    }

    /// A cuBLAS handle on the device, or why there is none.
    pub struct Baseline(std::result::Result<Handle, String>);

    #[cfg(feature = "cuda")]
    type Handle = advgrad::backend::cuda::Cublas;
    #[cfg(not(feature = "cuda"))]
    type Handle = ();

    impl Baseline {
        pub fn new(device: Device) -> Baseline {
            Baseline(match device {
                #[cfg(feature = "cuda")]
                Device::Cuda(n) => advgrad::backend::cuda::gpu(n)
                    .map_err(|e| e.to_string())
                    .and_then(|gpu| advgrad::backend::cuda::Cublas::new(&gpu)),
                #[cfg(not(feature = "cuda"))]
                Device::Cuda(_) => Err("built without the `cuda` feature".into()),
                other => Err(format!("cuBLAS runs on a GPU; the device is {other}")),
            })
        }

        /// cuBLAS's seconds per product of the host operands `a` and `b`
        /// (the same values as advgrad's) in the thread's precision, and
        /// how far `ours` is from its product; or why cuBLAS was not run.
        pub fn time(
            &self,
            timer: Timer,
            a: &Tensor,
            b: &Tensor,
            ours: &Tensor,
            dims: (usize, usize, usize),
        ) -> Result<std::result::Result<Measured, String>> {
            let handle = match &self.0 {
                Ok(h) => h,
                Err(why) => return Ok(Err(why.clone())),
            };
            #[cfg(feature = "cuda")]
            {
                use advgrad::Precision;
                let (a, b) = (a.to_vec::<f32>()?, b.to_vec::<f32>()?);
                let (seconds, theirs, routine) = match Precision::current() {
                    Precision::F32 => {
                        let mut sgemm = handle.sgemm(&a, &b, dims)?;
                        let seconds = timer.per_call(|| sgemm.run())?;
                        (seconds, sgemm.result()?, "cublasSgemm")
                    }
                    half => {
                        let mut gemm = handle.gemm_ex(half.dtype(), &a, &b, dims)?;
                        let seconds = timer.per_call(|| gemm.run())?;
                        let routine = match half {
                            Precision::Bf16 => "cublasGemmEx bf16",
                            _ => "cublasGemmEx f16",
                        };
                        (seconds, gemm.result()?, routine)
                    }
                };
                let ours = ours.to_vec::<f32>()?;
                let scale = theirs
                    .iter()
                    .fold(0f32, |m, v| m.max(v.abs()))
                    .max(f32::MIN_POSITIVE);
                // A NaN difference counts as infinite (f32::max would skip it).
                let diff = ours.iter().zip(&theirs).fold(0f32, |m, (o, t)| {
                    let d = (o - t).abs();
                    m.max(if d.is_nan() { f32::INFINITY } else { d })
                });
                Ok(Ok(Measured {
                    seconds,
                    routine,
                    version: handle.version().to_string(),
                    max_rel_diff: f64::from(diff / scale),
                }))
            }
            #[cfg(not(feature = "cuda"))]
            {
                let _ = (handle, timer, a, b, ours, dims);
                Ok(Err("built without the `cuda` feature".into()))
            }
        }
    }
}
