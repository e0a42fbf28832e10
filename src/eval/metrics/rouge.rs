//! ROUGE-L (LCS F-measure, β = 1.2) exactly as pycocoevalcap 1.2's `Rouge`.
//!
//! The reference splits on the single character `' '`, not on runs of whitespace, so double
//! spaces produce empty tokens that take part in the LCS; callers must tokenize with
//! `str::split(' ')` to stay identical (see [`super::score_items`]).

const BETA: f64 = 1.2;

/// Length of the longest common subsequence of two token sequences (one DP row, O(|a|·|b|)).
pub fn lcs_len(a: &[u32], b: &[u32]) -> usize {
    let (long, short) = if a.len() >= b.len() { (a, b) } else { (b, a) };
    let mut row = vec![0usize; short.len() + 1];
    for &x in long {
        let mut diag = 0usize; // row[j-1] of the previous line
        for (j, &y) in short.iter().enumerate() {
            let up = row[j + 1];
            row[j + 1] = if x == y { diag + 1 } else { up.max(row[j]) };
            diag = up;
        }
    }
    row[short.len()]
}

/// ROUGE-L of one hypothesis against one reference (both from `split(' ')`, so never empty).
pub fn item(reference: &[u32], hyp: &[u32]) -> f64 {
    let lcs = lcs_len(reference, hyp) as f64;
    let prec = lcs / hyp.len() as f64;
    let rec = lcs / reference.len() as f64;
    if prec != 0.0 && rec != 0.0 {
        let b2 = super::ngrams::py_pow(BETA, 2.0);
        ((1.0 + b2) * prec * rec) / (rec + b2 * prec)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcs_is_symmetric_and_correct() {
        assert_eq!(lcs_len(&[1, 2, 3, 4], &[2, 4]), 2);
        assert_eq!(lcs_len(&[2, 4], &[1, 2, 3, 4]), 2);
        assert_eq!(lcs_len(&[1, 2, 3], &[3, 2, 1]), 1);
        assert_eq!(lcs_len(&[], &[1]), 0);
    }

    #[test]
    fn identical_scores_one_and_disjoint_zero() {
        assert!((item(&[1, 2, 3], &[1, 2, 3]) - 1.0).abs() < 1e-15);
        assert_eq!(item(&[1, 2, 3], &[4]), 0.0);
    }
}
