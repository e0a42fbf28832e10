//! One deterministic random-number source for the whole project: SplitMix64 (Steele, Lea &
//! Flood, "Fast splittable pseudorandom number generators", OOPSLA 2014).
//!
//! Why not `rand`: every stream here is part of an output that must be reproducible forever —
//! the data order of a world-size-independent epoch, dropout masks replayed on resume, synthetic
//! phantoms, test fixtures — and a library's generator may change between versions. SplitMix64
//! is a 64-bit counter advanced by the golden-ratio constant and passed through a fixed
//! avalanche finaliser; its stream is fixed by definition.
//!
//! * [`SplitMix64`] — the stateful stream (`next_u64`, integers below `n`, uniform floats);
//! * [`splitmix64`] — one output for a given state, stateless (hashing a counter or a seed);
//! * [`mix64`] — the finaliser alone; [`hash_words`] — many words into one seed.

/// SplitMix64's increment: 2^64 / φ, odd.
pub const GOLDEN_GAMMA: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64's finaliser (Stafford's variant 13): a bijective avalanche mix of 64 bits.
pub fn mix64(mut z: u64) -> u64 {
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// The SplitMix64 output that follows state `x`: `mix64(x + GOLDEN_GAMMA)` — a stateless,
/// well-mixed hash of one word.
pub fn splitmix64(x: u64) -> u64 {
    mix64(x.wrapping_add(GOLDEN_GAMMA))
}

/// Hash a sequence of words into one seed (each word is mixed in; order matters).
pub fn hash_words(words: &[u64]) -> u64 {
    words
        .iter()
        .fold(0x243F_6A88_85A3_08D3, |h, &w| mix64(h ^ mix64(w)))
}

/// The SplitMix64 stream from a seed.
#[derive(Debug, Clone)]
pub struct SplitMix64(u64);

impl SplitMix64 {
    pub fn new(seed: u64) -> SplitMix64 {
        SplitMix64(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(GOLDEN_GAMMA);
        mix64(self.0)
    }

    /// An integer in `0..n` (`n ≥ 1`) by the multiply-high method (bias below n / 2^64).
    pub fn below(&mut self, n: u64) -> u64 {
        ((u128::from(self.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// An integer in `0..n` by `next_u64() % n` (`n` = 0 is taken as 1). Slightly more biased
    /// than [`SplitMix64::below`]; kept because fixtures and benchmarks were drawn with it.
    pub fn below_mod(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Uniform in `[0, 1)` with 53 random bits.
    pub fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// Uniform in `[0, 1)` as `f32`, with 24 random bits (exactly representable).
    pub fn unit_f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }
}

/// A tensor of standard-normal draws (Box–Muller on [`SplitMix64`]) that depends only on
/// `seed`: unlike `tch::manual_seed` + `randn`, no other thread can move the stream, so tests
/// that build the same tensor twice (one process vs thread ranks) get it bit for bit.
pub fn seeded_normal(shape: &[i64], seed: u64, kind: tch::Kind) -> tch::Tensor {
    let n: i64 = shape.iter().product();
    let mut r = SplitMix64::new(seed);
    let v: Vec<f64> = (0..n)
        .map(|_| {
            let u1 = r.unit().max(f64::MIN_POSITIVE);
            let u2 = r.unit();
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect();
    tch::Tensor::from_slice(&v).reshape(shape).to_kind(kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_stream_is_the_published_splitmix64() {
        // First outputs for seed 1234567 of the reference C implementation (Vigna, splitmix64.c).
        let mut r = SplitMix64::new(1234567);
        assert_eq!(r.next_u64(), 6457827717110365317);
        assert_eq!(r.next_u64(), 3203168211198807973);
        assert_eq!(splitmix64(1234567), 6457827717110365317);
    }

    #[test]
    fn draws_stay_in_range() {
        let mut r = SplitMix64::new(7);
        for n in [1u64, 2, 3, 1000] {
            for _ in 0..100 {
                assert!(r.below(n) < n && r.below_mod(n) < n);
            }
        }
        let u = r.unit();
        let v = r.unit_f32();
        assert!((0.0..1.0).contains(&u) && (0.0..1.0).contains(&v));
    }
}
