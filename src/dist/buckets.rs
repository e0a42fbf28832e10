//! Gradient buckets: many small all-reduces fused into a few large ones.
//!
//! A model has hundreds of parameter tensors; one collective each would pay the latency
//! hundreds of times. Like DDP, gradients are flattened into buckets of about `dist.bucket_mb`
//! MiB in *reverse* parameter order (the order backward produces them), one all-reduce per
//! bucket, then copied back. The plan depends only on the parameter shapes, so every rank
//! builds the same buckets and issues the same collectives in the same order — which is what
//! keeps MPI/NCCL from deadlocking or mixing buffers.
//!
//! [`GradSync`] adds gradient accumulation: with `train.accumulation_steps = k`, gradients are
//! summed locally over k micro-steps and communicated once, on the last.

use tch::{Kind, Tensor};

use super::collectives::Collectives;
use super::DistError;

/// A fixed partition of parameter indices into buckets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketPlan {
    /// Each bucket lists parameter indices (into the slice the plan was built from).
    pub buckets: Vec<Vec<usize>>,
}

impl BucketPlan {
    /// Groups parameters (given by element count and element size in bytes) into buckets of at
    /// most `bucket_bytes`, walking from the last parameter to the first. A parameter larger than
    /// a bucket gets a bucket of its own; no bucket is empty.
    pub fn new(numels: &[usize], elem_bytes: usize, bucket_bytes: usize) -> BucketPlan {
        let mut buckets = Vec::new();
        let mut current: Vec<usize> = Vec::new();
        let mut current_bytes = 0usize;
        for i in (0..numels.len()).rev() {
            let bytes = numels[i] * elem_bytes;
            if !current.is_empty() && current_bytes + bytes > bucket_bytes {
                buckets.push(std::mem::take(&mut current));
                current_bytes = 0;
            }
            current.push(i);
            current_bytes += bytes;
        }
        if !current.is_empty() {
            buckets.push(current);
        }
        BucketPlan { buckets }
    }

    /// The plan for these parameters with buckets of `bucket_mb` MiB (f32 gradients).
    pub fn for_params(params: &[Tensor], bucket_mb: f64) -> BucketPlan {
        let numels: Vec<usize> = params.iter().map(|p| p.numel()).collect();
        let bytes = (bucket_mb * 1024.0 * 1024.0).max(1.0) as usize;
        BucketPlan::new(&numels, 4, bytes)
    }

    /// Sums the gradients of `params` over ranks, bucket by bucket. A parameter without a
    /// gradient on this rank contributes zeros (and gets a zero gradient), so every rank sends
    /// the same number of elements even when some parameter was unused locally.
    pub fn all_reduce_grads(
        &self,
        params: &[Tensor],
        coll: &dyn Collectives,
    ) -> Result<(), DistError> {
        if coll.size() == 1 {
            return Ok(());
        }
        // Materialise missing gradients first (needs autograd), then communicate without it.
        let all_grads: Vec<Tensor> = tch::with_grad(|| params.iter().map(grad_or_zeros).collect());
        tch::no_grad(|| {
            for bucket in &self.buckets {
                let grads: Vec<Tensor> = bucket
                    .iter()
                    .map(|&i| all_grads[i].shallow_clone())
                    .collect();
                // One bucket, one kind: the first gradient's (f32 in training, f64 in tests).
                let kind = grads[0].kind();
                let flat: Vec<Tensor> = grads
                    .iter()
                    .map(|g| g.reshape([-1]).to_kind(kind))
                    .collect();
                let mut fused = Tensor::cat(&flat, 0);
                coll.all_reduce_sum(&mut fused)?;
                let mut offset = 0i64;
                for g in &grads {
                    let n = g.numel() as i64;
                    let mut g = g.shallow_clone();
                    g.copy_(&fused.narrow(0, offset, n).view_as(&g));
                    offset += n;
                }
            }
            Ok(())
        })
    }
}

/// The parameter's gradient tensor, created as zeros when backward never reached it.
pub(crate) fn grad_or_zeros(p: &Tensor) -> Tensor {
    let g = p.grad();
    if g.defined() {
        return g;
    }
    // tch has no setter for `.grad`; a backward of `0·p` makes libtorch allocate a zero
    // gradient for a parameter that took no part in this rank's graph.
    let z = p.detach().zeros_like();
    (p * &z).sum(Kind::Float).backward();
    p.grad()
}

/// Accumulation-aware gradient synchronisation: call [`GradSync::after_backward`] after every
/// micro-step's backward; it communicates on the last micro-step of each optimizer step only.
#[derive(Debug, Clone)]
pub struct GradSync {
    plan: BucketPlan,
    micro_steps: usize,
    seen: usize,
}

impl GradSync {
    pub fn new(plan: BucketPlan, accumulation_steps: usize) -> GradSync {
        GradSync {
            plan,
            micro_steps: accumulation_steps.max(1),
            seen: 0,
        }
    }

    /// Records one micro-step; on the last one of an optimizer step all-reduces the gradients
    /// and returns `true` (the optimizer may step), otherwise returns `false`.
    pub fn after_backward(
        &mut self,
        params: &[Tensor],
        coll: &dyn Collectives,
    ) -> Result<bool, DistError> {
        self.seen += 1;
        if self.seen < self.micro_steps {
            return Ok(false);
        }
        self.seen = 0;
        self.plan.all_reduce_grads(params, coll)?;
        Ok(true)
    }

    pub fn plan(&self) -> &BucketPlan {
        &self.plan
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dist::collectives::SingleProcess;
    use std::cell::RefCell;

    /// Pretends to be rank 0 of a world of 2 where the other rank holds exactly the same
    /// tensor: an all-reduce doubles; records the element count of every call.
    struct Doubling {
        calls: RefCell<Vec<i64>>,
    }

    impl Collectives for Doubling {
        fn rank(&self) -> usize {
            0
        }
        fn size(&self) -> usize {
            2
        }
        fn name(&self) -> &'static str {
            "doubling"
        }
        fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), DistError> {
            self.calls.borrow_mut().push(t.numel() as i64);
            let d = &*t * 2.0;
            t.copy_(&d);
            Ok(())
        }
        fn all_gather(&self, t: &Tensor) -> Result<Tensor, DistError> {
            Ok(Tensor::cat(&[t.detach(), t.detach()], 0))
        }
        fn reduce_scatter(&self, t: &Tensor, _c: &[i64]) -> Result<Tensor, DistError> {
            Ok(t * 2.0)
        }
        fn broadcast(&self, _t: &mut Tensor, _root: usize) -> Result<(), DistError> {
            Ok(())
        }
        fn barrier(&self) -> Result<(), DistError> {
            Ok(())
        }
    }

    fn params_with_grads(sizes: &[i64]) -> Vec<Tensor> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let p = Tensor::zeros([n], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
                let w = Tensor::arange(n, (Kind::Float, tch::Device::Cpu)) + i as f64;
                (&p * &w).sum(Kind::Float).backward();
                p
            })
            .collect()
    }

    #[test]
    fn plan_walks_backwards_and_respects_the_size() {
        let plan = BucketPlan::new(&[10, 10, 10, 100, 5], 4, 80);
        // 5 (20 B) → bucket; 100 (400 B) alone; then 10+10 (80 B); then 10.
        assert_eq!(plan.buckets, vec![vec![4], vec![3], vec![2, 1], vec![0]]);
        let flat: Vec<usize> = plan.buckets.concat();
        assert_eq!(
            flat,
            vec![4, 3, 2, 1, 0],
            "every parameter exactly once, reverse order"
        );
        assert_eq!(
            BucketPlan::new(&[], 4, 80).buckets,
            Vec::<Vec<usize>>::new()
        );
    }

    #[test]
    fn all_reduce_goes_through_buckets_and_unflattens() {
        let params = params_with_grads(&[3, 4, 5]);
        let before: Vec<Vec<f32>> = params
            .iter()
            .map(|p| Vec::try_from(&p.grad()).unwrap())
            .collect();
        let plan = BucketPlan::new(&[3, 4, 5], 4, 32); // [2], [1, 0]
        assert_eq!(plan.buckets, vec![vec![2], vec![1, 0]]);
        let c = Doubling {
            calls: RefCell::new(vec![]),
        };
        plan.all_reduce_grads(&params, &c).unwrap();
        assert_eq!(*c.calls.borrow(), vec![5, 7]);
        for (p, b) in params.iter().zip(before) {
            let after: Vec<f32> = Vec::try_from(&p.grad()).unwrap();
            let want: Vec<f32> = b.iter().map(|x| x * 2.0).collect();
            assert_eq!(after, want);
        }
    }

    #[test]
    fn missing_gradients_become_zeros() {
        let p = Tensor::ones([4], (Kind::Float, tch::Device::Cpu)).set_requires_grad(true);
        let plan = BucketPlan::for_params(std::slice::from_ref(&p), 25.0);
        let c = Doubling {
            calls: RefCell::new(vec![]),
        };
        plan.all_reduce_grads(std::slice::from_ref(&p), &c).unwrap();
        assert_eq!(Vec::<f32>::try_from(&p.grad()).unwrap(), vec![0.0; 4]);
    }

    #[test]
    fn accumulation_communicates_on_the_last_micro_step_only() {
        let params = params_with_grads(&[3, 4]);
        let c = Doubling {
            calls: RefCell::new(vec![]),
        };
        let mut sync = GradSync::new(BucketPlan::new(&[3, 4], 4, 1 << 20), 3);
        assert!(!sync.after_backward(&params, &c).unwrap());
        assert!(!sync.after_backward(&params, &c).unwrap());
        assert!(
            c.calls.borrow().is_empty(),
            "no communication before the last micro-step"
        );
        assert!(sync.after_backward(&params, &c).unwrap());
        assert_eq!(c.calls.borrow().len(), 1, "one fused bucket, once");
        assert!(
            !sync.after_backward(&params, &c).unwrap(),
            "the cycle restarts"
        );
    }

    #[test]
    fn single_process_sends_nothing() {
        let params = params_with_grads(&[2]);
        let plan = BucketPlan::for_params(&params, 25.0);
        plan.all_reduce_grads(&params, &SingleProcess).unwrap();
        assert_eq!(
            Vec::<f32>::try_from(&params[0].grad()).unwrap(),
            vec![0.0, 1.0]
        );
    }
}
