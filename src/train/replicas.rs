//! Keeping the ranks' model replicas identical: rank 0's weights become everyone's at the start,
//! and a cheap checksum every `dist.checksum_every` steps proves they stayed so.

use tch::Kind;

use crate::dist::{Collectives, DistError, World};
use crate::model::R2GenCmn;

/// Copies rank 0's parameters and buffers to every rank.
pub fn broadcast_weights(model: &R2GenCmn, coll: &dyn Collectives) -> Result<(), DistError> {
    for (_, t) in model.registry().state_dict() {
        let mut d = t.detach();
        coll.broadcast(&mut d, 0)?;
    }
    Ok(())
}

/// Σ of every parameter in f64: cheap, and any divergence between ranks shows in it.
pub fn parameter_checksum(model: &R2GenCmn) -> f64 {
    tch::no_grad(|| {
        model
            .parameters()
            .iter()
            .map(|(_, p, _)| p.to_kind(Kind::Double).sum(Kind::Double).double_value(&[]))
            .sum()
    })
}

/// Compares checksums across ranks; an error names the step and every rank's value.
pub fn check_in_sync(world: &World, model: &R2GenCmn, step: u64) -> Result<(), DistError> {
    compare_checksums(
        world.rank,
        step,
        world.all_gather_f64(parameter_checksum(model)),
    )
}

/// Every rank's checksum must be bit-identical (the ranks run the same arithmetic on the same
/// reduced gradients); anything else is a divergence.
fn compare_checksums(rank: usize, step: u64, sums: Vec<f64>) -> Result<(), DistError> {
    if sums.iter().any(|&s| s.to_bits() != sums[0].to_bits()) {
        return Err(DistError::Diverged {
            rank,
            step,
            checksums: sums,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use tch::Device;

    #[test]
    fn diverged_checksums_name_step_and_every_rank() {
        assert!(compare_checksums(1, 5, vec![1.5, 1.5, 1.5]).is_ok());
        let e = compare_checksums(1, 40, vec![1.5, 1.5000000000000002])
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("step 40") && e.contains("1.5000000000000002"),
            "{e}"
        );
        assert!(e.starts_with("rank 1"), "{e}");
    }

    #[test]
    fn checksum_detects_nothing_on_one_rank() {
        let cfg = {
            let mut c = Config::default();
            c.model.d_model = 32;
            c.model.cmm_dim = 32;
            c.model.d_ff = 32;
            c.model.num_heads = 4;
            c.model.num_layers = 1;
            c.model.cmm_size = 8;
            c.model.topk = 4;
            c.model.proj_dim = 8;
            c.model.visual_layers = vec![1, 1, 1, 1];
            c.model.visual_width_per_group = 4;
            c
        };
        let model = R2GenCmn::from_config(&cfg, 10, Device::Cpu).unwrap();
        let w = World::single();
        assert!(check_in_sync(&w, &model, 1).is_ok());
        assert!(parameter_checksum(&model).is_finite());
    }
}
