//! The sharded optimizer's state as a checkpoint holds it: whole tensors per parameter, the
//! same for every world size, so a run resumes on any number of ranks (elastic 2 → 1, 1 → 2).
//!
//! Each rank holds the moments of its pieces only ([`ShardPlan::pieces`]); they are gathered
//! bucket by bucket with the same all-gather the step uses for the parameters. A parameter's
//! step count is the same on every rank that holds a piece of it; the rank holding its first
//! element reports it.

use tch::{Device, Kind, Tensor};

use super::optim::Adam;
use crate::dist::shards::ShardPlan;
use crate::dist::{Collectives, DistError};

/// The whole state of a sharded `optimizer` as `(key, tensor)` in [`Adam::state_tensors`]'s
/// keys and order (`"{name}.step"`, `.exp_avg`, `.exp_avg_sq`, `.max_exp_avg_sq`, for the
/// parameters that have stepped). `params` and `names` list every parameter in optimizer
/// order. Collective: every rank calls it and gets the same tensors.
pub(super) fn gather(
    optimizer: &Adam,
    shards: &ShardPlan,
    params: &[Tensor],
    names: &[String],
    coll: &dyn Collectives,
) -> Result<Vec<(String, Tensor)>, DistError> {
    let Some(like) = params.first() else {
        return Ok(Vec::new());
    };
    let n = params.len();
    let pieces = shards.pieces();
    // [step per parameter | 1 where it has state], from the rank holding its first element.
    let mut steps = vec![0f64; 2 * n];
    for (k, piece) in pieces.iter().enumerate() {
        if let (0, Some(st)) = (piece.param_offset, optimizer.slot_state(k)) {
            steps[piece.param] = st[0].double_value(&[]);
            steps[n + piece.param] = 1.0;
        }
    }
    let mut t = Tensor::from_slice(&steps).to_device(coll.device());
    coll.all_reduce_sum(&mut t)?;
    let steps =
        Vec::<f64>::try_from(&t.to_device(Device::Cpu)).map_err(|e| DistError::Collective {
            rank: coll.rank(),
            message: format!("optimizer state gather: {e}"),
        })?;
    let kind = like.kind();
    let mut moments: Vec<Vec<Tensor>> = Vec::with_capacity(3);
    for m in 1..4 {
        let parts: Vec<Tensor> = pieces
            .iter()
            .enumerate()
            .map(|(k, p)| match optimizer.slot_state(k) {
                Some(st) => st[m].shallow_clone(),
                None => Tensor::zeros([p.len], (kind, like.device())),
            })
            .collect();
        let chunks = shards.chunks_of(&parts, kind, like);
        let whole: Vec<Tensor> = params.iter().map(|p| p.detach().zeros_like()).collect();
        shards.all_gather_into(&chunks, &whole, coll)?;
        moments.push(whole);
    }
    let mut out = Vec::new();
    for i in (0..n).filter(|&i| steps[n + i] > 0.0) {
        let step = Tensor::from_slice(&[steps[i] as f32])
            .reshape([])
            .to_kind(Kind::Float)
            .to_device(like.device());
        out.push((format!("{}.step", names[i]), step));
        for (m, key) in ["exp_avg", "exp_avg_sq", "max_exp_avg_sq"]
            .iter()
            .enumerate()
        {
            out.push((format!("{}.{key}", names[i]), moments[m][i].shallow_clone()));
        }
    }
    Ok(out)
}
