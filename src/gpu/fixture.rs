//! The public reference fixture (`../shared/reference/public/model`, README there) as the GPU
//! check reads it: the model configuration "A" from `config.json`, the weights, the eval batch
//! and the reference outputs; the gradients (`grads.safetensors`), the one-step parameters
//! (`step.safetensors`) and `decode.json` are optional, because the GPU machine's copy leaves
//! them behind (ops/gpu/build.sh: what travels is ≤ 60 MiB).

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use anyhow::{anyhow, Context};
use tch::Tensor;

use crate::config::ModelConfig;
use crate::model::weights::read_safetensors;
use crate::model::IthnBatch;
use crate::train::optim::AdamConfig;

/// One fixture folder, loaded on the CPU.
pub struct Fixture {
    pub dir: PathBuf,
    pub config: serde_json::Value,
    pub model: ModelConfig,
    /// Logit columns (V + 1).
    pub logit_dim: usize,
    /// The reference's λ (a Python double, `config.json` → `eval_batch.lambd`).
    pub lambda: f64,
    /// Decoding length (`args.max_seq_length`).
    pub max_len: usize,
    /// Beam width of the reference's beam search (`decode.json`, 3 when absent).
    pub beam: usize,
    pub inputs: HashMap<String, Tensor>,
    pub outputs: HashMap<String, Tensor>,
    pub grads: Option<HashMap<String, Tensor>>,
    pub step: Option<HashMap<String, Tensor>>,
    /// Per image, the score `p` of the best finished beam (`decode.json`).
    pub beam_scores: Option<Vec<f64>>,
}

fn json_usize(v: &serde_json::Value, key: &str, file: &Path) -> anyhow::Result<usize> {
    v[key]
        .as_u64()
        .map(|x| x as usize)
        .ok_or_else(|| anyhow!("{}: key {key} missing or not an integer", file.display()))
}

fn optional(path: &Path) -> anyhow::Result<Option<HashMap<String, Tensor>>> {
    if path.exists() {
        Ok(Some(read_safetensors(path)?))
    } else {
        Ok(None)
    }
}

/// Model configuration "A" from `config.json` → `args`.
fn model_config(args: &serde_json::Value, file: &Path) -> anyhow::Result<ModelConfig> {
    let u = |k: &str| json_usize(args, k, file);
    let f = |k: &str| {
        args[k]
            .as_f64()
            .ok_or_else(|| anyhow!("{}: key args.{k} missing or not a number", file.display()))
    };
    Ok(ModelConfig {
        d_model: u("d_model")?,
        d_ff: u("d_ff")?,
        num_heads: u("num_heads")?,
        num_layers: u("num_layers")?,
        dropout: f("dropout")?,
        drop_prob_lm: f("drop_prob_lm")?,
        cmm_size: u("cmm_size")?,
        cmm_dim: u("cmm_dim")?,
        topk: u("topk")?,
        d_vf: u("d_vf")?,
        proj_dim: u("proj_dim")?,
        visual_layers: serde_json::from_value(args["ve_layers"].clone())
            .with_context(|| format!("{}: args.ve_layers", file.display()))?,
        visual_width_per_group: u("ve_width_per_group")?,
        ..ModelConfig::default()
    })
}

impl Fixture {
    /// Reads `dir`; errors name the missing file or key.
    pub fn load(dir: &Path) -> anyhow::Result<Fixture> {
        let file = dir.join("config.json");
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading the fixture's {}", file.display()))?;
        let config: serde_json::Value = serde_json::from_str(&text)
            .with_context(|| format!("{} is not JSON", file.display()))?;
        let model = model_config(&config["args"], &file)?;
        let logit_dim = json_usize(&config, "logit_dim", &file)?;
        let max_len = json_usize(&config["args"], "max_seq_length", &file)?;
        let lambda = config["eval_batch"]["lambd"]
            .as_f64()
            .ok_or_else(|| anyhow!("{}: key eval_batch.lambd missing", file.display()))?;
        let (beam, beam_scores) = Self::decode_json(&dir.join("decode.json"))?;
        Ok(Fixture {
            dir: dir.to_path_buf(),
            model,
            logit_dim,
            lambda,
            max_len,
            beam,
            inputs: read_safetensors(&dir.join("inputs.safetensors"))?,
            outputs: read_safetensors(&dir.join("outputs.safetensors"))?,
            grads: optional(&dir.join("grads.safetensors"))?,
            step: optional(&dir.join("step.safetensors"))?,
            beam_scores,
            config,
        })
    }

    /// Beam width and the best beams' scores from `decode.json`, when the file is there.
    fn decode_json(path: &Path) -> anyhow::Result<(usize, Option<Vec<f64>>)> {
        if !path.exists() {
            return Ok((3, None));
        }
        let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path)?)
            .with_context(|| format!("{} is not JSON", path.display()))?;
        let bs = &v["beam_search"];
        let beam = bs["update_opts"]["beam_size"].as_u64().unwrap_or(3) as usize;
        let scores = bs["done_beams"]
            .as_array()
            .ok_or_else(|| anyhow!("{}: beam_search.done_beams missing", path.display()))?
            .iter()
            .map(|beams| beams[0]["p"].as_f64())
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| anyhow!("{}: a done beam without p", path.display()))?;
        Ok((beam, Some(scores)))
    }

    pub fn weights_path(&self) -> PathBuf {
        self.dir.join("weights.safetensors")
    }

    fn input(&self, key: &str) -> anyhow::Result<Tensor> {
        self.inputs
            .get(key)
            .map(|t| t.shallow_clone())
            .ok_or_else(|| anyhow!("{}/inputs.safetensors: no key {key}", self.dir.display()))
    }

    /// The eval batch of `inputs.safetensors`, on `device`.
    pub fn batch(&self, device: tch::Device) -> anyhow::Result<IthnBatch> {
        Ok(IthnBatch {
            images: self.input("images")?.to_device(device),
            neg_images: self.input("neg_images")?.to_device(device),
            ids: self.input("reports_ids")?.to_device(device),
            masks: self.input("reports_masks")?.to_device(device),
            neg_ids: self.input("neg_reports_ids")?.to_device(device),
            neg_masks: self.input("neg_reports_masks")?.to_device(device),
            lambda: self.lambda,
        })
    }

    /// The reference optimizer's settings (`config.json` → `optimizer`).
    pub fn adam(&self) -> anyhow::Result<AdamConfig> {
        let o = &self.config["optimizer"];
        let missing =
            |k: &str| anyhow!("{}/config.json: optimizer.{k} missing", self.dir.display());
        let betas = o["betas"].as_array().ok_or_else(|| missing("betas"))?;
        let beta = |i: usize| {
            betas
                .get(i)
                .and_then(|b| b.as_f64())
                .ok_or_else(|| missing("betas"))
        };
        Ok(AdamConfig {
            beta1: beta(0)?,
            beta2: beta(1)?,
            eps: o["eps"].as_f64().ok_or_else(|| missing("eps"))?,
            weight_decay: o["weight_decay"]
                .as_f64()
                .ok_or_else(|| missing("weight_decay"))?,
            amsgrad: o["amsgrad"].as_bool().ok_or_else(|| missing("amsgrad"))?,
        })
    }

    /// Learning rates of the two optimizer groups (`optimizer.groups[i].lr`).
    pub fn learning_rates(&self) -> anyhow::Result<Vec<f64>> {
        let groups = self.config["optimizer"]["groups"]
            .as_array()
            .ok_or_else(|| {
                anyhow!(
                    "{}/config.json: optimizer.groups missing",
                    self.dir.display()
                )
            })?;
        groups
            .iter()
            .map(|g| g["lr"].as_f64())
            .collect::<Option<Vec<f64>>>()
            .ok_or_else(|| anyhow!("{}/config.json: a group without lr", self.dir.display()))
    }
}
