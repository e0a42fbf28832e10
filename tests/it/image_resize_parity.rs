//! Resize parity with Pillow on the real images of ../shared/data/images (nih_cxr14,
//! iu_xray_downsampled, other): the expected pixels are produced in this run by
//! `ops/fixtures/pillow_resize.py` (Pillow + torchvision `Resize` in the project venv), so no
//! large arrays are committed. Acceptance (issue 4): eval (224×224) and train (shorter side 256)
//! resizes within 1/255 per pixel. Resampling alone (from Pillow's own decoded pixels) must
//! be exact; end to end (our decoder + our resize) within 1 level.

use std::path::{Path, PathBuf};
use std::process::Command;

use ithn_dist::data::image::{self, Channels, Image};

fn shared_images() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/data/images")
}

fn venv_python() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(".venv/bin/python")
}

fn real_images() -> Vec<PathBuf> {
    let mut out = Vec::new();
    for dir in ["nih_cxr14", "iu_xray_downsampled", "other"] {
        let d = shared_images().join(dir);
        let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
        for e in entries {
            let p = e.unwrap().path();
            let ext = p.extension().and_then(|x| x.to_str()).unwrap_or("");
            if matches!(ext, "png" | "jpg" | "jpeg") {
                out.push(p);
            }
        }
    }
    out.sort();
    assert!(
        out.len() >= 25,
        "expected the shared image set, found {}",
        out.len()
    );
    out
}

struct Expected {
    decoded: Image,
    eval: Image,
    train: Image,
}

fn read_rgb(dir: &Path, key: usize, name: &str, size: &serde_json::Value) -> Image {
    let (w, h) = (
        size[0].as_u64().unwrap() as u32,
        size[1].as_u64().unwrap() as u32,
    );
    let bytes = std::fs::read(dir.join(format!("{key}.{name}.rgb"))).unwrap();
    Image::from_raw(w, h, Channels::Rgb, bytes, name).unwrap()
}

/// Run the Pillow fixture script over `paths`.
fn pillow(paths: &[PathBuf]) -> Vec<Expected> {
    let tmp = tempfile::tempdir().unwrap();
    let status = Command::new(venv_python())
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("ops/fixtures/pillow_resize.py"))
        .arg("--out")
        .arg(tmp.path())
        .args(paths)
        .status()
        .expect("the project venv (.venv/bin/python, ops/setup.sh) runs the Pillow fixture");
    assert!(status.success(), "pillow_resize.py failed");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(tmp.path().join("index.json")).unwrap()).unwrap();
    index
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(k, e)| Expected {
            decoded: read_rgb(tmp.path(), k, "decoded", &e["decoded"]),
            eval: read_rgb(tmp.path(), k, "eval", &e["eval"]),
            train: read_rgb(tmp.path(), k, "train", &e["train"]),
        })
        .collect()
}

/// Our images may be grey; compare as RGB the way `convert('RGB')` replicates grey.
fn max_diff(ours: &Image, theirs: &Image, what: &str) -> u8 {
    assert_eq!(
        (ours.width(), ours.height()),
        (theirs.width(), theirs.height()),
        "{what}: size"
    );
    image::max_diff_as_rgb(ours, theirs)
}

#[test]
fn eval_and_train_resize_match_pillow_on_real_images() {
    let paths = real_images();
    let expected = pillow(&paths);
    let (mut worst_decode, mut worst_e2e) = (0u8, 0u8);
    for (path, exp) in paths.iter().zip(&expected) {
        let name = path.display().to_string();
        // 1. Resampling alone, from Pillow's decoded pixels: must be bit-exact.
        let eval = image::resize_exact(&exp.decoded, 224, 224);
        assert_eq!(max_diff(&eval, &exp.eval, &name), 0, "{name}: eval resize");
        let train = image::resize_shorter(&exp.decoded, 256);
        assert_eq!(
            max_diff(&train, &exp.train, &name),
            0,
            "{name}: train resize"
        );
        // 2. End to end with our decoder (JPEG decoders may round IDCT differently).
        let ours = image::decode_file(path).unwrap();
        worst_decode = worst_decode.max(max_diff(&ours, &exp.decoded, &name));
        let e = max_diff(&image::resize_exact(&ours, 224, 224), &exp.eval, &name);
        let t = max_diff(&image::resize_shorter(&ours, 256), &exp.train, &name);
        println!("{name}: end-to-end max diff eval {e}, train {t}");
        worst_e2e = worst_e2e.max(e).max(t);
    }
    println!(
        "{} images: resample max diff 0; decode max diff {worst_decode}; end-to-end max diff {worst_e2e}/255",
        paths.len()
    );
    assert!(
        worst_e2e <= 1,
        "end-to-end resize differs from Pillow by {worst_e2e}/255"
    );
}

#[test]
fn the_shared_dicom_file_is_refused_by_name() {
    let dir = shared_images().join("other");
    let dcm = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|x| x == "dcm"))
        .expect("a .dcm file in ../shared/data/images/other");
    let err = image::decode_file(&dcm).unwrap_err().to_string();
    assert!(
        err.contains("DICOM") && err.contains(&dcm.display().to_string()),
        "{err}"
    );
}
