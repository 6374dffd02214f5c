//! Tests of the CPU SIMT emulator itself (`crates/simt`): that it reports
//! divergent barriers, poisons shared memory and fresh buffers, catches
//! writes past a buffer and misaligned vector accesses, lands `cp.async`
//! copies only at the wait, shuffles like a warp, holds independent-thread
//! plans to their word, and checks a plan against the kernel it launches.

use kernels::grid_stride::Extent;
use kernels::{elementwise, Access, Binary, Cooperation, DType, LaunchPlan, Param, Scalar};
use simt::{Arg, Buf, DeviceBuffer};

fn plan1(kernel: &str, grid: u32, block: u32, shared: u32, params: Vec<Param>) -> LaunchPlan {
    LaunchPlan {
        kernel: kernel.into(),
        grid: [grid, 1, 1],
        block: [block, 1, 1],
        shared_bytes: shared,
        cooperation: Cooperation::Block,
        params,
    }
}

fn out_param(dtype: DType, len: usize) -> Param {
    Param::Buffer {
        name: "out",
        dtype,
        len,
        access: Access::Write,
    }
}

#[test]
fn every_kernel_entry_point_is_built_into_the_emulator() {
    let have = simt::kernels();
    for k in kernels::entry_points() {
        assert!(have.contains(&k), "{k} missing from the emulator");
    }
}

#[test]
fn device_buffers_round_trip_and_start_poisoned() {
    let b = DeviceBuffer::from_slice(&[1.5f32, -2.0, 3.25]);
    assert_eq!(b.to_vec::<f32>(3), Some(vec![1.5, -2.0, 3.25]));
    assert_eq!(b.to_vec::<f64>(3), None, "wrong type");
    assert_eq!(b.to_vec::<f32>(4), None, "past the end");
    assert_eq!(b.clone().to_vec::<f32>(2), Some(vec![1.5, -2.0]));
    let p = DeviceBuffer::poisoned(DType::F64, 2);
    assert!(p.to_vec::<f64>(2).unwrap().iter().all(|v| v.is_nan()));
}

#[test]
fn a_write_past_the_end_of_a_buffer_is_caught() {
    let mut p = plan1(
        "simt_write_past_end",
        1,
        32,
        0,
        vec![
            out_param(DType::F32, 10),
            Param::Scalar {
                name: "n",
                value: Scalar::I32(10),
            },
        ],
    );
    p.cooperation = Cooperation::Independent;
    let mut out = DeviceBuffer::poisoned(DType::F32, 10);
    let e = simt::launch(&p, &mut [Arg::Out(&mut out)]).unwrap_err();
    assert!(e.0.contains("wrote outside buffer `out`"), "{e}");
}

#[test]
fn independent_threads_may_not_cooperate() {
    let mut p = plan1(
        "simt_read_shared_poison",
        1,
        64,
        8,
        vec![out_param(DType::F32, 128)],
    );
    p.cooperation = Cooperation::Independent;
    let mut out = vec![0f32; 128];
    let e = simt::run(&p, &mut [Buf::F32Mut(&mut out)]).unwrap_err();
    assert!(
        e.0.contains("independent threads") && e.0.contains("shared memory"),
        "{e}"
    );
}

#[test]
fn divergent_syncthreads_is_an_error() {
    let p = plan1(
        "simt_divergent_barrier",
        2,
        64,
        0,
        vec![out_param(DType::F32, 128)],
    );
    let mut out = vec![0f32; 128];
    let e = simt::run(&p, &mut [Buf::F32Mut(&mut out)]).unwrap_err();
    assert!(e.0.contains("divergent barrier"), "{e}");
}

#[test]
fn divergent_shuffle_is_an_error() {
    let p = plan1(
        "simt_divergent_shuffle",
        1,
        64,
        0,
        vec![out_param(DType::F32, 64)],
    );
    let mut out = vec![0f32; 64];
    let e = simt::run(&p, &mut [Buf::F32Mut(&mut out)]).unwrap_err();
    assert!(
        e.0.contains("divergent barrier") && e.0.contains("shuffle"),
        "{e}"
    );
}

#[test]
fn barriers_that_can_never_complete_are_reported_at_once() {
    // One warp: lane 0 waits in __syncthreads, lanes 1..31 in __syncwarp.
    let p = plan1("simt_deadlock", 1, 32, 0, vec![]);
    let e = simt::run(&p, &mut []).unwrap_err();
    assert!(e.0.contains("deadlock in block (0,0,0)"), "{e}");
    assert!(
        e.0.contains("1 of 32 threads of the block wait at __syncthreads"),
        "{e}"
    );
    assert!(
        e.0.contains("31 of 32 threads of warp 0 wait at __syncwarp"),
        "{e}"
    );
}

#[test]
fn shared_memory_is_poisoned() {
    let p = plan1(
        "simt_read_shared_poison",
        3,
        64,
        8,
        vec![out_param(DType::F32, 128)],
    );
    let mut out = vec![0f32; 128];
    simt::run(&p, &mut [Buf::F32Mut(&mut out)]).unwrap();
    assert!(out.iter().all(|v| v.is_nan()), "{out:?}");
}

#[test]
fn shuffles_follow_warp_semantics() {
    let p = plan1(
        "simt_shuffles",
        1,
        64,
        0,
        vec![Param::Buffer {
            name: "out",
            dtype: DType::U32,
            len: 256,
            access: Access::Write,
        }],
    );
    let mut out = vec![0u32; 256];
    simt::run(&p, &mut [Buf::U32Mut(&mut out)]).unwrap();
    for t in 0..64u32 {
        let l = t % 32;
        let got = &out[t as usize * 4..t as usize * 4 + 4];
        let down = if l + 3 < 32 { l + 3 } else { l };
        let up = if l >= 3 { l - 3 } else { l };
        assert_eq!(got, [l ^ 5, down, up, 7], "thread {t}");
    }
    assert_eq!(
        simt::signature("simt_shuffles").unwrap(),
        vec!["*mut u32".to_string()]
    );
    // A plan that passes floats where the kernel takes unsigned is refused.
    let mut bad = p.clone();
    bad.params[0] = out_param(DType::F32, 256);
    let mut f = vec![0f32; 256];
    let e = simt::run(&bad, &mut [Buf::F32Mut(&mut f)]).unwrap_err();
    assert!(e.0.contains("*mut u32"), "{e}");
}

#[test]
fn plans_are_checked_against_the_kernel() {
    let mut p = elementwise::binary(Binary::Add)
        .plan(DType::F32, Extent::flat(10), &[])
        .unwrap();
    let (a, b) = (vec![1f32; 10], vec![2f32; 10]);
    let mut y = vec![0f32; 9];
    let e = simt::run(&p, &mut [Buf::F32(&a), Buf::F32(&b), Buf::F32Mut(&mut y)]).unwrap_err();
    assert!(e.0.contains("needs 10"), "{e}");
    let mut y = vec![0f32; 10];
    p.params[3] = Param::Scalar {
        name: "n",
        value: Scalar::U32(10),
    };
    let e = simt::run(&p, &mut [Buf::F32(&a), Buf::F32(&b), Buf::F32Mut(&mut y)]).unwrap_err();
    assert!(e.0.contains("is u64"), "{e}");
    p.block = [48, 1, 1];
    p.params[3] = Param::Scalar {
        name: "n",
        value: Scalar::U64(10),
    };
    let e = simt::run(&p, &mut [Buf::F32(&a), Buf::F32(&b), Buf::F32Mut(&mut y)]).unwrap_err();
    assert!(e.0.contains("multiple of 32"), "{e}");
    p.block = [256, 1, 1];
    simt::run(&p, &mut [Buf::F32(&a), Buf::F32(&b), Buf::F32Mut(&mut y)]).unwrap();
    assert_eq!(y, vec![3f32; 10]);
}

fn int(name: &'static str, v: i32) -> Param {
    Param::Scalar {
        name,
        value: Scalar::I32(v),
    }
}

#[test]
fn misaligned_vector_accesses_are_errors() {
    for shared in [0, 1] {
        let p = |offset| {
            plan1(
                "simt_vector_access",
                1,
                32,
                0,
                vec![
                    out_param(DType::F32, 64),
                    int("offset", offset),
                    int("shared", shared),
                ],
            )
        };
        let mut out = vec![0f32; 64];
        simt::run(&p(4), &mut [Buf::F32Mut(&mut out)]).unwrap();
        let e = simt::run(&p(1), &mut [Buf::F32Mut(&mut out)]).unwrap_err();
        let space = if shared == 1 { "shared" } else { "global" };
        let want = format!("simt_vector_access: misaligned 16-byte {space} load at 0x");
        assert!(e.0.starts_with(&want), "{e}");
        assert!(e.0.contains("block (0,0,0), thread 0,0,0"), "{e}");
    }
}

/// cp.async copies when the thread waits, not before: a read of the
/// destination before the wait sees the poison.
#[test]
fn cp_async_lands_at_the_wait() {
    let input: Vec<f32> = (1..=8).map(|v| v as f32).collect();
    let plan = |src_offset, wait| {
        plan1(
            "simt_cp_async",
            1,
            32,
            0,
            vec![
                Param::Buffer {
                    name: "in",
                    dtype: DType::F32,
                    len: 8,
                    access: Access::Read,
                },
                out_param(DType::F32, 8),
                int("src_offset", src_offset),
                int("wait", wait),
            ],
        )
    };
    let mut out = vec![0f32; 8];
    simt::run(&plan(4, 1), &mut [Buf::F32(&input), Buf::F32Mut(&mut out)]).unwrap();
    assert!(out[..4].iter().all(|v| v.is_nan()), "{out:?}");
    assert_eq!(out[4..], [5.0, 6.0, 7.0, 8.0]);

    let e = simt::run(&plan(0, 0), &mut [Buf::F32(&input), Buf::F32Mut(&mut out)]).unwrap_err();
    assert!(e.0.contains("never waited for"), "{e}");
    let e = simt::run(&plan(1, 1), &mut [Buf::F32(&input), Buf::F32Mut(&mut out)]).unwrap_err();
    assert!(
        e.0.starts_with("simt_cp_async: cp.async of 16 bytes")
            && e.0.contains("misaligned global source"),
        "{e}"
    );
    let p = plan1(
        "simt_cp_async_to_global",
        1,
        32,
        0,
        vec![
            Param::Buffer {
                name: "in",
                dtype: DType::F32,
                len: 4,
                access: Access::Read,
            },
            out_param(DType::F32, 4),
        ],
    );
    let e = simt::run(&p, &mut [Buf::F32(&input), Buf::F32Mut(&mut out)]).unwrap_err();
    assert!(e.0.contains("not shared memory"), "{e}");
}
