//! Fixture builder: small, deterministic dataset trees in the three input layouts, so every
//! source is tested (and benchmarked) without credentialed data.
//!
//! Images are synthetic grey radiograph-like gradients (a seeded function of the pixel
//! position, so reruns write identical files); reports are assembled from real sentences the
//! caller provides (the tests use the IU X-Ray annotation's sentences). Nothing here reads
//! `../shared`: callers pass what they need.

use std::io::Write;
use std::path::{Path, PathBuf};

use flate2::write::GzEncoder;

/// The project's SplitMix64 stream, with draws as the fixtures were made.
pub struct Rng(crate::rng::SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(crate::rng::SplitMix64::new(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in `0..n` (n = 0 taken as 1).
    pub fn below(&mut self, n: usize) -> usize {
        self.0.below_mod(n as u64) as usize
    }
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{}: {e}", path.display()))
}

/// A grey chest-film-like picture: bright mediastinum, dark lung fields, seeded texture.
pub fn draw_xray(seed: u64, width: u32, height: u32) -> image::GrayImage {
    let mut rng = Rng::new(seed);
    let phase = (rng.below(1000) as f32) / 100.0;
    image::GrayImage::from_fn(width, height, |x, y| {
        let u = x as f32 / width as f32 - 0.5;
        let v = y as f32 / height as f32;
        let lungs = (-(u.abs() - 0.22).powi(2) * 40.0).exp() * (1.0 - v * 0.4);
        let texture = ((x as f32 * 0.7 + phase).sin() * (y as f32 * 0.5 - phase).cos()) * 12.0;
        image::Luma([(200.0 - lungs * 140.0 + texture).clamp(0.0, 255.0) as u8])
    })
}

/// Writes a synthetic image at `path` (PNG or JPEG by extension), creating directories.
pub fn write_image(path: &Path, seed: u64, width: u32, height: u32) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    draw_xray(seed, width, height)
        .save(path)
        .map_err(|e| io_err(path, e))
}

/// The sentences of a set of reports (split on ". ", each ending with a period).
pub fn sentences<'a>(reports: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out = sentence_pool(reports);
    out.dedup();
    out
}

/// Every sentence occurrence of a set of reports (duplicates kept, sorted), so that sampling
/// from it follows the real sentence frequencies: templated normal sentences dominate, as in
/// MIMIC-CXR, and near-identical reports are common.
pub fn sentence_pool<'a>(reports: impl IntoIterator<Item = &'a str>) -> Vec<String> {
    let mut out: Vec<String> = reports
        .into_iter()
        .flat_map(|r| r.split(". "))
        .map(|s| s.trim().trim_end_matches('.').trim())
        .filter(|s| !s.is_empty())
        .map(|s| format!("{s}."))
        .collect();
    out.sort();
    out
}

/// A report of 3–8 sentences drawn from `pool` (see [`sentence_pool`]).
pub fn pooled_report(rng: &mut Rng, pool: &[String]) -> String {
    let n = 3 + rng.below(6);
    (0..n)
        .map(|_| pool[rng.below(pool.len())].as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// A report of 2–6 sentences; half of the reports come from a small "normal" pool, so that
/// identical reports are common (as in MIMIC).
pub fn report(rng: &mut Rng, sentences: &[String]) -> String {
    let pool = if rng.below(2) == 0 {
        &sentences[..sentences.len().min(12)]
    } else {
        sentences
    };
    let n = 2 + rng.below(5);
    (0..n)
        .map(|_| pool[rng.below(pool.len())].as_str())
        .collect::<Vec<_>>()
        .join(" ")
}

/// For every record of an R2Gen annotation, draws its images (`size`×`size` PNG or JPEG by
/// extension) under `images`. Returns the number of files written.
pub fn write_r2gen_images(ann: &Path, images: &Path, size: u32) -> std::io::Result<usize> {
    let text = std::fs::read_to_string(ann)?;
    let root: serde_json::Value = serde_json::from_str(&text).map_err(|e| io_err(ann, e))?;
    let mut n = 0;
    for split in ["train", "val", "test"] {
        for rec in root
            .get(split)
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            for p in rec
                .get("image_path")
                .and_then(|v| v.as_array())
                .into_iter()
                .flatten()
            {
                let Some(rel) = p.as_str() else { continue };
                write_image(&images.join(rel), n as u64, size, size + size / 4)?;
                n += 1;
            }
        }
    }
    Ok(n)
}

fn gz_write(path: &Path, text: &str) -> std::io::Result<()> {
    let mut enc = GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(text.as_bytes())?;
    std::fs::write(path, enc.finish()?)
}

/// What [`write_mimic_tree`] wrote, for the tests' expectations.
#[derive(Debug, Default)]
pub struct MimicFixture {
    pub studies: usize,
    /// Studies with a frontal image and a FINDINGS section (the rows prepare should keep).
    pub usable: usize,
    pub without_frontal: usize,
    pub without_findings: usize,
    pub split_csv: PathBuf,
}

/// A MIMIC-CXR-JPG-shaped tree: `files/pXX/pSUBJECT/sSTUDY/*.jpg`, report `.txt` files,
/// gzipped split and metadata CSVs. About 1 study in 10 has only a lateral image and 1 in 10
/// a report without FINDINGS; subjects have 1–3 studies.
pub fn write_mimic_tree(
    root: &Path,
    n_studies: usize,
    sentences: &[String],
    seed: u64,
    size: u32,
) -> std::io::Result<MimicFixture> {
    let mut rng = Rng::new(seed);
    let mut split_csv = String::from("dicom_id,study_id,subject_id,split\n");
    let mut meta_csv = String::from("dicom_id,subject_id,study_id,PerformedProcedureStepDescription,ViewPosition,Rows,Columns\n");
    let mut fx = MimicFixture {
        studies: n_studies,
        ..Default::default()
    };
    let mut subject = 10_000_000u64;
    for k in 0..n_studies {
        if k == 0 || rng.below(2) == 0 {
            subject += 1 + rng.below(50) as u64;
        }
        let study = 50_000_000 + k as u64 * 7;
        let split = match rng.below(10) {
            0 => "validate",
            1 => "test",
            _ => "train",
        };
        let no_frontal = rng.below(10) == 0;
        let views: Vec<&str> = if no_frontal {
            vec!["LATERAL"]
        } else {
            [&["PA"][..], &["AP", "LATERAL"], &["LATERAL", "PA", "AP"]][rng.below(3)].to_vec()
        };
        let dir = root.join(format!(
            "files/p{}/p{subject}/s{study}",
            &subject.to_string()[..2]
        ));
        for (v, view) in views.iter().enumerate() {
            let dicom = format!("{:08x}-{v}", rng.next_u64() as u32);
            split_csv.push_str(&format!("{dicom},{study},{subject},{split}\n"));
            meta_csv.push_str(&format!(
                "{dicom},{subject},{study},CHEST,{view},{size},{size}\n"
            ));
            write_image(
                &dir.join(format!("{dicom}.jpg")),
                rng.next_u64(),
                size + 8,
                size,
            )?;
        }
        let no_findings = rng.below(10) == 0;
        let body = report(&mut rng, sentences);
        let text = if no_findings {
            format!("                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n IMPRESSION: \n {body}\n")
        } else {
            format!("                                 FINAL REPORT\n EXAMINATION:  CHEST (PA AND LAT)\n\n INDICATION:  ___ with cough.\n\n FINDINGS: \n {body}\n \n IMPRESSION: \n No acute process.\n")
        };
        std::fs::write(dir.with_extension("txt"), text)?;
        match (no_frontal, no_findings) {
            (true, _) => fx.without_frontal += 1,
            (false, true) => fx.without_findings += 1,
            (false, false) => fx.usable += 1,
        }
    }
    std::fs::create_dir_all(root)?;
    fx.split_csv = root.join("mimic-cxr-2.0.0-split.csv.gz");
    gz_write(&fx.split_csv, &split_csv)?;
    gz_write(&root.join("mimic-cxr-2.0.0-metadata.csv.gz"), &meta_csv)?;
    Ok(fx)
}

/// What [`write_openi_tree`] wrote.
#[derive(Debug, Default)]
pub struct OpeniFixture {
    pub reports: usize,
    pub usable: usize,
    pub tgz: PathBuf,
    pub images: PathBuf,
}

/// An Open-i-shaped release: `NLMCXR_reports.tgz` holding `ecgen-radiology/N.xml`, and PNGs
/// named by `parentImage` id. About 1 report in 8 has an empty FINDINGS element.
pub fn write_openi_tree(
    dir: &Path,
    n_reports: usize,
    sentences: &[String],
    seed: u64,
    size: u32,
) -> std::io::Result<OpeniFixture> {
    let mut rng = Rng::new(seed);
    let images = dir.join("NLMCXR_png");
    let mut fx = OpeniFixture {
        reports: n_reports,
        tgz: dir.join("NLMCXR_reports.tgz"),
        images: images.clone(),
        ..Default::default()
    };
    let mut tar = tar::Builder::new(GzEncoder::new(Vec::new(), flate2::Compression::default()));
    for k in 1..=n_reports {
        let empty = rng.below(8) == 0;
        let findings = if empty {
            String::new()
        } else {
            report(&mut rng, sentences)
        };
        let escaped = findings.replace('&', "&amp;").replace('<', "&lt;");
        let ids = [
            format!("CXR{k}_IM-{k:04}-1001"),
            format!("CXR{k}_IM-{k:04}-2001"),
        ];
        for id in &ids {
            write_image(
                &images.join(format!("{id}.png")),
                rng.next_u64(),
                size,
                size,
            )?;
        }
        let xml = format!(
            "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<eCitation>\n <meta type=\"rr\"/>\n <uId id=\"CXR{k}\"/>\n <MedlineCitation><Article><Abstract>\n  <AbstractText Label=\"COMPARISON\">None.</AbstractText>\n  <AbstractText Label=\"FINDINGS\">{escaped}</AbstractText>\n  <AbstractText Label=\"IMPRESSION\">No acute disease.</AbstractText>\n </Abstract></Article></MedlineCitation>\n <parentImage id=\"{}\"><figureId>F1</figureId></parentImage>\n <parentImage id=\"{}\"><figureId>F2</figureId></parentImage>\n</eCitation>\n",
            ids[0], ids[1]
        );
        let mut header = tar::Header::new_gnu();
        header.set_size(xml.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(0);
        tar.append_data(
            &mut header,
            format!("ecgen-radiology/{k}.xml"),
            xml.as_bytes(),
        )?;
        if !empty {
            fx.usable += 1;
        }
    }
    std::fs::write(&fx.tgz, tar.into_inner()?.finish()?)?;
    Ok(fx)
}
