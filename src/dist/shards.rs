//! ZeRO-1 shards of the gradient buckets: which elements of each fused bucket a rank owns, and
//! the two collectives that move them (Rajbhandari et al. 2020, "ZeRO", stage 1; PyTorch FSDP's
//! flat-parameter sharding).
//!
//! A bucket of the [`BucketPlan`] is the concatenation of its parameters' flattened elements, in
//! the plan's order; `n` elements in all. It is padded with zeros to `size · chunk` elements,
//! `chunk = ⌈n / size⌉`, and rank r owns elements `[r·chunk, (r+1)·chunk)` of it (the last ranks
//! own fewer real elements, or none, when `size` does not divide `n`). Equal chunks let both
//! collectives run as the libraries' fixed-count operations (`MPI_Reduce_scatter_block`,
//! `ncclReduceScatter`, `ncclAllGather`). The part of one parameter inside a rank's chunk is a
//! [`Piece`]; the sharded optimizer steps exactly the pieces of its rank.
//!
//! * [`ShardPlan::reduce_scatter_grads`]: every rank gets the sum over ranks of its chunk of
//!   each bucket's gradients;
//! * [`ShardPlan::all_gather_into`]: every rank's chunks are gathered and copied back into
//!   whole tensors (the updated parameters, or the summed gradients).
//!
//! Reduce-scatter followed by an all-gather of the summed chunks is an all-reduce (the ring
//! all-reduce is built that way): the unsharded multi-rank step uses exactly that, so its
//! gradient sums are the same bits as the sharded step's on every backend and world size.
//! (`MPI_Allreduce` and `MPI_Reduce_scatter_block` may add three or more ranks' values in
//! different orders, which rounds differently.)

use tch::{Kind, Tensor};

use super::buckets::{grad_or_zeros, BucketPlan};
use super::collectives::Collectives;
use super::DistError;

/// The elements `[param_offset, param_offset + len)` of parameter `param` (flattened), which
/// sit at `[chunk_offset, chunk_offset + len)` of this rank's chunk of bucket `bucket`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Piece {
    pub bucket: usize,
    pub param: usize,
    pub param_offset: i64,
    pub chunk_offset: i64,
    pub len: i64,
}

/// One bucket as the shards see it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct BucketShard {
    /// Parameter indices in fused order.
    params: Vec<usize>,
    /// Real elements of the bucket (Σ numel of its parameters).
    numel: i64,
    /// Elements per rank after padding: ⌈numel / size⌉.
    chunk: i64,
}

/// Every bucket's split over the ranks, and this rank's pieces.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardPlan {
    rank: usize,
    size: usize,
    buckets: Vec<BucketShard>,
    pieces: Vec<Piece>,
}

impl ShardPlan {
    /// The shards of `plan` (built over parameters of `numels` elements) for `rank` of `size`.
    pub fn new(plan: &BucketPlan, numels: &[i64], rank: usize, size: usize) -> ShardPlan {
        let w = size.max(1) as i64;
        let mut buckets = Vec::with_capacity(plan.buckets.len());
        let mut pieces = Vec::new();
        for (b, params) in plan.buckets.iter().enumerate() {
            let numel: i64 = params.iter().map(|&i| numels[i]).sum();
            let chunk = (numel + w - 1) / w;
            let (lo, hi) = (rank as i64 * chunk, (rank as i64 + 1) * chunk);
            let mut at = 0i64;
            for &i in params {
                let (start, end) = (at.max(lo), (at + numels[i]).min(hi));
                if start < end {
                    pieces.push(Piece {
                        bucket: b,
                        param: i,
                        param_offset: start - at,
                        chunk_offset: start - lo,
                        len: end - start,
                    });
                }
                at += numels[i];
            }
            buckets.push(BucketShard {
                params: params.clone(),
                numel,
                chunk,
            });
        }
        ShardPlan {
            rank,
            size,
            buckets,
            pieces,
        }
    }

    pub fn rank(&self) -> usize {
        self.rank
    }

    pub fn size(&self) -> usize {
        self.size
    }

    /// This rank's pieces, bucket by bucket, in chunk order.
    pub fn pieces(&self) -> &[Piece] {
        &self.pieces
    }

    /// Elements per rank of each bucket (its chunk, padding included).
    pub fn chunks(&self) -> Vec<i64> {
        self.buckets.iter().map(|b| b.chunk).collect()
    }

    /// Refuses a collective of another world than the plan's.
    fn check(&self, coll: &dyn Collectives) -> Result<(), DistError> {
        if coll.rank() == self.rank && coll.size() == self.size {
            return Ok(());
        }
        Err(DistError::Collective {
            rank: coll.rank(),
            message: format!(
                "optimizer shards were planned for rank {} of {}, but the step runs on rank {} of {}",
                self.rank,
                self.size,
                coll.rank(),
                coll.size()
            ),
        })
    }

    /// Sums the gradients of `params` over ranks and returns this rank's chunk of each bucket
    /// (`[chunk]`, padding last). A parameter without a gradient contributes zeros (and gets a
    /// zero gradient), so every rank sends the same number of elements. Collective.
    pub fn reduce_scatter_grads(
        &self,
        params: &[Tensor],
        coll: &dyn Collectives,
    ) -> Result<Vec<Tensor>, DistError> {
        self.check(coll)?;
        // Materialise missing gradients first (needs autograd), then communicate without it.
        let grads: Vec<Tensor> = tch::with_grad(|| params.iter().map(grad_or_zeros).collect());
        tch::no_grad(|| {
            let mut out = Vec::with_capacity(self.buckets.len());
            for b in &self.buckets {
                // One bucket, one kind: the first gradient's (f32 in training, f64 in tests).
                let kind = grads[b.params[0]].kind();
                let flat: Vec<Tensor> = b
                    .params
                    .iter()
                    .map(|&i| grads[i].reshape([-1]).to_kind(kind))
                    .collect();
                let fused = self.padded(flat, b, kind, &grads[b.params[0]]);
                out.push(coll.reduce_scatter(&fused, &vec![b.chunk; self.size])?);
            }
            Ok(out)
        })
    }

    /// Gathers every rank's `chunks` (one `[chunk]` tensor per bucket, as
    /// [`ShardPlan::reduce_scatter_grads`] returns them) and copies each parameter's elements
    /// into `targets[param]` (whole tensors: parameters or gradients). Collective.
    pub fn all_gather_into(
        &self,
        chunks: &[Tensor],
        targets: &[Tensor],
        coll: &dyn Collectives,
    ) -> Result<(), DistError> {
        self.check(coll)?;
        tch::no_grad(|| {
            for (b, chunk) in self.buckets.iter().zip(chunks) {
                let full = coll.all_gather_rows(chunk, &vec![b.chunk; self.size])?;
                let mut at = 0i64;
                for &i in &b.params {
                    let n = targets[i].numel() as i64;
                    let mut t = targets[i].shallow_clone();
                    t.copy_(&full.narrow(0, at, n).view_as(&t));
                    at += n;
                }
            }
            Ok(())
        })
    }

    /// This rank's chunk of each bucket built from per-piece tensors (`parts[k]` holds the
    /// `len` elements of `pieces()[k]`), padded with zeros, of `kind` on `like`'s device.
    pub fn chunks_of(&self, parts: &[Tensor], kind: Kind, like: &Tensor) -> Vec<Tensor> {
        tch::no_grad(|| {
            let mut per_bucket: Vec<Vec<Tensor>> =
                (0..self.buckets.len()).map(|_| Vec::new()).collect();
            for (piece, t) in self.pieces.iter().zip(parts) {
                per_bucket[piece.bucket].push(t.reshape([-1]).to_kind(kind));
            }
            self.buckets
                .iter()
                .zip(per_bucket)
                .map(|(b, flat)| {
                    let real: i64 = flat.iter().map(|t| t.numel() as i64).sum();
                    let mut flat = flat;
                    let pad = b.chunk - real;
                    if pad > 0 {
                        flat.push(Tensor::zeros([pad], (kind, like.device())));
                    }
                    if flat.is_empty() {
                        Tensor::zeros([0], (kind, like.device()))
                    } else {
                        Tensor::cat(&flat, 0)
                    }
                })
                .collect()
        })
    }

    /// The bucket's fused elements padded with zeros to `size · chunk`.
    fn padded(&self, mut flat: Vec<Tensor>, b: &BucketShard, kind: Kind, like: &Tensor) -> Tensor {
        let pad = b.chunk * self.size as i64 - b.numel;
        if pad > 0 {
            flat.push(Tensor::zeros([pad], (kind, like.device())));
        }
        Tensor::cat(&flat, 0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_every_element_once_over_the_ranks() {
        // Buckets [2], [1, 0] of parameters with 3, 4 and 5 elements; worlds of 1 to 4, and one
        // larger than a bucket (ranks with empty chunks).
        let numels = [3i64, 4, 5];
        let plan = BucketPlan::new(&[3, 4, 5], 4, 32);
        assert_eq!(plan.buckets, vec![vec![2], vec![1, 0]]);
        for size in 1..=6 {
            let mut seen: Vec<Vec<u32>> = numels.iter().map(|&n| vec![0; n as usize]).collect();
            for rank in 0..size {
                let s = ShardPlan::new(&plan, &numels, rank, size);
                assert_eq!(
                    s.chunks(),
                    vec![
                        (5 + size as i64 - 1) / size as i64,
                        (7 + size as i64 - 1) / size as i64
                    ]
                );
                for p in s.pieces() {
                    assert!(p.chunk_offset + p.len <= s.chunks()[p.bucket], "{p:?}");
                    for e in p.param_offset..p.param_offset + p.len {
                        seen[p.param][e as usize] += 1;
                    }
                }
            }
            for (i, s) in seen.iter().enumerate() {
                assert!(
                    s.iter().all(|&c| c == 1),
                    "world {size}: parameter {i}: {s:?}"
                );
            }
        }
        // 7 elements of bucket [1, 0] on 3 ranks: chunks of 3; rank 2 owns the last element only.
        let s = ShardPlan::new(&plan, &numels, 2, 3);
        let last: Vec<&Piece> = s.pieces().iter().filter(|p| p.bucket == 1).collect();
        assert_eq!(
            last,
            vec![&Piece {
                bucket: 1,
                param: 0,
                param_offset: 2,
                chunk_offset: 0,
                len: 1
            }]
        );
    }

    #[test]
    fn chunks_of_pads_and_keeps_piece_order() {
        let plan = BucketPlan::new(&[3, 4], 4, 1 << 20); // one bucket [1, 0]
        let s = ShardPlan::new(&plan, &[3, 4], 1, 2); // chunk 4: param 1's last 0, param 0's 3
        assert_eq!(s.pieces().len(), 1);
        let part = Tensor::from_slice(&[7.0f32, 8.0, 9.0]);
        let c = s.chunks_of(&[part.shallow_clone()], Kind::Float, &part);
        assert_eq!(
            Vec::<f32>::try_from(&c[0]).unwrap(),
            vec![7.0, 8.0, 9.0, 0.0]
        );
    }

    #[test]
    fn a_collective_of_another_world_is_refused() {
        let plan = BucketPlan::new(&[3], 4, 32);
        let s = ShardPlan::new(&plan, &[3], 1, 2);
        let p = Tensor::zeros([3], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let e = s
            .reduce_scatter_grads(&[p], &crate::dist::collectives::SingleProcess)
            .unwrap_err()
            .to_string();
        assert!(e.contains("rank 1 of 2"), "{e}");
    }
}
