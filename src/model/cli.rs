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
    std::fs::create_dir_all(&args.out)?;
    model
        .registry()
        .save_safetensors(&args.out.join(WEIGHTS_FILE))?;
    ModelCheckpoint::write_meta(&args.out, &config, &vocab)?;
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
    model.registry().save_safetensors(&args.out)?;
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
    std::fs::create_dir_all(&args.out)?;
    model
        .registry()
        .save_safetensors(&args.out.join(WEIGHTS_FILE))?;
    ModelCheckpoint::write_meta(&args.out, &config, &vocab)?;
    println!(
        "initialised a model of {} parameters in {}",
        model.parameters().len(),
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
            Ok(image::resize_exact(&img, size as u32, size as u32))
        })
        .collect::<Result<Vec<_>, image::ImageError>>()?;
    Ok(image::to_tensor_normalized(&imgs))
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
