//! The AMX micro-kernel: `tdpbf16ps` on tiles, f32 accumulation.
//!
//! **Run on hardware** on one CPU so far: a 2-vCPU KVM guest of an Intel
//! Xeon (CPU family 6, model 167 as the guest sees it) with AMX-BF16, where
//! every test of the bf16 paths passes with `ADVGRAD_REQUIRE_GEMM_PATHS=all`
//! and the tile instructions give the same bits as [`Model`], a scalar
//! model of them (the SDM's pseudocode), on every shape, transposition and
//! accumulation the tests try, subnormals and rounding ties included. The
//! model is what the tests run on CPUs without AMX; it checks the layouts,
//! the strides and the edges everywhere.
//!
//! One call computes a 32 × 32 block of `C` as 2 × 2 tiles of 16 × 16 f32
//! (`tmm0`–`tmm3`), from two `A` tiles (`tmm4`, `tmm5`: 16 rows × 16 pairs
//! of bf16, a row-major strip) and two `B` tiles (`tmm6`, `tmm7`: 16 pairs
//! of rows × 16 columns, the pair layout of [`super::pairs`]) per 32 steps
//! of `k`: four `tdpbf16ps` per step.
//!
//! **Numerics** (the SDM's pseudocode of `TDPBF16PS`, which the hardware
//! above matches bit for bit in the tests; the intrinsics guide shows a
//! plainer loop): in each tile step of 32 steps of `k`, a lane sums the
//! products of the 16 even steps and, apart, of the 16 odd steps, each from
//! zero in order with fused multiply-adds; it adds the two sums, then adds
//! that to the tile. All rounding is to nearest even; subnormal inputs
//! count as zero and subnormal results are flushed. The tiles start at zero for every `k`
//! block and the block's sum is then added to `C`, as on every path. The
//! blocks are of up to 256 steps, or of up to 512 where `k > 512` and
//! neither `m` nor `n` exceeds 1024 (the driver's long blocks, see
//! [`MicroKernel::KC_LONG`]).
//!
//! **Linux.** Tile data is a dynamically enabled XSTATE feature: before the
//! first tile instruction the process asks for it with
//! `arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)` (once; the
//! permission holds for the whole process). Without it, the first tile
//! instruction would end the process with SIGILL; here detection fails
//! instead, and the automatic choice moves on to AVX512-BF16.

use std::sync::OnceLock;

use half::bf16;

use super::pairs::{self, Pair};
use super::source::HalfSource;
use crate::backend::cpu::gemm::kernel::{par_min_work, APanel, MicroKernel};
use crate::backend::cpu::gemm::pack::View;

/// Rows (and columns) of `C` per call: 2 × 2 tiles of 16.
const MR: usize = 32;
/// Columns of `C` per call.
const NR: usize = 32;
/// `k` steps per tile step: 16 pairs.
const K_STEP: usize = 32;

/// One call's work, as the tile instructions see it.
pub(in crate::backend::cpu::gemm) struct TileProgram<'a> {
    /// The `A` strip: 32 rows of `qk` pairs, row-major.
    pub a: &'a [Pair],
    /// The `B` panel: `qk` rows of 32 pairs.
    pub b: &'a [Pair],
    /// Pairs along `k`, a multiple of 16.
    pub qk: usize,
    /// Where the 32 × 32 block of sums is stored: row `i` at `out + i·ld`.
    pub out: *mut f32,
    /// The distance between rows of `out`, in f32 values (at least 32).
    pub ld: usize,
}

/// How the tile program runs: on AMX, or in a scalar model of it.
pub(in crate::backend::cpu::gemm) trait Tiles:
    Copy + Send + Sync
{
    /// Packs and writes out with AVX-512 (true for the hardware, which has
    /// it).
    const AVX512: bool;
    /// Loads the tile configuration on this thread.
    fn begin(self);
    /// Releases the tiles on this thread.
    fn end(self);
    /// `out = A · B` over the program's `qk` pairs.
    ///
    /// # Safety
    ///
    /// `p.out` must be valid for writes of 32 rows of 32 values, `p.ld`
    /// apart, that nothing else accesses during the call.
    unsafe fn run(self, p: TileProgram<'_>);
}

/// The CPU's AMX tiles; a value proves that they may be used.
#[derive(Clone, Copy, Debug)]
pub(in crate::backend::cpu::gemm) struct Hardware(());

/// A scalar model of the tile instructions, per the SDM's pseudocode.
#[cfg(test)]
#[derive(Clone, Copy, Debug)]
pub(in crate::backend::cpu::gemm) struct Model;

/// The AMX kernel, on the hardware or (in tests) on the model.
#[derive(Clone, Copy, Debug)]
pub(in crate::backend::cpu::gemm) struct Amx<T = Hardware>(T);

impl Amx {
    /// The token, if this CPU has AMX-BF16 with AVX-512F, BW, VL and AVX2,
    /// the OS saves tile state, and Linux grants this process the tile data
    /// (asked once).
    pub(in crate::backend::cpu::gemm) fn detect() -> Option<Self> {
        static USABLE: OnceLock<bool> = OnceLock::new();
        let usable = *USABLE.get_or_init(|| {
            cpu_has_amx_bf16()
                && is_x86_feature_detected!("avx512f")
                && is_x86_feature_detected!("avx512bw")
                && is_x86_feature_detected!("avx512vl")
                && is_x86_feature_detected!("avx2")
                && os_saves_tiles()
                && linux_grants_tile_data()
        });
        usable.then_some(Amx(Hardware(())))
    }
}

#[cfg(test)]
impl Amx<Model> {
    /// The kernel on the model of the tiles: runs on any CPU.
    pub(in crate::backend::cpu::gemm) fn model() -> Self {
        Amx(Model)
    }
}

/// CPUID: AMX-TILE and AMX-BF16 (leaf 7, EDX bits 24 and 22), and a tile
/// palette 1 of at least 8 tiles of 16 rows × 64 bytes (leaf 0x1D).
fn cpu_has_amx_bf16() -> bool {
    use std::arch::x86_64::{__cpuid, __cpuid_count};
    // Miri runs no CPUID; like `is_x86_feature_detected!`, it sees no AMX.
    if cfg!(miri) || __cpuid(0).eax < 0x1D {
        return false;
    }
    let edx = __cpuid_count(7, 0).edx;
    if edx & (1 << 24) == 0 || edx & (1 << 22) == 0 {
        return false;
    }
    let palette = __cpuid_count(0x1D, 1);
    let (bytes_per_row, names) = (palette.ebx & 0xFFFF, palette.ebx >> 16);
    let max_rows = palette.ecx & 0xFFFF;
    bytes_per_row >= 64 && names >= 8 && max_rows >= 16
}

/// XCR0 has the tile configuration and tile data components (bits 17 and
/// 18), so the OS saves them; read only when CPUID says OSXSAVE.
fn os_saves_tiles() -> bool {
    use std::arch::x86_64::{__cpuid, _xgetbv};
    if __cpuid(1).ecx & (1 << 27) == 0 {
        return false;
    }
    #[target_feature(enable = "xsave")]
    fn xcr0() -> u64 {
        // SAFETY: XGETBV(0) is valid: OSXSAVE is set (checked by the caller).
        unsafe { _xgetbv(0) }
    }
    // SAFETY: OSXSAVE implies the XSAVE feature that `xcr0` is compiled for.
    let xcr0 = unsafe { xcr0() };
    xcr0 & (0b11 << 17) == 0b11 << 17
}

/// Asks Linux for this process's permission to use tile data
/// (`arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA)`).
#[cfg(target_os = "linux")]
fn linux_grants_tile_data() -> bool {
    const ARCH_REQ_XCOMP_PERM: libc::c_long = 0x1023;
    const XFEATURE_XTILEDATA: libc::c_long = 18;
    // SAFETY: arch_prctl with ARCH_REQ_XCOMP_PERM takes a feature number and
    // touches no memory of ours.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_arch_prctl,
            ARCH_REQ_XCOMP_PERM,
            XFEATURE_XTILEDATA,
        )
    };
    rc == 0
}

/// Other systems: tile data is taken to be usable where XCR0 enables it.
#[cfg(not(target_os = "linux"))]
fn linux_grants_tile_data() -> bool {
    true
}

/// The tile configuration: palette 1, tiles 0–7 of 16 rows × 64 bytes.
#[repr(C, align(64))]
struct TileConfig {
    palette: u8,
    start_row: u8,
    reserved: [u8; 14],
    colsb: [u16; 16],
    rows: [u8; 16],
}

static CONFIG: TileConfig = TileConfig {
    palette: 1,
    start_row: 0,
    reserved: [0; 14],
    colsb: [64, 64, 64, 64, 64, 64, 64, 64, 0, 0, 0, 0, 0, 0, 0, 0],
    rows: [16, 16, 16, 16, 16, 16, 16, 16, 0, 0, 0, 0, 0, 0, 0, 0],
};

impl Tiles for Hardware {
    const AVX512: bool = true;

    fn begin(self) {
        // SAFETY: the token proves AMX and the permission; CONFIG is a valid
        // 64-byte palette-1 configuration that lives for the whole program.
        unsafe {
            std::arch::asm!("ldtilecfg [{}]", in(reg) &CONFIG, options(nostack, readonly, preserves_flags));
        }
    }

    fn end(self) {
        // SAFETY: the token proves AMX; TILERELEASE only resets tile state.
        unsafe { std::arch::asm!("tilerelease", options(nostack, nomem, preserves_flags)) };
    }

    unsafe fn run(self, p: TileProgram<'_>) {
        let steps = p.qk / 16;
        assert!(steps > 0 && p.qk.is_multiple_of(16));
        assert!(p.a.len() >= MR * p.qk && p.b.len() >= p.qk * NR && p.ld >= NR);
        let a_stride = p.qk * 4;
        // SAFETY: the token proves AMX; `begin` loaded CONFIG on this thread
        // (the driver calls it before a tile's kernel calls and again after
        // any caller code), and nothing else on this thread changes the tile
        // configuration in between. Reads: A tile rows r < 16 of step s at
        // a + (16h + r)·a_stride + 64s, 64 bytes, inside the 32·qk pairs of
        // `a`; B rows r < 16 at b + (16s + r)·128 + 64h, inside the qk·32
        // pairs of `b`. Writes: rows i < 32 of `out`, 128 bytes at
        // out + i·ld·4, which the caller vouches for. The tile registers are
        // clobbered, which no compiled code uses.
        unsafe {
            std::arch::asm!(
                "tilezero tmm0",
                "tilezero tmm1",
                "tilezero tmm2",
                "tilezero tmm3",
                "2:",
                "tileloadd tmm4, [{a} + {sa}*1]",
                "tileloadd tmm5, [{a1} + {sa}*1]",
                "tileloadd tmm6, [{b} + {sb}*1]",
                "tileloadd tmm7, [{b} + {sb}*1 + 64]",
                "tdpbf16ps tmm0, tmm4, tmm6",
                "tdpbf16ps tmm1, tmm4, tmm7",
                "tdpbf16ps tmm2, tmm5, tmm6",
                "tdpbf16ps tmm3, tmm5, tmm7",
                "add {a}, 64",
                "add {a1}, 64",
                "add {b}, 2048",
                "dec {steps}",
                "jnz 2b",
                "tilestored [{c} + {sc}*1], tmm0",
                "tilestored [{c} + {sc}*1 + 64], tmm1",
                "tilestored [{c1} + {sc}*1], tmm2",
                "tilestored [{c1} + {sc}*1 + 64], tmm3",
                a = inout(reg) p.a.as_ptr() => _,
                a1 = inout(reg) p.a.as_ptr().add(16 * p.qk) => _,
                sa = in(reg) a_stride,
                b = inout(reg) p.b.as_ptr() => _,
                sb = in(reg) NR * 4,
                c = in(reg) p.out,
                c1 = in(reg) p.out.add(16 * p.ld),
                sc = in(reg) p.ld * 4,
                steps = inout(reg) steps => _,
                options(nostack),
            );
        }
    }
}

#[cfg(test)]
impl Tiles for Model {
    const AVX512: bool = false;

    fn begin(self) {}

    fn end(self) {}

    unsafe fn run(self, p: TileProgram<'_>) {
        /// A subnormal (or zero) counts as a zero of its sign.
        fn flush(x: f32) -> f32 {
            if x.is_subnormal() {
                0.0f32.copysign(x)
            } else {
                x
            }
        }
        let half = |pair: Pair, odd: bool| {
            flush(f32::from_bits(if odd {
                pair & 0xFFFF_0000
            } else {
                pair << 16
            }))
        };
        for i in 0..MR {
            // SAFETY: row i < 32 of `out`, 32 values, is the caller's to
            // write (the contract of `run`).
            let out_row = unsafe { std::slice::from_raw_parts_mut(p.out.add(i * p.ld), NR) };
            for (j, out) in out_row.iter_mut().enumerate() {
                let mut tile = 0.0f32;
                for step in 0..p.qk / 16 {
                    let (mut even, mut odd) = (0.0f32, 0.0f32);
                    for q in 16 * step..16 * (step + 1) {
                        let (a, b) = (p.a[i * p.qk + q], p.b[q * NR + j]);
                        even = flush(half(a, false).mul_add(half(b, false), even));
                        odd = flush(half(a, true).mul_add(half(b, true), odd));
                    }
                    tile = flush(tile + flush(even + odd));
                }
                *out = tile;
            }
        }
    }
}

impl<T: Tiles, SA: HalfSource<bf16>, SB: HalfSource<bf16>> MicroKernel<SA, SB> for Amx<T> {
    type Packed = Pair;
    type Out = f32;

    const MR: usize = MR;
    const NR: usize = NR;
    const KC: usize = 256;
    /// Blocks of up to 512 where the driver's rule takes long blocks:
    /// fewer round trips of `C` and less padding of `k` to whole tile
    /// steps (`k = 784`: two blocks of 392, padded to 416, instead of three
    /// of 262, padded to 288). Measured on a 2-vCPU Xeon guest with AMX
    /// (`benches/RESULTS.md`): 1024³ 8–10 % faster, the MLP's `128×256×784`
    /// product with f32 operands 10–14 %, its bf16 epoch 0–3 % shorter.
    const KC_LONG: usize = 512;
    const NC: usize = 2048;
    const MC: usize = 4096;
    /// Both operands are packed (and converted): fewer tiles convert each
    /// fewer times.
    const TILES_PER_THREAD: usize = 2;
    /// The tiles finish a product about six times sooner than the f32
    /// kernel, so a product must be that much larger before a second thread
    /// pays. Measured on a 2-vCPU Xeon guest with AMX (`benches/RESULTS.md`):
    /// one thread ran 256³ at 839 GFLOP/s and two at 453; at 512³, two ran
    /// 826 and one 717. In the MLP's training step at batch 128 (products
    /// of at most 128 × 256 × 784), keeping them on one thread made the step
    /// 12 % shorter.
    const PAR_MIN_WORK: usize = par_min_work(384);

    /// Pairs along `k`, padded to whole tile steps.
    fn packed_rows(kc: usize) -> usize {
        kc.next_multiple_of(K_STEP) / 2
    }

    fn pack_a(a: View<'_, SA>, i0: usize, mr: usize, p0: usize, kc: usize, dst: &mut [Pair]) {
        let qk = <Self as MicroKernel<SA, SB>>::packed_rows(kc);
        if T::AVX512 {
            // SAFETY: a kernel whose tiles pack with SIMD runs only where the
            // hardware token proved the features.
            unsafe { pairs::x86::pack_pair_rows_selected::<SA, MR>(a, i0, mr, p0, kc, qk, dst) }
        } else {
            pairs::pack_pair_rows::<SA, MR>(a, i0, mr, p0, kc, qk, dst);
        }
    }

    fn pack_b(b: View<'_, SB>, p0: usize, kc: usize, j0: usize, nc: usize, dst: &mut [Pair]) {
        let qk = <Self as MicroKernel<SA, SB>>::packed_rows(kc);
        // The packers see op(B) transposed: rows j, steps p.
        let bt = View {
            data: b.data,
            rs: b.cs,
            cs: b.rs,
        };
        if T::AVX512 {
            // SAFETY: as in `pack_a`.
            unsafe {
                pairs::x86::pack_pair_panels_selected::<SB, NR>(bt, j0, nc, p0, kc, qk * NR, dst)
            }
        } else {
            pairs::pack_pair_panels::<SB, NR>(bt, j0, nc, p0, kc, qk * NR, dst);
        }
    }

    fn begin(self) {
        self.0.begin();
    }

    fn end(self) {
        self.0.end();
    }

    unsafe fn run(
        self,
        kc: usize,
        a: APanel<'_, Pair>,
        b: &[Pair],
        b_step: usize,
        c: *mut f32,
        ldc: usize,
        mr: usize,
        nr: usize,
        add: bool,
    ) {
        let APanel::Packed(a) = a else {
            unreachable!("the AMX kernel reads A packed");
        };
        let qk = <Self as MicroKernel<SA, SB>>::packed_rows(kc);
        assert!(b_step == NR && mr <= MR && nr <= NR);
        let program = |out: *mut f32, ld: usize| TileProgram {
            a: &a[..MR * qk],
            b: &b[..qk * NR],
            qk,
            out,
            ld,
        };
        if !add && mr == MR && nr == NR {
            // SAFETY: the whole 32 × 32 tile at `c`, rows `ldc` apart, is the
            // caller's to write (the contract of `run`).
            unsafe { self.0.run(program(c, ldc)) };
            return;
        }
        let mut sums = Sums([0.0; MR * NR]);
        let sums = &mut sums.0;
        // SAFETY: `sums` holds 32 rows of 32, a local array.
        unsafe { self.0.run(program(sums.as_mut_ptr(), NR)) };
        if T::AVX512 {
            // SAFETY: a kernel whose tiles write out with AVX-512 runs only
            // where the hardware token proved AVX-512F; the rows and columns
            // are the caller's, as below.
            unsafe { write_out_avx512(sums, c, ldc, mr, nr, add) };
        } else {
            for (i, row) in sums.chunks_exact(NR).take(mr).enumerate() {
                // SAFETY: row i < mr, columns < nr: inside the tile the caller
                // vouches for, which no one else touches during the call.
                let c_row = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), nr) };
                for (cv, &v) in c_row.iter_mut().zip(row) {
                    *cv = if add { *cv + v } else { v };
                }
            }
        }
    }
}

/// A 32 × 32 block of sums on a cache line, so that the tile stores of its
/// 64-byte rows never straddle two lines.
#[repr(C, align(64))]
struct Sums([f32; MR * NR]);

/// `C[i, j] = sums[i, j]`, or `C[i, j] += sums[i, j]` with `add`, for
/// `i < mr`, `j < nr`: two masked vectors of 16 per row.
///
/// # Safety
///
/// The CPU must have AVX-512F; rows `i < mr` of `c`, `ldc` apart, must be
/// valid for reads and writes of `nr ≤ 32` values that nothing else
/// accesses during the call.
#[target_feature(enable = "avx512f")]
unsafe fn write_out_avx512(
    sums: &[f32; MR * NR],
    c: *mut f32,
    ldc: usize,
    mr: usize,
    nr: usize,
    add: bool,
) {
    use std::arch::x86_64::*;
    let masks = [0, 16].map(|j0| {
        let n = nr.saturating_sub(j0).min(16);
        ((1u32 << n) - 1) as __mmask16
    });
    for (i, row) in sums.chunks_exact(NR).take(mr).enumerate() {
        for (h, &mask) in masks.iter().enumerate() {
            // SAFETY: lanes j < nr of row i < mr of `c` (the caller's), and
            // of `sums` (32 per row).
            unsafe {
                let dst = c.add(i * ldc + 16 * h);
                let mut v = _mm512_loadu_ps(row.as_ptr().add(16 * h));
                if add {
                    v = _mm512_add_ps(_mm512_maskz_loadu_ps(mask, dst), v);
                }
                _mm512_mask_storeu_ps(dst, mask, v);
            }
        }
    }
}
