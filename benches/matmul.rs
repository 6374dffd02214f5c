//! advgrad's CPU matmul beside the `gemm` crate (x86-v4) and
//! `matrixmultiply`, square sizes 64..2048, f32 (and f64 at a few sizes),
//! all at rayon's thread count (set `RAYON_NUM_THREADS` and
//! `MATMUL_NUM_THREADS` alike); and advgrad's bf16 gemm (f32 accumulation)
//! beside its f32 gemm at 256..2048, with bf16 operands and with f32
//! operands rounded to bf16 while packed. Throughput is reported in FLOP/s
//! as "elem/s": 1 Gelem/s = 1 GFLOP/s. The CPU model and the kernels
//! chosen (`ADVGRAD_GEMM`, `ADVGRAD_GEMM_BF16`) are printed first.
//!
//! `cargo bench --bench matmul` (filter with e.g. `-- sgemm/512` or
//! `-- bf16`).

use std::time::Duration;

use criterion::measurement::WallTime;
use criterion::{
    criterion_group, criterion_main, BenchmarkGroup, BenchmarkId, Criterion, Throughput,
};

use advgrad::backend::cpu::gemm::{describe, gemm as advgrad_gemm, gemm_half, HalfOperand};
use half::bf16;

/// Deterministic inputs in [-1, 1).
fn fill(len: usize, seed: u32) -> Vec<f64> {
    let mut s = seed.wrapping_mul(2654435761) | 1;
    (0..len)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            f64::from(s) / f64::from(u32::MAX) * 2.0 - 1.0
        })
        .collect()
}

/// Throughput in FLOP of an `n`-cube product, and fewer, longer samples
/// for the large sizes.
fn configure(group: &mut BenchmarkGroup<'_, WallTime>, n: usize) {
    group.throughput(Throughput::Elements(2 * (n * n * n) as u64));
    if n >= 1024 {
        group.sample_size(10);
        group.measurement_time(Duration::from_secs(3));
    } else {
        group.sample_size(30);
        group.measurement_time(Duration::from_secs(2));
    }
    group.warm_up_time(Duration::from_millis(500));
}

macro_rules! bench_type {
    ($fn_name:ident, $t:ty, $group:literal, $mm:ident, $sizes:expr) => {
        fn $fn_name(cr: &mut Criterion) {
            let mut group = cr.benchmark_group($group);
            for n in $sizes {
                let a: Vec<$t> = fill(n * n, 1).into_iter().map(|v| v as $t).collect();
                let b: Vec<$t> = fill(n * n, 2).into_iter().map(|v| v as $t).collect();
                let mut c: Vec<$t> = vec![0.0; n * n];
                configure(&mut group, n);
                group.bench_with_input(BenchmarkId::new("advgrad", n), &n, |bch, &n| {
                    bch.iter(|| advgrad_gemm(n, n, n, &a, false, &b, false, &mut c, false))
                });
                group.bench_with_input(BenchmarkId::new("gemm", n), &n, |bch, &n| {
                    bch.iter(|| {
                        // SAFETY: a, b, c are n × n row-major buffers that
                        // live through the call; c is not aliased.
                        unsafe {
                            gemm::gemm(
                                n,
                                n,
                                n,
                                c.as_mut_ptr(),
                                1,
                                n as isize,
                                false,
                                a.as_ptr(),
                                1,
                                n as isize,
                                b.as_ptr(),
                                1,
                                n as isize,
                                0.0,
                                1.0,
                                false,
                                false,
                                false,
                                gemm::Parallelism::Rayon(0),
                            )
                        }
                    })
                });
                group.bench_with_input(BenchmarkId::new("matrixmultiply", n), &n, |bch, &n| {
                    bch.iter(|| {
                        // SAFETY: as above.
                        unsafe {
                            matrixmultiply::$mm(
                                n,
                                n,
                                n,
                                1.0,
                                a.as_ptr(),
                                n as isize,
                                1,
                                b.as_ptr(),
                                n as isize,
                                1,
                                0.0,
                                c.as_mut_ptr(),
                                n as isize,
                                1,
                            )
                        }
                    })
                });
            }
            group.finish();
        }
    };
}

bench_type!(
    sgemm,
    f32,
    "sgemm",
    sgemm,
    [64usize, 128, 256, 512, 1024, 2048]
);
bench_type!(dgemm, f64, "dgemm", dgemm, [128usize, 512, 1024]);

/// The bf16 gemm (bf16 operands, and f32 operands rounded while packed)
/// beside the f32 gemm on the same inputs, NN.
fn bf16gemm(cr: &mut Criterion) {
    let mut group = cr.benchmark_group("bf16");
    for n in [256usize, 512, 1024, 2048] {
        let a: Vec<f32> = fill(n * n, 1).into_iter().map(|v| v as f32).collect();
        let b: Vec<f32> = fill(n * n, 2).into_iter().map(|v| v as f32).collect();
        let a16: Vec<bf16> = a.iter().map(|&v| bf16::from_f32(v)).collect();
        let b16: Vec<bf16> = b.iter().map(|&v| bf16::from_f32(v)).collect();
        let mut c = vec![0.0f32; n * n];
        configure(&mut group, n);
        group.bench_with_input(BenchmarkId::new("f32", n), &n, |bch, &n| {
            bch.iter(|| advgrad_gemm(n, n, n, &a, false, &b, false, &mut c, false))
        });
        group.bench_with_input(BenchmarkId::new("bf16", n), &n, |bch, &n| {
            let (a, b) = (HalfOperand::Half(&a16), HalfOperand::Half(&b16));
            bch.iter(|| gemm_half(n, n, n, a, false, b, false, &mut c, false))
        });
        group.bench_with_input(BenchmarkId::new("bf16-from-f32", n), &n, |bch, &n| {
            let (a, b) = (HalfOperand::<bf16>::F32(&a), HalfOperand::F32(&b));
            bch.iter(|| gemm_half(n, n, n, a, false, b, false, &mut c, false))
        });
    }
    group.finish();
}

/// Prints the CPU model and the gemm kernels this run uses.
fn machine(_: &mut Criterion) {
    eprintln!("{}, {} threads", describe(), rayon::current_num_threads());
}

criterion_group!(benches, machine, sgemm, dgemm, bf16gemm);
criterion_main!(benches);
