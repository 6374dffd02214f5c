//! Launches of `matmul_half.cu`: `C = op(A)·op(B)` on tensor cores with the
//! operands rounded to bf16 or f16, products and sums in f32, and an f32 C
//! through the f32 matmul's [`Epilogue`]s. Each operand is stored in the
//! half type or in f32 (rounded while it is staged into shared memory).
//!
//! The tiling (block tile, split-K) is [`matmul::tiling`]'s rule with
//! 32-deep stages; a split product's partial products are added by
//! `matmul_reduce_f32`, as for the f32 matmul. The entry point of a tile,
//! half type and operand storage is
//! `matmul_tc_{128x128|64x64}_{bf16|f16}_{half|f32}_{half|f32}`.

use crate::matmul::{self, Epilogue, MatmulPlan, Product, Tile, Tuning};
use crate::plan::{PlanError, PlanResult};
use crate::types::DType;
use crate::MatmulDims;

/// The base names of the kernels in `matmul_half.cu`: a tile and the half
/// type the products run in.
pub const KERNELS: &[&str] = &[
    "matmul_tc_128x128_bf16",
    "matmul_tc_64x64_bf16",
    "matmul_tc_128x128_f16",
    "matmul_tc_64x64_f16",
];

/// The instantiations of each kernel: how A and B are stored (`half`: in
/// the kernel's half type; `f32`: rounded to it while staged).
pub const STORAGE: &[&str] = &["half_half", "half_f32", "f32_half", "f32_f32"];

/// Threads of a block of `tile`: 8 warps for 128×128, 4 for 64×64.
pub const fn threads(tile: Tile) -> u32 {
    match tile {
        Tile::T128x128 => 256,
        Tile::T64x64 => 128,
    }
}

/// The entry point for `tile`, products in `half` (bf16 or f16), A stored
/// as `a` and B as `b` (each `half` itself or f32).
pub fn kernel(tile: Tile, half: DType, a: DType, b: DType) -> PlanResult<String> {
    if !half.is_half() {
        return Err(PlanError(format!(
            "matmul_tc: products run in bf16 or f16, not {half}"
        )));
    }
    let storage = |what: &str, s: DType| match s {
        DType::F32 => Ok("f32"),
        s if s == half => Ok("half"),
        s => Err(PlanError(format!(
            "matmul_tc: {what} is {s}; a {half} product takes {half} or f32 operands"
        ))),
    };
    let tile_name = tile.base().trim_start_matches("matmul_");
    Ok(format!(
        "matmul_tc_{tile_name}_{half}_{}_{}",
        storage("A", a)?,
        storage("B", b)?
    ))
}

/// The fewest multiply-adds (`m·n·k`) of a half product that rounds its
/// f32 operands to the half type in a pass of their own first
/// ([`crate::cast`]). An f32 operand's next slice waits in the product's
/// registers, which holds a 128×128 block to one an SM; rounded first, the
/// operands are staged by `cp.async` and two blocks share an SM. On an
/// H200 at 1024³ that was 38 TFLOP/s against 67 in bf16, at 4096³ 48
/// against 162, while the MLP's 128×784·784×256 (2.6 against 3.1) is too
/// small for two extra launches to pay.
pub const ROUND_FIRST_MIN_MACS: usize = 1 << 30;

/// Whether the product `d` rounds its f32 operands first: at
/// [`ROUND_FIRST_MIN_MACS`] multiply-adds or more, unless `tuning` forces
/// it. The bits are the same either way (the same rounding, the same sums).
pub fn rounds_first(d: MatmulDims, tuning: Tuning) -> bool {
    tuning
        .round_first
        .unwrap_or_else(|| d.m.saturating_mul(d.n).saturating_mul(d.k) >= ROUND_FIRST_MIN_MACS)
}

/// The launches of `d` with products in `half`, A stored as `a` and B as
/// `b` (each `half` or f32), an f32 C through `epilogue`.
pub fn matmul(
    half: DType,
    a: DType,
    b: DType,
    d: MatmulDims,
    epilogue: Epilogue,
    tuning: Tuning,
) -> PlanResult<MatmulPlan> {
    let tiling = matmul::tiling(half, d, tuning);
    let product = Product {
        kernel: kernel(tiling.tile, half, a, b)?,
        threads: threads(tiling.tile),
        a,
        b,
        c: DType::F32,
    };
    matmul::plan(product, d, epilogue, tiling)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Access;
    use crate::Activation;

    fn dims(m: usize, n: usize, k: usize) -> MatmulDims {
        MatmulDims {
            m,
            n,
            k,
            a_trans: true,
            b_trans: false,
        }
    }

    #[test]
    fn kernels_are_named_by_tile_type_and_storage() {
        let k = kernel(Tile::T64x64, DType::BF16, DType::F32, DType::BF16).unwrap();
        assert_eq!(k, "matmul_tc_64x64_bf16_f32_half");
        let k = kernel(Tile::T128x128, DType::F16, DType::F16, DType::F16).unwrap();
        assert_eq!(k, "matmul_tc_128x128_f16_half_half");
        assert!(kernel(Tile::T64x64, DType::F32, DType::F32, DType::F32).is_err());
        let e = kernel(Tile::T64x64, DType::F16, DType::BF16, DType::F32).unwrap_err();
        assert!(e.0.contains("takes f16 or f32"), "{e}");
        for base in KERNELS {
            for s in STORAGE {
                let name = format!("{base}_{s}");
                let half = if base.ends_with("bf16") {
                    DType::BF16
                } else {
                    DType::F16
                };
                let tile = if base.contains("128") {
                    Tile::T128x128
                } else {
                    Tile::T64x64
                };
                let of = |s: &str| if s == "half" { half } else { DType::F32 };
                let (a, b) = s.split_once('_').unwrap();
                assert_eq!(kernel(tile, half, of(a), of(b)).unwrap(), name);
            }
        }
    }

    #[test]
    fn large_products_round_first_unless_forced() {
        let t = Tuning::default();
        assert!(!rounds_first(dims(128, 256, 784), t));
        assert!(!rounds_first(dims(1023, 1024, 1024), t));
        assert!(rounds_first(dims(1024, 1024, 1024), t));
        assert!(rounds_first(dims(usize::MAX, 2, 2), t));
        let force = |v| Tuning {
            round_first: Some(v),
            ..t
        };
        assert!(rounds_first(dims(1, 1, 1), force(true)));
        assert!(!rounds_first(dims(4096, 4096, 4096), force(false)));
    }

    #[test]
    fn plans_take_half_or_f32_operands_and_write_f32() {
        let epi = Epilogue::BiasAct(Activation::Relu);
        let p = matmul(
            DType::BF16,
            DType::BF16,
            DType::F32,
            dims(100, 70, 300),
            epi,
            Tuning::default(),
        )
        .unwrap();
        assert_eq!(p.product.kernel, "matmul_tc_64x64_bf16_half_f32");
        assert_eq!(p.product.block, [128, 1, 1]);
        let bufs: Vec<_> = p.product.buffers().map(|b| (b.name, b.dtype)).collect();
        assert_eq!(
            bufs,
            [
                ("a", DType::BF16),
                ("b", DType::F32),
                ("bias", DType::F32),
                ("c", DType::F32)
            ]
        );
        // 4 blocks on 132 SMs: split in 32-deep multiples, reduced in f32.
        assert!(p.tiling.splits > 1);
        assert_eq!(p.tiling.k_chunk % 32, 0);
        let r = p.reduce.as_ref().unwrap();
        assert_eq!(r.kernel, "matmul_reduce_f32");
        assert_eq!(r.buffers().nth(2).unwrap().access, Access::Write);
        let big = matmul(
            DType::F16,
            DType::F32,
            DType::F32,
            dims(4096, 4096, 4096),
            Epilogue::Store,
            Tuning::default(),
        )
        .unwrap();
        assert_eq!(big.product.kernel, "matmul_tc_128x128_f16_f32_f32");
        assert_eq!(big.product.block, [256, 1, 1]);
        assert!(big.reduce.is_none());
    }
}
