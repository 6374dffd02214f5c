//! A half product that rounds its f32 operands first (`kernels/cast.cu`,
//! then the product of half operands) gives the bits of one that rounds
//! them while it stages them (`kernels/matmul_half.cu`): the same rounding,
//! the same sums. Large products take the first path by default
//! (`kernels::matmul_half::rounds_first`), which the emulator is too slow
//! to reach, so `ADVGRAD_MATMUL_ROUND_FIRST` forces each path here on small
//! ones. The variable is read by every product in the process, so this
//! binary holds this one test.

mod support;

use advgrad::backend::cpu::CpuStorage;
use advgrad::backend::cuda::MATMUL_ROUND_FIRST_VAR;
use advgrad::backend::{Activation, BackendStorage, MatmulDims, Storage};
use advgrad::precision::Precision;
use advgrad::DType;
use support::{parity_devices, Rng};

fn bits(s: &Storage) -> Vec<u32> {
    let host = s.to_cpu().expect("download");
    match &host {
        CpuStorage::F32(v) => v.iter().map(|x| x.to_bits()).collect(),
        other => panic!("an f32 product, got {}", other.dtype()),
    }
}

#[test]
fn rounding_first_gives_the_bits_of_rounding_while_staging() {
    let layouts = [(false, false), (true, false), (false, true), (true, true)];
    // Odd sizes (edges, unaligned rows), a split product (small m·n, long
    // k) and several unsplit slices.
    let shapes = [
        (37, 29, 41),
        (1, 1, 1),
        (130, 67, 65),
        (64, 72, 200),
        (5, 3, 0),
    ];
    for device in parity_devices("rounding_first_gives_the_bits_of_rounding_while_staging") {
        for half in [DType::BF16, DType::F16] {
            let precision = Precision::of_dtype(half);
            for (s, &(m, n, k)) in shapes.iter().enumerate() {
                for (l, &(a_trans, b_trans)) in layouts.iter().enumerate() {
                    for (sa, sb) in [
                        (DType::F32, DType::F32),
                        (DType::F32, half),
                        (half, DType::F32),
                    ] {
                        let mut rng = Rng::new((s * 16 + l * 4) as u64);
                        let on = |v: &[f64], t: DType| {
                            Storage::Cpu(CpuStorage::from_f64_slice(v, t))
                                .to_device(device)
                                .expect("upload")
                        };
                        let a = on(&rng.vec(m * k, -1.0, 1.0), sa);
                        let b = on(&rng.vec(k * n, -1.0, 1.0), sb);
                        let bias = on(&rng.vec(n, -1.0, 1.0), DType::F32);
                        let d = MatmulDims {
                            m,
                            n,
                            k,
                            a_trans,
                            b_trans,
                        };
                        let act = Activation::ALL[(s + l) % 3];
                        let run = |first: &str| {
                            std::env::set_var(MATMUL_ROUND_FIRST_VAR, first);
                            let p = a.matmul_in(&b, d, precision).expect("product");
                            let f = a
                                .matmul_bias_act_in(&b, d, &bias, act, precision)
                                .expect("product, bias and activation");
                            (bits(&p), bits(&f))
                        };
                        let (staged, first) = (run("0"), run("1"));
                        for (what, s, f) in [
                            ("product", &staged.0, &first.0),
                            ("product + bias, then the activation", &staged.1, &first.1),
                        ] {
                            if let Some(i) = (0..s.len()).find(|&i| s[i] != f[i]) {
                                panic!(
                                    "{device} {half} {m}x{n}x{k} ta={a_trans} tb={b_trans} \
                                     {sa}·{sb}, {what} ({act}): element {i} is {} rounded first, \
                                     {} rounded while staged",
                                    f32::from_bits(f[i]),
                                    f32::from_bits(s[i])
                                );
                            }
                        }
                    }
                }
            }
        }
    }
    std::env::remove_var(MATMUL_ROUND_FIRST_VAR);
}
