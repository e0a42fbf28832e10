//! The configuration schema. Field names follow the original hyper-parameter names of
//! R2GenCMN / ITHN where one exists (`d_model`, `cmm_size`, `topk`, `lr_ve`, `lr_ed`, ...).
//! Defaults are the published IU X-Ray run (SPEC §2–3); `configs/*.toml` spell them out.

use std::path::PathBuf;

use super::metric::{LrGroup, Metric};
use serde::{Deserialize, Serialize};

/// One complete, validated run configuration.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Dataset, prepared shards and the text/image pipeline.
    pub data: DataConfig,
    /// R2GenCMN + ITHN model dimensions.
    pub model: ModelConfig,
    /// The ITHN objective: loss weights, λ schedule, how hard negatives are formed.
    pub ithn: IthnConfig,
    /// Optimiser, schedule, epochs, batch (global), early stopping.
    pub train: TrainConfig,
    /// Decoding and validation.
    pub eval: EvalConfig,
    /// Checkpoint cadence and retention.
    pub checkpoint: CheckpointConfig,
    /// Collective backend and gradient bucketing.
    pub dist: DistConfig,
    /// Logging cadence.
    pub log: LogConfig,
}

pub use crate::dataset::Dataset;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DataConfig {
    /// `iu_xray` or `mimic_cxr`: chooses the report cleaner.
    pub dataset: Dataset,
    /// Directory written by `ithn-dist prepare` (manifest.json, vocab.json, shards).
    pub prepared: PathBuf,
    /// Token ids per report incl. BOS/EOS, longer reports are cut (SPEC §1).
    pub max_seq_length: usize,
    /// Minimum train-split count for a token to enter the vocabulary.
    pub threshold: usize,
    /// Image views per sample fed to the model: 2 = R2GenCMN IU (frontal+lateral), 1 = ITHN reference.
    pub views: usize,
    /// Shorter side after the train-time resize (before the random crop).
    pub resize: usize,
    /// Side of the square crop fed to the network.
    pub image_size: usize,
    /// Train-time augmentation (the reference's Resize(resize), RandomCrop(image_size),
    /// RandomHorizontalFlip). `false` feeds training the evaluation transform (an exact resize to
    /// image_size), so every epoch sees the same pixels; with a frozen extractor
    /// (`model.freeze_visual_extractor`) that lets its features be cached
    /// (`train.feature_cache_mb`). Default true.
    pub augment: bool,
    /// Decode/augment threads per rank.
    pub num_workers: usize,
    /// Batches decoded ahead of the training step.
    pub prefetch: usize,
    /// Bound on decoded row-group cache per rank, in MiB.
    pub cache_mb: usize,
}

impl Default for DataConfig {
    fn default() -> Self {
        DataConfig {
            dataset: Dataset::IuXray,
            prepared: "runs/prepared/iu_xray".into(),
            max_seq_length: 60,
            threshold: 3,
            views: 1,
            resize: 256,
            image_size: 224,
            augment: true,
            num_workers: 2,
            prefetch: 2,
            cache_mb: 256,
        }
    }
}

/// Floating point precision of the forward pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Precision {
    #[default]
    Fp32,
    /// bfloat16 Linear layers and convolutions on CUDA (fp32 elsewhere and on the CPU).
    Bf16,
    /// float64 parameters, optimizer state and math: about 2× slower, for exactness checks
    /// (equal results across world sizes up to ~1e-12 instead of float32 re-association noise).
    Fp64,
}

/// How ResNet BatchNorm layers behave in training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BatchNormMode {
    /// Batch statistics of each rank's local batch (the reference on one GPU; DDP's default).
    /// A rank whose local batch gives a channel fewer than 2 values (0 samples, or 1 sample on
    /// a 1×1 map) normalises with the running statistics instead; after every step all ranks
    /// take rank 0's running statistics (DDP's `broadcast_buffers`).
    #[default]
    Local,
    /// Running statistics only, never updated: exact global-batch equivalence across ranks.
    Frozen,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// Transformer width.
    pub d_model: usize,
    /// Feed-forward inner width.
    pub d_ff: usize,
    /// Attention heads (must divide d_model).
    pub num_heads: usize,
    /// Encoder layers = decoder layers.
    pub num_layers: usize,
    /// Dropout inside the transformer.
    pub dropout: f64,
    /// Dropout after att_embed.
    pub drop_prob_lm: f64,
    /// BatchNorm in att_embed, the reference's `--use_bn`: 0 none (default, the published
    /// runs), 1 BatchNorm1d over the 2048 patch-feature channels before the Linear, 2 also
    /// BatchNorm1d over d_model after the dropout. Statistics per channel over every patch of
    /// the (local) batch; they follow `model.batchnorm`.
    pub use_bn: u8,
    /// Rows of the cross-modal memory matrix.
    pub cmm_size: usize,
    /// Width of the memory matrix (must equal d_model).
    pub cmm_dim: usize,
    /// Memory slots kept per query (≤ cmm_size).
    pub topk: usize,
    /// Channels of the visual feature map (2048 for bottleneck ResNets).
    pub d_vf: usize,
    /// Width of the ITHN image/text projections.
    pub proj_dim: usize,
    /// Bottleneck blocks per ResNet stage: [3,4,23,3] = ResNet-101.
    pub visual_layers: Vec<usize>,
    /// ResNet width_per_group (64 = torchvision's ResNet-101).
    pub visual_width_per_group: usize,
    /// Optional safetensors file of pretrained visual-extractor weights, loaded when a training
    /// run starts (R2Gen's `--visual_extractor_pretrained`): torchvision ResNet names
    /// (`conv1.weight`, `layer1.0.bn1.running_mean`, ...; `fc.*` ignored) or the reference's
    /// `visual_extractor.model.N.*` (ops/export_resnet101.py). Unset: random init.
    pub visual_weights: Option<PathBuf>,
    /// Keep the visual extractor fixed while training (PyTorch's `requires_grad_(False)` plus
    /// `eval()` on the ResNet): its features are computed without autograd and with the
    /// BatchNorm running statistics, and its parameters are left out of the optimizer (no
    /// Adam state, no weight decay, no gradient all-reduce). Meant for a pretrained extractor
    /// (`visual_weights`); `train.lr_ve` is then unused. The ITHN terms still train the
    /// projections and the encoder-decoder. Default false (the reference trains it).
    pub freeze_visual_extractor: bool,
    /// BatchNorm behaviour in training: `local` or `frozen`.
    pub batchnorm: BatchNormMode,
    /// `fp32` (default), `bf16` autocast on GPU, or `fp64` (exactness checks).
    pub precision: Precision,
}

impl Default for ModelConfig {
    fn default() -> Self {
        ModelConfig {
            d_model: 512,
            d_ff: 512,
            num_heads: 8,
            num_layers: 3,
            dropout: 0.1,
            drop_prob_lm: 0.5,
            use_bn: 0,
            cmm_size: 2048,
            cmm_dim: 512,
            topk: 32,
            d_vf: 2048,
            proj_dim: 512,
            visual_layers: vec![3, 4, 23, 3],
            visual_width_per_group: 64,
            visual_weights: None,
            freeze_visual_extractor: false,
            batchnorm: BatchNormMode::Local,
            precision: Precision::Fp32,
        }
    }
}

/// How the hard negatives h are formed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Negatives {
    /// The official closed form p = u⁻ + ((z−u⁻)(u−u⁻)ᵀ)·normalize(u−u⁻), h = λu⁻ + (1−λ)p.
    #[default]
    Projection,
    /// The paper's min-max: K projected gradient-ascent steps on L_cp with features detached.
    Ascent,
}

/// Which batch the maximisation step sees.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Gather {
    /// Features all-gathered: S, p, h over the global batch (the equivalence invariant).
    #[default]
    Global,
    /// Each rank alone on its local batch (the reference on one GPU), for ablation.
    Local,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IthnConfig {
    /// λ = exp(−alpha·epoch), epochs counted from 1.
    pub alpha: f64,
    /// Weight of the language-model loss.
    pub w_lm: f64,
    /// Weight of the contrastive alignment loss L_cp.
    pub w_cp: f64,
    /// Weight of the image cosine loss L_cs.
    pub w_cs: f64,
    /// `projection` (official closed form) or `ascent` (paper-faithful min-max).
    pub negatives: Negatives,
    /// `global` (all-gathered) or `local` (per rank).
    pub gather: Gather,
    /// Gradient-ascent steps K in `ascent` mode.
    pub ascent_steps: usize,
    /// Step size of each ascent step.
    pub ascent_lr: f64,
    /// Radius around u⁻ at λ = 0; the allowed radius is (1 − λ)·ascent_radius.
    pub ascent_radius: f64,
}

impl IthnConfig {
    /// The published objective `w_lm·L_lm + w_cp·L_cp + w_cs·L_cs` (SPEC §3) with every term
    /// of weight 0 left out rather than multiplied by 0 (0·NaN is NaN): a term that is off
    /// cannot make the loss non-finite.
    pub fn objective(&self, lm: f64, l_cp: f64, l_cs: f64) -> f64 {
        [(self.w_lm, lm), (self.w_cp, l_cp), (self.w_cs, l_cs)]
            .iter()
            .filter(|(w, _)| *w != 0.0)
            .map(|(w, v)| w * v)
            .sum()
    }
}

impl Default for IthnConfig {
    fn default() -> Self {
        IthnConfig {
            alpha: 0.01,
            w_lm: 0.7,
            w_cp: 0.1,
            w_cs: 0.2,
            negatives: Negatives::Projection,
            gather: Gather::Global,
            ascent_steps: 3,
            ascent_lr: 0.1,
            ascent_radius: 1.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TrainConfig {
    /// Seed of everything random (init, order, dropout, crops).
    pub seed: u64,
    /// Number of epochs.
    pub epochs: usize,
    /// GLOBAL batch size (split evenly over ranks: `batch_size / accumulation_steps` must be a
    /// multiple of the number of ranks; only an epoch's last step may be uneven).
    pub batch_size: usize,
    /// Micro-batches per optimiser step (gradients communicated once per step; an epoch's last
    /// step may hold fewer).
    pub accumulation_steps: usize,
    /// Learning rate of the visual extractor.
    pub lr_ve: f64,
    /// Learning rate of everything else.
    pub lr_ed: f64,
    /// L2 weight decay added to the gradient (torch.optim.Adam semantics).
    pub weight_decay: f64,
    /// Adam betas.
    pub adam_betas: [f64; 2],
    /// Adam epsilon.
    pub adam_eps: f64,
    /// AMSGrad variant.
    pub amsgrad: bool,
    /// StepLR period in epochs.
    pub lr_step_size: usize,
    /// StepLR factor.
    pub lr_gamma: f64,
    /// Stop after this many epochs without a better validation score (0 = never).
    pub early_stop: usize,
    /// Validation metric that selects the best model (a pycocoevalcap key such as "BLEU_4",
    /// or a clinical-efficacy key such as "CE_F1_findings").
    pub monitor_metric: Metric,
    /// Bound, in MiB per rank, on the features a frozen extractor keeps by image
    /// (`model.freeze_visual_extractor` with `data.augment = false`; 0 = no cache). The tiny
    /// quickstart's 2,069 train images take ~81 MiB; MIMIC-CXR at 224 px (~400 KiB per image
    /// and view) does not fit: past the bound, images are computed each time they are seen
    /// (one at a time). Free to change on resume: cached or not, the features are the same.
    pub feature_cache_mb: usize,
    /// Drop the last incomplete global batch (a whole optimizer step) of an epoch (true) or
    /// train on it (false).
    pub drop_last: bool,
}

impl TrainConfig {
    /// The base learning rate of `group` (`train.lr_ve` or `train.lr_ed`).
    pub fn lr(&self, group: LrGroup) -> f64 {
        match group {
            LrGroup::VisualExtractor => self.lr_ve,
            LrGroup::EncoderDecoder => self.lr_ed,
        }
    }

    /// The base learning rates of every group, in [`LrGroup::index`] order (what the
    /// optimizer and StepLR start from).
    pub fn initial_lrs(&self) -> Vec<f64> {
        LrGroup::ALL.iter().map(|&g| self.lr(g)).collect()
    }
}

impl Default for TrainConfig {
    fn default() -> Self {
        TrainConfig {
            seed: 7580,
            epochs: 100,
            batch_size: 16,
            accumulation_steps: 1,
            lr_ve: 1e-4,
            lr_ed: 5e-4,
            weight_decay: 5e-5,
            adam_betas: [0.9, 0.98],
            adam_eps: 1e-9,
            amsgrad: true,
            lr_step_size: 10,
            lr_gamma: 0.8,
            early_stop: 25,
            monitor_metric: Metric::Bleu4,
            drop_last: false,
            feature_cache_mb: 2048,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EvalConfig {
    /// Beam width (1 = greedy with trigram blocking).
    pub beam_size: usize,
    /// Maximum generated length in tokens (incl. BOS).
    pub max_seq_length: usize,
    /// Greedy decoding blocks repeated trigrams (reference default).
    pub block_trigrams: bool,
    /// GLOBAL evaluation batch size.
    pub batch_size: usize,
    /// Validate every N epochs.
    pub every_epochs: usize,
    /// Run METEOR (needs Java and the jar from pycocoevalcap).
    pub meteor: bool,
}

impl Default for EvalConfig {
    fn default() -> Self {
        EvalConfig {
            beam_size: 3,
            max_seq_length: 60,
            block_trigrams: true,
            batch_size: 16,
            every_epochs: 1,
            meteor: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CheckpointConfig {
    /// Save every N optimizer steps (0 = off).
    pub every_steps: usize,
    /// Save every M minutes of wall time (0 = off).
    pub every_minutes: f64,
    /// Save at the end of every epoch.
    pub every_epoch: bool,
    /// Number of most recent checkpoints kept (the best is always kept too).
    pub keep_last: usize,
}

impl Default for CheckpointConfig {
    fn default() -> Self {
        CheckpointConfig {
            every_steps: 0,
            every_minutes: 30.0,
            every_epoch: true,
            keep_last: 3,
        }
    }
}

/// Which collective implementation carries tensors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// NCCL for CUDA tensors, MPI for CPU tensors.
    #[default]
    Auto,
    Mpi,
    Nccl,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DistConfig {
    /// `auto`, `mpi` or `nccl`.
    pub backend: Backend,
    /// Gradient bucket size in MiB.
    pub bucket_mb: f64,
    /// Shard the optimizer over the ranks (ZeRO-1): each rank steps Adam on, and keeps the Adam
    /// state of, 1/world of every gradient bucket; the updated parameters are all-gathered.
    /// Bit-identical to the unsharded step, same traffic, 1/world of the Adam time and memory;
    /// checkpoints are the same either way. No effect on one rank.
    pub shard_optimizer: bool,
    /// Compare a parameter checksum across ranks every N steps (0 = never).
    pub checksum_every: usize,
    /// Seconds a collective may take before the watchdog aborts the job.
    pub timeout_s: f64,
}

impl Default for DistConfig {
    fn default() -> Self {
        DistConfig {
            backend: Backend::Auto,
            bucket_mb: 25.0,
            shard_optimizer: true,
            checksum_every: 100,
            timeout_s: 600.0,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// Log a training line every N optimizer steps.
    pub every_steps: usize,
    /// Show a progress bar on rank 0 when the terminal is interactive.
    pub progress: bool,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            every_steps: 10,
            progress: true,
        }
    }
}

/// A value that breaks a rule of [`Config::validate`]: the dotted key and why. A rule between
/// several keys (`d_model` divisible by `num_heads`) names the others in `related`, so an error
/// can be blamed on whichever of them a `--set` changed rather than on the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid value for `{key}`: {reason}")]
pub struct InvalidValue {
    pub key: String,
    pub reason: String,
    pub related: Vec<String>,
}

type Invalid = InvalidValue;

/// The longest period a duration key accepts, in minutes (a year).
const MAX_MINUTES: f64 = 525_600.0;

/// Positions the model can encode (the reference's positional-encoding `max_len`).
const PE_LEN: usize = crate::bounds::MAX_SEQ_LEN as usize;

fn check(ok: bool, key: &str, reason: impl Into<String>) -> Result<(), Invalid> {
    check_keys(ok, &[key], reason)
}

/// A rule between keys: `keys[0]` is reported, the rest are [`InvalidValue::related`].
fn check_keys(ok: bool, keys: &[&str], reason: impl Into<String>) -> Result<(), Invalid> {
    if ok {
        Ok(())
    } else {
        Err(InvalidValue {
            key: keys[0].to_string(),
            reason: reason.into(),
            related: keys[1..].iter().map(|k| k.to_string()).collect(),
        })
    }
}

fn positive(v: f64, key: &str) -> Result<(), Invalid> {
    check(
        v.is_finite() && v > 0.0,
        key,
        format!("must be > 0, got {v}"),
    )
}

fn non_negative(v: f64, key: &str) -> Result<(), Invalid> {
    check(
        v.is_finite() && v >= 0.0,
        key,
        format!("must be ≥ 0, got {v}"),
    )
}

fn probability(v: f64, key: &str) -> Result<(), Invalid> {
    check(
        (0.0..1.0).contains(&v),
        key,
        format!("must be in [0, 1), got {v}"),
    )
}

impl Config {
    /// Checks every cross-field rule; the error names the dotted key and the reason.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        self.validate_data()?;
        self.validate_model()?;
        self.validate_ithn()?;
        self.validate_train()?;
        self.validate_rest()
    }

    fn validate_data(&self) -> Result<(), Invalid> {
        let d = &self.data;
        check(
            d.max_seq_length >= 2,
            "data.max_seq_length",
            "must be ≥ 2 (BOS + EOS)",
        )?;
        check(d.threshold >= 1, "data.threshold", "must be ≥ 1")?;
        check(
            d.views == 1 || d.views == 2,
            "data.views",
            format!("must be 1 or 2, got {}", d.views),
        )?;
        check(d.image_size >= 32, "data.image_size", "must be ≥ 32")?;
        // The transformer adds a positional encoding to every patch of every view: a ResNet
        // patch map is ceil(S/32)² per view, and the stored table has PE_LEN rows.
        let patches = d.views * d.image_size.div_ceil(32).pow(2);
        check_keys(
            patches <= PE_LEN,
            &["data.image_size", "data.views"],
            format!(
                "{} px gives {patches} patch positions for {} view(s), more than the {PE_LEN} \
                 positional encodings of the model (at most {} px with {} view(s))",
                d.image_size,
                d.views,
                32 * ((PE_LEN / d.views.max(1)) as f64).sqrt().floor() as usize,
                d.views
            ),
        )?;
        check(
            d.max_seq_length <= PE_LEN,
            "data.max_seq_length",
            format!("must be ≤ {PE_LEN} (the model's positional encodings)"),
        )?;
        check(
            d.resize as u64 <= crate::bounds::MAX_IMAGE_SIDE,
            "data.resize",
            format!("must be ≤ {}", crate::bounds::MAX_IMAGE_SIDE),
        )?;
        check(
            d.num_workers as u64 <= crate::bounds::MAX_THREADS,
            "data.num_workers",
            format!("must be ≤ {}", crate::bounds::MAX_THREADS),
        )?;
        check_keys(
            d.resize >= d.image_size,
            &["data.resize", "data.image_size"],
            format!(
                "must be ≥ data.image_size ({}), got {}",
                d.image_size, d.resize
            ),
        )?;
        check(d.num_workers >= 1, "data.num_workers", "must be ≥ 1")?;
        Ok(())
    }

    fn validate_model(&self) -> Result<(), Invalid> {
        self.model.validate()
    }
}

impl ModelConfig {
    /// The architecture's rules, the one copy: `Config::validate` and the model constructor
    /// (`model::r2gencmn::validate`) both apply it, so they cannot disagree.
    pub fn validate(&self) -> Result<(), InvalidValue> {
        self.validate_sizes()?;
        self.validate_structure()
    }

    /// Upper bounds on widths and depths (crate::bounds), so a typo cannot ask for terabytes.
    fn validate_sizes(&self) -> Result<(), InvalidValue> {
        let m = self;
        let (wide, deep) = (
            crate::bounds::MAX_MODEL_WIDTH,
            crate::bounds::MAX_MODEL_DEPTH,
        );
        for (v, key) in [
            (m.d_model, "model.d_model"),
            (m.d_ff, "model.d_ff"),
            (m.proj_dim, "model.proj_dim"),
            (m.cmm_size, "model.cmm_size"),
        ] {
            check(v <= wide, key, format!("must be at most {wide}, got {v}"))?;
        }
        check(
            m.num_layers <= deep,
            "model.num_layers",
            format!("must be at most {deep}"),
        )?;
        check(
            m.visual_layers.iter().all(|&n| n <= deep),
            "model.visual_layers",
            format!("block counts must be at most {deep}"),
        )?;
        check(
            m.visual_width_per_group <= 4096,
            "model.visual_width_per_group",
            "must be at most 4096",
        )
    }

    /// What the architecture needs of its dimensions (divisibility, ranges, the ResNet shape).
    fn validate_structure(&self) -> Result<(), InvalidValue> {
        let m = self;
        check(m.d_model > 0, "model.d_model", "must be > 0")?;
        check(m.num_heads > 0, "model.num_heads", "must be > 0")?;
        check_keys(
            m.d_model.is_multiple_of(m.num_heads),
            &["model.d_model", "model.num_heads"],
            format!(
                "d_model ({}) must be divisible by num_heads ({})",
                m.d_model, m.num_heads
            ),
        )?;
        check(m.d_ff > 0, "model.d_ff", "must be > 0")?;
        check(m.num_layers > 0, "model.num_layers", "must be > 0")?;
        probability(m.dropout, "model.dropout")?;
        probability(m.drop_prob_lm, "model.drop_prob_lm")?;
        check(
            m.use_bn <= 2,
            "model.use_bn",
            format!("must be 0, 1 or 2, got {}", m.use_bn),
        )?;
        check(m.cmm_size > 0, "model.cmm_size", "must be > 0")?;
        check_keys(
            m.cmm_dim == m.d_model,
            &["model.cmm_dim", "model.d_model"],
            format!("cmm_dim ({}) must equal d_model ({})", m.cmm_dim, m.d_model),
        )?;
        check_keys(
            m.topk >= 1 && m.topk <= m.cmm_size,
            &["model.topk", "model.cmm_size"],
            format!("topk ({}) must be in 1..=cmm_size ({})", m.topk, m.cmm_size),
        )?;
        check(
            m.d_vf == 2048,
            "model.d_vf",
            "bottleneck ResNets give 2048 channels",
        )?;
        check(m.proj_dim > 0, "model.proj_dim", "must be > 0")?;
        if let Some(w) = &m.visual_weights {
            // Existence is checked when a training run loads it (evaluating a checkpoint whose
            // config names a file from another machine must still work).
            check(
                !w.to_string_lossy().trim().is_empty(),
                "model.visual_weights",
                "must name a safetensors file (omit the key for random init)",
            )?;
        }
        check(
            m.visual_layers.len() == 4 && m.visual_layers.iter().all(|&n| n >= 1),
            "model.visual_layers",
            format!("must be four block counts ≥ 1, got {:?}", m.visual_layers),
        )?;
        check(
            m.visual_width_per_group >= 4 && m.visual_width_per_group.is_multiple_of(4),
            "model.visual_width_per_group",
            "must be a positive multiple of 4",
        )?;
        Ok(())
    }
}

impl Config {
    fn validate_ithn(&self) -> Result<(), Invalid> {
        let i = &self.ithn;
        non_negative(i.alpha, "ithn.alpha")?;
        non_negative(i.w_lm, "ithn.w_lm")?;
        non_negative(i.w_cp, "ithn.w_cp")?;
        non_negative(i.w_cs, "ithn.w_cs")?;
        check_keys(
            i.negatives != Negatives::Ascent || i.ascent_steps >= 1,
            &["ithn.ascent_steps", "ithn.negatives"],
            "must be ≥ 1 when ithn.negatives = \"ascent\"",
        )?;
        non_negative(i.ascent_lr, "ithn.ascent_lr")?;
        non_negative(i.ascent_radius, "ithn.ascent_radius")?;
        Ok(())
    }

    fn validate_train(&self) -> Result<(), Invalid> {
        let t = &self.train;
        check(t.epochs >= 1, "train.epochs", "must be ≥ 1")?;
        check(t.batch_size >= 1, "train.batch_size", "must be ≥ 1")?;
        check(
            t.accumulation_steps >= 1,
            "train.accumulation_steps",
            "must be ≥ 1",
        )?;
        check_keys(
            t.batch_size.is_multiple_of(t.accumulation_steps),
            &["train.accumulation_steps", "train.batch_size"],
            format!(
                "must divide train.batch_size ({}), got {}",
                t.batch_size, t.accumulation_steps
            ),
        )?;
        positive(t.lr_ve, "train.lr_ve")?;
        positive(t.lr_ed, "train.lr_ed")?;
        non_negative(t.weight_decay, "train.weight_decay")?;
        for (k, b) in t.adam_betas.iter().enumerate() {
            probability(*b, &format!("train.adam_betas[{k}]"))?;
        }
        positive(t.adam_eps, "train.adam_eps")?;
        check(t.lr_step_size >= 1, "train.lr_step_size", "must be ≥ 1")?;
        positive(t.lr_gamma, "train.lr_gamma")?;
        // train.monitor_metric is a `Metric`: checked when the file is read.
        Ok(())
    }

    /// `eval`, `checkpoint`, `dist` and `log`.
    fn validate_rest(&self) -> Result<(), Invalid> {
        let e = &self.eval;
        check(e.beam_size >= 1, "eval.beam_size", "must be ≥ 1")?;
        check(e.max_seq_length >= 2, "eval.max_seq_length", "must be ≥ 2")?;
        check(
            e.max_seq_length <= PE_LEN,
            "eval.max_seq_length",
            format!("must be ≤ {PE_LEN} (the model's positional encodings)"),
        )?;
        check(e.batch_size >= 1, "eval.batch_size", "must be ≥ 1")?;
        check(e.every_epochs >= 1, "eval.every_epochs", "must be ≥ 1")?;

        non_negative(self.checkpoint.every_minutes, "checkpoint.every_minutes")?;
        // Both become `Duration`s added to `Instant`s: keep them far from overflow.
        check(
            self.checkpoint.every_minutes <= MAX_MINUTES,
            "checkpoint.every_minutes",
            format!("must be ≤ {MAX_MINUTES} (a year)"),
        )?;
        check(
            self.checkpoint.keep_last >= 1,
            "checkpoint.keep_last",
            "must be ≥ 1",
        )?;
        positive(self.dist.bucket_mb, "dist.bucket_mb")?;
        positive(self.dist.timeout_s, "dist.timeout_s")?;
        check(
            self.dist.timeout_s <= MAX_MINUTES * 60.0,
            "dist.timeout_s",
            format!("must be ≤ {} (a year)", MAX_MINUTES * 60.0),
        )?;
        check(self.log.every_steps >= 1, "log.every_steps", "must be ≥ 1")?;
        Ok(())
    }
}
