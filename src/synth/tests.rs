//! Phantom tests: determinism, and "each finding changes the image in its region".
//!
//! For each finding we render the same study (same id, same seed) once as a normal report
//! and once with that single finding added, then compare mean absolute pixel differences
//! inside the region where the finding belongs and outside it. Texture, findings and film
//! noise use separate RNG streams, so the difference outside the region is (almost) zero and
//! any drawing in the wrong place makes the test fail. Regions are in normalised image
//! coordinates (image left = patient's right) and generous enough for the per-study
//! shift/scale of ±2.5 % / ±5 %.

use super::*;

const SIZE: usize = 128;
const SEED: u64 = 7580;

/// Pixels whose grey level changed by at least `CHANGED` (film noise is identical in both
/// renderings, so only drawing changes pixels): (count inside box, count outside box).
fn changed_pixels(a: &[u8], b: &[u8], (x0, y0, x1, y1): (f32, f32, f32, f32)) -> (usize, usize) {
    const CHANGED: i32 = 6;
    let (mut inside, mut outside) = (0, 0);
    for (k, (&p, &q)) in a.iter().zip(b).enumerate() {
        if (i32::from(p) - i32::from(q)).abs() < CHANGED {
            continue;
        }
        let x = ((k % SIZE) as f32 + 0.5) / SIZE as f32;
        let y = ((k / SIZE) as f32 + 0.5) / SIZE as f32;
        if x >= x0 && x <= x1 && y >= y0 && y <= y1 {
            inside += 1;
        } else {
            outside += 1;
        }
    }
    (inside, outside)
}

/// Signed mean (with − without) inside the box: > 0 means the finding made it brighter.
fn region_signed(a: &[u8], b: &[u8], (x0, y0, x1, y1): (f32, f32, f32, f32)) -> f32 {
    let (mut s, mut n) = (0.0, 0.0);
    for (k, (&p, &q)) in a.iter().zip(b).enumerate() {
        let x = ((k % SIZE) as f32 + 0.5) / SIZE as f32;
        let y = ((k / SIZE) as f32 + 0.5) / SIZE as f32;
        if x >= x0 && x <= x1 && y >= y0 && y <= y1 {
            (s, n) = (s + f32::from(p) - f32::from(q), n + 1.0);
        }
    }
    s / n
}

fn finding(kind: Kind, side: Side, zone: Zone) -> Finding {
    Finding {
        kind,
        side,
        zone,
        severity: Severity::Moderate,
    }
}

/// Asserts that adding `f` changes view `view` mostly inside `region` in direction `sign`.
fn check(f: Finding, view: usize, region: (f32, f32, f32, f32), sign: f32) {
    for id in ["CXR1_1_IM-0001", "CXR2384_IM-0942", "CXR3030_IM-1405"] {
        let base = render_findings(id, vec![], SEED, SIZE, 2);
        let with = render_findings(id, vec![f], SEED, SIZE, 2);
        let (inside, outside) = changed_pixels(&with.views[view], &base.views[view], region);
        let signed = region_signed(&with.views[view], &base.views[view], region);
        // Visible (at least a granuloma's few pixels) and at least 90 % inside its region.
        assert!(
            inside >= 4 && inside >= 9 * outside,
            "{f:?} view {view} study {id}: {inside} changed pixels inside vs {outside} outside"
        );
        assert!(
            signed * sign > 0.0,
            "{f:?} view {view} study {id}: signed Δ {signed:.3}"
        );
    }
}

#[test]
fn rendering_is_deterministic_and_study_specific() {
    let report = "Mild cardiomegaly. Small left pleural effusion. No pneumothorax.";
    let a = render_study("CXR10_IM-0002", report, SEED, SIZE, 2);
    let b = render_study("CXR10_IM-0002", report, SEED, SIZE, 2);
    assert_eq!(a.views, b.views);
    assert_eq!(a.views.len(), 2);
    assert_eq!(a.views[0].len(), SIZE * SIZE);
    let other_id = render_study("CXR11_IM-0003", report, SEED, SIZE, 2);
    assert_ne!(a.views[0], other_id.views[0]);
    let other_seed = render_study("CXR10_IM-0002", report, SEED + 1, SIZE, 2);
    assert_ne!(a.views[0], other_seed.views[0]);
    // Frontal and lateral are different drawings.
    assert_ne!(a.views[0], a.views[1]);
}

#[test]
fn images_look_like_radiographs() {
    // Lungs dark, mediastinum/abdomen bright, air outside the body darkest at the corners.
    let s = render_findings("CXR5_IM-2117", vec![], SEED, SIZE, 1);
    let img = &s.views[0];
    let mean = |x0: f32, y0: f32, x1: f32, y1: f32| {
        let (mut t, mut n) = (0.0, 0.0);
        for (k, &p) in img.iter().enumerate() {
            let x = ((k % SIZE) as f32 + 0.5) / SIZE as f32;
            let y = ((k / SIZE) as f32 + 0.5) / SIZE as f32;
            if x >= x0 && x <= x1 && y >= y0 && y <= y1 {
                (t, n) = (t + f32::from(p), n + 1.0);
            }
        }
        t / n
    };
    let lung = mean(0.22, 0.35, 0.32, 0.5);
    let mediastinum = mean(0.47, 0.3, 0.53, 0.5);
    let abdomen = mean(0.35, 0.9, 0.65, 0.97);
    let corner = mean(0.0, 0.9, 0.04, 1.0);
    assert!(
        mediastinum > lung + 40.0,
        "mediastinum {mediastinum} lung {lung}"
    );
    assert!(abdomen > lung + 40.0, "abdomen {abdomen} lung {lung}");
    assert!(corner < lung, "corner {corner} lung {lung}");
}

#[test]
fn cardiomegaly_widens_the_heart() {
    check(
        finding(Kind::Cardiomegaly, Side::Unspecified, Zone::Unspecified),
        0,
        (0.3, 0.45, 0.85, 0.8),
        1.0,
    );
    check(
        finding(Kind::Cardiomegaly, Side::Unspecified, Zone::Unspecified),
        1,
        (0.15, 0.45, 0.6, 0.85),
        1.0,
    );
}

#[test]
fn effusion_fills_the_named_costophrenic_angle() {
    // Patient's left = image right.
    check(
        finding(Kind::Effusion, Side::Left, Zone::Unspecified),
        0,
        (0.5, 0.55, 0.95, 0.85),
        1.0,
    );
    check(
        finding(Kind::Effusion, Side::Right, Zone::Unspecified),
        0,
        (0.05, 0.55, 0.5, 0.85),
        1.0,
    );
    // Lateral: the posterior sulcus (image right, bottom of the lung).
    check(
        finding(Kind::Effusion, Side::Left, Zone::Unspecified),
        1,
        (0.55, 0.55, 0.9, 0.85),
        1.0,
    );
}

#[test]
fn pneumothorax_darkens_the_apex_and_draws_a_pleural_line() {
    let f = finding(Kind::Pneumothorax, Side::Right, Zone::Unspecified);
    check(f, 0, (0.05, 0.08, 0.5, 0.55), -1.0);
}

#[test]
fn lung_lesions_appear_in_their_zone() {
    check(
        finding(Kind::Consolidation, Side::Right, Zone::Upper),
        0,
        (0.05, 0.08, 0.5, 0.45),
        1.0,
    );
    check(
        finding(Kind::Consolidation, Side::Left, Zone::Lower),
        0,
        (0.5, 0.5, 0.95, 0.85),
        1.0,
    );
    check(
        finding(Kind::Atelectasis, Side::Left, Zone::Lower),
        0,
        (0.5, 0.5, 0.95, 0.85),
        1.0,
    );
    check(
        finding(Kind::Nodule, Side::Right, Zone::Middle),
        0,
        (0.05, 0.3, 0.5, 0.65),
        1.0,
    );
    check(
        finding(Kind::Granuloma, Side::Left, Zone::Upper),
        0,
        (0.5, 0.08, 0.95, 0.45),
        1.0,
    );
    check(
        finding(Kind::Consolidation, Side::Unspecified, Zone::Upper),
        1,
        (0.3, 0.08, 0.75, 0.5),
        1.0,
    );
}

#[test]
fn edema_hazes_both_hila() {
    let f = finding(Kind::Edema, Side::Unspecified, Zone::Unspecified);
    check(f, 0, (0.05, 0.08, 0.95, 0.85), 1.0);
    // Both sides, not one.
    let base = render_findings("CXR9_IM-0001", vec![], SEED, SIZE, 1);
    let with = render_findings("CXR9_IM-0001", vec![f], SEED, SIZE, 1);
    let right = region_signed(&with.views[0], &base.views[0], (0.15, 0.3, 0.42, 0.7));
    let left = region_signed(&with.views[0], &base.views[0], (0.58, 0.3, 0.85, 0.7));
    assert!(right > 2.0 && left > 2.0, "edema right {right} left {left}");
}

#[test]
fn devices_are_bright_and_where_they_belong() {
    check(
        finding(Kind::Pacemaker, Side::Unspecified, Zone::Unspecified),
        0,
        (0.5, 0.08, 0.85, 0.7),
        1.0,
    );
    check(
        finding(Kind::Sternotomy, Side::Unspecified, Zone::Unspecified),
        0,
        (0.43, 0.2, 0.57, 0.62),
        1.0,
    );
    check(
        finding(Kind::Line, Side::Right, Zone::Unspecified),
        0,
        (0.2, 0.0, 0.56, 0.55),
        1.0,
    );
    check(
        finding(Kind::Sternotomy, Side::Unspecified, Zone::Unspecified),
        1,
        (0.1, 0.2, 0.27, 0.6),
        1.0,
    );
}

#[test]
fn hyperinflation_lowers_the_diaphragm() {
    // Lower, flatter domes: more dark lung where the domes were.
    let f = finding(Kind::Hyperinflation, Side::Unspecified, Zone::Unspecified);
    check(f, 0, (0.0, 0.35, 1.0, 1.0), -1.0);
}

#[test]
fn annotation_paths_must_stay_inside_the_output() {
    assert!(safe_relative("CXR1_1_IM-0001/0.png"));
    assert!(!safe_relative("/etc/passwd"));
    assert!(!safe_relative("../x.png"));
    assert!(!safe_relative("a/../../x.png"));
    assert!(!safe_relative(""));
}

#[test]
fn png_comment_chunk_keeps_the_file_valid() {
    let study = render_findings("CXR2_IM-0652", vec![], SEED, 32, 1);
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("a/b.png");
    write_png(&path, &study.views[0], 32).expect("write");
    let bytes = std::fs::read(&path).expect("read back");
    assert!(bytes.windows(9).any(|w| w == b"synthetic"));
    let img = image::load_from_memory(&bytes).expect("decodes").to_luma8();
    assert_eq!(img.dimensions(), (32, 32));
    assert_eq!(img.into_raw(), study.views[0]);
    // No temp files left behind.
    let names: Vec<_> = std::fs::read_dir(dir.path().join("a"))
        .expect("ls")
        .collect();
    assert_eq!(names.len(), 1);
}

#[test]
fn crc32_matches_the_standard_check_value() {
    // CRC-32/ISO-HDLC check value for "123456789" (the catalogue's standard vector).
    assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
}
