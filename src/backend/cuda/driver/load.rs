//! Loading the embedded kernel modules into a GPU's context: for each
//! `kernels/*.cu`, the images [`images_for`] picks for the device, tried in
//! order (the fitting cubin, then the PTX), and every entry point of the
//! first one the driver accepts.

use std::collections::HashMap;
use std::sync::Arc;

use cudarc::driver::{CudaContext, CudaFunction, CudaModule};
use cudarc::nvrtc::Ptx;
use serde::Serialize;

use super::image::{cubin_arch, cuda_for_ptx_isa, images_for, Arch, Image, ImagePolicy};
use crate::backend::cuda::availability::Unavailable;
use crate::backend::cuda::ptx::{CUBINS, CUBIN_ARCHS, PTX_ARCH, PTX_MODULES};

/// Which image of one kernel module a GPU runs, and the images tried
/// before it that the driver rejected.
#[derive(Clone, Debug, Serialize)]
pub struct LoadedModule {
    /// The module (`matmul` for `kernels/matmul.cu`).
    pub module: &'static str,
    /// The image loaded, e.g. `sm_90 cubin`.
    pub image: String,
    /// `image: driver error` for each image tried first and rejected.
    pub rejected: Vec<String>,
}

/// What the loader needs to know about the device, for its choices and its
/// messages.
pub(super) struct Target<'a> {
    pub ordinal: usize,
    /// The device's name and compute capability, for messages.
    pub device: &'a str,
    pub capability: Arch,
    /// The driver's versions, for messages.
    pub driver: &'a str,
    /// The CUDA version the driver supports.
    pub driver_cuda: Option<(u32, u32)>,
}

/// The loaded modules, every entry point by name, and what was loaded.
pub(super) struct Loaded {
    pub modules: Vec<Arc<CudaModule>>,
    pub functions: HashMap<String, CudaFunction>,
    pub report: Vec<LoadedModule>,
}

/// The `.version` (PTX ISA) line of a PTX module.
pub(super) fn ptx_isa(ptx: &str) -> &str {
    ptx.lines()
        .find_map(|l| l.trim().strip_prefix(".version "))
        .unwrap_or("unknown")
}

fn embedded_ptx(module: &str) -> Option<&'static str> {
    PTX_MODULES
        .iter()
        .find_map(|&(n, ptx)| (n == module).then_some(ptx))
}

fn embedded_cubin(module: &str, arch: Arch) -> Option<&'static [u8]> {
    CUBINS
        .iter()
        .find_map(|&(n, a, bytes)| (n == module && Arch::parse(a) == Some(arch)).then_some(bytes))
}

/// The architectures of the embedded cubins and the PTX's.
pub(super) fn embedded_archs() -> (Vec<Arch>, Arch) {
    let cubins = CUBIN_ARCHS.iter().filter_map(|a| Arch::parse(a)).collect();
    let ptx = Arch::parse(PTX_ARCH).unwrap_or(Arch::new(8, 0));
    (cubins, ptx)
}

/// What the embedded images are, for messages: `cubins for sm_80, sm_90 and
/// compute_80 PTX (ISA 8.8)`.
fn embedded_summary() -> String {
    let isa = PTX_MODULES.first().map_or("unknown", |m| ptx_isa(m.1));
    let cubins = if CUBIN_ARCHS.is_empty() {
        "no cubins".to_string()
    } else {
        format!("cubins for {}", CUBIN_ARCHS.join(", "))
    };
    format!("{cubins} and {PTX_ARCH} PTX (ISA {isa})")
}

/// Why the PTX might have been rejected, when the driver is older than the
/// CUDA that introduced its ISA version.
fn ptx_hint(isa: &str, driver_cuda: Option<(u32, u32)>) -> String {
    let needs = cuda_for_ptx_isa(isa);
    let old = matches!((needs, driver_cuda), (Some(n), Some(d)) if d < n);
    let needs = needs.map_or("a newer CUDA".into(), |(a, b)| {
        format!("CUDA {a}.{b} or newer")
    });
    format!(
        "PTX ISA {isa} needs a driver for {needs}{}; rebuild with an older NVRTC \
         (ADVGRAD_CUDA_WHEELS=\"==12.4.*\" scripts/cuda-env.sh, fresh ADVGRAD_CUDA_HOME), \
         build a cubin for this GPU (ADVGRAD_CUDA_CUBINS), or update the driver",
        if old {
            ", and this driver is older"
        } else {
            ""
        }
    )
}

/// Why no image of `module` loaded: the driver, the device, each image
/// tried with the driver's error, and what the PTX ISA needs.
fn load_failure(module: &str, target: &Target<'_>, rejected: &[String], isa: &str) -> String {
    format!(
        "the driver ({}) could not load kernels/{module}.cu on cuda:{} ({}); tried {}. {}",
        target.driver,
        target.ordinal,
        target.device,
        rejected.join("; "),
        ptx_hint(isa, target.driver_cuda)
    )
}

/// Loads every module the `kernels` crate lists into `ctx`, each from the
/// first of its [`images_for`] images the driver accepts.
pub(super) fn load_modules(
    ctx: &Arc<CudaContext>,
    target: &Target<'_>,
) -> Result<Loaded, Unavailable> {
    let Target {
        ordinal, device, ..
    } = *target;
    let policy = ImagePolicy::from_env().map_err(Unavailable::Broken)?;
    let (cubin_archs, ptx_arch) = embedded_archs();
    let images = images_for(target.capability, &cubin_archs, ptx_arch, policy);
    if images.is_empty() {
        return Err(Unavailable::Broken(format!(
            "no embedded kernel image runs on cuda:{ordinal} ({device}) with policy {policy:?}: \
             advgrad has {}; PTX needs compute capability {ptx_arch} or newer, a cubin the \
             same major version (build one with ADVGRAD_CUDA_CUBINS=sm_{}{})",
            embedded_summary(),
            target.capability.major,
            target.capability.minor,
        )));
    }
    let mut loaded = Loaded {
        modules: Vec::with_capacity(kernels::MODULES.len()),
        functions: HashMap::new(),
        report: Vec::with_capacity(kernels::MODULES.len()),
    };
    for module in kernels::MODULES {
        let name = module.name;
        let mut rejected = Vec::new();
        let mut chosen = None;
        for &image in &images {
            let ptx = match image {
                Image::Cubin(arch) => embedded_cubin(name, arch).map(|bytes| {
                    // The header must agree with the table build.rs wrote.
                    match cubin_arch(bytes) {
                        Ok(a) if a == arch => Ok(Ptx::from_binary(bytes.to_vec())),
                        Ok(a) => Err(format!("the embedded cubin is for {a}")),
                        Err(e) => Err(format!("the embedded cubin is not valid: {e}")),
                    }
                }),
                Image::Ptx(_) => embedded_ptx(name).map(|p| Ok(Ptx::from_src(p))),
            };
            let ptx = match ptx {
                Some(Ok(ptx)) => ptx,
                Some(Err(why)) => {
                    rejected.push(format!("{image}: {why}"));
                    continue;
                }
                None => {
                    rejected.push(format!("{image}: not embedded"));
                    continue;
                }
            };
            match ctx.load_module(ptx) {
                Ok(m) => {
                    chosen = Some((image, m));
                    break;
                }
                Err(e) => rejected.push(format!("{image}: {e}")),
            }
        }
        let Some((image, cu_module)) = chosen else {
            let isa = embedded_ptx(name).map_or("unknown", ptx_isa);
            return Err(Unavailable::Broken(load_failure(
                name, target, &rejected, isa,
            )));
        };
        for entry in module.entry_points() {
            let f = cu_module.load_function(&entry).map_err(|e| {
                Unavailable::Broken(format!(
                    "kernels/{name}.cu ({image}) on cuda:{ordinal}: looking up `{entry}`: {e}"
                ))
            })?;
            loaded.functions.insert(entry, f);
        }
        loaded.modules.push(cu_module);
        loaded.report.push(LoadedModule {
            module: name,
            image: image.to_string(),
            rejected,
        });
    }
    Ok(loaded)
}

#[cfg(test)]
mod tests {
    use super::super::image::cubin_arch;
    use super::*;

    #[test]
    fn every_module_embeds_its_ptx_and_a_cubin_per_architecture() {
        assert!(!CUBIN_ARCHS.is_empty(), "build.rs embedded no cubins");
        for module in kernels::MODULES {
            let ptx =
                embedded_ptx(module.name).unwrap_or_else(|| panic!("no PTX for {}", module.name));
            assert!(
                ptx.contains(&format!(".target {}", PTX_ARCH.replace("compute_", "sm_"))),
                "{}: the PTX does not target {PTX_ARCH}",
                module.name
            );
            for entry in module.entry_points() {
                assert!(
                    ptx.contains(&format!(".entry {entry}(")),
                    "{entry} missing from the PTX of {}",
                    module.name
                );
            }
            for &arch_name in CUBIN_ARCHS {
                let arch = Arch::parse(arch_name).expect("an sm_XY name");
                let cubin = embedded_cubin(module.name, arch)
                    .unwrap_or_else(|| panic!("no {arch_name} cubin for {}", module.name));
                assert_eq!(
                    cubin_arch(cubin),
                    Ok(arch),
                    "the {arch_name} cubin of {} is not an ELF for {arch_name}",
                    module.name
                );
                for entry in module.entry_points() {
                    let symbol = format!(".text.{entry}\0");
                    assert!(
                        cubin.windows(symbol.len()).any(|w| w == symbol.as_bytes()),
                        "{entry} missing from the {arch_name} cubin of {}",
                        module.name
                    );
                }
            }
        }
        assert_eq!(CUBINS.len(), kernels::MODULES.len() * CUBIN_ARCHS.len());
    }

    #[test]
    fn the_default_build_embeds_cubins_for_sm_80_and_sm_90_and_compute_80_ptx() {
        assert!(ptx_isa(PTX_MODULES[0].1).contains('.'));
        // A build whose environment asked for other images embeds those.
        if option_env!("ADVGRAD_CUDA_CUBINS").is_some()
            || option_env!("ADVGRAD_CUDA_ARCH").is_some()
        {
            return;
        }
        let (cubins, ptx) = embedded_archs();
        assert_eq!(cubins, [Arch::new(8, 0), Arch::new(9, 0)]);
        assert_eq!(ptx, Arch::new(8, 0));
        let summary = embedded_summary();
        assert!(
            summary.starts_with("cubins for sm_80, sm_90 and compute_80 PTX (ISA "),
            "{summary}"
        );
    }

    #[test]
    fn a_load_failure_names_the_driver_the_device_each_image_and_the_isa() {
        let target = Target {
            ordinal: 1,
            device: "NVIDIA H100 80GB HBM3, compute capability 9.0",
            capability: Arch::new(9, 0),
            driver: "driver 550.54.15, CUDA 12.4",
            driver_cuda: Some((12, 4)),
        };
        let rejected = [
            "sm_90 cubin: DriverError(CUDA_ERROR_INVALID_IMAGE)".to_string(),
            "compute_80 PTX (driver JIT): DriverError(CUDA_ERROR_UNSUPPORTED_PTX_VERSION)"
                .to_string(),
        ];
        let m = load_failure("matmul", &target, &rejected, "8.8");
        for part in [
            "the driver (driver 550.54.15, CUDA 12.4) could not load kernels/matmul.cu on cuda:1",
            "(NVIDIA H100 80GB HBM3, compute capability 9.0)",
            "tried sm_90 cubin: DriverError(CUDA_ERROR_INVALID_IMAGE); compute_80 PTX",
            "UNSUPPORTED_PTX_VERSION",
            "PTX ISA 8.8 needs a driver for CUDA 12.9 or newer, and this driver is older",
        ] {
            assert!(m.contains(part), "`{part}` missing from: {m}");
        }
    }

    #[test]
    fn a_rejected_ptx_is_explained_by_the_driver_and_isa_versions() {
        let hint = ptx_hint("8.8", Some((12, 4)));
        assert!(
            hint.contains(
                "PTX ISA 8.8 needs a driver for CUDA 12.9 or newer, and this driver is older"
            ),
            "{hint}"
        );
        let hint = ptx_hint("8.4", Some((12, 9)));
        assert!(!hint.contains("older;"), "{hint}");
        assert!(hint.contains("CUDA 12.4 or newer"), "{hint}");
    }
}
