//! ithn-dist: R2GenCMN radiology report generation trained with ITHN (increasingly hard
//! negatives) across many ranks. The modules follow the data's way through the system:
//! configuration, the process world, data, the model, evaluation, checkpoints, training, and the
//! command line on top.
//!
//! Layers, bottom to top — a module imports only modules listed before it (the `layering`
//! test below checks the import graph against this list):
//! cpu, fsutil, bounds, rng, dataset, logging, run_dir, lifecycle, config, dist, data, model, eval,
//! checkpoint, train, gpu, synth, plot, bench, cli
//!
//! * `cpu` — the CPU extensions the bundled C code was built for, checked at start-up;
//! * `dataset` — the `Dataset` and `Split` types every layer passes instead of strings;
//! * `fsutil`, `logging`, `run_dir`, `lifecycle` — foundations: atomic writes, log setup, the
//!   run directory's layout, signals / the watchdog / fault injection / exit codes;
//! * `dist` sits below `data` because the loader shards batches over the world's ranks;
//! * `eval` sits below `train`: the trainer validates and tests with it;
//! * `checkpoint` sits below `train`: the trainer drives a `Checkpointer` and hands its state
//!   over through `checkpoint::Stateful`, so checkpoint code never sees the trainer.

pub mod bench;
pub mod bounds;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod cpu;
pub mod data;
pub mod dataset;
pub mod dist;
pub mod eval;
pub mod fsutil;
pub mod gpu;
pub mod lifecycle;
pub mod logging;
pub mod model;
pub mod plot;
pub mod rng;
pub mod run_dir;
pub mod synth;
pub mod train;

#[cfg(test)]
mod function_length;

#[cfg(test)]
mod layering {
    //! The import graph of the top-level modules against the order in the comment above.
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    /// The layer list of src/lib.rs's documentation, bottom first.
    fn layers(lib: &str) -> Vec<String> {
        let mut lines = lib
            .lines()
            .skip_while(|l| !l.starts_with("//! Layers, bottom to top"));
        // The heading runs up to the line that ends with a colon.
        assert!(
            lines.by_ref().any(|l| l.ends_with(':')),
            "src/lib.rs documents its layers"
        );
        let mut names = Vec::new();
        for line in lines.map_while(|l| l.strip_prefix("//! ")) {
            if line.is_empty() || line.starts_with('*') {
                break;
            }
            names.extend(
                line.split(',')
                    .map(|n| n.trim().to_string())
                    .filter(|n| !n.is_empty()),
            );
        }
        names
    }

    fn rust_files(path: &Path, out: &mut Vec<PathBuf>) {
        if path.is_dir() {
            for entry in std::fs::read_dir(path).unwrap() {
                rust_files(&entry.unwrap().path(), out);
            }
        } else if path.is_file() && path.extension().is_some_and(|e| e == "rs") {
            out.push(path.to_path_buf());
        }
    }

    /// Top-level modules named as `crate::NAME` in the code (comments skipped) of `files`.
    fn imports(files: &[PathBuf], known: &[String]) -> BTreeSet<String> {
        let mut found = BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(file).unwrap();
            for line in text.lines().filter(|l| !l.trim_start().starts_with("//")) {
                for (i, _) in line.match_indices("crate::") {
                    let rest = &line[i + "crate::".len()..];
                    let name: String = rest
                        .chars()
                        .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                        .collect();
                    if known.contains(&name) {
                        found.insert(name);
                    }
                }
            }
        }
        found
    }

    #[test]
    fn every_module_imports_only_modules_below_it() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
        let lib = std::fs::read_to_string(src.join("lib.rs")).unwrap();
        let order = layers(&lib);
        let declared: BTreeSet<String> = lib
            .lines()
            .filter_map(|l| l.strip_prefix("pub mod "))
            .map(|l| l.trim_end_matches(';').to_string())
            .collect();
        assert_eq!(
            order.iter().cloned().collect::<BTreeSet<_>>(),
            declared,
            "the layer list must name every top-level module once"
        );
        let mut wrong = Vec::new();
        for (level, module) in order.iter().enumerate() {
            let mut files = Vec::new();
            rust_files(&src.join(module), &mut files);
            rust_files(&src.join(format!("{module}.rs")), &mut files);
            assert!(!files.is_empty(), "no source for {module}");
            for used in imports(&files, &order) {
                let at = order.iter().position(|m| *m == used).unwrap();
                if at > level {
                    wrong.push(format!("{module} imports {used}, which sits above it"));
                }
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    }

    #[test]
    fn the_check_sees_an_upward_import() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.rs");
        std::fs::write(&f, "// crate::train in a comment\nuse crate::train::x;\n").unwrap();
        let known = vec!["train".to_string(), "eval".to_string()];
        assert_eq!(imports(&[f], &known), BTreeSet::from(["train".to_string()]));
        let lib = "//! Layers, bottom to top — x\n//! y:\n//! a, b,\n//! c\n//!\n";
        assert_eq!(layers(lib), vec!["a", "b", "c"]);
    }
}
