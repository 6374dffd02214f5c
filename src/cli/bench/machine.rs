//! The first row of every `advgrad bench` run: what the numbers were
//! measured on.

use advgrad::backend::cuda;
use advgrad::Device;

/// The CPU's model name (`/proc/cpuinfo`), if known.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("model name"))?;
    Some(line.split_once(':')?.1.trim().to_string())
}

/// The SIMD extensions the CPU kernels can choose from.
fn cpu_features() -> Vec<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        let mut f = Vec::new();
        if is_x86_feature_detected!("avx512f") {
            f.push("avx512f");
        }
        if is_x86_feature_detected!("avx2") {
            f.push("avx2");
        }
        if is_x86_feature_detected!("fma") {
            f.push("fma");
        }
        f
    }
    #[cfg(not(target_arch = "x86_64"))]
    Vec::new()
}

/// The GPU of `device` as JSON (name, compute capability, driver, the
/// image each kernel module loaded), or why there is none.
fn gpu(device: Option<Device>) -> Result<serde_json::Value, String> {
    let Some(Device::Cuda(n)) = device else {
        return Err("the device is not a GPU".into());
    };
    cuda::probe(n).map_err(|u| format!("cuda:{n}: {u}"))?;
    #[cfg(feature = "cuda")]
    {
        let gpu = cuda::gpu(n).map_err(|e| e.to_string())?;
        serde_json::to_value(gpu.info()).map_err(|e| e.to_string())
    }
    #[cfg(not(feature = "cuda"))]
    Err(format!("cuda:{n}: {}", cuda::Unavailable::NotBuilt))
}

/// Prints the machine row for `--device spec`: a JSON object with `op`
/// `machine`, or a text header. A GPU that cannot be used is reported, not
/// an error, so that `--op machine` always says what it found.
pub(super) fn print(spec: &str, json: bool) {
    let device = match spec {
        "auto" => Device::resolve("auto").ok(),
        other => other.parse::<Device>().ok(),
    };
    let cpu = cpu_model().unwrap_or_else(|| "unknown".into());
    let threads = rayon::current_num_threads();
    let gpu = gpu(device);
    if json {
        let mut row = serde_json::json!({
            "op": "machine",
            "device": device.map_or(spec.to_string(), |d| d.to_string()),
            "cpu": cpu,
            "cpu_threads": threads,
            "cpu_features": cpu_features(),
            "cpu_gemm": advgrad::backend::cpu::gemm::describe(),
            "advgrad": env!("CARGO_PKG_VERSION"),
            "features": { "cuda": cfg!(feature = "cuda"), "emu": cfg!(feature = "emu") },
        });
        if let Some(o) = row.as_object_mut() {
            match gpu {
                Ok(g) => o.insert("gpu".into(), g),
                Err(why) => o.insert("gpu_unavailable".into(), why.into()),
            };
        }
        println!("{row}");
    } else {
        println!("machine: {cpu}, {threads} threads");
        println!("{}", advgrad::backend::cpu::gemm::describe());
        if let (Err(why), Some(Device::Cuda(_))) = (&gpu, device) {
            println!("gpu: none ({why})");
        }
        if let Ok(g) = gpu {
            let field = |k: &str| g.get(k).and_then(|v| v.as_str()).unwrap_or("?").to_string();
            let image = g
                .pointer("/modules/0/image")
                .and_then(|v| v.as_str())
                .unwrap_or("?");
            println!(
                "gpu: {}, compute capability {}, CUDA {} driver {}; kernels from the {image}",
                field("name"),
                field("compute_capability"),
                field("driver_cuda"),
                g.get("driver_version")
                    .and_then(|v| v.as_str())
                    .unwrap_or("?"),
            );
        }
    }
}
