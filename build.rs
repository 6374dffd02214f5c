//! Build script: with the `cuda` feature, compiles every kernel source the
//! `kernels` crate lists (`kernels/*.cu`) with NVRTC into two kinds of
//! image, checks that each defines every entry point the crate lists for
//! it, and generates `$OUT_DIR/kernels.rs`, which the CUDA backend includes
//! to embed them:
//!
//! - PTX for a virtual architecture (default `compute_80`), which the
//!   driver compiles (JIT) for any GPU of that capability or newer, if the
//!   driver is at least as new as this NVRTC;
//! - cubins (SASS) for real architectures (default `sm_80` and `sm_90`),
//!   which load without a JIT on any driver of the same CUDA major version.
//!
//! At run time a GPU loads the cubin that fits its compute capability and
//! falls back to the PTX (`src/backend/cuda/driver/image.rs`). Without the
//! feature the script does nothing.
//!
//! A module is compiled once per real architecture. The PTX is kept from
//! the compile for the real architecture of the same number (`sm_80` for
//! `compute_80`), whose PTX is the same text; only when that architecture
//! has no cubin is the PTX compiled on its own.
//!
//! NVRTC is loaded at build time through a small dlopen FFI (no CUDA toolkit
//! needed): `ADVGRAD_NVRTC_LIB` names the library, or `libnvrtc.so.12` /
//! `libnvrtc.so` are looked up on the usual library path.
//! `scripts/cuda-env.sh` installs NVRTC from PyPI and prints those variables.
//!
//! Environment:
//! - `ADVGRAD_CUDA_ARCH`: the PTX's virtual architecture (default
//!   `compute_80`, which runs on A100, H100 and newer through the JIT);
//! - `ADVGRAD_CUDA_CUBINS`: the real architectures to build cubins for,
//!   comma-separated (default `sm_80,sm_90`; empty for none);
//! - `ADVGRAD_PTX_DIR`: also copy each `.ptx` there (the ptxas check uses it);
//! - `ADVGRAD_CUDA_INCLUDE`: the folders, `:`-separated, that hold the CUDA
//!   headers the kernels include (`mma.h`, `cuda_fp16.h`, `cuda_bf16.h`;
//!   `scripts/cuda-env.sh` installs them from PyPI).
//!
//! - `ADVGRAD_NVRTC_CACHE`: the image cache's folder (below; default
//!   `<target dir>/nvrtc-cache`), which builds in other target folders may
//!   share.
//!
//! Each image is also kept in the cache folder, under the exact
//! text it was compiled from (NVRTC's version and library, the options,
//! the architecture, every header and the source, and the size and time of
//! every file under the include folders): a later build that
//! compiles the same text, in another profile (`cargo clippy` then
//! `cargo build --release`) or after a `cargo clean -p advgrad`, reuses it
//! instead of running NVRTC again. Delete the folder to drop the cache.

use std::env;
use std::ffi::{c_char, c_int, CStr, CString};
use std::fs;
use std::path::{Path, PathBuf};
use std::process;

const SETUP_HINT: &str = "run `eval \"$(scripts/cuda-env.sh)\"` first: it installs NVRTC \
     from PyPI into a cache folder and sets ADVGRAD_NVRTC_LIB (no GPU or CUDA toolkit needed)";

fn main() {
    // The sources come from the `kernels` build-dependency, which is rebuilt
    // (and this script rerun) whenever one of them changes.
    println!("cargo:rerun-if-changed=build.rs");
    if env::var_os("CARGO_FEATURE_CUDA").is_none() {
        return;
    }
    // Only with the feature: otherwise setting them (`scripts/cuda-env.sh`)
    // would rebuild a crate they do not change.
    for var in [
        "ADVGRAD_CUDA_ARCH",
        "ADVGRAD_CUDA_CUBINS",
        "ADVGRAD_NVRTC_LIB",
        "ADVGRAD_PTX_DIR",
        "ADVGRAD_CUDA_INCLUDE",
        "ADVGRAD_NVRTC_CACHE",
    ] {
        println!("cargo:rerun-if-env-changed={var}");
    }
    let headers: Vec<(String, String)> = kernels::HEADERS
        .iter()
        .map(|&(name, text)| (name.to_string(), text.to_string()))
        .collect();

    let arch = env::var("ADVGRAD_CUDA_ARCH").unwrap_or_else(|_| "compute_80".into());
    if !is_arch(&arch, "compute_") {
        fail(&format!(
            "ADVGRAD_CUDA_ARCH={arch}: expected a virtual architecture such as compute_80"
        ));
    }
    let cubin_archs: Vec<String> = env::var("ADVGRAD_CUDA_CUBINS")
        .unwrap_or_else(|_| DEFAULT_CUBINS.into())
        .split(',')
        .map(|a| a.trim().to_string())
        .filter(|a| !a.is_empty())
        .collect();
    if let Some(bad) = cubin_archs.iter().find(|a| !is_arch(a, "sm_")) {
        fail(&format!(
            "ADVGRAD_CUDA_CUBINS contains `{bad}`: expected real architectures such as sm_80,sm_90"
        ));
    }
    let nvrtc = Nvrtc::load();
    let out = PathBuf::from(env::var("OUT_DIR").expect("OUT_DIR"));
    let copy_dir = env::var_os("ADVGRAD_PTX_DIR").map(PathBuf::from);
    if let Some(d) = &copy_dir {
        fs::create_dir_all(d).unwrap_or_else(|e| fail(&format!("{}: {e}", d.display())));
    }

    // Every (module, architecture) pair, compiled on as many threads as
    // the machine has: NVRTC programs are independent. The PTX comes from
    // the cubin job of the same architecture number when there is one
    // (NVRTC's PTX for `sm_80` is the text it writes for `compute_80`), so
    // that the front end and NVVM run once for both.
    let twin = arch.replacen("compute_", "sm_", 1);
    let mut jobs: Vec<Job> = Vec::new();
    for module in kernels::MODULES {
        if !cubin_archs.contains(&twin) {
            jobs.push(Job {
                module,
                arch: &arch,
                ptx: true,
            });
        }
        for a in &cubin_archs {
            jobs.push(Job {
                module,
                arch: a,
                ptx: *a == twin,
            });
        }
    }
    let images = compile_all(&nvrtc, &jobs, &headers, cache_dir(&out).as_deref());

    let mut ptx_table = String::new();
    let mut cubin_table = String::new();
    for (job, image) in jobs.iter().zip(images) {
        let stem = job.module.name;
        let defines = |entry: &str| {
            let in_ptx = image
                .ptx
                .as_ref()
                .map(|ptx| ptx.contains(&format!(".entry {entry}(")));
            let in_cubin = image
                .cubin
                .as_ref()
                .map(|cubin| contains(cubin, format!(".text.{entry}\0").as_bytes()));
            [in_ptx, in_cubin].into_iter().flatten().all(|found| found)
        };
        for entry in job.module.entry_points() {
            if !defines(&entry) {
                fail(&format!(
                    "the {} image of kernels/{stem}.cu does not define `{entry}`, \
                     which kernels/{stem}.rs lists",
                    job.arch
                ));
            }
        }
        if let Some(ptx) = &image.ptx {
            let file = format!("{stem}.ptx");
            for dir in std::iter::once(&out).chain(copy_dir.as_ref()) {
                let path = dir.join(&file);
                fs::write(&path, ptx).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
            }
            ptx_table.push_str(&format!(
                "    (\"{stem}\", include_str!(concat!(env!(\"OUT_DIR\"), \"/{file}\"))),\n"
            ));
        }
        if let Some(cubin) = &image.cubin {
            if !cubin.starts_with(b"\x7fELF") {
                fail(&format!(
                    "NVRTC's {} image of {stem}.cu is not an ELF cubin",
                    job.arch
                ));
            }
            let file = format!("{stem}.{}.cubin", job.arch);
            let path = out.join(&file);
            fs::write(&path, cubin).unwrap_or_else(|e| fail(&format!("{}: {e}", path.display())));
            cubin_table.push_str(&format!(
                "    (\"{stem}\", \"{}\", include_bytes!(concat!(env!(\"OUT_DIR\"), \"/{file}\"))),\n",
                job.arch
            ));
        }
    }
    let archs: Vec<String> = cubin_archs.iter().map(|a| format!("\"{a}\"")).collect();
    let table = format!(
        "// Generated by build.rs: the images of every kernels/*.cu.\n\
         /// `(module, ptx)` for every `kernels/*.cu` file.\n\
         pub const PTX_MODULES: &[(&str, &str)] = &[\n{ptx_table}];\n\
         /// The virtual architecture the PTX was generated for.\n\
         pub const PTX_ARCH: &str = \"{arch}\";\n\
         /// The real architectures every module has a cubin for.\n\
         pub const CUBIN_ARCHS: &[&str] = &[{}];\n\
         /// `(module, architecture, cubin)` for every `kernels/*.cu` file and\n\
         /// every architecture of [`CUBIN_ARCHS`].\n\
         pub const CUBINS: &[(&str, &str, &[u8])] = &[\n{cubin_table}];\n",
        archs.join(", ")
    );
    fs::write(out.join("kernels.rs"), table).unwrap_or_else(|e| fail(&format!("kernels.rs: {e}")));
}

const DEFAULT_CUBINS: &str = "sm_80,sm_90";

/// One NVRTC compile: a module for one architecture, keeping its PTX, its
/// cubin or both.
struct Job<'a> {
    module: &'a kernels::Module,
    arch: &'a str,
    ptx: bool,
}

impl Job<'_> {
    /// Whether the job keeps a cubin: it does for every real architecture
    /// (`sm_XY`), and a virtual one has none.
    fn cubin(&self) -> bool {
        self.arch.starts_with("sm_")
    }
}

/// What a [`Job`] keeps of its compile.
struct Image {
    ptx: Option<String>,
    cubin: Option<Vec<u8>>,
}

/// Whether `name` is `{prefix}` followed by two or three digits.
fn is_arch(name: &str, prefix: &str) -> bool {
    name.strip_prefix(prefix)
        .is_some_and(|d| (2..=3).contains(&d.len()) && d.bytes().all(|b| b.is_ascii_digit()))
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

/// The image cache's folder: `ADVGRAD_NVRTC_CACHE`, else
/// `<target dir>/nvrtc-cache`, from `OUT_DIR`
/// (`<target dir>/<profile>/build/<package>/out`).
fn cache_dir(out: &Path) -> Option<PathBuf> {
    if let Some(dir) = env::var_os("ADVGRAD_NVRTC_CACHE").filter(|d| !d.is_empty()) {
        return Some(PathBuf::from(dir));
    }
    out.ancestors()
        .nth(4)
        .map(|target| target.join("nvrtc-cache"))
}

/// The whole text an image is compiled from; equal texts give equal images.
fn cache_key(nvrtc: &Nvrtc, job: &Job, headers: &[(String, String)]) -> String {
    let mut key = format!(
        "{}\n{}\n{}\n{}.cu\nptx {} cubin {}\n",
        nvrtc.identity,
        nvrtc_options(job.arch).join(" "),
        include_fingerprint(),
        job.module.name,
        job.ptx,
        job.cubin()
    );
    for (name, text) in headers {
        key.push_str(&format!("header {name} {}\n{text}\n", text.len()));
    }
    key.push_str(job.module.source);
    key
}

/// The cached image compiled from `key`, if the cache holds one for
/// exactly that text.
fn cached(dir: &Path, stem: &str, key: &str, job: &Job) -> Option<Image> {
    let stored = fs::read(dir.join(format!("{stem}.key"))).ok()?;
    if stored != key.as_bytes() {
        return None;
    }
    let ptx = match job.ptx {
        true => Some(fs::read_to_string(dir.join(format!("{stem}.ptx"))).ok()?),
        false => None,
    };
    let cubin = match job.cubin() {
        true => Some(fs::read(dir.join(format!("{stem}.cubin"))).ok()?),
        false => None,
    };
    Some(Image { ptx, cubin })
}

/// Stores `image` under `key`; a failure only costs the next build a
/// compile. The image's files are renamed into place before its key, so a
/// key is never seen beside a partial image.
fn store(dir: &Path, stem: &str, key: &str, image: &Image) {
    let put = |ext: &str, bytes: &[u8]| -> std::io::Result<()> {
        let tmp = dir.join(format!("{stem}.{ext}.{}.tmp", process::id()));
        fs::write(&tmp, bytes)?;
        fs::rename(&tmp, dir.join(format!("{stem}.{ext}")))
    };
    let _ = fs::create_dir_all(dir)
        .and_then(|()| {
            image
                .ptx
                .as_ref()
                .map_or(Ok(()), |p| put("ptx", p.as_bytes()))
        })
        .and_then(|()| image.cubin.as_ref().map_or(Ok(()), |c| put("cubin", c)))
        .and_then(|()| put("key", key.as_bytes()));
}

/// The image of one job: from the cache when it holds the same text, else
/// from NVRTC (and then cached).
fn compile_cached(
    nvrtc: &Nvrtc,
    job: &Job,
    headers: &[(String, String)],
    cache: Option<&Path>,
) -> Image {
    use std::hash::{Hash, Hasher};
    let Some(dir) = cache else {
        return nvrtc.compile(job, headers);
    };
    let key = cache_key(nvrtc, job, headers);
    let mut hasher = std::hash::DefaultHasher::new();
    key.hash(&mut hasher);
    let stem = format!("{}.{}.{:016x}", job.module.name, job.arch, hasher.finish());
    if let Some(image) = cached(dir, &stem, &key, job) {
        return image;
    }
    let image = nvrtc.compile(job, headers);
    store(dir, &stem, &key, &image);
    image
}

/// The folders of `ADVGRAD_CUDA_INCLUDE`.
fn include_dirs() -> Vec<String> {
    env::var("ADVGRAD_CUDA_INCLUDE")
        .unwrap_or_default()
        .split(':')
        .filter(|d| !d.is_empty())
        .map(str::to_string)
        .collect()
}

/// Every file under the include folders with its size and modification
/// time, so that a changed CUDA header changes the cache key.
fn include_fingerprint() -> &'static str {
    static FINGERPRINT: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    FINGERPRINT.get_or_init(|| {
        let mut lines = Vec::new();
        for dir in include_dirs() {
            walk(Path::new(&dir), &mut lines);
        }
        lines.sort();
        lines.join("\n")
    })
}

/// Appends `path size mtime` for every file under `dir`.
fn walk(dir: &Path, lines: &mut Vec<String>) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        match entry.metadata() {
            Ok(m) if m.is_dir() => walk(&path, lines),
            Ok(m) => {
                let modified = m
                    .modified()
                    .ok()
                    .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                    .map_or(0, |d| d.as_nanos());
                lines.push(format!("{} {} {modified}", path.display(), m.len()));
            }
            Err(_) => {}
        }
    }
}

/// Compiles every job on scoped threads; the images are in the jobs' order.
fn compile_all(
    nvrtc: &Nvrtc,
    jobs: &[Job],
    headers: &[(String, String)],
    cache: Option<&Path>,
) -> Vec<Image> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let next = std::sync::atomic::AtomicUsize::new(0);
    let results: Vec<std::sync::Mutex<Option<Image>>> =
        jobs.iter().map(|_| std::sync::Mutex::new(None)).collect();
    std::thread::scope(|s| {
        for _ in 0..threads.min(jobs.len()) {
            s.spawn(|| loop {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(job) = jobs.get(i) else {
                    break;
                };
                let image = compile_cached(nvrtc, job, headers, cache);
                *results[i].lock().unwrap_or_else(|p| p.into_inner()) = Some(image);
            });
        }
    });
    results
        .into_iter()
        .map(|r| {
            r.into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .unwrap_or_else(|| fail("a compile job produced no image"))
        })
        .collect()
}

fn fail(msg: &str) -> ! {
    eprintln!("error: advgrad build (feature `cuda`): {msg}");
    process::exit(1);
}

type Program = *mut std::ffi::c_void;

/// NVRTC's options for `arch`, with an `-I` for each folder of
/// `ADVGRAD_CUDA_INCLUDE`.
fn nvrtc_options(arch: &str) -> Vec<String> {
    [
        format!("--gpu-architecture={arch}"),
        "-std=c++17".into(),
        "--fmad=true".into(),
        "-lineinfo".into(),
    ]
    .into_iter()
    .chain(include_dirs().into_iter().map(|d| format!("-I{d}")))
    .collect()
}
type CreateFn = unsafe extern "C" fn(
    *mut Program,
    *const c_char,
    *const c_char,
    c_int,
    *const *const c_char,
    *const *const c_char,
) -> c_int;
type CompileFn = unsafe extern "C" fn(Program, c_int, *const *const c_char) -> c_int;
type SizeFn = unsafe extern "C" fn(Program, *mut usize) -> c_int;
type GetFn = unsafe extern "C" fn(Program, *mut c_char) -> c_int;
type DestroyFn = unsafe extern "C" fn(*mut Program) -> c_int;
type VersionFn = unsafe extern "C" fn(*mut c_int, *mut c_int) -> c_int;

/// The few NVRTC entry points the build needs, loaded with dlopen.
struct Nvrtc {
    _lib: libloading::Library,
    /// Its version and library, e.g. `NVRTC 12.9 (/path/libnvrtc.so.12)`.
    identity: String,
    create: CreateFn,
    compile: CompileFn,
    log_size: SizeFn,
    log: GetFn,
    ptx_size: SizeFn,
    ptx: GetFn,
    cubin_size: SizeFn,
    cubin: GetFn,
    destroy: DestroyFn,
}

impl Nvrtc {
    fn load() -> Nvrtc {
        let candidates: Vec<String> = match env::var("ADVGRAD_NVRTC_LIB") {
            Ok(p) => vec![p],
            Err(_) => vec!["libnvrtc.so.12".into(), "libnvrtc.so".into()],
        };
        let mut errors = Vec::new();
        for c in &candidates {
            // SAFETY: loading NVRTC runs its (trusted) initialisers only.
            match unsafe { libloading::Library::new(c) } {
                Ok(lib) => return Nvrtc::bind(lib, c),
                Err(e) => errors.push(format!("{c}: {e}")),
            }
        }
        fail(&format!(
            "NVRTC not found ({}); {SETUP_HINT}",
            errors.join("; ")
        ))
    }

    fn bind(lib: libloading::Library, name: &str) -> Nvrtc {
        fn sym<T: Copy>(lib: &libloading::Library, lib_name: &str, s: &str) -> T {
            // SAFETY: each symbol is requested with the C signature NVRTC's
            // header (nvrtc.h, CUDA 12) gives it; the Library outlives the
            // copied function pointers because Nvrtc owns both.
            match unsafe { lib.get::<T>(s.as_bytes()) } {
                Ok(f) => *f,
                Err(e) => fail(&format!("{lib_name} lacks {s}: {e}")),
            }
        }
        let version: VersionFn = sym(&lib, name, "nvrtcVersion");
        let (mut major, mut minor) = (0, 0);
        // SAFETY: two valid out-pointers.
        unsafe { version(&mut major, &mut minor) };
        println!("cargo:warning=advgrad: compiling kernels with NVRTC {major}.{minor} ({name})");
        Nvrtc {
            create: sym(&lib, name, "nvrtcCreateProgram"),
            compile: sym(&lib, name, "nvrtcCompileProgram"),
            log_size: sym(&lib, name, "nvrtcGetProgramLogSize"),
            log: sym(&lib, name, "nvrtcGetProgramLog"),
            ptx_size: sym(&lib, name, "nvrtcGetPTXSize"),
            ptx: sym(&lib, name, "nvrtcGetPTX"),
            cubin_size: sym(&lib, name, "nvrtcGetCUBINSize"),
            cubin: sym(&lib, name, "nvrtcGetCUBIN"),
            destroy: sym(&lib, name, "nvrtcDestroyProgram"),
            identity: format!("NVRTC {major}.{minor} ({name})"),
            _lib: lib,
        }
    }

    /// Compiles one module for the job's architecture and keeps what the
    /// job asks for: the PTX text, the cubin (a real architecture, `sm_XY`,
    /// only) or both; or stops the build with NVRTC's log. Each call has
    /// its own program, so calls may run on several threads at once.
    fn compile(&self, job: &Job, headers: &[(String, String)]) -> Image {
        let (name, src, arch) = (
            &format!("{}.cu", job.module.name),
            job.module.source,
            job.arch,
        );
        let cstr = |s: &str| CString::new(s).unwrap_or_else(|_| fail(&format!("{name}: NUL byte")));
        let (c_name, c_src) = (cstr(name), cstr(src));
        let h_src: Vec<CString> = headers.iter().map(|h| cstr(&h.1)).collect();
        let h_name: Vec<CString> = headers.iter().map(|h| cstr(&h.0)).collect();
        let h_src_p: Vec<*const c_char> = h_src.iter().map(|c| c.as_ptr()).collect();
        let h_name_p: Vec<*const c_char> = h_name.iter().map(|c| c.as_ptr()).collect();
        let opts: Vec<CString> = nvrtc_options(arch).iter().map(|o| cstr(o)).collect();
        let opts_p: Vec<*const c_char> = opts.iter().map(|c| c.as_ptr()).collect();

        let mut prog: Program = std::ptr::null_mut();
        // SAFETY: every pointer is a live NUL-terminated string (or an array
        // of `headers.len()` of them); NVRTC copies what it keeps.
        let rc = unsafe {
            (self.create)(
                &mut prog,
                c_src.as_ptr(),
                c_name.as_ptr(),
                headers.len() as c_int,
                h_src_p.as_ptr(),
                h_name_p.as_ptr(),
            )
        };
        if rc != 0 {
            fail(&format!("{name}: nvrtcCreateProgram failed ({rc})"));
        }
        // SAFETY: prog was created above; opts_p holds opts.len() strings.
        let rc = unsafe { (self.compile)(prog, opts_p.len() as c_int, opts_p.as_ptr()) };
        let log = self.text(prog, self.log_size, self.log);
        if rc != 0 {
            fail(&format!("NVRTC could not compile kernels/{name}:\n{log}"));
        }
        if !log.trim().is_empty() {
            for line in log.lines() {
                println!("cargo:warning={name} ({arch}): {line}");
            }
        }
        let image = Image {
            ptx: job.ptx.then(|| self.text(prog, self.ptx_size, self.ptx)),
            cubin: job
                .cubin()
                .then(|| self.bytes(prog, self.cubin_size, self.cubin)),
        };
        // SAFETY: prog is a live program, destroyed once.
        unsafe { (self.destroy)(&mut prog) };
        let empty_ptx = image.ptx.as_ref().is_some_and(String::is_empty);
        let empty_cubin = image.cubin.as_ref().is_some_and(Vec::is_empty);
        if empty_ptx || empty_cubin {
            fail(&format!(
                "NVRTC produced an empty {arch} image of kernels/{name}"
            ));
        }
        image
    }

    /// The `size`/`get` output of a compiled program, as NVRTC wrote it.
    fn bytes(&self, prog: Program, size: SizeFn, get: GetFn) -> Vec<u8> {
        let mut n = 0usize;
        // SAFETY: prog is live; n is a valid out-pointer.
        unsafe { size(prog, &mut n) };
        let mut buf = vec![0u8; n.max(1)];
        // SAFETY: buf holds the n bytes NVRTC said it needs.
        unsafe { get(prog, buf.as_mut_ptr().cast()) };
        buf.truncate(n);
        buf
    }

    /// A NUL-terminated text output (PTX, log) of a compiled program.
    fn text(&self, prog: Program, size: SizeFn, get: GetFn) -> String {
        let buf = self.bytes(prog, size, get);
        CStr::from_bytes_until_nul(&buf)
            .map(|c| c.to_string_lossy().into_owned())
            .unwrap_or_default()
    }
}
