//! Which compiled image of a kernel module a GPU loads.
//!
//! `build.rs` embeds, for every `kernels/*.cu`, PTX for a virtual
//! architecture (`compute_80`) and cubins (SASS, machine code) for real ones
//! (`sm_80`, `sm_90`). CUDA's compatibility rules decide what can run where:
//!
//! - a cubin for `sm_XY` runs on a device of compute capability `X.Z` with
//!   `Z ≥ Y`: the same major version only (an `sm_80` cubin runs on 8.0, 8.6
//!   and 8.9, not on 9.0);
//! - PTX for `compute_XY` runs on any device of capability `≥ X.Y`, after
//!   the driver compiles it (JIT), provided the driver knows the PTX ISA
//!   version: a driver older than the NVRTC that wrote the PTX rejects it.
//!
//! So, like the driver choosing from a fat binary, a device loads the cubin
//! of the highest architecture that fits it, and falls back to the PTX; a
//! cubin needs no JIT and loads on any driver of the same CUDA major
//! version. [`IMAGE_VAR`] forces one kind.

use std::fmt;

/// Set to `cubin` or `ptx`, a GPU loads only that kind of image (`auto`,
/// the default: the fitting cubin first, then the PTX).
pub const IMAGE_VAR: &str = "ADVGRAD_CUDA_IMAGE";

/// A GPU architecture, as a compute capability `major.minor`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Arch {
    /// The major version (8 for 8.6).
    pub major: u32,
    /// The minor version (6 for 8.6).
    pub minor: u32,
}

impl Arch {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Arch {
        Arch { major, minor }
    }

    /// The architecture of a name such as `sm_90`, `compute_80` or `sm_120`
    /// (the last digit is the minor version).
    pub fn parse(name: &str) -> Option<Arch> {
        let digits = name
            .strip_prefix("sm_")
            .or_else(|| name.strip_prefix("compute_"))?;
        if digits.len() < 2 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        let n: u32 = digits.parse().ok()?;
        Some(Arch::new(n / 10, n % 10))
    }

    /// Whether a cubin built for `self` runs on a device of capability
    /// `device`: same major version, minor at most the device's.
    pub fn cubin_runs_on(self, device: Arch) -> bool {
        self.major == device.major && self.minor <= device.minor
    }

    /// Whether PTX for `self` can be compiled for `device` by the driver.
    pub fn ptx_runs_on(self, device: Arch) -> bool {
        self <= device
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// One compiled form of a kernel module.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Image {
    /// Machine code (SASS) for a real architecture, loaded as is.
    Cubin(Arch),
    /// PTX for a virtual architecture, compiled by the driver on load.
    Ptx(Arch),
}

impl fmt::Display for Image {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Image::Cubin(a) => write!(f, "sm_{}{} cubin", a.major, a.minor),
            Image::Ptx(a) => write!(f, "compute_{}{} PTX (driver JIT)", a.major, a.minor),
        }
    }
}

/// Which kinds of image a GPU may load ([`IMAGE_VAR`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ImagePolicy {
    /// The fitting cubin first, then the PTX.
    Auto,
    /// Only a cubin.
    Cubin,
    /// Only the PTX (through the driver's JIT).
    Ptx,
}

impl ImagePolicy {
    /// The policy [`IMAGE_VAR`] asks for (`Auto` when unset or empty).
    pub fn from_env() -> Result<ImagePolicy, String> {
        match std::env::var(IMAGE_VAR).unwrap_or_default().as_str() {
            "" | "auto" => Ok(ImagePolicy::Auto),
            "cubin" => Ok(ImagePolicy::Cubin),
            "ptx" => Ok(ImagePolicy::Ptx),
            other => Err(format!("{IMAGE_VAR}={other}: expected auto, cubin or ptx")),
        }
    }
}

/// The images a device of capability `device` tries, in order: the cubin
/// of the highest architecture in `cubins` that runs on it, then the PTX
/// (virtual architecture `ptx`) if the device is at least that
/// architecture, each kept only if `policy` allows its kind. Empty when
/// nothing embedded can run on the device.
pub fn images_for(device: Arch, cubins: &[Arch], ptx: Arch, policy: ImagePolicy) -> Vec<Image> {
    let cubin = cubins
        .iter()
        .copied()
        .filter(|a| a.cubin_runs_on(device))
        .max()
        .map(Image::Cubin);
    let ptx = ptx.ptx_runs_on(device).then_some(Image::Ptx(ptx));
    let (cubin, ptx) = match policy {
        ImagePolicy::Auto => (cubin, ptx),
        ImagePolicy::Cubin => (cubin, None),
        ImagePolicy::Ptx => (None, ptx),
    };
    cubin.into_iter().chain(ptx).collect()
}

/// The oldest CUDA version (`major.minor`) whose driver accepts PTX of ISA
/// version `isa` (`8.8`), for the ISA versions of CUDA 11 and 12.
pub fn cuda_for_ptx_isa(isa: &str) -> Option<(u32, u32)> {
    let (major, minor) = isa.split_once('.')?;
    let (major, minor): (u32, u32) = (major.parse().ok()?, minor.parse().ok()?);
    match (major, minor) {
        (7, m @ 0..=8) => Some((11, m)),
        (8, m @ 0..=5) => Some((12, m)),
        (8, m @ 6..=8) => Some((12, m + 1)),
        (9, 0) => Some((13, 0)),
        _ => None,
    }
}

/// `ELFOSABI` values of CUDA cubins: the ELF ABI of CUDA 12's cubins up to
/// Hopper (`e_flags & 0xff` is the SM), and the one from Blackwell on
/// (`(e_flags >> 8) & 0xff`).
const OSABI_CUDA_V1: u8 = 0x33;
const OSABI_CUDA_V2: u8 = 0x41;
/// `EM_CUDA`.
const MACHINE_CUDA: u16 = 190;

/// The architecture a cubin was built for, read from its ELF header (a
/// 64-bit little-endian ELF of machine `EM_CUDA`; the SM number sits in
/// `e_flags`), or why the bytes are not a cubin.
pub fn cubin_arch(bytes: &[u8]) -> Result<Arch, String> {
    if bytes.len() < 64 || &bytes[..4] != b"\x7fELF" {
        return Err("not an ELF file".into());
    }
    if bytes[4] != 2 || bytes[5] != 1 {
        return Err("not a 64-bit little-endian ELF file".into());
    }
    let machine = u16::from_le_bytes([bytes[18], bytes[19]]);
    if machine != MACHINE_CUDA {
        return Err(format!(
            "ELF machine {machine}, not EM_CUDA ({MACHINE_CUDA})"
        ));
    }
    let flags = u32::from_le_bytes([bytes[48], bytes[49], bytes[50], bytes[51]]);
    let sm = match bytes[7] {
        OSABI_CUDA_V1 => flags & 0xff,
        OSABI_CUDA_V2 => (flags >> 8) & 0xff,
        other => return Err(format!("unknown CUDA ELF ABI (EI_OSABI {other:#x})")),
    };
    if sm < 10 {
        return Err(format!("no SM version in e_flags {flags:#x}"));
    }
    Ok(Arch::new(sm / 10, sm % 10))
}

#[cfg(test)]
mod tests {
    use super::*;

    const SM80: Arch = Arch::new(8, 0);
    const SM90: Arch = Arch::new(9, 0);
    const EMBEDDED: [Arch; 2] = [SM80, SM90];

    fn auto(major: u32, minor: u32) -> Vec<Image> {
        images_for(Arch::new(major, minor), &EMBEDDED, SM80, ImagePolicy::Auto)
    }

    #[test]
    fn names_parse_to_compute_capabilities() {
        assert_eq!(Arch::parse("sm_80"), Some(SM80));
        assert_eq!(Arch::parse("compute_90"), Some(SM90));
        assert_eq!(Arch::parse("sm_86"), Some(Arch::new(8, 6)));
        assert_eq!(Arch::parse("sm_120"), Some(Arch::new(12, 0)));
        assert_eq!(Arch::parse("sm_103"), Some(Arch::new(10, 3)));
        for bad in ["sm_8", "sm_", "80", "sm_8x", "compute_", "sm_90a"] {
            assert_eq!(Arch::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn each_device_gets_the_cubin_its_major_version_runs_then_the_ptx() {
        assert_eq!(auto(8, 0), [Image::Cubin(SM80), Image::Ptx(SM80)]);
        assert_eq!(auto(9, 0), [Image::Cubin(SM90), Image::Ptx(SM80)]);
        // sm_80 SASS runs on every 8.x with x ≥ 0.
        assert_eq!(auto(8, 6), [Image::Cubin(SM80), Image::Ptx(SM80)]);
        assert_eq!(auto(8, 9), [Image::Cubin(SM80), Image::Ptx(SM80)]);
        // No cubin of major 10 or 12: the PTX, through the JIT.
        assert_eq!(auto(10, 0), [Image::Ptx(SM80)]);
        assert_eq!(auto(12, 0), [Image::Ptx(SM80)]);
        // Older than the PTX's virtual architecture: nothing runs.
        assert_eq!(auto(7, 5), []);
    }

    #[test]
    fn the_highest_fitting_cubin_wins() {
        let cubins = [Arch::new(8, 0), Arch::new(8, 6), Arch::new(8, 9)];
        let pick = |minor| images_for(Arch::new(8, minor), &cubins, SM80, ImagePolicy::Auto)[0];
        assert_eq!(pick(0), Image::Cubin(Arch::new(8, 0)));
        assert_eq!(pick(7), Image::Cubin(Arch::new(8, 6)));
        assert_eq!(pick(9), Image::Cubin(Arch::new(8, 9)));
    }

    #[test]
    fn the_policy_keeps_one_kind() {
        let only = |major, policy| images_for(Arch::new(major, 0), &EMBEDDED, SM80, policy);
        assert_eq!(only(9, ImagePolicy::Cubin), [Image::Cubin(SM90)]);
        assert_eq!(only(9, ImagePolicy::Ptx), [Image::Ptx(SM80)]);
        assert_eq!(only(12, ImagePolicy::Cubin), []);
        assert_eq!(
            images_for(SM90, &[], SM80, ImagePolicy::Auto),
            [Image::Ptx(SM80)]
        );
    }

    #[test]
    fn images_say_what_they_are() {
        assert_eq!(Image::Cubin(SM90).to_string(), "sm_90 cubin");
        assert_eq!(Image::Ptx(SM80).to_string(), "compute_80 PTX (driver JIT)");
        assert_eq!(Arch::new(8, 6).to_string(), "8.6");
    }

    #[test]
    fn ptx_isa_versions_map_to_the_cuda_that_introduced_them() {
        assert_eq!(cuda_for_ptx_isa("7.8"), Some((11, 8)));
        assert_eq!(cuda_for_ptx_isa("8.0"), Some((12, 0)));
        assert_eq!(cuda_for_ptx_isa("8.4"), Some((12, 4)));
        assert_eq!(cuda_for_ptx_isa("8.5"), Some((12, 5)));
        assert_eq!(cuda_for_ptx_isa("8.7"), Some((12, 8)));
        assert_eq!(cuda_for_ptx_isa("8.8"), Some((12, 9)));
        assert_eq!(cuda_for_ptx_isa("9.0"), Some((13, 0)));
        assert_eq!(cuda_for_ptx_isa("6.4"), None);
        assert_eq!(cuda_for_ptx_isa("x"), None);
    }

    /// A 64-byte ELF header with the given OS ABI, machine and flags.
    fn header(osabi: u8, machine: u16, flags: u32) -> Vec<u8> {
        let mut h = vec![0u8; 64];
        h[..4].copy_from_slice(b"\x7fELF");
        h[4] = 2;
        h[5] = 1;
        h[7] = osabi;
        h[18..20].copy_from_slice(&machine.to_le_bytes());
        h[48..52].copy_from_slice(&flags.to_le_bytes());
        h
    }

    #[test]
    fn the_elf_header_names_the_architecture() {
        // e_flags as ptxas 12.9 writes them.
        assert_eq!(cubin_arch(&header(0x33, 190, 0x0050_0550)), Ok(SM80));
        assert_eq!(cubin_arch(&header(0x33, 190, 0x005a_055a)), Ok(SM90));
        assert_eq!(
            cubin_arch(&header(0x33, 190, 0x0056_0556)),
            Ok(Arch::new(8, 6))
        );
        assert_eq!(
            cubin_arch(&header(0x41, 190, 0x0600_6402)),
            Ok(Arch::new(10, 0))
        );
        assert_eq!(
            cubin_arch(&header(0x41, 190, 0x0600_7802)),
            Ok(Arch::new(12, 0))
        );
        assert!(cubin_arch(&header(0x33, 62, 0x50))
            .unwrap_err()
            .contains("EM_CUDA"));
        assert!(cubin_arch(&header(0x00, 190, 0x50))
            .unwrap_err()
            .contains("ABI"));
        assert!(cubin_arch(b"\x7fELF").is_err());
        assert!(
            cubin_arch(b"// PTX text, not a cubin ........................................")
                .unwrap_err()
                .contains("not an ELF")
        );
    }
}
