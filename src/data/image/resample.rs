//! Pillow's antialiased bilinear resampling (`Image.resize(size, BILINEAR)` with
//! `reducing_gap=None`, which is what torchvision's `Resize` applies to PIL images),
//! re-implemented so that the Rust loader produces the same pixels as the reference pipeline.
//!
//! Guarantees, all of them needed for pixel parity with Pillow:
//! - separable convolution, horizontal pass first, then vertical, with an 8-bit rounded
//!   intermediate image between the passes;
//! - a triangle filter whose support grows with the downscale factor (antialiasing);
//! - coefficients normalised in `f64`, then converted to fixed point with 22 fractional bits
//!   (32 − 8 − 2: room for 8-bit values and a sum of weights slightly above one), accumulated
//!   from a rounding bias of one half and clamped to `0..=255`;
//! - the horizontal pass only computes the source rows the vertical pass reads;
//! - a pass whose size does not change is skipped (Pillow copies instead of filtering).

/// Fractional bits of the fixed-point coefficients.
const PRECISION_BITS: u32 = 32 - 8 - 2;

/// The triangle ("bilinear") filter, support 1.
fn triangle(x: f64) -> f64 {
    let x = x.abs();
    if x < 1.0 {
        1.0 - x
    } else {
        0.0
    }
}

/// Fixed-point weights of one output axis: output position `i` reads `len[i]` input samples
/// starting at `start[i]`, with weights `weights[i * ksize ..][..len[i]]`.
struct Coefficients {
    ksize: usize,
    start: Vec<usize>,
    len: Vec<usize>,
    weights: Vec<i32>,
}

impl Coefficients {
    fn new(in_size: usize, out_size: usize) -> Coefficients {
        let scale = in_size as f64 / out_size as f64;
        // Downscaling widens the filter so that every input sample contributes (antialias).
        let filterscale = scale.max(1.0);
        let support = filterscale; // triangle support (1.0) × filterscale
        let ksize = support.ceil() as usize * 2 + 1;
        let mut start = Vec::with_capacity(out_size);
        let mut len = Vec::with_capacity(out_size);
        let mut weights = vec![0i32; out_size * ksize];
        let mut row = vec![0f64; ksize];
        for i in 0..out_size {
            let center = (i as f64 + 0.5) * scale;
            // `as i64` truncates toward zero like C's `(int)` cast; the clamp handles negatives.
            let lo = ((center - support + 0.5) as i64).max(0) as usize;
            let hi = ((center + support + 0.5) as i64).min(in_size as i64) as usize;
            let n = hi.saturating_sub(lo);
            let mut total = 0.0;
            for (x, w) in row.iter_mut().enumerate().take(n) {
                *w = triangle((x as f64 + lo as f64 - center + 0.5) / filterscale);
                total += *w;
            }
            for (x, w) in row.iter().enumerate().take(n) {
                let w = if total != 0.0 { w / total } else { *w };
                weights[i * ksize + x] = to_fixed(w);
            }
            start.push(lo);
            len.push(n);
        }
        Coefficients {
            ksize,
            start,
            len,
            weights,
        }
    }

    fn row(&self, i: usize) -> (usize, &[i32]) {
        let base = i * self.ksize;
        (self.start[i], &self.weights[base..base + self.len[i]])
    }
}

/// Round half away from zero into fixed point, like Pillow's `(int)(±0.5 + w * 2^22)`.
fn to_fixed(w: f64) -> i32 {
    let scaled = w * f64::from(1u32 << PRECISION_BITS);
    if scaled < 0.0 {
        (scaled - 0.5) as i32
    } else {
        (scaled + 0.5) as i32
    }
}

/// Back from fixed point to a byte, saturating.
fn clip8(acc: i32) -> u8 {
    (acc >> PRECISION_BITS).clamp(0, 255) as u8
}

const HALF: i32 = 1 << (PRECISION_BITS - 1);

/// Resize interleaved 8-bit pixels (`channels` per pixel, rows of `width * channels` bytes).
pub(crate) fn resize_u8(
    src: &[u8],
    width: usize,
    height: usize,
    channels: usize,
    out_w: usize,
    out_h: usize,
) -> Vec<u8> {
    debug_assert_eq!(src.len(), width * height * channels);
    let need_h = out_w != width;
    let need_v = out_h != height;
    if !need_h && !need_v {
        return src.to_vec();
    }
    let vert = Coefficients::new(height, out_h);
    if !need_h {
        return vertical(src, width, channels, &vert, 0, out_h);
    }
    // Only the source rows the vertical pass will read are filtered horizontally.
    let (first, last) = if need_v {
        let last = vert.start[out_h - 1] + vert.len[out_h - 1];
        (vert.start[0], last)
    } else {
        (0, height)
    };
    let horiz = Coefficients::new(width, out_w);
    let tmp = horizontal(src, width, channels, &horiz, first, last);
    if !need_v {
        return tmp;
    }
    vertical(&tmp, out_w, channels, &vert, first, out_h)
}

/// Horizontal pass over source rows `first..last`; the result has `last - first` rows.
fn horizontal(
    src: &[u8],
    width: usize,
    channels: usize,
    c: &Coefficients,
    first: usize,
    last: usize,
) -> Vec<u8> {
    let out_w = c.start.len();
    let mut out = vec![0u8; (last - first) * out_w * channels];
    for (y, out_row) in (first..last).zip(out.chunks_exact_mut(out_w * channels)) {
        let in_row = &src[y * width * channels..(y + 1) * width * channels];
        for xx in 0..out_w {
            let (lo, w) = c.row(xx);
            for ch in 0..channels {
                let mut acc = HALF;
                for (k, wk) in w.iter().enumerate() {
                    acc += i32::from(in_row[(lo + k) * channels + ch]) * wk;
                }
                out_row[xx * channels + ch] = clip8(acc);
            }
        }
    }
    out
}

/// Vertical pass; `row_offset` is the first source row present in `src` (after a cropped
/// horizontal pass), so coefficient starts are shifted by it.
fn vertical(
    src: &[u8],
    width: usize,
    channels: usize,
    c: &Coefficients,
    row_offset: usize,
    out_h: usize,
) -> Vec<u8> {
    let stride = width * channels;
    let mut out = vec![0u8; out_h * stride];
    let mut acc = vec![0i32; stride];
    for (yy, out_row) in out.chunks_exact_mut(stride).enumerate() {
        let (lo, w) = c.row(yy);
        acc.fill(HALF);
        // Row-major accumulation keeps memory access sequential; integer sums are exact, so
        // the order does not change the result.
        for (k, wk) in w.iter().enumerate() {
            let y = lo + k - row_offset;
            let in_row = &src[y * stride..(y + 1) * stride];
            for (a, &p) in acc.iter_mut().zip(in_row) {
                *a += i32::from(p) * wk;
            }
        }
        for (o, &a) in out_row.iter_mut().zip(&acc) {
            *o = clip8(a);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weights_sum_to_one_in_fixed_point() {
        for (i, o) in [(1000, 224), (256, 224), (100, 300), (7, 3)] {
            let c = Coefficients::new(i, o);
            for k in 0..o {
                let s: i32 = c.row(k).1.iter().sum();
                let one = 1i32 << PRECISION_BITS;
                assert!((s - one).abs() <= c.len[k] as i32, "{i}->{o} row {k}: {s}");
            }
        }
    }

    #[test]
    fn constant_image_stays_constant() {
        let src = vec![77u8; 37 * 53 * 3];
        let out = resize_u8(&src, 37, 53, 3, 20, 90);
        assert_eq!(out.len(), 20 * 90 * 3);
        assert!(out.iter().all(|&v| v == 77));
    }

    #[test]
    fn identity_size_is_a_copy() {
        let src: Vec<u8> = (0..60).map(|v| v as u8).collect();
        assert_eq!(resize_u8(&src, 6, 10, 1, 6, 10), src);
    }

    #[test]
    fn halving_averages_pairs() {
        // 2:1 downscale: support 2, centres at 1, 3, ... weights (0.25,0.75,0.75,0.25)/2 → the
        // first output reads samples 0..3 with weights (0.375, 0.375, 0.125+...); check a ramp
        // stays monotone and bounded instead of hard-coding Pillow's numbers (parity against
        // Pillow itself lives in tests/it/image_resize_parity.rs).
        let src: Vec<u8> = (0..16).map(|v| (v * 16) as u8).collect();
        let out = resize_u8(&src, 16, 1, 1, 8, 1);
        assert!(out.windows(2).all(|p| p[0] < p[1]), "{out:?}");
        assert!(out[0] >= src[0] && out[7] <= src[15]);
    }
}
