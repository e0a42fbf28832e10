//! `ithn-dist import | export | generate`: moving weights between this system and the PyTorch
//! reference, and writing a report for one study from the command line.
//!
//! A *model checkpoint* is a directory with `model.safetensors` (reference state_dict names),
//! `config.toml` (the full resolved config) and `vocab.json` (`{"logit_dim": V+1, "tokens": [...]}`);
//! trainer checkpoints (`step-XXXXXXXX/`) hold the same three files and are accepted as well.

use std::path::{Path, PathBuf};

use clap::Args;
use tch::Device;

use super::decode::{beam_search, greedy};
use super::r2gencmn::R2GenCmn;
use super::weights::{read_safetensors, ModelCheckpoint, ModelError, VocabInfo, WEIGHTS_FILE};
use crate::config::ConfigArgs;
use crate::model::contract;

#[derive(Args, Debug)]
pub struct ImportArgs {
    /// Reference state_dict as safetensors (ops/convert_pth.py turns a `.pth` into one).
    #[arg(long, value_name = "FILE")]
    pub state_dict: PathBuf,
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Vocabulary: a JSON list of tokens in id order, or an object with a `tokens`/`vocab`
    /// list (e.g. a prepared `vocab.json`). Without it, generated ids print as `<id>`.
    #[arg(long, value_name = "FILE")]
    pub vocab: Option<PathBuf>,
    /// Output checkpoint directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct InitArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Vocabulary (prepared `vocab.json` or any JSON token list); sets the output layer size.
    #[arg(long, value_name = "FILE")]
    pub vocab: PathBuf,
    /// Output checkpoint directory.
    #[arg(long, value_name = "DIR")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Model checkpoint directory.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Output safetensors file (loads into the reference model with strict=True).
    #[arg(long, value_name = "FILE")]
    pub out: PathBuf,
}

#[derive(Args, Debug)]
pub struct GenerateArgs {
    /// Model checkpoint directory.
    #[arg(long, value_name = "DIR")]
    pub checkpoint: PathBuf,
    /// Image file (PNG/JPEG, grey or RGB, 8/16-bit); give it twice for two-view models.
    #[arg(long, value_name = "FILE", required = true)]
    pub image: Vec<PathBuf>,
    /// Beam width, 1 to the model's output classes (default: the checkpoint's eval.beam_size).
    #[arg(long, conflicts_with = "greedy", value_parser = crate::bounds::at_least::<usize>(1))]
    pub beam: Option<usize>,
    /// Greedy decoding with trigram blocking.
    #[arg(long)]
    pub greedy: bool,
    /// Print `{"report", "tokens", "score"}` as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The device commands run on: the first CUDA device when present.
pub fn default_device() -> Device {
    Device::cuda_if_available()
}

/// `import`: reference weights + config (+ vocab) → a model checkpoint directory.
pub fn import(args: &ImportArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    verify_sidecar(&args.state_dict)?;
    let map = read_safetensors(&args.state_dict)?;
    let lut = "encoder_decoder.model.tgt_embed.0.lut.weight";
    let logit_dim =
        map.get(lut)
            .map(|t| t.size()[0] as usize)
            .ok_or_else(|| ModelError::MissingKey {
                path: args.state_dict.clone(),
                key: lut.into(),
            })?;
    let vocab = match &args.vocab {
        Some(p) => VocabInfo::load(p)?,
        None => VocabInfo {
            logit_dim,
            tokens: Vec::new(),
        },
    };
    if vocab.logit_dim != logit_dim {
        anyhow::bail!(
            "{}: vocabulary has {} classes but the weights have {logit_dim}",
            args.vocab
                .as_deref()
                .unwrap_or(Path::new("vocab"))
                .display(),
            vocab.logit_dim
        );
    }
    let model = R2GenCmn::from_config(&config, logit_dim, Device::Cpu)?;
    model.registry().load_map(&args.state_dict, map)?;
    write_model_dir(&args.out, &model, &config, &vocab)?;
    println!(
        "imported {} tensors into {}",
        model.registry().entries().len(),
        args.out.display()
    );
    Ok(())
}

/// `export`: a model checkpoint → one safetensors file with the full reference state_dict.
pub fn export(args: &ExportArgs) -> anyhow::Result<()> {
    let ckpt = ModelCheckpoint::open(&args.checkpoint)?;
    let model = R2GenCmn::from_checkpoint(&ckpt, Device::Cpu)?;
    // The file and its `FILE.sha256` (sha256sum's format) together, or neither.
    let bytes = crate::model::weights::safetensors_bytes(&model.registry().state_dict())?;
    let name = args.out.file_name().unwrap_or_default().to_string_lossy();
    let sums = format!("{}  {name}\n", crate::fsutil::sha256_bytes(&bytes));
    let sidecar = sidecar_path(&args.out);
    crate::fsutil::write_files_atomic(&[(&args.out, &bytes), (&sidecar, sums.as_bytes())])
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", args.out.display()))?;
    println!(
        "exported {} tensors to {}",
        model.registry().entries().len(),
        args.out.display()
    );
    Ok(())
}

/// `init`: a freshly initialised model (seed `train.seed`, ImageNet trunk if
/// `model.visual_weights` is set) written as a model checkpoint.
pub fn init(args: &InitArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    let vocab = VocabInfo::load(&args.vocab)?;
    let model = R2GenCmn::for_training(&config, vocab.logit_dim, Device::Cpu)?;
    write_model_dir(&args.out, &model, &config, &vocab)?;
    let params = model.parameters();
    let values: i64 = params.iter().map(|(_, t, _)| t.numel() as i64).sum();
    println!(
        "initialised a model of {values} parameter values in {} parameter tensors ({} \
         state_dict entries with buffers) in {}",
        params.len(),
        model.registry().entries().len(),
        args.out.display()
    );
    Ok(())
}

/// Decodes the views of one study and applies the eval transform (resize to exactly
/// `size`×`size`, /255, ImageNet normalisation): `[views, 3, size, size]`.
fn load_study(paths: &[PathBuf], size: usize) -> anyhow::Result<tch::Tensor> {
    use crate::data::image;
    let imgs = paths
        .iter()
        .map(|p| {
            let img = image::decode_file(p)?;
            warn_if_unlike_training(p, img.width(), img.height(), size);
            Ok(image::resize_exact(&img, size as u32, size as u32))
        })
        .collect::<Result<Vec<_>, image::ImageError>>()?;
    Ok(image::to_tensor_normalized(&imgs))
}

/// Warns on stderr when an input is far from what the model saw in training (radiographs
/// resized to `size`-pixel crops): a side under half of `size` (the upscaled image holds
/// almost no detail) or an aspect ratio over 3:1. The model still writes a fluent report for
/// such an input, so the warning is the only hint that it means little (issue 19).
fn warn_if_unlike_training(path: &std::path::Path, w: u32, h: u32, size: usize) {
    let (short, long) = (w.min(h) as usize, w.max(h) as usize);
    let mut why = Vec::new();
    if short * 2 < size {
        why.push(format!(
            "its shorter side is {short} px, the model was trained on {size}×{size} crops \
             (upscaled {:.0}×)",
            size as f64 / short.max(1) as f64
        ));
    }
    if long > 3 * short {
        why.push(format!(
            "its aspect ratio is {:.1}:1 (radiographs are near square)",
            long as f64 / short.max(1) as f64
        ));
    }
    if !why.is_empty() {
        tracing::warn!(
            "{}: {w}×{h} px is far outside what the model was trained on: {}; the report may \
             mean nothing",
            path.display(),
            why.join("; ")
        );
    }
}

/// `generate`: one study → a report (text or JSON).
pub fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    let ckpt = ModelCheckpoint::open(&args.checkpoint)?;
    contract::check_images_for_model(&ckpt, &args.image)?;
    let eval = &ckpt.config.eval;
    let beam = if args.greedy {
        1
    } else {
        args.beam.unwrap_or(eval.beam_size)
    };
    let option = if args.beam.is_some() {
        "--beam"
    } else {
        "eval.beam_size"
    };
    let vocab_path = args.checkpoint.join(super::weights::VOCAB_FILE);
    contract::check_beam(beam, option, ckpt.vocab.logit_dim, &vocab_path)?;
    let device = default_device();
    let model = R2GenCmn::from_checkpoint(&ckpt, device)?;
    let images = load_study(&args.image, ckpt.config.data.image_size)?.to_device(device);
    let (att, _) =
        tch::no_grad(|| model.with_precision(|| model.visual(&images.unsqueeze(0), false)));
    let out = if beam <= 1 {
        greedy(&model, &att, eval.max_seq_length, eval.block_trigrams)
    } else {
        beam_search(&model, &att, eval.max_seq_length, beam)
    };
    let tokens = out.tokens(0);
    let report = ckpt.vocab.decode(&tokens);
    if args.json {
        let v = serde_json::json!({"report": report, "tokens": tokens, "score": out.scores[0]});
        println!("{v}");
    } else {
        println!("{report}");
    }
    Ok(())
}

/// Writes a model directory beside `out` and swaps it in whole with its `SHA256SUMS`
/// ([`crate::fsutil::StagedDir`]): a failure leaves an earlier `out` as it was.
fn write_model_dir(
    out: &Path,
    model: &R2GenCmn,
    config: &crate::config::Config,
    vocab: &VocabInfo,
) -> anyhow::Result<()> {
    let staged = crate::fsutil::StagedDir::new(out)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", out.display()))?;
    model
        .registry()
        .save_safetensors(&staged.path().join(WEIGHTS_FILE))?;
    ModelCheckpoint::write_meta(staged.path(), config, vocab)?;
    staged
        .commit()
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", out.display()))
}

/// `FILE.sha256` beside an exported `FILE`.
fn sidecar_path(file: &Path) -> PathBuf {
    let mut name = file.file_name().unwrap_or_default().to_os_string();
    name.push(".sha256");
    file.with_file_name(name)
}

/// Checks an exported file against its `FILE.sha256` when there is one (files from
/// elsewhere, e.g. the PyTorch reference, have none).
fn verify_sidecar(file: &Path) -> anyhow::Result<()> {
    let Ok(text) = std::fs::read_to_string(sidecar_path(file)) else {
        return Ok(());
    };
    let expected = text.split_whitespace().next().unwrap_or_default();
    let found = crate::fsutil::sha256_file(file)
        .map_err(|e| anyhow::anyhow!("{}: {}", file.display(), e.source))?;
    if found != expected {
        anyhow::bail!(
            "{}: SHA-256 differs from {} (changed, truncated or corrupt after export)",
            file.display(),
            sidecar_path(file).display()
        );
    }
    Ok(())
}
