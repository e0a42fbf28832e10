//! Test-only collectives: W "ranks" as threads of one process, exchanging tensors through
//! shared slots and a barrier. They let unit tests run the distributed step on every kind of
//! split (empty ranks, uneven batches) in milliseconds; the real MPI path is covered by the
//! integration tests that run under `mpirun`.

use std::sync::{Arc, Barrier, Mutex};

use tch::Tensor;

use super::collectives::{scatter_slice, Collectives};
use super::DistError;

struct Hub {
    barrier: Barrier,
    slots: Mutex<Vec<Option<Tensor>>>,
}

/// One thread's view of an in-process world.
pub struct ThreadCollectives {
    rank: usize,
    size: usize,
    hub: Arc<Hub>,
}

impl ThreadCollectives {
    /// The `size` members of one world (hand one to each thread).
    pub fn world(size: usize) -> Vec<ThreadCollectives> {
        let hub = Arc::new(Hub {
            barrier: Barrier::new(size),
            slots: Mutex::new((0..size).map(|_| None).collect()),
        });
        (0..size)
            .map(|rank| ThreadCollectives {
                rank,
                size,
                hub: Arc::clone(&hub),
            })
            .collect()
    }

    /// Every rank's tensor, in rank order (collective).
    fn exchange(&self, t: &Tensor) -> Vec<Tensor> {
        let copy = tch::no_grad(|| t.detach().copy());
        self.hub.slots.lock().expect("slots")[self.rank] = Some(copy);
        self.hub.barrier.wait();
        let all: Vec<Tensor> = self
            .hub
            .slots
            .lock()
            .expect("slots")
            .iter()
            .map(|s| s.as_ref().expect("every rank wrote").shallow_clone())
            .collect();
        // Nobody may overwrite a slot before everyone has read it.
        self.hub.barrier.wait();
        all
    }
}

impl Collectives for ThreadCollectives {
    fn rank(&self) -> usize {
        self.rank
    }
    fn size(&self) -> usize {
        self.size
    }
    fn name(&self) -> &'static str {
        "threads"
    }
    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), DistError> {
        let all = self.exchange(t);
        tch::no_grad(|| {
            let mut sum = all[0].copy();
            for o in &all[1..] {
                sum += o;
            }
            t.copy_(&sum);
        });
        Ok(())
    }
    fn all_gather(&self, t: &Tensor) -> Result<Tensor, DistError> {
        let all = self.exchange(t);
        Ok(Tensor::cat(&all, 0))
    }
    fn reduce_scatter(&self, t: &Tensor, counts: &[i64]) -> Result<Tensor, DistError> {
        let (offset, rows) = scatter_slice(self.rank, t, counts)?;
        let mut full = t.detach().copy();
        self.all_reduce_sum(&mut full)?;
        Ok(full.narrow(0, offset, rows).copy())
    }
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), DistError> {
        let all = self.exchange(t);
        tch::no_grad(|| t.copy_(&all[root]));
        Ok(())
    }
    fn barrier(&self) -> Result<(), DistError> {
        self.hub.barrier.wait();
        Ok(())
    }
}
