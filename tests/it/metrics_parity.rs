//! Metric parity with pycocoevalcap 1.2 (issue 6, acceptance 1).
//!
//! Expected numbers: `../shared/reference/public/metrics.json` (README §2), 200 pairs with
//! corpus and per-item BLEU-1..4, METEOR, ROUGE-L and CIDEr computed by pycocoevalcap.
//! BLEU, ROUGE-L and CIDEr must agree within 1e-9 and METEOR within 1e-6. METEOR needs Java
//! and the jar from the pycocoevalcap wheel in .venv (ops/setup.sh installs both).

use ithn_dist::eval::metrics::{
    bleu, cider, rouge, score_items, score_without_meteor, MeteorOpts, Scores, KEYS,
};
use serde_json::Value;
use std::path::PathBuf;

/// The fixture as raw text and as parsed JSON.
fn fixture() -> (String, Value) {
    let path =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/public/metrics.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let json = serde_json::from_str(&text).expect("metrics.json is JSON");
    (text, json)
}

fn pairs(fx: &Value) -> (Vec<String>, Vec<String>) {
    let p = fx["pairs"].as_array().unwrap();
    let get = |k: &str| {
        p.iter()
            .map(|x| x[k].as_str().unwrap().to_owned())
            .collect()
    };
    (get("ref"), get("hyp"))
}

fn value(s: &Scores, key: &str) -> Option<f64> {
    s.entries().into_iter().find(|e| e.0 == key).map(|e| e.1)
}

fn tolerance(key: &str) -> f64 {
    if key == "METEOR" {
        1e-6
    } else {
        1e-9
    }
}

/// The expected numbers of `key`, read from the raw fixture text with Rust's correctly
/// rounded `str::parse` (serde_json without `float_roundtrip` may misround the last bit, and
/// the bit-identity check below needs the exact values). Returns (corpus, per item).
fn expected(raw: &str, key: &str) -> (f64, Vec<f64>) {
    let num = |s: &str| -> f64 { s.trim().parse().unwrap_or_else(|_| panic!("number {s:?}")) };
    let scores = raw.find("\"scores\"").unwrap();
    let at = scores + raw[scores..].find(&format!("\"{key}\":")).unwrap() + key.len() + 3;
    let corpus = num(&raw[at..at + raw[at..].find([',', '}']).unwrap()]);
    let per_item = raw.find("\"per_item\"").unwrap();
    let at = per_item + raw[per_item..].find(&format!("\"{key}\": [")).unwrap() + key.len() + 5;
    let items = raw[at..at + raw[at..].find(']').unwrap()]
        .split(',')
        .map(num)
        .collect();
    (corpus, items)
}

/// Compares corpus and per-item scores for every key in `keys`; returns how many values were
/// compared and how many were bit-identical.
fn check(raw: &str, corpus: &Scores, items: &[Scores], keys: &[&str]) -> (usize, usize) {
    let (mut compared, mut identical) = (0, 0);
    for &key in keys {
        let tol = tolerance(key);
        let (want, want_items) = expected(raw, key);
        let got = value(corpus, key).unwrap_or_else(|| panic!("no {key}"));
        assert!((got - want).abs() <= tol, "corpus {key}: {got} vs {want}");
        compared += 1;
        identical += (got.to_bits() == want.to_bits()) as usize;
        assert_eq!(want_items.len(), items.len());
        for (i, (s, &want)) in items.iter().zip(&want_items).enumerate() {
            let got = value(s, key).unwrap();
            assert!((got - want).abs() <= tol, "item {i} {key}: {got} vs {want}");
            compared += 1;
            identical += (got.to_bits() == want.to_bits()) as usize;
        }
    }
    (compared, identical)
}

#[test]
fn bleu_rouge_cider_match_within_1e9() {
    let (raw, fx) = fixture();
    let (refs, hyps) = pairs(&fx);
    assert_eq!(refs.len(), 200);
    let r = score_without_meteor(&refs, &hyps).unwrap();
    assert_eq!(r.corpus.meteor, None);
    let keys: Vec<&str> = KEYS.iter().copied().filter(|k| *k != "METEOR").collect();
    let (compared, identical) = check(&raw, &r.corpus, &r.items, &keys);
    assert_eq!(compared, 6 * 201);
    // Stronger than the 1e-9 acceptance: the float operations follow pycocoevalcap's order
    // (numpy pairwise sums, C `pow`), so every value is bit-identical.
    assert_eq!(
        identical, compared,
        "values not bit-identical to pycocoevalcap"
    );
}

#[test]
fn each_metric_scored_alone_is_bit_identical_too() {
    // `bleu::score`, `rouge::score`, `cider::score` tokenise and count on their own (what the
    // bench times per metric); they must give the fixture's values exactly, like the one pass.
    let (raw, fx) = fixture();
    let (refs, hyps) = pairs(&fx);
    let (b, b_items) = bleu::score(&refs, &hyps).unwrap();
    let (r, r_items) = rouge::score(&refs, &hyps).unwrap();
    let (c, c_items) = cider::score(&refs, &hyps).unwrap();
    let scores = |bleu: [f64; 4], rouge_l: f64, cider: f64| Scores {
        bleu,
        meteor: None,
        rouge_l,
        cider,
        ce: None,
    };
    let corpus = scores(b, r, c);
    let items: Vec<Scores> = (0..refs.len())
        .map(|i| scores(b_items[i], r_items[i], c_items[i]))
        .collect();
    let keys: Vec<&str> = KEYS.iter().copied().filter(|k| *k != "METEOR").collect();
    let (compared, identical) = check(&raw, &corpus, &items, &keys);
    assert_eq!((compared, identical), (6 * 201, 6 * 201));
}

#[test]
fn all_seven_metrics_match_including_meteor_through_the_jar() {
    let (raw, fx) = fixture();
    let (refs, hyps) = pairs(&fx);
    let opts = MeteorOpts::locate(None).expect("METEOR jar (run ops/setup.sh)");
    let r = score_items(&refs, &hyps, Some(&opts)).unwrap();
    let (compared, _) = check(&raw, &r.corpus, &r.items, &KEYS);
    assert_eq!(compared, 7 * 201);
}
