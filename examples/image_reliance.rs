//! Diagnostic (issue 15): does a checkpoint's decoder read the image? Teacher-forced LM loss
//! per token on a split with each study's own image and with another study's image (the
//! batch's images rolled by one). Equal losses = the decoder ignores the image.
//!   cargo run --example image_reliance -- CHECKPOINT_DIR PREPARED_DIR [val|test]
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
    cfg.data.prepared = a[2].clone();
    let split = a.get(3).map_or("val", String::as_str);
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
    Ok(())
}
