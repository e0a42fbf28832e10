use super::*;
use std::path::Path;

const F: &str = "configs/test.toml";

fn load(text: &str, sets: &[&str]) -> Result<Config, ConfigError> {
    let sets: Vec<String> = sets.iter().map(|s| s.to_string()).collect();
    Config::from_toml_str(text, Path::new(F), &sets)
}

fn message(r: Result<Config, ConfigError>) -> String {
    r.expect_err("config must be rejected").to_string()
}

#[test]
fn defaults_are_the_published_iu_run() {
    let c = load("", &[]).unwrap();
    assert_eq!(c.model.d_model, 512);
    assert_eq!(c.model.visual_layers, vec![3, 4, 23, 3]);
    assert_eq!(c.train.batch_size, 16);
    assert_eq!(c.train.seed, 7580);
    assert_eq!(c.ithn.alpha, 0.01);
}

#[test]
fn unknown_key_is_named_with_file() {
    let m = message(load("[train]\nepochz = 3\n", &[]));
    assert!(m.contains("epochz"), "{m}");
    assert!(m.contains(F), "{m}");
    let m = message(load("[trian]\n", &[]));
    assert!(m.contains("trian"), "{m}");
}

#[test]
fn wrong_type_is_named() {
    let m = message(load("[train]\nepochs = \"many\"\n", &[]));
    assert!(m.contains("train.epochs"), "{m}");
    let m = message(load("", &["model.d_model=abc"]));
    assert!(m.contains("model.d_model"), "{m}");
}

#[test]
fn invalid_values_are_named() {
    // (--set, key the message names): a rule between keys is reported on the key the --set
    // changed (num_heads=7 breaks "d_model divisible by num_heads": the --set is to blame).
    let cases: &[(&str, &str)] = &[
        ("model.num_heads=7", "model.num_heads"),
        ("model.d_model=66", "model.d_model"),
        ("model.cmm_dim=256", "model.cmm_dim"),
        ("model.topk=4096", "model.topk"),
        ("model.cmm_size=2", "model.cmm_size"),
        ("data.image_size=1024", "data.image_size"),
        ("train.batch_size=15", "train.batch_size"),
        ("train.lr_ve=-1e-4", "train.lr_ve"),
        ("train.lr_ed=0", "train.lr_ed"),
        ("data.views=3", "data.views"),
        ("train.monitor_metric=\"BLEU_5\"", "train.monitor_metric"),
        ("model.dropout=1.5", "model.dropout"),
        ("model.visual_weights=\" \"", "model.visual_weights"),
    ];
    let file = "[train]\naccumulation_steps = 2\n";
    for (set, key) in cases {
        let m = message(load(file, &[set]));
        assert!(m.starts_with(&format!("--set {set:?}")), "{set}: {m}");
        assert!(m.contains(&format!("`{key}`")), "{set}: {m}");
    }
    // The same rule broken by the file alone is reported on the file, even with an unrelated
    // --set on the command line.
    let m = message(load("[model]\nnum_heads = 7\n", &["train.epochs=3"]));
    assert!(m.contains(F) && m.contains("model.d_model"), "{m}");
    assert!(!m.starts_with("--set"), "{m}");
}

#[test]
fn overrides_are_typed_and_applied() {
    let c = load(
        "[train]\nepochs = 100\n",
        &[
            "train.epochs=5",
            "data.prepared=/scratch/iu",
            "ithn.negatives=ascent",
        ],
    )
    .unwrap();
    assert_eq!(c.train.epochs, 5);
    assert_eq!(c.data.prepared, std::path::Path::new("/scratch/iu"));
    assert_eq!(c.ithn.negatives, Negatives::Ascent);
    let m = message(load("", &["train.epochs"]));
    assert!(m.contains("train.epochs"), "{m}");
}

#[test]
fn resolved_toml_round_trips() {
    let c = load("", &["train.epochs=7"]).unwrap();
    let again = load(&c.to_toml(), &[]).unwrap();
    assert_eq!(c, again);
}

#[test]
fn shipped_configs_load() {
    for f in [
        "configs/iu_xray.toml",
        "configs/mimic_cxr.toml",
        "configs/tiny.toml",
        "configs/quickstart.toml",
    ] {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(f);
        Config::load(&path, &[]).unwrap_or_else(|e| panic!("{f}: {e}"));
    }
}

#[test]
fn readme_documents_every_key() {
    // The configuration reference in README.md must list every key of the schema.
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let tree: toml::Table = Config::default().to_toml().parse().unwrap();
    let mut missing = vec![];
    for (section, table) in &tree {
        for key in table.as_table().unwrap().keys() {
            let k = format!("`{section}.{key}`");
            if !readme.contains(&k) {
                missing.push(k);
            }
        }
    }
    assert!(missing.is_empty(), "README.md lacks {missing:?}");
}

/// An error about a key given with `--set` blames the `--set`, not the file (issue 19).
#[test]
fn errors_about_set_keys_name_the_set_not_the_file() {
    let m = message(load("[train]\nepochs = 3\n", &["train.lr_edd=1e-4"]));
    assert!(m.starts_with("--set \"train.lr_edd=1e-4\""), "{m}");
    assert!(m.contains("unknown field `lr_edd`"), "{m}");
    assert!(!m.contains(F), "{m}");
    assert!(!m.contains('\n'), "{m}");
    let m = message(load("", &["train.epochs=\"x\""]));
    assert!(m.starts_with("--set") && m.contains("train.epochs"), "{m}");
    // The same mistake in the file blames the file.
    let m = message(load("[train]\nlr_edd = 1e-4\n", &["train.epochs=2"]));
    assert!(m.starts_with(F) && m.contains("train.lr_edd"), "{m}");
}
