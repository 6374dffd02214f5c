//! advgrad's CUDA kernels and their launch plans.
//!
//! This folder holds the CUDA C++ sources (`*.cu`, `common.cuh`) and, beside
//! each `.cu`, the Rust module that plans its launches: the grid, block,
//! shared memory and argument list of every entry point. The plans are pure
//! Rust (std only), so one description of each kernel serves everyone:
//!
//! | user | what it takes from here |
//! |---|---|
//! | advgrad's `build.rs` | [`MODULES`] and [`HEADERS`]: every source, compiled to PTX with NVRTC, and the entry points each must define |
//! | advgrad's CUDA backend | the plans, launched on a GPU (cudarc) or on the emulator |
//! | `crates/simt` (the SIMT emulator) | the sources (compiled as C++) and the plans it runs |
//!
//! and the vocabulary all of them share: [`DType`], [`Activation`],
//! [`Binary`], [`MatmulDims`], [`Conv2dDims`] and [`PoolDims`].
//!
//! Most kernels are grid-stride loops described as data
//! ([`grid_stride::GridStride`]); the others (matmul, the reductions, the
//! softmax cross-entropy forward, the robustness losses and attack steps,
//! the tensor-core matmul, the convolution and pooling) have a planning
//! function each.

#![deny(missing_docs)]

pub mod activation;
pub mod attack_step;
pub mod cast;
pub mod conv;
pub mod elementwise;
pub mod gelu;
pub mod grid_stride;
pub mod matmul;
pub mod matmul_half;
pub mod optim;
pub mod plan;
pub mod pool;
pub mod reduce;
pub mod robust_loss;
pub mod softmax_xent;
pub mod tally;
mod types;

pub use conv::Conv2dDims;
pub use grid_stride::{Extent, GridStride};
pub use matmul::MatmulDims;
pub use plan::{
    Access, BufferParam, Cooperation, LaunchPlan, Param, PlanError, PlanResult, Scalar,
};
pub use pool::PoolDims;
pub use types::{Activation, Binary, DType, ParseError};

/// One `.cu` translation unit and the entry points it defines.
#[derive(Clone, Copy, Debug)]
pub struct Module {
    /// The file's stem (`matmul` for `matmul.cu`).
    pub name: &'static str,
    /// The CUDA C++ source.
    pub source: &'static str,
    /// The base names of its kernels; each is instantiated once per
    /// suffix of `instances`, as `{base}_{suffix}`.
    pub kernels: &'static [&'static str],
    /// The suffixes of the instantiations: [`FLOAT_INSTANCES`] (`f32`,
    /// `f64`) for most modules.
    pub instances: &'static [&'static str],
}

impl Module {
    /// Its `extern "C"` entry points: `{base}_{suffix}` for each kernel and
    /// each suffix of `instances`.
    pub fn entry_points(&self) -> impl Iterator<Item = String> + 'static {
        let (kernels, instances) = (self.kernels, self.instances);
        kernels
            .iter()
            .flat_map(move |base| instances.iter().map(move |t| format!("{base}_{t}")))
    }
}

/// Every kernel source, with the kernels it defines: the one list of
/// kernels the PTX build, the GPU module loader and the emulator's tests
/// go by.
pub const MODULES: &[Module] = &[
    Module {
        name: "activation",
        source: include_str!("activation.cu"),
        kernels: activation::KERNELS,
        instances: FLOAT_INSTANCES,
    },
    Module {
        name: "attack_step",
        source: include_str!("attack_step.cu"),
        kernels: attack_step::KERNELS,
        instances: FLOAT_INSTANCES,
    },
    Module {
        name: "cast",
        source: include_str!("cast.cu"),
        kernels: cast::KERNELS,
        instances: cast::INSTANCES,
    },
    Module {
        name: "conv",
        source: include_str!("conv.cu"),
        kernels: conv::KERNELS,
        instances: FLOAT_INSTANCES,
    },
    Module {
        name: "elementwise",
        source: include_str!("elementwise.cu"),
        kernels: elementwise::KERNELS,
        instances: FLOAT_INSTANCES,
    },
    Module {
        name: "gelu",
        source: include_str!("gelu.cu"),
        kernels: gelu::KERNELS,
        instances: FLOAT_INSTANCES,
    },
    Module {
        name: "matmul",
        source: include_str!("matmul.cu"),
        kernels: matmul::KERNELS,
        instances: FLOAT_INSTANCES,
    },
    Module {
        name: "matmul_half",
        source: include_str!("matmul_half.cu"),
        kernels: matmul_half::KERNELS,
        instances: matmul_half::STORAGE,
    },
    Module {
        name: "optim",
        source: include_str!("optim.cu"),
        kernels: optim::KERNELS,
        instances: FLOAT_INSTANCES,
    },
    Module {
        name: "pool",
        source: include_str!("pool.cu"),
        kernels: pool::KERNELS,
        instances: FLOAT_INSTANCES,
    },
    Module {
        name: "reduce",
        source: include_str!("reduce.cu"),
        kernels: reduce::KERNELS,
        instances: FLOAT_INSTANCES,
    },
    Module {
        name: "robust_loss",
        source: include_str!("robust_loss.cu"),
        kernels: robust_loss::KERNELS,
        instances: FLOAT_INSTANCES,
    },
    Module {
        name: "softmax_xent",
        source: include_str!("softmax_xent.cu"),
        kernels: softmax_xent::KERNELS,
        instances: FLOAT_INSTANCES,
    },
    Module {
        name: "tally",
        source: include_str!("tally.cu"),
        kernels: tally::KERNELS,
        instances: FLOAT_INSTANCES,
    },
];

/// The headers the sources include, as `(file name, text)`.
pub const HEADERS: &[(&str, &str)] = &[
    ("common.cuh", include_str!("common.cuh")),
    ("half.cuh", include_str!("half.cuh")),
];

/// The folder holding the sources (for compilers that read files).
pub const DIR: &str = env!("CARGO_MANIFEST_DIR");

/// The float types most kernels are instantiated for.
pub const FLOAT_TYPES: [DType; 2] = [DType::F32, DType::F64];

/// The instantiation suffixes of a module instantiated for
/// [`FLOAT_TYPES`].
pub const FLOAT_INSTANCES: &[&str] = &["f32", "f64"];

/// Every `extern "C"` entry point of every module: `{base}_{suffix}` for
/// each kernel of [`MODULES`] and each of its module's instances.
pub fn entry_points() -> impl Iterator<Item = String> {
    MODULES.iter().flat_map(Module::entry_points)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;
    use std::fs;

    #[test]
    fn every_source_in_the_folder_is_listed_once() {
        let mut cu = Vec::new();
        let mut cuh = Vec::new();
        for entry in fs::read_dir(DIR).unwrap() {
            let path = entry.unwrap().path();
            let stem = path.file_stem().unwrap().to_str().unwrap().to_string();
            match path.extension().and_then(|e| e.to_str()) {
                Some("cu") => cu.push(stem),
                Some("cuh") => cuh.push(path.file_name().unwrap().to_str().unwrap().to_string()),
                _ => {}
            }
        }
        cu.sort();
        cuh.sort();
        let listed: Vec<_> = MODULES.iter().map(|m| m.name.to_string()).collect();
        assert_eq!(cu, listed, "kernels/*.cu and MODULES differ");
        let headers: Vec<_> = HEADERS.iter().map(|h| h.0.to_string()).collect();
        assert_eq!(cuh, headers, "kernels/*.cuh and HEADERS differ");
    }

    /// The emulator checks the alignment of a vector access only where it
    /// goes through `load16`/`store16` (`common.cuh`), so no kernel source
    /// reinterprets a pointer as a vector itself.
    #[test]
    fn every_vector_access_goes_through_load16_and_store16() {
        for m in MODULES {
            for (i, line) in m.source.lines().enumerate() {
                let code = line.split("//").next().unwrap_or_default();
                for vector in ["float4", "double2", "Vec16"] {
                    let cast = code.contains("reinterpret_cast") && code.contains(vector);
                    let pointer = code.contains(&format!("{vector}*"));
                    assert!(
                        !cast && !pointer,
                        "kernels/{}.cu:{}: a vector access outside load16/store16: {line}",
                        m.name,
                        i + 1
                    );
                }
            }
        }
    }

    #[test]
    fn every_kernel_is_named_once() {
        let mut seen = HashSet::new();
        for m in MODULES {
            for base in m.kernels {
                assert!(seen.insert(*base), "{base} is listed twice");
            }
        }
        let instances: usize = MODULES
            .iter()
            .map(|m| m.kernels.len() * m.instances.len())
            .sum();
        assert_eq!(entry_points().count(), instances);
        assert_eq!(entry_points().collect::<HashSet<_>>().len(), instances);
    }
}
