//! The instruction-set extensions the C libraries of this build were compiled to use, checked
//! against the CPU at start-up.
//!
//! Why: `ops/env.sh` builds the vendored C code (libjpeg-turbo, whose Huffman decoder is most
//! of the loader's CPU on JPEG shards) with `-mbmi2` when the building CPU has BMI2. Such a
//! binary copied to a CPU without BMI2 would die with an illegal-instruction signal somewhere
//! in a decode; [`check`] turns that into one clear error before any work starts.
//!
//! What counts: `build.rs` looks for `-mbmi2` (or `-march=x86-64-v3`/`-v4`/`native`) in
//! `CFLAGS`, `TARGET_CFLAGS` and `CFLAGS_<target>` (the variables the `cc` and `cmake` crates
//! pass to C compilers) and sets `cfg(ithn_c_bmi2)`. Flags given some other way are not seen.
//! The check runs after the command line is parsed, so `--help` and `--version` still answer.

/// Extensions the C code of this binary was compiled for (named as in `/proc/cpuinfo`).
pub const C_FEATURES: &[&str] = if cfg!(ithn_c_bmi2) { &["bmi2"] } else { &[] };

/// Whether this CPU has `feature` (one of the names [`C_FEATURES`] can hold).
fn cpu_has(feature: &str) -> bool {
    match feature {
        #[cfg(target_arch = "x86_64")]
        "bmi2" => std::arch::is_x86_feature_detected!("bmi2"),
        _ => false,
    }
}

/// The entries of `required` that `has` says are missing, in order.
pub fn missing<'a>(required: &[&'a str], has: impl Fn(&str) -> bool) -> Vec<&'a str> {
    required.iter().copied().filter(|f| !has(f)).collect()
}

/// `Err` naming what this CPU lacks of [`C_FEATURES`], and how to build for it.
pub fn check() -> Result<(), String> {
    let lacking = missing(C_FEATURES, cpu_has);
    if lacking.is_empty() {
        return Ok(());
    }
    Err(format!(
        "this ithn-dist was built for CPUs with {} (its C libraries were compiled with {}), \
         which this CPU lacks; rebuild it here, or with ITHN_PORTABLE=1 for any x86-64 CPU",
        lacking.join(", "),
        lacking
            .iter()
            .map(|f| format!("-m{f}"))
            .collect::<Vec<_>>()
            .join(" ")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_lists_only_what_the_cpu_lacks() {
        assert_eq!(missing(&["bmi2"], |_| false), vec!["bmi2"]);
        assert!(missing(&["bmi2"], |f| f == "bmi2").is_empty());
        assert!(missing(&[], |_| false).is_empty());
        assert_eq!(missing(&["a", "b", "c"], |f| f == "b"), vec!["a", "c"]);
    }

    #[test]
    fn this_build_runs_on_the_cpu_that_built_it() {
        // Tests run where they were built: a build that refused its own CPU would be a bug
        // in the detection, not a CPU to refuse.
        assert_eq!(check(), Ok(()));
        assert!(!cpu_has("not-a-feature"));
    }
}
