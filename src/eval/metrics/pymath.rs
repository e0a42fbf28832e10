//! The float operations of Python and numpy that the reference scorers use, reproduced bit for
//! bit.
//!
//! Why a module of its own: BLEU, ROUGE-L and CIDEr are only "identical to pycocoevalcap" if
//! every `x ** y`, `np.sum` and `np.mean` rounds exactly as CPython and numpy round. Rust's
//! `powf` may be rewritten by LLVM and `iter().sum()` adds in a different order, so the scorers
//! call these instead.

/// Python's `x ** y` on floats, i.e. the C library's `pow`. The exponent goes through
/// `black_box` because LLVM otherwise rewrites `pow(x, 0.5)` as `sqrt(x)` and `pow(x, 2.0)` as
/// `x * x`, and glibc's `pow` is not always correctly rounded: `sqrt` differs from it in the last
/// bit for some inputs (seen on a BLEU-2 item of the metrics fixture).
pub fn py_pow(x: f64, y: f64) -> f64 {
    x.powf(std::hint::black_box(y))
}

/// `numpy.sum` of a float64 array: numpy's pairwise summation (blocks of 8 partial sums up to
/// 128 elements, recursive halving above). `np.mean` is this divided by the length, and the
/// reference averages with `np.mean`, so using it keeps the last bit identical.
pub fn numpy_sum(a: &[f64]) -> f64 {
    let n = a.len();
    if n < 8 {
        a.iter().fold(0.0, |acc, &x| acc + x)
    } else if n <= 128 {
        let mut r = [0.0f64; 8];
        r.copy_from_slice(&a[..8]);
        let full = n - n % 8;
        for chunk in a[8..full].chunks_exact(8) {
            for (acc, &x) in r.iter_mut().zip(chunk) {
                *acc += x;
            }
        }
        let mut res = ((r[0] + r[1]) + (r[2] + r[3])) + ((r[4] + r[5]) + (r[6] + r[7]));
        for &x in &a[full..] {
            res += x;
        }
        res
    } else {
        let half = n / 2;
        let half = half - half % 8;
        numpy_sum(&a[..half]) + numpy_sum(&a[half..])
    }
}

/// `numpy.mean` of a non-empty float64 array.
pub fn numpy_mean(a: &[f64]) -> f64 {
    numpy_sum(a) / a.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_sum_differs_from_sequential_sum_like_numpy_does() {
        // 1e16 + 1 + 1 ... : sequential loses every +1, blocked partial sums keep some.
        let mut a = vec![1e16];
        a.extend([1.0; 15]);
        let sequential = a.iter().fold(0.0, |s, &x| s + x);
        let pairwise = numpy_sum(&a);
        assert_eq!(sequential, 1e16);
        // r[0] = 1e16 + 1 (lost), r[1..8] = 2 each → 1e16 + 14 exactly representable.
        assert_eq!(pairwise, 1e16 + 14.0);
    }

    #[test]
    fn numpy_sum_halves_long_arrays_on_multiples_of_eight() {
        // 300 elements: halves of 144 and 156, each summed blockwise; with exactly
        // representable values the result must equal the exact sum.
        let a: Vec<f64> = (0..300).map(|i| i as f64).collect();
        assert_eq!(numpy_sum(&a), (299 * 300 / 2) as f64);
        assert_eq!(numpy_mean(&a), 149.5);
    }
}
