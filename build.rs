//! Gives the binaries and test executables an rpath to libtorch's `lib/`, so `ithn-dist` runs
//! without LD_LIBRARY_PATH, and keeps `libtorch_cuda` as a real dependency: the linker's
//! --as-needed would otherwise drop it (nothing references it directly), and CUDA would then
//! look unavailable on a GPU machine. torch-sys exports the directory to direct dependents
//! (links = "tch").
//!
//! For the GPU machine's build (ops/gpu/build.sh, a scratch copy built against libtorch 2.11
//! with tch 0.24), `ITHN_LIBTORCH_RPATH` replaces the build machine's libtorch folder in the
//! rpath by the one the binary will find where it runs.
//!
//! It also compiles `csrc/inference_mode.cpp` (libtorch's `c10::InferenceMode` guard, which tch
//! does not expose) against the same libtorch headers torch-sys compiles its own shim with,
//! and tells src/cpu.rs which CPU extensions the C flags of this build ask for.
fn main() {
    c_features();
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    println!("cargo:rerun-if-changed=csrc/inference_mode.cpp");
    println!("cargo:rerun-if-env-changed=ITHN_LIBTORCH_RPATH");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        let include = std::path::Path::new(&lib).join("../include");
        cc::Build::new()
            .cpp(true)
            .pic(true)
            .warnings(false)
            .include(&include)
            .flag("-std=c++17")
            .file("csrc/inference_mode.cpp")
            .compile("ithn_inference_mode");
        println!("cargo:rustc-link-search=native={lib}");
        println!("cargo:rustc-link-lib=dylib=c10");
        let rpath = std::env::var("ITHN_LIBTORCH_RPATH").unwrap_or_else(|_| lib.clone());
        println!("cargo:rustc-link-arg=-Wl,-rpath,{rpath}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}

/// `cfg(ithn_c_bmi2)` when the C flags the `cc`/`cmake` crates pass on (they merge these
/// variables) ask for BMI2 — `-mbmi2` (set by ops/env.sh on CPUs with BMI2) or an `-march=`
/// that implies it (`x86-64-v3`, `x86-64-v4`, `native`: the last conservatively) — and no
/// `-mno-bmi2`, so that the binary can refuse a CPU without it (src/cpu.rs).
fn c_features() {
    println!("cargo::rustc-check-cfg=cfg(ithn_c_bmi2)");
    let target = std::env::var("TARGET").unwrap_or_default();
    let names = [
        "CFLAGS".to_string(),
        "TARGET_CFLAGS".to_string(),
        format!("CFLAGS_{target}"),
        format!("CFLAGS_{}", target.replace('-', "_")),
    ];
    let mut flags = Vec::new();
    for name in names {
        println!("cargo:rerun-if-env-changed={name}");
        if let Ok(value) = std::env::var(&name) {
            flags.extend(value.split_whitespace().map(str::to_string));
        }
    }
    let asks = |f: &String| {
        matches!(
            f.as_str(),
            "-mbmi2" | "-march=x86-64-v3" | "-march=x86-64-v4" | "-march=native"
        )
    };
    if flags.iter().any(asks) && !flags.iter().any(|f| f == "-mno-bmi2") {
        println!("cargo:rustc-cfg=ithn_c_bmi2");
    }
}
