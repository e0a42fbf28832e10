//! Evaluation: scoring generated reports against references (`metrics`, `score`).
//! The scores are the ones papers in this field publish, computed exactly as pycocoevalcap does.

pub mod ce;
pub mod evaluate;
pub mod metrics;
pub mod score;
