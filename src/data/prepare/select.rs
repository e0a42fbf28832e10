//! Which listed samples `prepare` keeps: the one place where the rules for ids, reports and
//! views are decided, so that every later command (train, evaluate, score) can rely on them
//! instead of re-deciding (issue 14).
//!
//! The rules, applied to the source's listing before any image is read:
//! - **ids**: an id names one sample. Within a split the first record wins; across splits the
//!   evaluation split wins (test over val over train), because published scores are computed
//!   on test and a study that is also in train leaks into the model. Every other occurrence is
//!   skipped with a reason naming both records (`train[7]` = the 8th record of the train
//!   listing, which for an R2Gen annotation is its position in the `train` list).
//! - **reports**: a report that is empty after Python's `str.strip()` is skipped.
//! - **views**: a study keeps its first `views` images; a study with fewer is skipped with the
//!   reason and the fix (`--views 1` keeps one-view studies for one-view models).
//!
//! The vocabulary is *not* affected by any of this: it counts every train record of the
//! listing, as the reference's `create_vocabulary` does (SPEC §1).

use std::collections::HashMap;

use super::{PrepareError, Skipped, SourceSample, Split};
use crate::data::text::py_strip;

/// A sample cannot be used: fatal with `strict`, else listed in the manifest.
pub(crate) fn reject(
    skipped: &mut Vec<Skipped>,
    strict: bool,
    s: &SourceSample,
    reason: String,
) -> Result<(), PrepareError> {
    if strict {
        return Err(PrepareError::Strict {
            id: s.id.clone(),
            split: s.split.name().into(),
            reason,
        });
    }
    skipped.push(Skipped {
        id: s.id.clone(),
        split: Some(s.split),
        reason,
    });
    Ok(())
}

/// `split[k]`: the k-th record (0-based) of a split in the source's listing order.
fn record_name(split: Split, k: usize) -> String {
    format!("{}[{k}]", split.name())
}

/// Precedence of a split when the same id is listed in several: higher wins.
fn precedence(split: Split) -> u8 {
    match split {
        Split::Train => 0,
        Split::Val => 1,
        Split::Test => 2,
    }
}

/// Applies the id, report and views rules to the listing (in listing order, which the
/// pipeline keeps). Returns the samples that go on to image decoding, each cut to `views`
/// images.
pub(crate) fn select(
    samples: Vec<SourceSample>,
    views: usize,
    strict: bool,
    skipped: &mut Vec<Skipped>,
) -> Result<Vec<SourceSample>, PrepareError> {
    let names = listing_names(&samples);
    // The occurrence of each id that is kept: highest split precedence, then first in listing.
    let mut winner: HashMap<&str, usize> = HashMap::new();
    for (i, s) in samples.iter().enumerate() {
        winner
            .entry(s.id.as_str())
            .and_modify(|w| {
                if precedence(s.split) > precedence(samples[*w].split) {
                    *w = i;
                }
            })
            .or_insert(i);
    }
    let winner: Vec<usize> = samples.iter().map(|s| winner[s.id.as_str()]).collect();
    let mut out = Vec::with_capacity(samples.len());
    for (i, mut s) in samples.into_iter().enumerate() {
        let w = winner[i];
        let reason = if w != i {
            Some(duplicate_reason(&names[i], &names[w], s.split))
        } else if py_strip(&s.report_raw).is_empty() {
            Some("empty report".to_string())
        } else if s.images.len() < views {
            Some(views_reason(s.images.len(), views))
        } else {
            None
        };
        match reason {
            Some(reason) => reject(skipped, strict, &s, reason)?,
            None => {
                s.images.truncate(views);
                out.push(s);
            }
        }
    }
    Ok(out)
}

/// `split[k]` for every sample of the listing.
fn listing_names(samples: &[SourceSample]) -> Vec<String> {
    let mut next: HashMap<Split, usize> = HashMap::new();
    samples
        .iter()
        .map(|s| {
            let k = next.entry(s.split).or_insert(0);
            *k += 1;
            record_name(s.split, *k - 1)
        })
        .collect()
}

fn duplicate_reason(this: &str, kept: &str, split: Split) -> String {
    let why = if kept.starts_with(split.name()) {
        "the first record of an id in a split is kept"
    } else {
        "an id names one sample, and the evaluation split keeps it (test over val over train)"
    };
    format!("duplicate id: record {this} has the same id as {kept}, which is kept ({why})")
}

fn views_reason(have: usize, views: usize) -> String {
    if have == 0 {
        return "no image (`image_path` lists none)".to_string();
    }
    format!(
        "{have} image(s), but {views} views per study are stored (--views {views}); \
         prepare with --views {have} to keep such studies for {have}-view models"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(id: &str, split: Split, report: &str, images: usize) -> SourceSample {
        SourceSample {
            id: id.into(),
            study_id: None,
            subject_id: None,
            split,
            report_raw: report.into(),
            images: (0..images)
                .map(|i| format!("{id}/{i}.png").into())
                .collect(),
            neg_report_raw: None,
        }
    }

    #[test]
    fn duplicates_keep_the_evaluation_split_and_the_first_record() {
        let listing = vec![
            sample("a", Split::Train, "x", 2),
            sample("b", Split::Train, "x", 2),
            sample("a", Split::Test, "x", 2),
            sample("c", Split::Test, "x", 2),
            sample("c", Split::Test, "x", 2),
        ];
        let mut skipped = Vec::new();
        let kept = select(listing, 2, false, &mut skipped).unwrap();
        let kept: Vec<(&str, Split)> = kept.iter().map(|s| (s.id.as_str(), s.split)).collect();
        assert_eq!(
            kept,
            [("b", Split::Train), ("a", Split::Test), ("c", Split::Test)]
        );
        assert_eq!(skipped.len(), 2);
        assert_eq!(skipped[0].id, "a");
        assert_eq!(skipped[0].split, Some(Split::Train));
        assert!(
            skipped[0]
                .reason
                .starts_with("duplicate id: record train[0] has the same id as test[0]"),
            "{}",
            skipped[0].reason
        );
        assert_eq!(skipped[1].split, Some(Split::Test));
        assert!(
            skipped[1]
                .reason
                .starts_with("duplicate id: record test[2] has the same id as test[1]"),
            "{}",
            skipped[1].reason
        );
    }

    #[test]
    fn strict_makes_a_duplicate_fatal_naming_it() {
        let listing = vec![
            sample("a", Split::Val, "x", 1),
            sample("a", Split::Val, "x", 1),
        ];
        let err = select(listing, 1, true, &mut Vec::new()).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("sample a (val)"), "{msg}");
        assert!(msg.contains("val[1]") && msg.contains("val[0]"), "{msg}");
    }

    #[test]
    fn views_and_empty_reports_are_reasons() {
        let listing = vec![
            sample("one", Split::Train, "x", 1),
            sample("two", Split::Train, "x", 3),
            sample("blank", Split::Train, " \u{1f}\n", 2),
            sample("none", Split::Train, "x", 0),
        ];
        let mut skipped = Vec::new();
        let kept = select(listing.clone(), 2, false, &mut skipped).unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0].images.len(), 2, "cut to the stored views");
        let reasons: Vec<&str> = skipped.iter().map(|s| s.reason.as_str()).collect();
        assert_eq!(
            reasons,
            [
                "1 image(s), but 2 views per study are stored (--views 2); prepare with --views 1 to keep such studies for 1-view models",
                "empty report",
                "no image (`image_path` lists none)",
            ]
        );
        let kept = select(listing, 1, false, &mut Vec::new()).unwrap();
        let ids: Vec<&str> = kept.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids, ["one", "two"], "one view keeps the one-view study");
    }
}
