//! The R2GenCMN + ITHN model (`BaseCMNModelITHN` of the reference): visual extractor,
//! att_embed, cross-modal memory, encoder/decoder, output layer, ITHN projections and
//! temperatures, registered in reference state_dict order under reference names.
//!
//! The forward is split into the pieces the distributed trainer composes itself:
//! [`R2GenCmn::visual`] → [`R2GenCmn::forward_teacher`] → [`crate::model::ithn`] functions.
//! Decoding uses [`R2GenCmn::encode`] once and [`R2GenCmn::decode_step`] per token.

use std::cell::RefCell;
use std::path::Path;
use std::sync::Mutex;

use tch::{Device, Kind, Tensor};

use super::att_embed::AttEmbed;
use super::feature_cache::{CacheStats, FeatureCache};
use super::layers::{Constant, Dropout, Linear, LinearInit};
use super::memory::{init_memory, Memory, MemoryKv};
use super::transformer::{
    add_position, positional_table, Decoder, DecoderCache, Dims, Encoder, PE_LEN,
};
use super::visual::{features, ResNet};
use super::weights::{ModelCheckpoint, ModelError, Registry, Scope};
use crate::config::{BatchNormMode, Config, LrGroup, ModelConfig, Precision};

/// Initial value of the ITHN temperatures: ln(1/0.07).
pub fn initial_temperature() -> f64 {
    (1.0f64 / 0.07).ln()
}

#[derive(Debug)]
pub struct R2GenCmn {
    registry: Registry,
    pub temp_1: Tensor,
    pub temp_3: Tensor,
    visual: ResNet,
    memory_matrix: Tensor,
    att_embed: AttEmbed,
    cmn: Memory,
    encoder: Encoder,
    decoder: Decoder,
    src_pe: Tensor,
    lut: Tensor,
    tgt_pe: Tensor,
    logit: Linear,
    img_projection: Linear,
    text_projection: Linear,
    /// √d_model, the token embeddings' factor.
    embed_scale: Constant,
    dropout: f64,
    batchnorm: BatchNormMode,
    /// `model.freeze_visual_extractor`: the ResNet runs without autograd, in eval mode, and its
    /// parameters are not in [`Self::parameters`].
    freeze_visual: bool,
    /// Features of the frozen extractor by image; keeps nothing until
    /// [`Self::enable_feature_cache`].
    feature_cache: Mutex<FeatureCache>,
    logit_dim: i64,
    views: usize,
    precision: Precision,
    device: Device,
}

/// Checks the configuration against what the architecture can build: the config's own model
/// rules ([`ModelConfig::validate`], one copy) plus the views and the vocabulary.
pub fn validate(cfg: &ModelConfig, views: usize, logit_dim: usize) -> Result<(), ModelError> {
    let bad = |m: String| Err(ModelError::Config(m));
    cfg.validate()
        .map_err(|e| ModelError::Config(e.to_string()))?;
    if !(1..=2).contains(&views) {
        return bad(format!("data.views {views} must be 1 or 2"));
    }
    if logit_dim < 2 {
        return bad(format!("vocabulary size {logit_dim} too small"));
    }
    Ok(())
}

/// The transformer below `encoder_decoder.model`: encoder, decoder, the source positional
/// table, the target token lookup and positional table — created (and their random init
/// drawn) in the reference's registration order.
fn transformer(
    m: &Scope,
    cfg: &ModelConfig,
    logit_dim: usize,
) -> (Encoder, Decoder, Tensor, Tensor, Tensor) {
    let d = cfg.d_model as i64;
    let dims = Dims {
        d_model: d,
        d_ff: cfg.d_ff as i64,
        heads: cfg.num_heads as i64,
        layers: cfg.num_layers as i64,
        dropout: cfg.dropout,
    };
    let encoder = Encoder::new(&m.sub("encoder"), dims);
    let decoder = Decoder::new(&m.sub("decoder"), dims);
    let src_pe = m
        .sub("src_embed")
        .sub(0)
        .buffer("pe", positional_table(PE_LEN, d));
    let lut = m
        .sub("tgt_embed")
        .sub(0)
        .sub("lut")
        .param("weight", super::layers::xavier(&[logit_dim as i64, d]));
    let tgt_pe = m
        .sub("tgt_embed")
        .sub(1)
        .buffer("pe", positional_table(PE_LEN, d));
    (encoder, decoder, src_pe, lut, tgt_pe)
}

/// The ITHN projections of the pooled image features (`d_vf` per view) and of the text
/// features (`d_model`) into the shared `proj_dim` space.
fn projections(root: &Scope, cfg: &ModelConfig, views: usize) -> (Linear, Linear) {
    let pooled = (cfg.d_vf * views) as i64;
    let proj = cfg.proj_dim as i64;
    let img_projection = Linear::new(
        &root.sub("img_projection").sub("linear1"),
        pooled,
        proj,
        false,
        LinearInit::Default,
    );
    let text_projection = Linear::new(
        &root.sub("text_projection").sub("linear1"),
        cfg.d_model as i64,
        proj,
        false,
        LinearInit::Default,
    );
    (img_projection, text_projection)
}

impl R2GenCmn {
    /// A freshly initialised model (SPEC §2 init), deterministic in `seed`, for a vocabulary of
    /// `logit_dim` = V+1 classes and `views` images per sample.
    pub fn new(
        cfg: &ModelConfig,
        views: usize,
        logit_dim: usize,
        device: Device,
        seed: u64,
    ) -> Result<R2GenCmn, ModelError> {
        validate(cfg, views, logit_dim)?;
        tch::manual_seed(seed as i64);
        let reg = RefCell::new(Registry::default());
        let root = Scope::root(&reg, device);
        let d = cfg.d_model as i64;
        let temp = || Tensor::from(initial_temperature() as f32);
        let temp_1 = root.param("temp_1", temp());
        let temp_3 = root.param("temp_3", temp());
        let visual = ResNet::new(
            &root
                .sub("visual_extractor")
                .sub("model")
                .group(LrGroup::VisualExtractor.index()),
            &cfg.visual_layers,
            cfg.visual_width_per_group,
            cfg.batchnorm,
        );
        let ed = root.sub("encoder_decoder");
        let memory_matrix = ed.param(
            "memory_matrix",
            init_memory(cfg.cmm_size as i64, cfg.cmm_dim as i64),
        );
        let att_embed = AttEmbed::new(
            &ed.sub("att_embed"),
            cfg.d_vf as i64,
            d,
            cfg.use_bn,
            cfg.drop_prob_lm,
        );
        let heads = cfg.num_heads as i64;
        let cmn = Memory::new(&ed.sub("cmn"), d, heads, cfg.topk as i64);
        let m = ed.sub("model");
        let (encoder, decoder, src_pe, lut, tgt_pe) = transformer(&m, cfg, logit_dim);
        cmn.register_alias(&m.sub("cmn"));
        let logit = Linear::new(
            &ed.sub("logit"),
            d,
            logit_dim as i64,
            true,
            LinearInit::Default,
        );
        let (img_projection, text_projection) = projections(&root, cfg, views);
        let registry = reg.into_inner();
        if cfg.precision == Precision::Fp64 {
            registry.cast_floating(Kind::Double);
        }
        Ok(R2GenCmn {
            registry,
            temp_1,
            temp_3,
            visual,
            memory_matrix,
            att_embed,
            cmn,
            encoder,
            decoder,
            src_pe,
            lut,
            tgt_pe,
            logit,
            img_projection,
            text_projection,
            embed_scale: Constant::new((d as f64).sqrt()),
            dropout: cfg.dropout,
            batchnorm: cfg.batchnorm,
            freeze_visual: cfg.freeze_visual_extractor,
            feature_cache: Mutex::new(FeatureCache::new(0)),
            logit_dim: logit_dim as i64,
            views,
            precision: cfg.precision,
            device,
        })
    }

    /// Training with a frozen extractor (`model.freeze_visual_extractor`) looks its features up
    /// by image in a cache of at most `limit_bytes` from now on ([`FeatureCache`]: exact, each
    /// image computed alone). Only sound when a training image's pixels do not change between
    /// epochs (`data.augment = false`), which is the caller's decision; evaluation (`train` =
    /// false) never uses it. No effect on a trainable extractor.
    pub fn enable_feature_cache(&self, limit_bytes: usize) {
        if self.freeze_visual {
            *self.feature_cache.lock().unwrap_or_else(|p| p.into_inner()) =
                FeatureCache::new(limit_bytes);
        }
    }

    /// What the feature cache did so far; `None` when it is off.
    pub fn feature_cache_stats(&self) -> Option<CacheStats> {
        let cache = self.feature_cache.lock().unwrap_or_else(|p| p.into_inner());
        cache.keeps().then(|| cache.stats())
    }

    /// Builds the model a full [`Config`] describes (views from `data.views`, seed from `train.seed`).
    pub fn from_config(
        config: &Config,
        logit_dim: usize,
        device: Device,
    ) -> Result<R2GenCmn, ModelError> {
        R2GenCmn::new(
            &config.model,
            config.data.views,
            logit_dim,
            device,
            config.train.seed,
        )
    }

    /// The model a training run starts from: [`Self::from_config`], then the pretrained
    /// extractor of `model.visual_weights` when set (torchvision or reference names, see
    /// [`super::visual::extractor_state_dict`]).
    ///
    /// Errors: the file is missing or unreadable, a key is missing, unknown or of the wrong
    /// shape, or a tensor holds NaN/inf — each naming the file and the key.
    pub fn for_training(
        config: &Config,
        logit_dim: usize,
        device: Device,
    ) -> Result<R2GenCmn, ModelError> {
        let model = R2GenCmn::from_config(config, logit_dim, device)?;
        if let Some(path) = &config.model.visual_weights {
            let path = path.as_path();
            let map = super::weights::read_safetensors(path)?;
            let map = super::visual::extractor_state_dict(path, map)?;
            model
                .registry
                .load_filtered(path, map, "visual_extractor.")
                .map_err(super::visual::with_torchvision_name)?;
        }
        Ok(model)
    }

    /// Loads a model checkpoint directory (model.safetensors + config.toml + vocab.json).
    pub fn from_checkpoint(ckpt: &ModelCheckpoint, device: Device) -> Result<R2GenCmn, ModelError> {
        let model = R2GenCmn::from_config(&ckpt.config, ckpt.vocab.logit_dim, device)?;
        model.load_safetensors(&ckpt.weights_path())?;
        Ok(model)
    }

    /// Loads reference weights (strict; see [`Registry::load_map`]).
    pub fn load_safetensors(&self, path: &Path) -> Result<(), ModelError> {
        self.registry.load_safetensors(path)
    }

    /// Trainable parameters `(reference name, tensor, optimizer group)` in reference
    /// `named_parameters()` order; the group is an [`LrGroup`] index (visual extractor: lr_ve,
    /// the rest: lr_ed). With `model.freeze_visual_extractor` the extractor's parameters are
    /// not trainable and are left out.
    pub fn parameters(&self) -> Vec<(String, Tensor, usize)> {
        let mut params = self.registry.parameters();
        if self.freeze_visual {
            params.retain(|(_, _, group)| *group != LrGroup::VisualExtractor.index());
        }
        params
    }

    pub fn registry(&self) -> &Registry {
        &self.registry
    }

    pub fn device(&self) -> Device {
        self.device
    }

    pub fn logit_dim(&self) -> i64 {
        self.logit_dim
    }

    pub fn views(&self) -> usize {
        self.views
    }

    /// The floating kind of the parameters: float64 with `model.precision = "fp64"` (or after
    /// [`Registry::cast_floating`]), else float32.
    pub fn float_kind(&self) -> Kind {
        self.lut.kind()
    }

    /// Runs `f` in the configured precision: with `model.precision = "bf16"` on a CUDA device,
    /// Linear layers and convolutions compute in bfloat16 ([`super::layers::with_bf16`]);
    /// otherwise (and always on the CPU) everything is fp32.
    pub fn with_precision<T>(&self, f: impl FnOnce() -> T) -> T {
        // Only ever switches bf16 on, so an enclosing `with_bf16(true, ..)` scope is kept.
        if self.precision == Precision::Bf16 && self.device.is_cuda() {
            super::layers::with_bf16(true, f)
        } else {
            f()
        }
    }

    /// Visual features of `[B, views, 3, H, W]` (or `[B, 3, H, W]` for one view):
    /// patch features `[B, h·w·views, 2048]` (views concatenated along the sequence) and pooled
    /// features `[B, 2048·views]` (views concatenated along channels). Each view runs through
    /// the ResNet separately, as in the reference (BatchNorm batch statistics per view). A frozen
    /// extractor (`model.freeze_visual_extractor`) runs without autograd and with its running
    /// statistics even when `train` is set, one image at a time (the same values whether
    /// [`Self::enable_feature_cache`] is on or not).
    pub fn visual(&self, images: &Tensor, train: bool) -> (Tensor, Tensor) {
        if self.freeze_visual && train {
            return tch::no_grad(|| {
                // Each image alone, cached or not, so the cache never changes a result.
                let mut cache = self.feature_cache.lock().unwrap_or_else(|p| p.into_inner());
                cache.features(images, |one| self.visual(one, false))
            });
        }
        let images = if images.dim() == 4 {
            images.unsqueeze(1)
        } else {
            images.shallow_clone()
        };
        let views = images.size()[1];
        // Loader images are float32; in fp64 mode the whole forward runs in float64.
        let images = images.to_kind(self.float_kind());
        self.with_precision(|| {
            let (atts, fcs): (Vec<Tensor>, Vec<Tensor>) = (0..views)
                .map(|v| features(&self.visual.forward(&images.select(1, v), train)))
                .unzip();
            (Tensor::cat(&atts, 1), Tensor::cat(&fcs, 1))
        })
    }

    /// Encoder side: att_embed ([BatchNorm,] Linear, ReLU, dropout [, BatchNorm]) → + memory
    /// response → + position → encoder. att_embed's BatchNorm (`model.use_bn`) uses batch
    /// statistics when training with `model.batchnorm = "local"`, like the ResNet's.
    /// `kv` is the memory matrix's projection ([`Self::memory_kv`]).
    pub fn encode(&self, att_feats: &Tensor, kv: &MemoryKv, drop: &Dropout) -> Tensor {
        let batch_stats = drop.train() && self.batchnorm == BatchNormMode::Local;
        let x = self.att_embed.forward(att_feats, drop, batch_stats);
        let x = &x + self.cmn.respond_kv(&x, kv, drop);
        let x = drop.apply(&add_position(&self.src_pe, &x, 0), self.dropout);
        self.encoder.forward(&x, drop)
    }

    /// The memory matrix projected to the memory module's keys and values, once per forward
    /// (shared by the visual and the textual side and by every row) or once per decode.
    pub fn memory_kv(&self) -> MemoryKv {
        self.cmn.project(&self.memory_matrix)
    }

    /// Text side: embedding·√d → + position → dropout → + memory response. `[B, T]` tokens at
    /// positions `start..start+T` → `[B, T, d]`. Every step is position-wise, so embedding only
    /// the newest token of a history at `start = t−1` gives that row of the whole history's
    /// embedding.
    fn embed_text(&self, ids: &Tensor, start: i64, kv: &MemoryKv, drop: &Dropout) -> Tensor {
        let e = self
            .embed_scale
            .multiply(&Tensor::embedding(&self.lut, ids, -1, false, false));
        self.embedded_text(&e, start, kv, drop)
    }

    /// [`Self::embed_text`] from the scaled embeddings `e` (`[B, T, d]`, embedding·√d).
    fn embedded_text(&self, e: &Tensor, start: i64, kv: &MemoryKv, drop: &Dropout) -> Tensor {
        let e = drop.apply(&add_position(&self.tgt_pe, e, start), self.dropout);
        &e + self.cmn.respond_kv(&e, kv, drop)
    }

    /// Log-softmax of the output layer.
    pub fn logprobs(&self, states: &Tensor) -> Tensor {
        self.logit
            .forward(states)
            .log_softmax(-1, self.float_kind())
    }

    /// Teacher-forced decoder: input tokens `ids[:, :-1]`. Returns the log-probs
    /// `[B, T−1, V+1]` and the final-normed decoder states `[B, T−1, d_model]`.
    /// `seeds` (one per sample) make every dropout mask a function of the sample alone.
    pub fn forward_teacher(
        &self,
        att_feats: &Tensor,
        ids: &Tensor,
        train: bool,
        seeds: Option<&[u64]>,
    ) -> (Tensor, Tensor) {
        self.with_precision(|| {
            let drop = Dropout::new(train, seeds);
            let kv = self.memory_kv();
            let memory = self.encode(att_feats, &kv, &drop);
            let t = ids.size()[1] - 1;
            let input = ids.narrow(1, 0, t);
            let states = self.decoder.forward(
                &self.embed_text(&input, 0, &kv, &drop),
                &memory,
                &target_mask(&input),
                &drop,
            );
            (self.logprobs(&states), states)
        })
    }

    /// Starts incremental decoding for `att_feats` (eval mode): the encoder runs once.
    /// The memory matrix is projected once here for the whole decode.
    pub fn start_decoding(&self, att_feats: &Tensor) -> DecoderCache {
        let kv = self.memory_kv();
        let memory = self.encode(att_feats, &kv, &Dropout::eval());
        let mut cache = self.decoder.start(&memory);
        cache.text_memory = Some(kv);
        cache.text_lut = Some(self.embed_scale.multiply(&self.lut));
        cache
    }

    /// One cached decoding step. `history` `[N, t]` holds every token fed so far (BOS first).
    /// The reference embeds the whole history again at every step (embedding, position, memory
    /// response) and keeps the newest row; those steps are position-wise, so only the newest
    /// token is embedded here (same values, O(1) instead of O(t) per step), and only it runs
    /// through the decoder layers. Returns log-probs `[N, V+1]` of the next token.
    pub fn decode_step(&self, history: &Tensor, cache: &mut DecoderCache) -> Tensor {
        let drop = Dropout::eval();
        let t = history.size()[1];
        let kv = match cache.text_memory.take() {
            Some(kv) => kv,
            None => self.memory_kv(),
        };
        let newest = history.narrow(1, t - 1, 1);
        let e = match &cache.text_lut {
            // The scaled table's row is the scaled row: the same product, made once.
            Some(lut) => {
                let e = Tensor::embedding(lut, &newest, -1, false, false);
                self.embedded_text(&e, t - 1, &kv, &drop)
            }
            None => self.embed_text(&newest, t - 1, &kv, &drop),
        };
        cache.text_memory = Some(kv);
        let state = self.decoder.step(&e, cache);
        self.logprobs(&state).squeeze_dim(1)
    }

    /// The uncached equivalent of [`Self::decode_step`]: the whole history runs through the
    /// decoder layers again (causal mask). Used as the reference the KV cache is measured and
    /// tested against; agrees with the cached path up to float re-association.
    pub fn decode_step_full(&self, history: &Tensor, cache: &DecoderCache) -> Tensor {
        let drop = Dropout::eval();
        let t = history.size()[1];
        let mask = Tensor::ones([1, t, t], (Kind::Bool, history.device())).tril(0);
        let states = self.decoder.forward(
            &self.embed_text(history, 0, &self.memory_kv(), &drop),
            &cache.memory,
            &mask,
            &drop,
        );
        self.logprobs(&states.narrow(1, t - 1, 1)).squeeze_dim(1)
    }

    /// z: `img_projection(fc)` divided by its L2 norm (no epsilon, as the reference).
    pub fn img_embed(&self, fc_feats: &Tensor) -> Tensor {
        super::ithn::l2_rows(&self.img_projection.forward(fc_feats))
    }

    /// u: `text_projection(mean over ALL T−1 steps of states)` divided by its L2 norm.
    pub fn text_embed(&self, states: &Tensor) -> Tensor {
        let mean = states.mean_dim(1, false, None);
        super::ithn::l2_rows(&self.text_projection.forward(&mean))
    }

    /// Zeroes every parameter gradient (before a fresh backward).
    pub fn zero_grad(&self) {
        for (_, p, _) in self.parameters() {
            let mut g = p.grad();
            if g.defined() {
                let _ = g.zero_();
            }
        }
    }
}

/// Decoder self-attention mask `[B, T, T]`: key is (token > 0) with position 0 forced true,
/// AND causal (key index ≤ query index).
pub fn target_mask(input: &Tensor) -> Tensor {
    let (_, t) = input.size2().expect("token ids are [B, T]");
    let keys = input.gt(0);
    let _ = keys.narrow(1, 0, 1).fill_(1);
    let causal = Tensor::ones([t, t], (Kind::Bool, input.device())).tril(0);
    keys.unsqueeze(1).logical_and(&causal.unsqueeze(0))
}
