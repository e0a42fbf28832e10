//! Phantom chest radiographs drawn from a report's findings: frontal (PA) and lateral views.
//!
//! The drawing is a sum of densities: torso soft tissue, minus air in the lung fields, plus
//! mediastinum/heart (which carve the medial lung borders), diaphragm domes (which cut the
//! lungs below, leaving sharp costophrenic angles), spine, ribs, clavicles and vessel
//! markings. Each [`Finding`] then changes a *specific region*: the heart width
//! (cardiomegaly), the lung base (effusion), an apex (pneumothorax), a lung zone
//! (consolidation, atelectasis, nodule, granuloma), both hila (edema), and bright metal for
//! devices. Geometry and texture vary per study (seeded), so a model must read the findings,
//! not memorise a template. Image left is the patient's right, as on a PA film.

use super::canvas::{smoothstep, to_gray, value_noise, Canvas, Rng};
use crate::eval::ce::labeler::{Finding, Kind, Side, Zone};

/// Which projection to draw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Frontal,
    Lateral,
}

/// Per-study anatomy, drawn once from the study's RNG and shared by both views.
#[derive(Debug, Clone)]
pub struct Anatomy {
    /// Lung centre x offset from midline, half-width, centre y, half-height.
    pub lung: (f32, f32, f32, f32),
    /// Diaphragm dome base (lowest, lateral) y and dome height; right side sits higher.
    pub dome: (f32, f32),
    /// Extra height of the lower half of the lungs (hyperinflation), 0 normally.
    pub base_drop: f32,
    /// Heart half-width (the cardiothoracic ratio driver), half-height, centre y.
    pub heart: (f32, f32, f32),
    /// Extra half-width of the upper mediastinum (a widened mediastinum), 0 normally.
    pub mediastinum: f32,
    pub shift: (f32, f32),
    pub scale: f32,
    pub contrast: f32,
    pub brightness: f32,
}

impl Anatomy {
    /// Random normal anatomy, then adjusted by the findings that change geometry.
    pub fn new(rng: &mut Rng, findings: &[Finding]) -> Anatomy {
        let mut a = Anatomy {
            lung: (
                rng.range(0.19, 0.21),
                rng.range(0.155, 0.175),
                rng.range(0.47, 0.5),
                rng.range(0.35, 0.38),
            ),
            dome: (rng.range(0.74, 0.78), rng.range(0.06, 0.08)),
            heart: (
                rng.range(0.155, 0.17),
                rng.range(0.12, 0.135),
                rng.range(0.64, 0.67),
            ),
            base_drop: 0.0,
            mediastinum: 0.0,
            shift: (rng.range(-0.025, 0.025), rng.range(-0.025, 0.025)),
            scale: rng.range(0.95, 1.05),
            contrast: rng.range(0.9, 1.15),
            brightness: rng.range(-0.05, 0.05),
        };
        for f in findings {
            match f.kind {
                Kind::Cardiomegaly => a.heart.0 *= 1.0 + 0.38 * f.severity.factor(),
                Kind::WideMediastinum => a.mediastinum = 0.04 * f.severity.factor(),
                Kind::Hyperinflation => {
                    // Taller lungs with the apices where they were: only the bases move down.
                    a.base_drop = 0.07;
                    a.dome.0 += a.base_drop;
                    a.dome.1 *= 0.35;
                    a.heart.0 *= 0.9;
                }
                _ => {}
            }
        }
        a
    }
}

/// Renders one view as 8-bit grey pixels (`size`×`size`, row-major).
pub fn render(
    view: View,
    anatomy: &Anatomy,
    findings: &[Finding],
    rng: &mut Rng,
    size: usize,
) -> Vec<u8> {
    // Separate streams for texture, findings and film noise: adding a finding changes only
    // the pixels that finding draws, which keeps images comparable (and testable) per finding.
    let mut texture = Rng::new(rng.next_u64());
    let mut fx = Rng::new(rng.next_u64());
    let mut noise = Rng::new(rng.next_u64());
    let mut c = Canvas::new(size, anatomy.shift, anatomy.scale);
    match view {
        View::Frontal => frontal(&mut c, anatomy, findings, &mut texture, &mut fx),
        View::Lateral => lateral(&mut c, anatomy, findings, &mut texture, &mut fx),
    }
    to_gray(&c, &mut noise, anatomy.contrast, anatomy.brightness, 0.018)
}

/// Image-x of a lung centre: patient's right (`s = -1`) is image left.
fn lung_x(a: &Anatomy, s: f32) -> f32 {
    0.5 + s * a.lung.0
}

/// Diaphragm height under image-x `x` of the lung on side `s`.
fn dome_y(a: &Anatomy, s: f32, x: f32) -> f32 {
    let t = ((x - lung_x(a, s)) / (a.lung.1 * 1.1)).clamp(-1.0, 1.0);
    let right_higher = if s < 0.0 { -0.02 } else { 0.0 };
    a.dome.0 + right_higher - a.dome.1 * (1.0 - t * t)
}

/// Heart coverage on the frontal view (shifted to the patient's left = image right).
fn heart_cover(a: &Anatomy, x: f32, y: f32) -> f32 {
    let (cx, cy) = (0.5 + 0.3 * a.heart.0, a.heart.2);
    let q = ((x - cx) / a.heart.0).powi(2) + ((y - cy) / a.heart.1).powi(2);
    smoothstep(1.05, 0.95, q)
}

/// Frontal lung-field coverage (0..1) at (x, y): an ellipse per side, cut by the dome below,
/// the mediastinum medially and the heart.
fn lung_cover(a: &Anatomy, px: f32, x: f32, y: f32) -> f32 {
    let s = if x < 0.5 { -1.0 } else { 1.0 };
    let (cx, rx, cy) = (lung_x(a, s), a.lung.1, a.lung.2);
    let ry = a.lung.3 + if y > cy { a.base_drop } else { 0.0 };
    let q = (((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2)).sqrt();
    let body = smoothstep(1.0, 1.0 - 1.5 * px / rx, q);
    let dome = smoothstep(0.0, 1.5 * px, dome_y(a, s, x) - y);
    // Mediastinum widens downward; the aortic knob bulges to image right at y ≈ 0.3.
    let knob = if s > 0.0 {
        0.035 * (-((y - 0.3) / 0.04).powi(2)).exp()
    } else {
        0.0
    };
    // A widened mediastinum pushes the medial lung borders out above the heart.
    let half = 0.045 + 0.03 * y + knob + a.mediastinum * smoothstep(0.6, 0.35, y);
    let medial = smoothstep(half, half + 1.5 * px, (x - 0.5).abs());
    body * dome * medial * (1.0 - heart_cover(a, x, y))
}

fn frontal(c: &mut Canvas, a: &Anatomy, findings: &[Finding], rng: &mut Rng, fx: &mut Rng) {
    let px = c.px();
    let mottle = value_noise(rng, 12);
    // Torso: thicker in the middle (dome profile), with shoulders and neck.
    c.add_all(|x, y| {
        let q = ((x - 0.5) / 0.47).powi(2) + ((y - 0.62) / 0.62).powi(2);
        let torso = (1.0 - q).max(0.0).sqrt() * 1.05;
        let neck = smoothstep(0.095, 0.08, (x - 0.5).abs()) * smoothstep(0.16, 0.05, y) * 0.8;
        torso + neck + 0.06 * mottle(x, y)
    });
    for s in [-1.0f32, 1.0] {
        c.ellipse((0.5 + s * 0.42, 0.09), (0.1, 0.07), s * 0.4, 0.3);
        c.ellipse((0.5 + s * 0.42, 0.1), (0.05, 0.05), 0.0, 0.25); // humeral head
    }
    let mut lungs = c.blank_like();
    lungs.add_all(|x, y| lung_cover(a, px, x, y));
    let ptx = pneumothorax_layer(c, a, findings, fx);
    // Air in the lungs, a little denser at the bases (more tissue in the beam path).
    let air = -0.72;
    for (d, (l, p)) in c.data.iter_mut().zip(lungs.data.iter().zip(&ptx.data)) {
        *d += l * (air - 0.12 * p);
    }
    c.add_masked(&bases_gradient(c, a), &lungs, 1.0);
    // Stomach gas bubble under the left dome.
    c.blob(
        (lung_x(a, 1.0) + 0.03, dome_y(a, 1.0, lung_x(a, 1.0)) + 0.06),
        (0.035, 0.02),
        -0.25,
    );
    bones_frontal(c, rng);
    let edema = findings.iter().any(|f| f.kind == Kind::Edema);
    let mut marks = c.blank_like();
    vessels(&mut marks, a, rng, if edema { 2.0 } else { 1.0 });
    for (m, p) in marks.data.iter_mut().zip(&ptx.data) {
        *m *= 1.0 - p;
    }
    c.add_masked(&marks, &lungs, 1.0);
    for f in findings {
        draw_frontal_finding(c, &lungs, a, f, fx);
    }
}

/// Slight density increase toward the lung bases (overlying soft tissue), for realism.
fn bases_gradient(c: &Canvas, a: &Anatomy) -> Canvas {
    let mut g = c.blank_like();
    let top = a.lung.2 - a.lung.3;
    g.add_all(|_, y| 0.12 * ((y - top) / (2.0 * a.lung.3)).clamp(0.0, 1.0));
    g
}

fn bones_frontal(c: &mut Canvas, rng: &mut Rng) {
    // Spine: a column with vertebral bodies, visible through the mediastinum.
    c.add_fn(0.45, 0.0, 0.55, 1.0, |x, _| {
        0.08 * smoothstep(0.04, 0.03, (x - 0.5).abs())
    });
    for k in 0..15 {
        let y = 0.03 + k as f32 * 0.066;
        c.ellipse((0.5, y), (0.035, 0.026), 0.0, 0.07);
    }
    // Posterior ribs: arcs rising from the spine then sweeping laterally and down.
    for s in [-1.0f32, 1.0] {
        for k in 0..9 {
            let y0 = 0.12 + k as f32 * 0.064 + rng.range(-0.006, 0.006);
            let pts: Vec<(f32, f32)> = (0..=12)
                .map(|i| {
                    let t = i as f32 / 12.0;
                    (
                        0.5 + s * (0.035 + 0.4 * t),
                        y0 - 0.045 * (std::f32::consts::PI * t).sin() + 0.09 * t * t,
                    )
                })
                .collect();
            c.stroke(&pts, 0.017, 0.13);
        }
        // Clavicle.
        c.curve(
            (0.5 + s * 0.04, 0.14),
            (0.5 + s * 0.18, 0.1),
            (0.5 + s * 0.33, 0.075),
            0.024,
            0.42,
        );
    }
}

/// Vessel markings: a branching tree from each hilum, thinning and fading outward (as lung
/// vessels do). `gain` > 1 for edema (engorged, more conspicuous vessels).
fn vessels(m: &mut Canvas, a: &Anatomy, rng: &mut Rng, gain: f32) {
    for s in [-1.0f32, 1.0] {
        // Anchored to the apex, so taller (hyperinflated) lungs do not move the hila.
        let hilum = (0.5 + s * 0.07, a.lung.2 - a.lung.3 + 0.34);
        m.blob((hilum.0 + s * 0.03, hilum.1), (0.025, 0.04), 0.12 * gain);
        for k in 0..5 {
            // Trunks fan from up-and-out (k = 0) to down-and-out (k = 4), leaving the hilum
            // at different heights so they do not meet in one visible point.
            let ang = -1.0 + 0.55 * k as f32 + rng.range(-0.15, 0.15);
            let start = (hilum.0, hilum.1 + 0.025 * (k as f32 - 2.0));
            let dir = (s * ang.cos(), ang.sin());
            branch(m, start, dir, 0.11, 0.009, 0.1 * gain, 3, rng);
        }
    }
}

/// One vessel segment and, recursively, its two daughter branches.
#[allow(clippy::too_many_arguments)]
fn branch(
    m: &mut Canvas,
    from: (f32, f32),
    dir: (f32, f32),
    len: f32,
    w: f32,
    amp: f32,
    depth: u32,
    rng: &mut Rng,
) {
    let bend = rng.range(-0.25, 0.25);
    let (sn, cs) = bend.sin_cos();
    let d = (dir.0 * cs - dir.1 * sn, dir.0 * sn + dir.1 * cs);
    let to = (from.0 + d.0 * len, from.1 + d.1 * len);
    let mid = (from.0 + dir.0 * len * 0.5, from.1 + dir.1 * len * 0.5);
    m.curve(from, mid, to, w, amp);
    if depth == 0 {
        return;
    }
    for turn in [-1.0f32, 1.0] {
        let t = turn * rng.range(0.3, 0.6);
        let (sn, cs) = t.sin_cos();
        let nd = (d.0 * cs - d.1 * sn, d.0 * sn + d.1 * cs);
        branch(m, to, nd, len * 0.72, w * 0.7, amp * 0.75, depth - 1, rng);
    }
}

/// Pneumothorax: the apex/lateral rim of the named lung loses its markings (mask returned)
/// and a thin pleural line marks the collapsed lung edge.
fn pneumothorax_layer(c: &mut Canvas, a: &Anatomy, findings: &[Finding], rng: &mut Rng) -> Canvas {
    let mut mask = c.blank_like();
    for f in findings.iter().filter(|f| f.kind == Kind::Pneumothorax) {
        for s in sides(f.side, rng) {
            let (cx, rx, cy, ry) = (lung_x(a, s), a.lung.1, a.lung.2, a.lung.3);
            let gap = 0.18 + 0.12 * f.severity.factor();
            mask.add_fn(cx - rx, cy - ry, cx + rx, cy + 0.2, |x, y| {
                let q = (((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2)).sqrt();
                let upper = smoothstep(cy + 0.15, cy - 0.05, y);
                smoothstep(1.0 - gap, 1.0 - gap + 0.03, q) * upper
            });
            // Pleural line at the edge of the collapsed lung (upper arc of a smaller ellipse).
            let (irx, iry) = (rx * (1.0 - gap), ry * (1.0 - gap));
            let pts: Vec<(f32, f32)> = (0..=20)
                .map(|i| {
                    let t = std::f32::consts::PI * (1.05 + 0.75 * i as f32 / 20.0);
                    let t = if s < 0.0 {
                        t
                    } else {
                        std::f32::consts::TAU + std::f32::consts::PI - t
                    };
                    (cx + irx * t.cos(), cy + iry * t.sin())
                })
                .collect();
            c.stroke(&pts, 0.005, 0.3);
        }
    }
    mask
}

/// The lung sides a finding is drawn on; an unspecified side is drawn on a seeded side.
fn sides(side: Side, rng: &mut Rng) -> Vec<f32> {
    match side {
        Side::Right => vec![-1.0],
        Side::Left => vec![1.0],
        Side::Both => vec![-1.0, 1.0],
        Side::Unspecified => vec![if rng.coin() { -1.0 } else { 1.0 }],
    }
}

/// Fraction of lung height (0 = apex, 1 = base) for a zone; unspecified draws one.
fn zone_t(zone: Zone, default: Option<Zone>, rng: &mut Rng) -> f32 {
    let z = match (zone, default) {
        (Zone::Unspecified, Some(d)) => d,
        (z, _) => z,
    };
    match z {
        Zone::Upper => rng.range(0.2, 0.3),
        Zone::Middle => rng.range(0.45, 0.55),
        Zone::Lower => rng.range(0.68, 0.76),
        Zone::Unspecified => rng.range(0.25, 0.72),
    }
}

fn draw_frontal_finding(c: &mut Canvas, lungs: &Canvas, a: &Anatomy, f: &Finding, rng: &mut Rng) {
    let sev = f.severity.factor();
    let (rx, top, h) = (a.lung.1, a.lung.2 - a.lung.3, 2.0 * a.lung.3);
    let mut layer = c.blank_like();
    match f.kind {
        Kind::Effusion => {
            for s in sides(f.side, rng) {
                let lateral = lung_x(a, s) + s * rx;
                let level = dome_y(a, s, lateral) - (0.035 + 0.06 * sev);
                // Meniscus: the fluid surface climbs toward the lateral chest wall.
                layer.add_fn(lateral - s * 2.0 * rx, level - 0.1, lateral, 1.0, |x, y| {
                    let t = ((x - lateral).abs() / (2.0 * rx)).clamp(0.0, 1.0);
                    smoothstep(
                        level + 0.05 * t * t - 0.01,
                        level + 0.05 * t * t + 0.015,
                        y + 0.06 * (1.0 - t),
                    )
                });
            }
            c.add_masked(&layer, lungs, 0.7);
        }
        Kind::Opacity
        | Kind::Consolidation
        | Kind::Pneumonia
        | Kind::Atelectasis
        | Kind::Nodule
        | Kind::Granuloma => {
            let default = matches!(
                f.kind,
                Kind::Opacity | Kind::Consolidation | Kind::Pneumonia | Kind::Atelectasis
            )
            .then_some(Zone::Lower);
            for s in sides(f.side, rng) {
                let cy = top + h * zone_t(f.zone, default, rng);
                let cx = lung_x(a, s) + s * rng.range(-0.2, 0.45) * rx;
                lesion(&mut layer, f.kind, (cx, cy), sev, rng);
            }
            c.add_masked(&layer, lungs, 1.0);
        }
        Kind::PleuralThickening => {
            // A dense band inside the lateral and apical lung edge.
            for s in sides(f.side, rng) {
                let (cx, rx, cy, ry) = (lung_x(a, s), a.lung.1, a.lung.2, a.lung.3);
                let w = 0.06 + 0.04 * sev;
                layer.add_fn(cx - rx, cy - ry, cx + rx, cy + 0.1, |x, y| {
                    let q = (((x - cx) / rx).powi(2) + ((y - cy) / ry).powi(2)).sqrt();
                    let lateral = smoothstep(0.0, 0.3, s * (x - cx) / rx + 0.3);
                    smoothstep(1.0 - w, 1.0 - w + 0.03, q) * lateral * smoothstep(cy + 0.1, cy, y)
                });
            }
            c.add_masked(&layer, lungs, 0.35);
        }
        Kind::Edema => {
            for s in [-1.0f32, 1.0] {
                layer.blob((0.5 + s * 0.15, a.lung.2), (0.09, 0.12), 0.3 * sev);
            }
            c.add_masked(&layer, lungs, 1.0);
        }
        Kind::Fracture | Kind::Device | Kind::Pacemaker | Kind::Sternotomy | Kind::Line => {
            draw_frontal_hardware(c, a, f, rng)
        }
        // Drawn through the anatomy (heart width, mediastinum, dome height).
        Kind::Cardiomegaly | Kind::WideMediastinum | Kind::Hyperinflation | Kind::Pneumothorax => {}
    }
}

/// Bones and hardware of the frontal view, drawn straight onto the canvas (outside the lung
/// mask): rib fracture callus, clips, pacemaker with leads, sternotomy wires, a central line.
fn draw_frontal_hardware(c: &mut Canvas, a: &Anatomy, f: &Finding, rng: &mut Rng) {
    match f.kind {
        Kind::Fracture => {
            // A healed rib fracture: a bright callus on a lateral rib, outside the lung field.
            for s in sides(f.side, rng) {
                let y = rng.range(0.3, 0.6);
                c.ellipse((0.5 + s * 0.405, y), (0.02, 0.013), s * 0.5, 0.45);
            }
        }
        Kind::Device => {
            // Surgical clips / stent: short bright metal strokes under the right dome.
            let (x0, y0) = (0.32 + rng.range(-0.02, 0.02), dome_y(a, -1.0, 0.32) + 0.08);
            for k in 0..3 {
                let p = (x0 + 0.03 * k as f32, y0 + rng.range(-0.015, 0.015));
                c.stroke(&[p, (p.0 + 0.012, p.1 + 0.02)], 0.005, 1.4);
            }
        }
        Kind::Pacemaker => {
            let g = (0.72 + rng.range(-0.02, 0.02), 0.2 + rng.range(-0.02, 0.02));
            c.ellipse(g, (0.05, 0.033), 0.15, 1.6);
            c.curve(g, (0.6, 0.3), (0.53, a.heart.2), 0.006, 1.2);
            c.curve(
                g,
                (0.62, 0.32),
                (0.5 + 0.5 * a.heart.0, a.heart.2 + 0.05),
                0.006,
                1.2,
            );
        }
        Kind::Sternotomy => {
            for k in 0..6 {
                let y = 0.27 + k as f32 * 0.055;
                c.ellipse(
                    (0.5 + rng.range(-0.006, 0.006), y),
                    (0.014, 0.009),
                    0.0,
                    1.3,
                );
                c.ellipse((0.5, y), (0.007, 0.004), 0.0, -1.0);
            }
        }
        Kind::Line => {
            let s = if f.side == Side::Left { 1.0 } else { -1.0 };
            let entry = (0.5 + s * 0.24, 0.1);
            c.curve(
                entry,
                (0.5 + s * 0.06, 0.16),
                (0.5 + s * 0.02, 0.4 + rng.range(0.0, 0.08)),
                0.007,
                1.0,
            );
        }
        _ => {}
    }
}

/// Draws one focal lung lesion into `layer` (restricted to the lung by the caller).
fn lesion(layer: &mut Canvas, kind: Kind, c: (f32, f32), sev: f32, rng: &mut Rng) {
    match kind {
        Kind::Opacity => {
            // Hazy: a few wide, faint blobs.
            for _ in 0..4 {
                let p = (
                    c.0 + rng.normal() * 0.03 * sev,
                    c.1 + rng.normal() * 0.03 * sev,
                );
                let r = rng.range(0.04, 0.06) * sev.sqrt();
                layer.blob(p, (r, r * 0.9), rng.range(0.08, 0.13));
            }
        }
        Kind::Pneumonia => {
            // Lobar: a large, dense, confluent patch.
            for _ in 0..14 {
                let p = (
                    c.0 + rng.normal() * 0.05 * sev,
                    c.1 + rng.normal() * 0.04 * sev,
                );
                let r = rng.range(0.025, 0.045) * sev.sqrt();
                layer.blob(p, (r, r * 0.8), rng.range(0.22, 0.34));
            }
        }
        Kind::Consolidation => {
            for _ in 0..8 {
                let p = (
                    c.0 + rng.normal() * 0.035 * sev,
                    c.1 + rng.normal() * 0.025 * sev,
                );
                let r = rng.range(0.018, 0.035) * sev.sqrt();
                layer.blob(p, (r, r * 0.8), rng.range(0.18, 0.3));
            }
        }
        Kind::Atelectasis => {
            // Plate-like band: a thick, nearly horizontal line with a faint haze around it.
            let (len, tilt) = (0.08 + 0.04 * sev, rng.range(-0.2, 0.2));
            let (dx, dy) = (len * tilt.cos(), len * tilt.sin());
            let ends = [(c.0 - dx, c.1 - dy), (c.0 + dx, c.1 + dy)];
            layer.stroke(&ends, 0.018 + 0.006 * sev, 0.4);
            layer.blob(c, (len * 0.8, 0.025), 0.12);
        }
        Kind::Nodule => layer.ellipse(c, (0.02 * sev, 0.019 * sev), 0.0, 0.55),
        Kind::Granuloma => layer.ellipse(c, (0.009, 0.009), 0.0, 1.2),
        _ => {}
    }
}

/// Lateral view: one lung field, heart anterior-inferior, spine posterior (image right).
fn lateral(c: &mut Canvas, a: &Anatomy, findings: &[Finding], rng: &mut Rng, fx: &mut Rng) {
    let px = c.px();
    let mottle = value_noise(rng, 12);
    let heart = (0.37, a.heart.2 + 0.01, a.heart.0 * 1.05, a.heart.1 * 1.2);
    let (dome0, domeh) = (a.dome.0 + 0.02, a.dome.1);
    c.add_all(|x, y| {
        let q = ((x - 0.5) / 0.42).powi(2) + ((y - 0.6) / 0.62).powi(2);
        (1.0 - q).max(0.0).sqrt() * 1.15 + 0.06 * mottle(x, y)
    });
    let mut lung = c.blank_like();
    lung.add_all(|x, y| {
        let ry = a.lung.3 + if y > a.lung.2 { a.base_drop } else { 0.0 };
        let q = (((x - 0.52) / 0.29).powi(2) + ((y - a.lung.2) / ry).powi(2)).sqrt();
        let t = ((x - 0.52) / 0.33).clamp(-1.0, 1.0);
        let dome = dome0 - domeh * (1.0 - t * t) + 0.04 * t;
        let hq = ((x - heart.0) / heart.2).powi(2) + ((y - heart.1) / heart.3).powi(2);
        smoothstep(1.0, 1.0 - 1.5 * px / 0.29, q)
            * smoothstep(0.0, 1.5 * px, dome - y)
            * (1.0 - smoothstep(1.05, 0.95, hq))
    });
    c.add_masked(&lung, &lung, -0.62);
    // Spine (posterior) and sternum (anterior).
    for k in 0..14 {
        let y = 0.08 + k as f32 * 0.066;
        c.ellipse((0.74 + 0.05 * y, y), (0.05, 0.027), 0.1, 0.22);
    }
    c.stroke(&[(0.17, 0.22), (0.19, 0.6)], 0.02, 0.3);
    let mut layer = c.blank_like();
    for f in findings {
        let sev = f.severity.factor();
        let y = a.lung.2 - a.lung.3 + 2.0 * a.lung.3 * zone_t(f.zone, Some(Zone::Lower), fx);
        match f.kind {
            Kind::Effusion => layer.add_fn(0.6, dome0 - 0.2, 0.85, dome0 + 0.05, |x, yy| {
                // Posterior costophrenic sulcus fills first.
                smoothstep(
                    dome0 - 0.02 - 0.06 * sev,
                    dome0 - 0.0,
                    yy + 0.25 * (x - 0.6),
                )
            }),
            Kind::Opacity
            | Kind::Consolidation
            | Kind::Pneumonia
            | Kind::Atelectasis
            | Kind::Nodule
            | Kind::Granuloma => lesion(&mut layer, f.kind, (fx.range(0.45, 0.65), y), sev, fx),
            Kind::Edema => layer.blob((0.55, a.lung.2), (0.1, 0.12), 0.3 * sev),
            Kind::Pneumothorax => {
                layer.blob((0.55, a.lung.2 - a.lung.3 + 0.06), (0.12, 0.05), -0.15)
            }
            Kind::Pacemaker => {
                c.ellipse((0.22, 0.22), (0.028, 0.05), 0.0, 1.6);
                c.curve((0.22, 0.22), (0.3, 0.35), (0.33, heart.1), 0.006, 1.2);
            }
            Kind::Sternotomy => {
                for k in 0..6 {
                    c.ellipse((0.185, 0.26 + k as f32 * 0.055), (0.006, 0.012), 0.0, 1.3);
                }
            }
            Kind::Line => c.curve((0.45, 0.05), (0.42, 0.2), (0.42, 0.42), 0.007, 1.0),
            Kind::Device => {
                for k in 0..3 {
                    let p = (0.4 + 0.03 * k as f32, dome0 + 0.06);
                    c.stroke(&[p, (p.0 + 0.012, p.1 + 0.02)], 0.005, 1.4);
                }
            }
            // Not seen on the lateral phantom (or drawn through the anatomy).
            Kind::Cardiomegaly
            | Kind::WideMediastinum
            | Kind::Hyperinflation
            | Kind::PleuralThickening
            | Kind::Fracture => {}
        }
    }
    c.add_masked(&layer, &lung, 1.0);
}
