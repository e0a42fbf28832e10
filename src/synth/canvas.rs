//! Drawing primitives for phantom radiographs: a float *density* canvas in normalised
//! coordinates, soft-edged shapes, a seeded RNG, and the density → 8-bit grey mapping.
//!
//! Shapes add X-ray attenuation (density) rather than paint colour, so overlapping anatomy
//! combines the way it does on a radiograph (a rib over lung is brighter than lung, the heart
//! over the spine brighter still). Every shape only visits the pixels of its bounding box, so a
//! 128 px phantom costs well under a millisecond per shape. Everything here is deterministic:
//! the same calls with the same [`Rng`] state give the same bytes on every platform (only
//! IEEE `f32`/`f64` arithmetic, no platform math beyond `exp`/`sqrt`/`sin`/`cos`).

/// SplitMix64: tiny, fast, well distributed, and stable forever (unlike `rand`'s StdRng,
/// whose algorithm may change between versions and so would change the phantoms).
/// (The project's [`crate::rng::SplitMix64`], with the f32 draws the phantoms use.)
#[derive(Debug, Clone)]
pub struct Rng(crate::rng::SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(crate::rng::SplitMix64::new(seed))
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f32 {
        self.0.unit_f32()
    }

    /// Uniform in [lo, hi).
    pub fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * self.unit()
    }

    /// Standard normal (Box–Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = self.unit().max(1e-7);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
    }

    pub fn coin(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }
}

/// 64-bit FNV-1a, used to turn a study id into a seed (stable, no dependency).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Hermite smoothstep from `e0` to `e1` (either order).
pub fn smoothstep(e0: f32, e1: f32, x: f32) -> f32 {
    let t = ((x - e0) / (e1 - e0)).clamp(0.0, 1.0);
    t * t * (3.0 - 2.0 * t)
}

/// A square grid of f32 values addressed in normalised coordinates: pixel `(i, j)` has centre
/// `((i + 0.5) / n, (j + 0.5) / n)`, then a per-study shift/scale ("patient positioning").
#[derive(Debug, Clone)]
pub struct Canvas {
    pub n: usize,
    pub data: Vec<f32>,
    shift: (f32, f32),
    scale: f32,
}

impl Canvas {
    pub fn new(n: usize, shift: (f32, f32), scale: f32) -> Canvas {
        Canvas {
            n,
            data: vec![0.0; n * n],
            shift,
            scale,
        }
    }

    /// An empty canvas with the same size and positioning (for masks and layers).
    pub fn blank_like(&self) -> Canvas {
        Canvas::new(self.n, self.shift, self.scale)
    }

    /// Width of one pixel in normalised units (used for anti-aliased edges).
    pub fn px(&self) -> f32 {
        1.0 / (self.n as f32 * self.scale)
    }

    fn to_norm(&self, i: usize) -> (f32, f32) {
        let n = self.n as f32;
        let (x, y) = ((i % self.n) as f32 + 0.5, (i / self.n) as f32 + 0.5);
        (
            (x / n - 0.5) / self.scale + 0.5 - self.shift.0,
            (y / n - 0.5) / self.scale + 0.5 - self.shift.1,
        )
    }

    fn to_pixel(&self, x: f32, y: f32) -> (f32, f32) {
        let n = self.n as f32;
        (
            ((x + self.shift.0 - 0.5) * self.scale + 0.5) * n,
            ((y + self.shift.1 - 0.5) * self.scale + 0.5) * n,
        )
    }

    /// Adds `f(x, y)` at every pixel whose centre lies in the normalised box
    /// `[x0, x1] × [y0, y1]` (clipped to the image).
    pub fn add_fn(&mut self, x0: f32, y0: f32, x1: f32, y1: f32, f: impl Fn(f32, f32) -> f32) {
        let n = self.n;
        // Corners may come in either order (mirrored drawing code passes them swapped).
        let (px0, py0) = self.to_pixel(x0.min(x1), y0.min(y1));
        let (px1, py1) = self.to_pixel(x0.max(x1), y0.max(y1));
        let clip = |v: f32| (v.max(0.0) as usize).min(n);
        let (i0, i1) = (clip(px0.floor() - 1.0), clip(px1.ceil() + 1.0));
        let (j0, j1) = (clip(py0.floor() - 1.0), clip(py1.ceil() + 1.0));
        for j in j0..j1 {
            for i in i0..i1 {
                let k = j * n + i;
                let (x, y) = self.to_norm(k);
                self.data[k] += f(x, y);
            }
        }
    }

    /// Adds `f(x, y)` everywhere.
    pub fn add_all(&mut self, f: impl Fn(f32, f32) -> f32) {
        self.add_fn(-2.0, -2.0, 3.0, 3.0, f)
    }

    /// Value at a normalised point (nearest pixel; 0 outside).
    pub fn at(&self, x: f32, y: f32) -> f32 {
        let (px, py) = self.to_pixel(x, y);
        if px < 0.0 || py < 0.0 || px >= self.n as f32 || py >= self.n as f32 {
            return 0.0;
        }
        self.data[py as usize * self.n + px as usize]
    }

    /// Soft-edged filled ellipse (rotation `rot` radians) adding `amp` inside.
    pub fn ellipse(&mut self, c: (f32, f32), r: (f32, f32), rot: f32, amp: f32) {
        let edge = self.px() * 1.5;
        let (s, co) = rot.sin_cos();
        let ext = r.0.max(r.1);
        self.add_fn(c.0 - ext, c.1 - ext, c.0 + ext, c.1 + ext, |x, y| {
            amp * ellipse_cover(x - c.0, y - c.1, r, (s, co), edge)
        });
    }

    /// Gaussian blob with standard deviations `sd`.
    pub fn blob(&mut self, c: (f32, f32), sd: (f32, f32), amp: f32) {
        let (ex, ey) = (3.0 * sd.0, 3.0 * sd.1);
        self.add_fn(c.0 - ex, c.1 - ey, c.0 + ex, c.1 + ey, |x, y| {
            let (dx, dy) = ((x - c.0) / sd.0, (y - c.1) / sd.1);
            amp * (-0.5 * (dx * dx + dy * dy)).exp()
        });
    }

    /// Anti-aliased polyline of full width `w`.
    pub fn stroke(&mut self, pts: &[(f32, f32)], w: f32, amp: f32) {
        if pts.is_empty() {
            return;
        }
        let edge = self.px();
        let m = w + edge;
        let (mut x0, mut y0, mut x1, mut y1) = (f32::MAX, f32::MAX, f32::MIN, f32::MIN);
        for p in pts {
            (x0, y0, x1, y1) = (x0.min(p.0), y0.min(p.1), x1.max(p.0), y1.max(p.1));
        }
        // One pass with the distance to the *nearest* segment, so joints are not drawn twice.
        self.add_fn(x0 - m, y0 - m, x1 + m, y1 + m, |x, y| {
            let d = pts
                .windows(2)
                .map(|s| seg_dist((x, y), s[0], s[1]))
                .fold(seg_dist((x, y), pts[0], pts[0]), f32::min);
            amp * smoothstep(w * 0.5 + edge * 0.5, w * 0.5 - edge * 0.5, d)
        });
    }

    /// Quadratic Bézier through `a` → `b` with control point `c`, as a polyline stroke.
    pub fn curve(&mut self, a: (f32, f32), c: (f32, f32), b: (f32, f32), w: f32, amp: f32) {
        let pts: Vec<(f32, f32)> = (0..=16)
            .map(|k| {
                let t = k as f32 / 16.0;
                let u = 1.0 - t;
                (
                    u * u * a.0 + 2.0 * u * t * c.0 + t * t * b.0,
                    u * u * a.1 + 2.0 * u * t * c.1 + t * t * b.1,
                )
            })
            .collect();
        self.stroke(&pts, w, amp);
    }

    /// Adds `amp * layer * mask` pixel-wise (e.g. a finding restricted to the lung field).
    pub fn add_masked(&mut self, layer: &Canvas, mask: &Canvas, amp: f32) {
        for ((d, l), m) in self.data.iter_mut().zip(&layer.data).zip(&mask.data) {
            *d += amp * l * m;
        }
    }

    /// Mean of the values in a normalised box (used by tests and sanity checks).
    pub fn mean_in(&self, x0: f32, y0: f32, x1: f32, y1: f32) -> f32 {
        let mut probe = self.blank_like();
        probe.add_fn(x0, y0, x1, y1, |x, y| {
            f32::from(x >= x0 && x <= x1 && y >= y0 && y <= y1)
        });
        let (s, c) = self
            .data
            .iter()
            .zip(&probe.data)
            .filter(|(_, &p)| p > 0.0)
            .fold((0.0, 0.0), |(s, c), (v, _)| (s + v, c + 1.0));
        if c > 0.0 {
            s / c
        } else {
            0.0
        }
    }
}

/// Coverage (0..1) of a point at offset (dx, dy) from an ellipse centre.
pub fn ellipse_cover(dx: f32, dy: f32, r: (f32, f32), sin_cos: (f32, f32), edge: f32) -> f32 {
    let (s, c) = sin_cos;
    let (u, v) = (dx * c + dy * s, -dx * s + dy * c);
    let q = ((u / r.0).powi(2) + (v / r.1).powi(2)).sqrt();
    // Distance-like measure: (q - 1) scaled by the mean radius keeps edges ~`edge` wide.
    let d = (q - 1.0) * 0.5 * (r.0 + r.1);
    smoothstep(edge * 0.5, -edge * 0.5, d)
}

fn seg_dist(p: (f32, f32), a: (f32, f32), b: (f32, f32)) -> f32 {
    let (vx, vy) = (b.0 - a.0, b.1 - a.1);
    let len2 = vx * vx + vy * vy;
    let t = if len2 > 0.0 {
        (((p.0 - a.0) * vx + (p.1 - a.1) * vy) / len2).clamp(0.0, 1.0)
    } else {
        0.0
    };
    let (dx, dy) = (p.0 - a.0 - t * vx, p.1 - a.1 - t * vy);
    (dx * dx + dy * dy).sqrt()
}

/// Smooth random field (bilinear over a `cells`×`cells` lattice of N(0,1) values), for
/// tissue mottle and patchy opacities.
pub fn value_noise(rng: &mut Rng, cells: usize) -> impl Fn(f32, f32) -> f32 {
    let g = cells + 1;
    let lattice: Vec<f32> = (0..g * g).map(|_| rng.normal()).collect();
    move |x: f32, y: f32| {
        let fx = (x.clamp(0.0, 1.0) * cells as f32).min(cells as f32 - 1e-4);
        let fy = (y.clamp(0.0, 1.0) * cells as f32).min(cells as f32 - 1e-4);
        let (i, j) = (fx as usize, fy as usize);
        let (tx, ty) = (fx - i as f32, fy - j as f32);
        let at = |a: usize, b: usize| lattice[b * g + a];
        let top = at(i, j) * (1.0 - tx) + at(i + 1, j) * tx;
        let bot = at(i, j + 1) * (1.0 - tx) + at(i + 1, j + 1) * tx;
        top * (1.0 - ty) + bot * ty
    }
}

/// Density → 8-bit grey like film: `1 - exp(-k·D)`, then contrast/brightness, then
/// quantum noise. Higher density is brighter, as on a radiograph.
pub fn to_gray(c: &Canvas, rng: &mut Rng, contrast: f32, brightness: f32, noise: f32) -> Vec<u8> {
    c.data
        .iter()
        .map(|&d| {
            let v = 1.0 - (-1.35 * d.max(0.0)).exp();
            let v = (v - 0.5) * contrast + 0.5 + brightness + noise * rng.normal();
            (v.clamp(0.0, 1.0) * 255.0).round() as u8
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rng_is_stable_and_uniform_in_range() {
        let mut a = Rng::new(42);
        let mut b = Rng::new(42);
        let xs: Vec<f32> = (0..1000).map(|_| a.unit()).collect();
        let ys: Vec<f32> = (0..1000).map(|_| b.unit()).collect();
        assert_eq!(xs, ys);
        assert!(xs.iter().all(|&x| (0.0..1.0).contains(&x)));
        let mean = xs.iter().sum::<f32>() / 1000.0;
        assert!((mean - 0.5).abs() < 0.05, "mean {mean}");
        assert_ne!(Rng::new(1).next_u64(), Rng::new(2).next_u64());
    }

    #[test]
    fn fnv1a_known_value() {
        // FNV-1a 64 test vector: "a" → 0xaf63dc4c8601ec8c (from the FNV reference page).
        assert_eq!(fnv1a(b"a"), 0xaf63_dc4c_8601_ec8c);
    }

    #[test]
    fn ellipse_covers_its_inside_only() {
        let mut c = Canvas::new(64, (0.0, 0.0), 1.0);
        c.ellipse((0.5, 0.5), (0.2, 0.1), 0.0, 1.0);
        assert!((c.at(0.5, 0.5) - 1.0).abs() < 1e-6);
        assert!((c.at(0.65, 0.5) - 1.0).abs() < 1e-6);
        assert_eq!(c.at(0.5, 0.65), 0.0);
        assert_eq!(c.at(0.1, 0.1), 0.0);
    }

    #[test]
    fn stroke_width_is_respected() {
        let mut c = Canvas::new(100, (0.0, 0.0), 1.0);
        c.stroke(&[(0.1, 0.5), (0.9, 0.5)], 0.04, 1.0);
        assert!(c.at(0.5, 0.505) > 0.99);
        assert_eq!(c.at(0.5, 0.55), 0.0);
        assert!(c.mean_in(0.2, 0.45, 0.8, 0.55) > 0.3);
    }
}
