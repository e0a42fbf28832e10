//! Diagnostic (issue 15): does a checkpoint's decoder read the image? Teacher-forced LM loss
//! per token on a split with each study's own image and with another study's image (the
//! batch's images rolled by one). Equal losses = the decoder ignores the image.
//!   cargo run --example image_reliance -- CHECKPOINT_DIR PREPARED_DIR [val|test] [FINDINGS]
//! With synth's FINDINGS (findings.jsonl) the losses are also given separately for the studies
//! whose phantom shows a finding and for the normal ones: the image can only help the
//! decoder where it shows something, so that gap is the sharper measure.
use ithn_dist::data::loader::Loader;
use ithn_dist::dist::World;
use ithn_dist::model::ithn::lm_loss_sum;
use ithn_dist::model::{ModelCheckpoint, R2GenCmn};
use tch::Device;

fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().collect();
    if a.len() < 3 {
        anyhow::bail!("usage: image_reliance CHECKPOINT_DIR PREPARED_DIR [val|test]");
    }
    let ckpt = ModelCheckpoint::open(std::path::Path::new(&a[1]))?;
    let mut cfg = ckpt.config.clone();
    cfg.data.prepared = a[2].clone().into();
    let split: ithn_dist::dataset::Split = a
        .get(3)
        .map_or("val", String::as_str)
        .parse()
        .map_err(anyhow::Error::msg)?;
    // id → phantom shows a finding (`normal` false in synth's findings.jsonl).
    let abnormal: std::collections::HashMap<String, bool> = match a.get(4) {
        Some(path) => std::fs::read_to_string(path)?
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l)?;
                Ok((
                    v["id"].as_str().unwrap_or_default().to_string(),
                    v["normal"] == false,
                ))
            })
            .collect::<anyhow::Result<_>>()?,
        None => Default::default(),
    };
    // [own, other, tokens] summed over abnormal (0) and normal (1) studies.
    let mut groups = [[0.0f64; 3]; 2];
    let model = R2GenCmn::from_checkpoint(&ckpt, Device::Cpu)?;
    let loader = Loader::new(&cfg, &World::single(), split)?;
    let _g = tch::no_grad_guard();
    let (mut own, mut other, mut n) = (0.0, 0.0, 0.0);
    for k in 0..loader.eval_num_batches() {
        let b = loader.eval_batch(k)?;
        let (att, _) = model.visual(&b.images, false);
        let rolled = att.roll([1], [0]);
        // The share of the first batch's tensors that differs between its images.
        if k == 0 {
            let spread = |x: &tch::Tensor| {
                let m = x.mean_dim(0, true, None);
                ((x - m).norm().double_value(&[]) / x.norm().double_value(&[])).to_string()
            };
            let mem = model.encode(
                &att,
                &model.memory_kv(),
                &ithn_dist::model::layers::Dropout::eval(),
            );
            println!(
                "image-specific share |x − batch mean|/|x|: patch features {}, encoder output {}",
                spread(&att),
                spread(&mem)
            );
        }
        if !abnormal.is_empty() {
            let per_study = |feats: &tch::Tensor| -> (Vec<f64>, Vec<f64>) {
                let (lp, _) = model.forward_teacher(feats, &b.reports_ids, false, None);
                let t = lp.size()[1];
                let target = b.reports_ids.narrow(1, 1, t);
                let mask = b.reports_masks.narrow(1, 1, t).to_kind(lp.kind());
                let nll = -lp.gather(2, &target.unsqueeze(2), false).squeeze_dim(2) * &mask;
                let to_vec = |x: tch::Tensor| Vec::<f64>::try_from(x.to_kind(tch::Kind::Double));
                (
                    to_vec(nll.sum_dim_intlist(1, false, None)).unwrap(),
                    to_vec(mask.sum_dim_intlist(1, false, None)).unwrap(),
                )
            };
            let ((own_s, tokens), (other_s, _)) = (per_study(&att), per_study(&rolled));
            for (i, id) in b.ids.iter().enumerate() {
                let g = &mut groups[usize::from(!abnormal.get(id).copied().unwrap_or(false))];
                g[0] += own_s[i];
                g[1] += other_s[i];
                g[2] += tokens[i];
            }
        }
        for (feats, acc) in [(&att, &mut own), (&rolled, &mut other)] {
            let (lp, _) = model.forward_teacher(feats, &b.reports_ids, false, None);
            let (s, c) = lm_loss_sum(&lp, &b.reports_ids, &b.reports_masks);
            *acc += s.double_value(&[]);
            if std::ptr::eq(feats, &att) {
                n += c.double_value(&[]);
            }
        }
    }
    println!(
        "{split}: LM loss per token own image {:.4}, other image {:.4}",
        own / n,
        other / n
    );
    for (name, g) in ["phantom with findings", "normal phantom"]
        .iter()
        .zip(groups)
    {
        if g[2] > 0.0 {
            println!(
                "  {name}: own {:.4}, other {:.4} ({} tokens)",
                g[0] / g[2],
                g[1] / g[2],
                g[2]
            );
        }
    }
    Ok(())
}
