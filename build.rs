//! Gives the binaries and test executables an rpath to libtorch's `lib/`, so `ithn-dist` runs
//! without LD_LIBRARY_PATH, and keeps `libtorch_cuda` as a real dependency: the linker's
//! --as-needed would otherwise drop it (nothing references it directly), and CUDA would then
//! look unavailable on a GPU machine. torch-sys exports the directory to direct dependents
//! (links = "tch").
fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
        if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
            println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
        }
    }
}
