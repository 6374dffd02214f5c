//! Which micro-kernels run: the best this CPU has, or the one an
//! environment variable forces.
//!
//! | variable | values | kernels |
//! |---|---|---|
//! | `ADVGRAD_GEMM` | `auto`, `avx512-12x32`, `avx512`, `avx2`, `portable` | f32 and f64 (and f16, and bf16's `portable` path, which widen to f32); also the build of the CNN's 2×2 max-pooling loops: AVX-512 with `avx512`, the baseline otherwise |
//! | `ADVGRAD_GEMM_BF16` | `auto`, `amx`, `avx512bf16`, `portable` | bf16 |
//! | `ADVGRAD_BF16_ROUNDING` | `auto`, `avx512bf16`, `integer` | not a kernel: how the AMX and AVX512-BF16 kernels' packers round f32 operands to bf16 ([`Bf16Rounding`]; the same bits either way) |
//! | `ADVGRAD_GEMM_SWAP` | `auto`, `always`, `never` | not a kernel: whether an f32/f64 product runs as `Cᵀ = op(B)ᵀ·op(A)ᵀ` ([`Swap`]) |
//!
//! Unset, empty or `auto` means the best kernel the CPU has. A forced kernel
//! the CPU lacks is an error, never a silent fall-back: a test or benchmark
//! run with the variable set measures what it names or stops. The variables
//! are read once per process.

use std::fmt;
use std::sync::OnceLock;

use crate::error::{Error, Result};

/// The micro-kernels of the f32 and f64 gemm.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum F32Kernel {
    /// AVX-512F: 12 × 32 (f32) fused multiply-adds with `B` prefetched
    /// eight steps ahead, or 8 × 16 (f64); the automatic choice on Intel
    /// CPUs, where it was measured faster than [`F32Kernel::Avx512`]. In
    /// f32 it sums a long `k` in blocks of up to 512 (instead of 256) where
    /// `m` and `n` are at most 1024, so its bits there differ from
    /// [`F32Kernel::Avx512`]'s.
    Avx512Tall,
    /// AVX-512F: 8 × 32 (f32) or 8 × 16 (f64) fused multiply-adds; the
    /// automatic choice on other CPUs with AVX-512 (measured on Zen 4).
    Avx512,
    /// AVX2 and FMA: 6 × 16 (f32) or 6 × 8 (f64).
    Avx2Fma,
    /// Plain Rust, 4 × 8, for any CPU.
    Portable,
}

/// The micro-kernels of the bf16 gemm (f32 accumulation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Kernel {
    /// AMX tiles, `tdpbf16ps`, 32 × 32 per call.
    Amx,
    /// AVX512-BF16, `vdpbf16ps`, 8 × 32 per call.
    Avx512Bf16,
    /// bf16 widened to f32 while packing, then the f32 kernel that
    /// [`F32Kernel::selected`] picks.
    Portable,
}

/// How the AVX-512 packers of the AMX and AVX512-BF16 kernels round f32
/// operands to bf16 pairs
/// (the same bits either way; see `half::pairs`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Bf16Rounding {
    /// AVX512-BF16's `vcvtne2ps2bf16`, 32 values per instruction (groups
    /// that hold a subnormal take the integer form).
    Avx512Bf16,
    /// Integer arithmetic on AVX-512F/BW lanes.
    Integer,
}

/// A family of kernels one environment variable chooses among.
pub trait KernelChoice: Copy + fmt::Display + 'static {
    /// The environment variable that forces a kernel.
    const ENV: &'static str;
    /// Every kernel, best first.
    const ALL: &'static [Self];
    /// The value of [`Self::ENV`] that names this kernel.
    fn name(self) -> &'static str;
    /// What the CPU (and OS) must have for this kernel.
    fn needs(self) -> &'static str;
    /// Whether this CPU (and OS) can run it.
    fn available(self) -> bool;
    /// Whether `auto` may pick it here: by default, wherever it can run.
    fn preferred(self) -> bool {
        self.available()
    }

    /// The best kernel this CPU can run: the first of [`Self::ALL`] that
    /// is [`Self::preferred`] here.
    fn best() -> Self {
        *Self::ALL
            .iter()
            .find(|k| k.preferred())
            .expect("the portable kernel runs everywhere")
    }

    /// The kernel a value of [`Self::ENV`] asks for: the best one when the
    /// value is unset, empty or `auto`.
    ///
    /// # Errors
    ///
    /// If the value names no kernel, or one this CPU lacks.
    fn from_setting(value: Option<&str>) -> Result<Self> {
        parse(value).map_err(Error::invalid)
    }
}

/// [`KernelChoice::from_setting`], with the error as its message.
fn parse<K: KernelChoice>(value: Option<&str>) -> std::result::Result<K, String> {
    let value = value.map(str::trim).unwrap_or("");
    if value.is_empty() || value == "auto" {
        return Ok(K::best());
    }
    let Some(&kernel) = K::ALL.iter().find(|k| k.name() == value) else {
        let names: Vec<&str> = K::ALL.iter().map(|k| k.name()).collect();
        return Err(format!(
            "{}={value}: expected auto or one of {}",
            K::ENV,
            names.join(", ")
        ));
    };
    if !kernel.available() {
        return Err(format!(
            "{}={value}: this machine lacks {}",
            K::ENV,
            kernel.needs()
        ));
    }
    Ok(kernel)
}

impl KernelChoice for F32Kernel {
    const ENV: &'static str = "ADVGRAD_GEMM";
    const ALL: &'static [Self] = &[
        F32Kernel::Avx512Tall,
        F32Kernel::Avx512,
        F32Kernel::Avx2Fma,
        F32Kernel::Portable,
    ];

    fn name(self) -> &'static str {
        match self {
            F32Kernel::Avx512Tall => "avx512-12x32",
            F32Kernel::Avx512 => "avx512",
            F32Kernel::Avx2Fma => "avx2",
            F32Kernel::Portable => "portable",
        }
    }

    fn needs(self) -> &'static str {
        match self {
            F32Kernel::Avx512Tall | F32Kernel::Avx512 => "AVX-512F",
            F32Kernel::Avx2Fma => "AVX2 and FMA",
            F32Kernel::Portable => "nothing",
        }
    }

    fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            F32Kernel::Avx512Tall => super::x86::Avx512Tall::detect().is_some(),
            #[cfg(target_arch = "x86_64")]
            F32Kernel::Avx512 => super::x86::Avx512::detect().is_some(),
            #[cfg(target_arch = "x86_64")]
            F32Kernel::Avx2Fma => super::x86::Avx2Fma::detect().is_some(),
            F32Kernel::Portable => true,
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }

    /// The 12 × 32 kernel only on Intel CPUs (CPUID vendor `GenuineIntel`).
    fn preferred(self) -> bool {
        match self {
            F32Kernel::Avx512Tall => self.available() && cpu_is_intel(),
            _ => self.available(),
        }
    }
}

impl F32Kernel {
    /// Whether the kernel is one of the AVX-512 ones.
    pub fn is_avx512(self) -> bool {
        matches!(self, F32Kernel::Avx512Tall | F32Kernel::Avx512)
    }
}

/// Whether CPUID's vendor string is `GenuineIntel`.
fn cpu_is_intel() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        if cfg!(miri) {
            return false;
        }
        let id = std::arch::x86_64::__cpuid(0);
        let vendor: Vec<u8> = [id.ebx, id.edx, id.ecx]
            .iter()
            .flat_map(|r| r.to_le_bytes())
            .collect();
        vendor == b"GenuineIntel"
    }
    #[cfg(not(target_arch = "x86_64"))]
    false
}

impl KernelChoice for Bf16Kernel {
    const ENV: &'static str = "ADVGRAD_GEMM_BF16";
    const ALL: &'static [Self] = &[
        Bf16Kernel::Amx,
        Bf16Kernel::Avx512Bf16,
        Bf16Kernel::Portable,
    ];

    fn name(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => "amx",
            Bf16Kernel::Avx512Bf16 => "avx512bf16",
            Bf16Kernel::Portable => "portable",
        }
    }

    fn needs(self) -> &'static str {
        match self {
            Bf16Kernel::Amx => {
                "AMX-BF16 (CPUID; with AVX-512F, BW, VL and AVX2), tile state enabled \
                 by the OS (XCR0) and Linux's permission for tile data (arch_prctl \
                 ARCH_REQ_XCOMP_PERM)"
            }
            Bf16Kernel::Avx512Bf16 => "AVX512-BF16 (with AVX-512F, BW, VL and AVX2)",
            Bf16Kernel::Portable => "nothing",
        }
    }

    fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Amx => super::half::amx::Amx::detect().is_some(),
            #[cfg(target_arch = "x86_64")]
            Bf16Kernel::Avx512Bf16 => super::half::avx512bf16::Avx512Bf16::detect().is_some(),
            Bf16Kernel::Portable => true,
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

impl KernelChoice for Bf16Rounding {
    const ENV: &'static str = "ADVGRAD_BF16_ROUNDING";
    const ALL: &'static [Self] = &[Bf16Rounding::Avx512Bf16, Bf16Rounding::Integer];

    fn name(self) -> &'static str {
        match self {
            Bf16Rounding::Avx512Bf16 => "avx512bf16",
            Bf16Rounding::Integer => "integer",
        }
    }

    fn needs(self) -> &'static str {
        match self {
            Bf16Rounding::Avx512Bf16 => "AVX512-BF16 and AVX512-DQ (with AVX-512F, BW and VL)",
            Bf16Rounding::Integer => "nothing",
        }
    }

    fn available(self) -> bool {
        match self {
            #[cfg(target_arch = "x86_64")]
            Bf16Rounding::Avx512Bf16 => {
                !cfg!(miri)
                    && is_x86_feature_detected!("avx512f")
                    && is_x86_feature_detected!("avx512bw")
                    && is_x86_feature_detected!("avx512vl")
                    && is_x86_feature_detected!("avx512dq")
                    && is_x86_feature_detected!("avx512bf16")
            }
            Bf16Rounding::Integer => true,
            #[cfg(not(target_arch = "x86_64"))]
            _ => false,
        }
    }
}

impl fmt::Display for Bf16Rounding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for F32Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl fmt::Display for Bf16Kernel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether the f32/f64 gemm computes `C = op(A)·op(B)` as its transpose
/// `Cᵀ = op(B)ᵀ·op(A)ᵀ` (the same bits either way).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Swap {
    /// Where it pays: a transposed `B` and few rows (`x·Wᵀ` at a small
    /// batch; see `driver::swap_pays`).
    Auto,
    /// Every product with non-empty operands.
    Always,
    /// No product.
    Never,
}

impl Swap {
    /// The environment variable that sets the rule.
    pub const ENV: &'static str = "ADVGRAD_GEMM_SWAP";

    /// The rule a value of [`Swap::ENV`] asks for (unset or empty: `auto`).
    ///
    /// # Errors
    ///
    /// If the value is none of `auto`, `always` and `never`.
    pub fn from_setting(value: Option<&str>) -> Result<Self> {
        Self::parse(value).map_err(Error::invalid)
    }

    /// Every rule.
    const ALL: [Swap; 3] = [Swap::Auto, Swap::Always, Swap::Never];

    /// [`Swap::from_setting`], with the error as its message.
    fn parse(value: Option<&str>) -> std::result::Result<Self, String> {
        let value = value.map(str::trim).unwrap_or("");
        if value.is_empty() {
            return Ok(Swap::Auto);
        }
        Self::ALL
            .into_iter()
            .find(|s| s.name() == value)
            .ok_or_else(|| format!("{}={value}: expected auto, always or never", Self::ENV))
    }

    /// The value of [`Swap::ENV`] that sets this rule.
    pub fn name(self) -> &'static str {
        match self {
            Swap::Auto => "auto",
            Swap::Always => "always",
            Swap::Never => "never",
        }
    }

    /// The rule this process uses, read once.
    ///
    /// # Errors
    ///
    /// As [`Swap::from_setting`].
    pub fn selected() -> Result<Self> {
        static CELL: OnceLock<std::result::Result<Swap, String>> = OnceLock::new();
        CELL.get_or_init(|| Swap::parse(std::env::var(Self::ENV).ok().as_deref()))
            .clone()
            .map_err(Error::invalid)
    }
}

impl fmt::Display for Swap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Reads `K::ENV` once per process and remembers the answer (an error as
/// its message, since [`Error`] is not `Clone`).
fn selected<K: KernelChoice>(cell: &'static OnceLock<std::result::Result<K, String>>) -> Result<K> {
    cell.get_or_init(|| parse(std::env::var(K::ENV).ok().as_deref()))
        .clone()
        .map_err(Error::invalid)
}

impl F32Kernel {
    /// The f32/f64 kernel this process uses: `ADVGRAD_GEMM`'s, else the
    /// best the CPU has.
    ///
    /// # Errors
    ///
    /// If `ADVGRAD_GEMM` names no kernel, or one this CPU lacks.
    pub fn selected() -> Result<Self> {
        static CELL: OnceLock<std::result::Result<F32Kernel, String>> = OnceLock::new();
        selected(&CELL)
    }
}

impl Bf16Kernel {
    /// The bf16 kernel this process uses: `ADVGRAD_GEMM_BF16`'s, else the
    /// best the CPU has.
    ///
    /// # Errors
    ///
    /// If `ADVGRAD_GEMM_BF16` names no kernel, or one this CPU lacks.
    pub fn selected() -> Result<Self> {
        static CELL: OnceLock<std::result::Result<Bf16Kernel, String>> = OnceLock::new();
        selected(&CELL)
    }
}

impl Bf16Rounding {
    /// The rounding this process's packers use: `ADVGRAD_BF16_ROUNDING`'s,
    /// else the fastest the CPU has.
    ///
    /// # Errors
    ///
    /// If `ADVGRAD_BF16_ROUNDING` names no form, or one this CPU lacks.
    pub fn selected() -> Result<Self> {
        static CELL: OnceLock<std::result::Result<Bf16Rounding, String>> = OnceLock::new();
        selected(&CELL)
    }
}

/// The kernel `K::selected()` returned, or a panic with its message: for
/// the gemm entry points, which have no error channel.
pub(super) fn selected_or_panic<K>(selected: Result<K>) -> K {
    selected.unwrap_or_else(|e| panic!("gemm: {e}"))
}

/// One line naming the CPU (model, family and model number, from
/// `/proc/cpuinfo` where there is one), the gemm kernels this process
/// uses and its swap rule, for benchmark records.
pub fn describe() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let field = |name: &str| {
        cpuinfo
            .lines()
            .find(|l| l.split(':').next().map(str::trim) == Some(name))
            .and_then(|l| l.split(':').nth(1))
            .map_or_else(|| "?".to_string(), |v| v.trim().to_string())
    };
    let kernel = |k: Result<String>| k.unwrap_or_else(|e| format!("({e})"));
    format!(
        "CPU: {} (family {}, model {}); f32 kernel {}, bf16 kernel {} (rounding {}), swap {}",
        field("model name"),
        field("cpu family"),
        field("model"),
        kernel(F32Kernel::selected().map(|k| k.to_string())),
        kernel(Bf16Kernel::selected().map(|k| k.to_string())),
        kernel(Bf16Rounding::selected().map(|k| k.to_string())),
        kernel(Swap::selected().map(|s| s.to_string())),
    )
}
