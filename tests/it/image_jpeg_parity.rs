//! JPEG decoding against Pillow (libjpeg-turbo), issue 14 case 6: the expected pixels come from
//! `ops/fixtures/pillow_jpeg.py`, run in this test with the project venv, over a synthetic
//! colour picture (saturated edges and noise: the worst case for chroma upsampling) and real
//! radiographs of ../shared/data/images, each encoded as 4:4:4, 4:2:2, 4:2:0 and greyscale.
//!
//! Decoding goes through libjpeg-turbo (the library Pillow uses, same defaults), so every
//! variant must match Pillow exactly (docs/input-contracts.md, "JPEG pixels"); the `image`
//! crate's decoder it replaced was up to 3 levels off on saturated colour.

use std::path::{Path, PathBuf};
use std::process::Command;

use ithn_dist::data::image::{self, Channels, Image};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

/// Pillow's fixture decodes every variant with `.convert('RGB')`; ours keeps grey JPEGs grey.
fn pillow_channels(name: &str) -> Channels {
    if name.ends_with(" grey") {
        Channels::Gray
    } else {
        Channels::Rgb
    }
}

#[test]
fn jpeg_pixels_equal_pillows() {
    let dir = tempfile::tempdir().unwrap();
    let mut real = Vec::new();
    for sub in ["nih_cxr14", "iu_xray_downsampled"] {
        let d = repo("../shared/data/images").join(sub);
        let mut files: Vec<PathBuf> = std::fs::read_dir(&d)
            .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "png" || x == "jpg"))
            .collect();
        files.sort();
        real.extend(files.into_iter().take(2));
    }
    let status = Command::new(repo(".venv/bin/python"))
        .arg(repo("ops/fixtures/pillow_jpeg.py"))
        .arg("--out")
        .arg(dir.path())
        .args(&real)
        .status()
        .expect("the project venv (.venv/bin/python, ops/setup.sh) runs the Pillow fixture");
    assert!(status.success(), "pillow_jpeg.py failed");
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
    let entries = index.as_array().unwrap();
    assert_eq!(entries.len(), 4 * (2 + real.len()), "every variant written");
    let mut worst = std::collections::BTreeMap::new();
    for (k, e) in entries.iter().enumerate() {
        let name = e["name"].as_str().unwrap();
        let (w, h) = (
            e["size"][0].as_u64().unwrap(),
            e["size"][1].as_u64().unwrap(),
        );
        let rgb = std::fs::read(dir.path().join(format!("{k}.rgb"))).unwrap();
        let pillow = Image::from_raw(w as u32, h as u32, Channels::Rgb, rgb, name).unwrap();
        let ours = image::decode_file(&dir.path().join(format!("{k}.jpg"))).unwrap();
        let d = image::max_diff_as_rgb(&ours, &pillow);
        println!("{name}: max difference {d}/255");
        assert_eq!(
            ours.channels(),
            pillow_channels(name),
            "{name}: grey stays grey"
        );
        assert_eq!(d, 0, "{name}: {d} levels from Pillow");
        let kind = name.rsplit(' ').next().unwrap().to_string();
        let w = worst.entry(kind).or_insert(0u8);
        *w = (*w).max(d);
    }
    println!("worst per kind: {worst:?}");
}
