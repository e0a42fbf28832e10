//! Distributed evaluation: every rank decodes its slice of each evaluation batch, rank 0 puts
//! the predictions back in split order and scores them (`ithn-dist evaluate`, and the
//! trainer's validation/test passes).
//!
//! Guarantees: every sample of the split is decoded exactly once (the loader's eval sampler
//! splits each global batch over ranks; this module checks the gathered split indices), and
//! the scores do not depend on the number of ranks: decoding is per sample (batch composition
//! does not change a sample's tokens in eval mode) and scoring runs on one rank over the whole
//! corpus (CIDEr's document frequencies need all references). References are the decoded
//! report ids (ids[1:] up to the first 0), as the reference R2Gen trainer scores them.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use clap::Args;
use serde::{Deserialize, Serialize};
use tch::{Device, Tensor};

use crate::config::Config;
use crate::data::loader::{Batch, Loader};
use crate::data::prepare::Split;
use crate::dist::{Collectives, DistError, World};
use crate::eval::ce::{ce_of_texts, ce_scores, label_report, Labels};
use crate::eval::metrics::{score_corpus, MeteorOpts, Scores};
use crate::eval::score::{read_labels, ScoreError};
use crate::model::contract;
use crate::model::weights::{write_bytes_atomic, VocabInfo};
use crate::model::{beam_search, greedy, ModelCheckpoint, R2GenCmn};
use clap::builder::TypedValueParser as _;

/// Errors of an evaluation pass, naming the split, file or rank involved.
#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error(transparent)]
    Dist(#[from] DistError),
    #[error("split {split}: {source}")]
    Data {
        split: Split,
        #[source]
        source: crate::data::loader::LoaderError,
    },
    #[error("scoring split {split}: {source}")]
    Metrics {
        split: Split,
        #[source]
        source: crate::eval::metrics::MetricsError,
    },
    #[error("split {split}: sample {index} was decoded {count} times (expected exactly once)")]
    Coverage {
        split: Split,
        index: u64,
        count: usize,
    },
    #[error("rank {rank}: gathered predictions are not valid JSON lines: {message}")]
    Gather { rank: usize, message: String },
    #[error(transparent)]
    Model(#[from] crate::model::ModelError),
    #[error("split {split}: evaluation interrupted by a stop request")]
    Interrupted { split: Split },
}

/// One decoded sample.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// Row of the split (global order).
    #[serde(skip_serializing)]
    #[serde(default)]
    pub index: u64,
    pub id: String,
    pub reference: String,
    pub prediction: String,
}

/// Decoding options of an evaluation pass.
#[derive(Debug, Clone, Copy)]
pub struct DecodeOpts {
    pub beam: usize,
    pub max_len: usize,
    pub block_trigrams: bool,
}

impl DecodeOpts {
    pub fn from_config(cfg: &Config) -> DecodeOpts {
        DecodeOpts {
            beam: cfg.eval.beam_size,
            max_len: cfg.eval.max_seq_length,
            block_trigrams: cfg.eval.block_trigrams,
        }
    }
}

/// Decodes this rank's part of one eval batch.
fn decode_batch(
    model: &R2GenCmn,
    batch: &Batch,
    vocab: &VocabInfo,
    opts: DecodeOpts,
) -> Vec<Prediction> {
    if batch.indices.is_empty() {
        return Vec::new();
    }
    let images = batch.images.to_device(model.device());
    let (att, _) = model.visual(&images, false);
    let decoded = if opts.beam <= 1 {
        greedy(model, &att, opts.max_len, opts.block_trigrams)
    } else {
        beam_search(model, &att, opts.max_len, opts.beam)
    };
    let ids = batch.reports_ids.to_device(Device::Cpu);
    (0..batch.indices.len())
        .map(|i| {
            let row: Vec<i64> = Vec::try_from(ids.get(i as i64)).unwrap_or_default();
            let reference: Vec<i64> = row.into_iter().skip(1).take_while(|&t| t != 0).collect();
            Prediction {
                index: batch.indices[i],
                id: batch.ids[i].clone(),
                reference: vocab.decode(&reference),
                prediction: vocab.decode(&decoded.tokens(i)),
            }
        })
        .collect()
}

/// Sends every rank's predictions to every rank (as JSON lines packed in an i64 tensor on
/// `device`, the collectives' device: NCCL carries CUDA tensors only, MPI CPU ones). A rank may hold none
/// (an evaluation batch smaller than the world leaves ranks empty): it sends 0 bytes.
fn gather_predictions(
    local: &[Prediction],
    coll: &dyn Collectives,
    device: Device,
) -> Result<Vec<Prediction>, EvalError> {
    #[derive(Serialize, Deserialize)]
    struct Wire {
        index: u64,
        id: String,
        reference: String,
        prediction: String,
    }
    let mut text = String::new();
    for p in local {
        let w = Wire {
            index: p.index,
            id: p.id.clone(),
            reference: p.reference.clone(),
            prediction: p.prediction.clone(),
        };
        text.push_str(&serde_json::to_string(&w).unwrap_or_default());
        text.push('\n');
    }
    let bytes: Vec<i64> = text.bytes().map(i64::from).collect();
    let gathered = coll.all_gather(&Tensor::from_slice(&bytes).to_device(device))?;
    let all: Vec<i64> =
        Vec::try_from(&gathered.to_device(Device::Cpu)).map_err(|e: tch::TchError| {
            EvalError::Gather {
                rank: coll.rank(),
                message: e.to_string(),
            }
        })?;
    let all: Vec<u8> = all.into_iter().map(|b| b as u8).collect();
    let text = String::from_utf8(all).map_err(|e| EvalError::Gather {
        rank: coll.rank(),
        message: e.to_string(),
    })?;
    text.lines()
        .map(|l| {
            let w: Wire = serde_json::from_str(l).map_err(|e| EvalError::Gather {
                rank: coll.rank(),
                message: e.to_string(),
            })?;
            Ok(Prediction {
                index: w.index,
                id: w.id,
                reference: w.reference,
                prediction: w.prediction,
            })
        })
        .collect()
}

/// Decodes the whole split on every rank's share; returns all predictions in split order (on
/// every rank) and, on rank 0, the corpus scores.
///
/// `stop` is polled before every batch (a local check, e.g. of a signal flag). A rank that sees
/// it leaves its loop; the ranks then agree (one all-gather that every rank reaches, whatever
/// its number of batches) and, if any of them stopped, all return [`EvalError::Interrupted`].
pub fn evaluate_split(
    model: &R2GenCmn,
    loader: &Loader,
    vocab: &VocabInfo,
    opts: DecodeOpts,
    coll: &dyn Collectives,
    meteor: Option<&MeteorOpts>,
    stop: &dyn Fn() -> bool,
) -> Result<(Vec<Prediction>, Option<Scores>), EvalError> {
    let split = loader.options().split;
    let mut local = Vec::new();
    // Rank 0's bar of its own batches (every rank decodes a like share at a like pace).
    let bar = crate::logging::bar(
        loader.eval_num_batches() as u64,
        "{prefix} [{bar:30}] {pos}/{len} batches  {per_sec}  eta {eta}",
        coll.rank() == 0,
    );
    bar.set_prefix(format!("decoding {split}"));
    let stopped = tch::no_grad(|| -> Result<bool, EvalError> {
        for batch in loader.eval_batches() {
            if stop() {
                return Ok(true);
            }
            let batch = batch.map_err(|source| EvalError::Data { split, source })?;
            local.extend(decode_batch(model, &batch, vocab, opts));
            bar.inc(1);
        }
        Ok(false)
    })?;
    bar.finish_and_clear();
    let device = coll.device();
    let mut flag = Tensor::from_slice(&[i64::from(stopped)]).to_device(device);
    coll.all_reduce_sum(&mut flag)?;
    if flag.int64_value(&[0]) > 0 {
        return Err(EvalError::Interrupted { split });
    }
    let mut all = gather_predictions(&local, coll, device)?;
    all.sort_by_key(|p| p.index);
    check_coverage(split, &all, loader.rows())?;
    let scores = if coll.rank() == 0 {
        let refs: Vec<String> = all.iter().map(|p| p.reference.clone()).collect();
        let hyps: Vec<String> = all.iter().map(|p| p.prediction.clone()).collect();
        Some(
            score_corpus(&refs, &hyps, meteor)
                .map_err(|source| EvalError::Metrics { split, source })?,
        )
    } else {
        None
    };
    Ok((all, scores))
}

/// Every split row exactly once (sorted input).
fn check_coverage(split: Split, sorted: &[Prediction], rows: usize) -> Result<(), EvalError> {
    for (want, p) in sorted.iter().enumerate() {
        if p.index != want as u64 {
            let (index, count) = if p.index < want as u64 {
                (p.index, 2)
            } else {
                (want as u64, 0)
            };
            return Err(EvalError::Coverage {
                split,
                index,
                count,
            });
        }
    }
    if sorted.len() != rows {
        return Err(EvalError::Coverage {
            split,
            index: sorted.len() as u64,
            count: 0,
        });
    }
    Ok(())
}

/// Writes `predictions.jsonl` (id, reference, prediction) atomically.
pub fn write_predictions(path: &Path, preds: &[Prediction]) -> Result<(), EvalError> {
    let text = predictions_text(preds).unwrap_or_default();
    write_bytes_atomic(path, text.as_bytes())?;
    Ok(())
}

/// The lines of `predictions.jsonl`.
fn predictions_text(preds: &[Prediction]) -> Result<String, serde_json::Error> {
    let mut text = String::new();
    for p in preds {
        text.push_str(&serde_json::to_string(p)?);
        text.push('\n');
    }
    Ok(text)
}

/// `ithn-dist evaluate`: decode a split with a checkpoint and score it.
#[derive(Args, Debug)]
pub struct EvaluateArgs {
    /// Model checkpoint directory (model.safetensors, config.toml, vocab.json).
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Prepared data directory (`ithn-dist prepare` output); default: the checkpoint config's.
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Split to evaluate: val or test.
    #[arg(
        long,
        default_value = "test",
        value_parser = clap::builder::PossibleValuesParser::new(["val", "test"])
            .map(|s| s.parse::<Split>().expect("a listed split")),
    )]
    pub split: Split,
    /// Beam width (1 = greedy, at most the model's output classes); default: the checkpoint
    /// config's eval.beam_size.
    #[arg(long, value_parser = crate::bounds::at_least::<usize>(1))]
    pub beam: Option<usize>,
    /// Where predictions.jsonl and scores.json go (default: the checkpoint directory).
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// Also run METEOR (needs Java and the pycocoevalcap jar).
    #[arg(long)]
    pub meteor: bool,
    /// Also score clinical efficacy against given labels (JSON lines {"id", "chexpert"}, e.g.
    /// `synth`'s findings.jsonl: what each phantom shows), as `score --ce-labels` does.
    #[arg(long, value_name = "LABELS.jsonl")]
    pub ce_labels: Option<PathBuf>,
}

/// `scores.json`: the corpus scores (CE summary included), then `ce` (per observation, vs the
/// reference reports) and, with `--ce-labels`, `ce_vs_labels`.
fn scores_json(
    scores: &Scores,
    preds: &[Prediction],
    truth: Option<(&Path, &HashMap<String, Labels>)>,
) -> anyhow::Result<serde_json::Value> {
    let refs: Vec<String> = preds.iter().map(|p| p.reference.clone()).collect();
    let hyps: Vec<String> = preds.iter().map(|p| p.prediction.clone()).collect();
    let mut obj = scores.to_json();
    obj.insert("ce".into(), ce_of_texts(&refs, &hyps).to_json());
    if let Some((path, truth)) = truth {
        let missing: Vec<String> = preds
            .iter()
            .filter(|p| !truth.contains_key(&p.id))
            .map(|p| p.id.clone())
            .collect();
        if !missing.is_empty() {
            return Err(ScoreError::MissingLabels {
                path: path.to_path_buf(),
                ids: missing,
            }
            .into());
        }
        let t: Vec<Labels> = preds.iter().map(|p| truth[&p.id]).collect();
        let h: Vec<Labels> = hyps.iter().map(|x| label_report(x)).collect();
        obj.insert("ce_vs_labels".into(), ce_scores(&t, &h).to_json());
    }
    Ok(serde_json::Value::Object(obj))
}

/// Runs `ithn-dist evaluate` on every rank; rank 0 writes the files and prints the scores.
pub fn run(args: EvaluateArgs, world: &World) -> anyhow::Result<i32> {
    // Read the labels before decoding, so a bad file fails in a second, not after the split.
    let truth = args.ce_labels.as_deref().map(read_labels).transpose()?;
    let ckpt = ModelCheckpoint::open(&args.checkpoint)?;
    let mut cfg = ckpt.config.clone();
    if let Some(d) = &args.data {
        cfg.data.prepared = d.clone();
    }
    let mut opts = DecodeOpts::from_config(&cfg);
    if let Some(b) = args.beam {
        opts.beam = b;
    }
    contract::on_root(world, || check_inputs(&args, &ckpt, &cfg, opts.beam))?;
    // The outputs' directory is checked writable before the model decodes a whole split.
    let out = args.out.clone().unwrap_or_else(|| args.checkpoint.clone());
    contract::on_root(world, || {
        crate::fsutil::probe_writable(&out)
            .map_err(|e| anyhow::anyhow!("{}: cannot write the outputs here: {e}", out.display()))
    })?;
    let device = if tch::Cuda::is_available() {
        Device::Cuda(world.local_rank)
    } else {
        Device::Cpu
    };
    let model = R2GenCmn::from_checkpoint(&ckpt, device)?;
    let coll =
        crate::dist::collectives::select(world, cfg.dist.backend, Device::Cpu, cfg.dist.timeout_s)?;
    let loader = Loader::new(&cfg, world, args.split)?;
    let meteor = if args.meteor {
        Some(MeteorOpts::locate(None)?)
    } else {
        None
    };
    let (preds, scores) = evaluate_split(
        &model,
        &loader,
        &ckpt.vocab,
        opts,
        coll.as_ref(),
        meteor.as_ref(),
        &|| false,
    )?;
    if let Some(scores) = scores {
        contract::unique_ids(
            preds.iter().map(|p| (p.index, p.id.as_str())),
            &cfg.data.prepared,
            args.split,
        )?;
        if let Some((name, v)) = scores.entries().into_iter().find(|(_, v)| !v.is_finite()) {
            anyhow::bail!(
                "{} on {}: score {name} is {v}, not a finite number; nothing written",
                args.checkpoint.display(),
                args.split
            );
        }
        let truth = args.ce_labels.as_deref().zip(truth.as_ref());
        let json = serde_json::to_string_pretty(&scores_json(&scores, &preds, truth)?)?;
        // Both files or neither: a full disk leaves the previous pair as it was.
        let (p_path, s_path) = (out.join("predictions.jsonl"), out.join("scores.json"));
        let preds_text = predictions_text(&preds)?;
        crate::fsutil::write_files_atomic(&[
            (&p_path, preds_text.as_bytes()),
            (&s_path, json.as_bytes()),
        ])
        .map_err(|e| anyhow::anyhow!("{}: cannot write predictions.jsonl and scores.json: {e} (the previous ones, if any, are unchanged)", out.display()))?;
        println!("{json}");
    }
    Ok(0)
}

/// Pairing checks before any model is built (issue 14): the checkpoint's vocabulary, dataset,
/// views and image size against the data, a non-empty split, a beam the vocabulary can fill.
fn check_inputs(
    args: &EvaluateArgs,
    ckpt: &ModelCheckpoint,
    cfg: &Config,
    beam: usize,
) -> anyhow::Result<()> {
    let split = args.split;
    let data = contract::PreparedData::open(&cfg.data.prepared)?;
    contract::check_model_on_data(ckpt, &data, split)?;
    let option = if args.beam.is_some() {
        "--beam"
    } else {
        "eval.beam_size"
    };
    contract::check_beam(
        beam,
        option,
        ckpt.vocab.logit_dim,
        &args.checkpoint.join(crate::model::weights::VOCAB_FILE),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::collectives::SingleProcess;

    fn p(index: u64) -> Prediction {
        Prediction {
            index,
            id: format!("s{index}"),
            reference: "the heart is normal .".into(),
            prediction: "heart \"normal\" ü .".into(),
        }
    }

    #[test]
    fn gather_round_trips_text() {
        let local = vec![p(0), p(1)];
        let all = gather_predictions(&local, &SingleProcess, Device::Cpu).unwrap();
        assert_eq!(all, local);
    }

    #[test]
    fn coverage_names_missing_and_duplicate_samples() {
        assert!(check_coverage(Split::Val, &[p(0), p(1)], 2).is_ok());
        let e = check_coverage(Split::Val, &[p(0), p(0), p(1)], 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sample 0 was decoded 2 times"), "{e}");
        let e = check_coverage(Split::Val, &[p(0), p(2)], 3)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sample 1 was decoded 0 times"), "{e}");
        let e = check_coverage(Split::Test, &[p(0)], 2)
            .unwrap_err()
            .to_string();
        assert!(e.contains("sample 1"), "{e}");
    }
}
