//! `ithn-dist import | export | init-model | generate`, driven through the real binary in temp
//! dirs. Expected weights come from `../shared/reference/public/model/weights.safetensors` and
//! its key listing `config.json → state_dict`; the vocabulary from `../shared/reference/public/text.json`;
//! images from `../shared/data/images`.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tch::Tensor;

fn shared(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared")
        .join(rel)
}

fn bin(args: &[&str]) -> Output {
    // One libtorch thread per process: the tests run several binaries at once, and OpenMP
    // spinning on oversubscribed cores makes each run many times slower.
    Command::new(env!("CARGO_BIN_EXE_ithn-dist"))
        .env("OMP_NUM_THREADS", "1")
        .args(args)
        .output()
        .expect("run ithn-dist")
}

fn ok(args: &[&str]) -> String {
    let out = bin(args);
    assert!(
        out.status.success(),
        "ithn-dist {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Model configuration "A" of the fixture (config.json → args).
const CONFIG_A: &str = r#"
[data]
views = 1
image_size = 224
[model]
d_model = 64
d_ff = 128
num_heads = 4
num_layers = 2
cmm_size = 64
cmm_dim = 64
topk = 8
proj_dim = 32
visual_layers = [1, 1, 1, 1]
visual_width_per_group = 16
[eval]
beam_size = 3
max_seq_length = 20
"#;

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 temp path")
}

/// Imports the fixture weights (with the fixture vocabulary) into `dir/ckpt`.
fn import_fixture(dir: &Path) -> PathBuf {
    let cfg = dir.join("a.toml");
    std::fs::write(&cfg, CONFIG_A).unwrap();
    let ckpt = dir.join("ckpt");
    let weights = shared("reference/public/model/weights.safetensors");
    let vocab = shared("reference/public/text.json");
    ok(&[
        "import",
        "--state-dict",
        s(&weights),
        "--config",
        s(&cfg),
        "--vocab",
        s(&vocab),
        "--out",
        s(&ckpt),
    ]);
    ckpt
}

#[test]
fn import_then_export_reproduces_fixture_weights_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = import_fixture(tmp.path());
    let out = tmp.path().join("exported.safetensors");
    ok(&["export", "--checkpoint", s(&ckpt), "--out", s(&out)]);
    let exported: std::collections::HashMap<String, Tensor> = Tensor::read_safetensors(&out)
        .unwrap()
        .into_iter()
        .collect();
    let fixture =
        Tensor::read_safetensors(shared("reference/public/model/weights.safetensors")).unwrap();
    let cfg: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(shared("reference/public/model/config.json")).unwrap(),
    )
    .unwrap();
    let listing = cfg["state_dict"].as_array().unwrap();
    assert_eq!(exported.len(), listing.len(), "exported key count");
    for entry in listing {
        let name = entry["name"].as_str().unwrap();
        let t = exported
            .get(name)
            .unwrap_or_else(|| panic!("exported lacks {name}"));
        let shape: Vec<i64> = serde_json::from_value(entry["shape"].clone()).unwrap();
        assert_eq!(t.size(), shape, "{name}");
    }
    assert_eq!(fixture.len(), exported.len());
    for (name, want) in &fixture {
        let got = &exported[name];
        assert_eq!(got.kind(), want.kind(), "{name}");
        assert!(got.equal(want), "{name} differs after import → export");
    }
}

#[test]
fn import_rejects_mismatched_config_naming_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = tmp.path().join("a.toml");
    std::fs::write(&cfg, CONFIG_A.replace("d_ff = 128", "d_ff = 96")).unwrap();
    let weights = shared("reference/public/model/weights.safetensors");
    let out = bin(&[
        "import",
        "--state-dict",
        s(&weights),
        "--config",
        s(&cfg),
        "--out",
        s(&tmp.path().join("c")),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("feed_forward.w_1.weight") && err.contains("weights.safetensors"),
        "{err}"
    );
}

/// Every PNG/JPEG under ../shared/data/images (the DICOM excluded).
fn all_images() -> Vec<PathBuf> {
    let mut v = Vec::new();
    for dir in ["iu_xray_downsampled", "nih_cxr14", "other"] {
        for e in std::fs::read_dir(shared(&format!("data/images/{dir}"))).unwrap() {
            let p = e.unwrap().path();
            let ext = p
                .extension()
                .and_then(|x| x.to_str())
                .unwrap_or("")
                .to_lowercase();
            if ["png", "jpg", "jpeg"].contains(&ext.as_str()) {
                v.push(p);
            }
        }
    }
    v.sort();
    assert!(
        v.len() >= 20,
        "expected the bundled images, found {}",
        v.len()
    );
    v
}

/// Runs generate on every image (alternating beam 3 / greedy) and checks the JSON.
fn generate_all(ckpt: &Path, max_len: usize) {
    let vocab: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("vocab.json")).unwrap()).unwrap();
    let tokens = vocab["tokens"].as_array().unwrap();
    for (i, img) in all_images().iter().enumerate() {
        let mode = if i % 2 == 0 {
            vec!["--beam", "3"]
        } else {
            vec!["--greedy"]
        };
        let mut args = vec![
            "generate",
            "--checkpoint",
            s(ckpt),
            "--image",
            s(img),
            "--json",
        ];
        args.extend(mode);
        let v: serde_json::Value = serde_json::from_str(ok(&args).trim()).unwrap();
        let ids: Vec<i64> = serde_json::from_value(v["tokens"].clone()).unwrap();
        assert!(
            ids.len() <= max_len && ids.iter().all(|&t| t > 0),
            "{img:?}: {ids:?}"
        );
        let text: Vec<&str> = ids
            .iter()
            .map(|&t| tokens[t as usize - 1].as_str().unwrap())
            .collect();
        assert_eq!(v["report"].as_str().unwrap(), text.join(" "), "{img:?}");
        assert!(v["score"].as_f64().unwrap().is_finite(), "{img:?}");
    }
}

#[test]
fn generate_runs_on_every_image_with_fixture_weights() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = import_fixture(tmp.path());
    generate_all(&ckpt, 20);
}

#[test]
fn generate_runs_on_every_image_with_a_fresh_tiny_model() {
    let tmp = tempfile::tempdir().unwrap();
    let cfg = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/tiny.toml");
    let ckpt = tmp.path().join("fresh");
    let vocab = shared("reference/public/text.json");
    ok(&[
        "init-model",
        "--config",
        s(&cfg),
        "--vocab",
        s(&vocab),
        "--out",
        s(&ckpt),
        "--set",
        "eval.max_seq_length=12",
    ]);
    generate_all(&ckpt, 12);
}

#[test]
fn generate_refuses_dicom_and_truncated_png_naming_the_file() {
    let tmp = tempfile::tempdir().unwrap();
    let ckpt = import_fixture(tmp.path());
    let dicom = std::fs::read_dir(shared("data/images/other"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "dcm"))
        .expect("the bundled DICOM file");
    let png = shared("data/images/nih_cxr14/00000001_000.png");
    let bytes = std::fs::read(&png).unwrap();
    let truncated = tmp.path().join("truncated.png");
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    for bad in [&dicom, &truncated] {
        let out = bin(&["generate", "--checkpoint", s(&ckpt), "--image", s(bad)]);
        assert_eq!(out.status.code(), Some(1), "{bad:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(s(bad)), "error does not name {bad:?}: {err}");
    }
    // A two-view model needs two images: a clear usage error.
    let out = bin(&[
        "generate",
        "--checkpoint",
        s(&ckpt),
        "--image",
        s(&png),
        "--image",
        s(&png),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("view"));
}
