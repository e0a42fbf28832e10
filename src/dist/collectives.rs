//! Collective operations on tensors, behind one trait so the training step does not care which
//! library moves the bytes.
//!
//! Three implementations: [`SingleProcess`] (a world of one: every operation is the identity),
//! [`MpiCollectives`] (CPU tensors, through the [`World`]'s MPI communicator) and, for CUDA
//! tensors, the NCCL backend of [`super::nccl`]. [`select`] picks one from the world, the device
//! of the tensors and `dist.backend`.
//!
//! Guarantees every backend keeps:
//! * results are identical on every rank (MPI and NCCL reductions are deterministic for a fixed
//!   world and message size, which the equivalence tests rely on);
//! * `all_gather` concatenates along dim 0 in rank order and accepts unequal first dimensions,
//!   0 included (the last global batch of an epoch may not split evenly, or leave a rank
//!   empty); `all_gather_rows` does the same when every rank already knows every rank's row
//!   count, without exchanging it again, and carries only real rows (no padding);
//! * every operation runs under `no_grad`, so gradients buffers can be reduced in place.

use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::traits::*;
use tch::{Device, Kind, Tensor};

use super::{DistError, World};
use crate::config::Backend;

/// The collective operations the trainer needs. Every rank must call the same operations in the
/// same order with tensors of the same kind (and, except for `all_gather`, the same shape).
pub trait Collectives {
    /// This process's rank.
    fn rank(&self) -> usize;
    /// Number of ranks.
    fn size(&self) -> usize;
    /// Short backend name for logs ("single", "mpi", "nccl").
    fn name(&self) -> &'static str;
    /// Where the tensors this backend carries must live (CPU for MPI, the rank's GPU for NCCL;
    /// CPU for a world of one, which carries anything).
    fn device(&self) -> Device {
        Device::Cpu
    }
    /// Element-wise sum over ranks, written back into `t`.
    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), DistError>;
    /// Concatenation of every rank's `t` along dim 0, rank-major; first dims may differ (and
    /// be 0). Exchanges the row counts first; see [`Collectives::all_gather_rows`].
    fn all_gather(&self, t: &Tensor) -> Result<Tensor, DistError>;
    /// [`Collectives::all_gather`] when the caller knows every rank's row count: `rows[r]` is
    /// rank r's `t.size()[0]` (this rank's must match), trailing shapes are equal everywhere.
    /// Result `[Σ rows, ...]`; only real rows travel. Every rank must pass the same `rows`
    /// (e.g. from one earlier all-gather): a rank whose own count is wrong fails alone.
    /// (The default exchanges the counts again.)
    fn all_gather_rows(&self, t: &Tensor, rows: &[i64]) -> Result<Tensor, DistError> {
        gather_shape(self.rank(), self.size(), t, rows)?;
        self.all_gather(t)
    }
    /// Sums `t` over ranks and returns this rank's rows: rank r gets `counts[r]` rows starting at
    /// `counts[..r].sum()`. `counts` must sum to `t.size()[0]`.
    fn reduce_scatter(&self, t: &Tensor, counts: &[i64]) -> Result<Tensor, DistError>;

    /// The reduce-scatter of unequal counts, which neither MPI's `Reduce_scatter_block` nor
    /// NCCL's `ReduceScatter` takes: sum the whole tensor, keep this rank's `rows` from
    /// `offset`. Twice a reduce-scatter's traffic; only uneven splits take it.
    fn reduce_scatter_by_all_reduce(
        &self,
        t: &Tensor,
        offset: i64,
        rows: i64,
    ) -> Result<Tensor, DistError> {
        let mut full = tch::no_grad(|| t.detach().copy());
        self.all_reduce_sum(&mut full)?;
        Ok(full.narrow(0, offset, rows).copy())
    }
    /// Copies `root`'s `t` into every rank's `t` (same shape and kind everywhere).
    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), DistError>;
    /// Returns when every rank has called it.
    fn barrier(&self) -> Result<(), DistError>;
}

/// Checks `counts` against the tensor and returns this rank's (offset, rows).
pub(crate) fn scatter_slice(
    rank: usize,
    t: &Tensor,
    counts: &[i64],
) -> Result<(i64, i64), DistError> {
    let rows = t.size().first().copied().unwrap_or(0);
    if counts.iter().sum::<i64>() != rows || rank >= counts.len() {
        return Err(DistError::Collective {
            rank,
            message: format!(
                "reduce_scatter: counts {counts:?} do not split the {rows} rows of the tensor"
            ),
        });
    }
    Ok((counts[..rank].iter().sum(), counts[rank]))
}

/// Checks `rows` against the world and this rank's tensor; returns the output shape.
pub(crate) fn gather_shape(
    rank: usize,
    size: usize,
    t: &Tensor,
    rows: &[i64],
) -> Result<Vec<i64>, DistError> {
    let shape = t.size();
    let fail = |message: String| DistError::Collective { rank, message };
    if shape.is_empty() {
        return Err(fail(
            "all_gather: a 0-d tensor has no dim 0 to concatenate".into(),
        ));
    }
    if rows.len() != size || rows.get(rank) != Some(&shape[0]) || rows.iter().any(|&r| r < 0) {
        return Err(fail(format!(
            "all_gather: row counts {rows:?} do not fit a world of {size} where this rank holds {} rows",
            shape[0]
        )));
    }
    let mut out = shape;
    out[0] = rows.iter().sum();
    Ok(out)
}

/// A world of one process.
#[derive(Debug, Default, Clone, Copy)]
pub struct SingleProcess;

impl Collectives for SingleProcess {
    fn rank(&self) -> usize {
        0
    }
    fn size(&self) -> usize {
        1
    }
    fn name(&self) -> &'static str {
        "single"
    }
    fn all_reduce_sum(&self, _t: &mut Tensor) -> Result<(), DistError> {
        Ok(())
    }
    fn all_gather(&self, t: &Tensor) -> Result<Tensor, DistError> {
        Ok(t.detach().copy())
    }
    fn all_gather_rows(&self, t: &Tensor, rows: &[i64]) -> Result<Tensor, DistError> {
        gather_shape(0, 1, t, rows)?;
        Ok(t.detach().copy())
    }
    fn reduce_scatter(&self, t: &Tensor, counts: &[i64]) -> Result<Tensor, DistError> {
        let (offset, rows) = scatter_slice(0, t, counts)?;
        Ok(t.detach().narrow(0, offset, rows).copy())
    }
    fn broadcast(&self, _t: &mut Tensor, _root: usize) -> Result<(), DistError> {
        Ok(())
    }
    fn barrier(&self) -> Result<(), DistError> {
        Ok(())
    }
}

/// Collectives over the MPI communicator of a [`World`], for CPU tensors of kind f32, f64 or
/// i64. Tensors are reduced in their own memory (no intermediate `Vec` on the receive side).
pub struct MpiCollectives<'w> {
    world: &'w World,
}

impl<'w> MpiCollectives<'w> {
    pub fn new(world: &'w World) -> Self {
        MpiCollectives { world }
    }

    fn err(&self, message: String) -> DistError {
        DistError::Collective {
            rank: self.world.rank,
            message,
        }
    }

    /// Rejects tensors MPI cannot carry directly.
    fn check(&self, op: &str, t: &Tensor) -> Result<(), DistError> {
        if t.device() != Device::Cpu {
            return Err(self.err(format!(
                "{op}: the MPI backend carries CPU tensors only, got one on {:?} (set dist.backend = \"nccl\" or \"auto\")",
                t.device()
            )));
        }
        match t.kind() {
            Kind::Float | Kind::Double | Kind::Int64 => Ok(()),
            k => Err(self.err(format!(
                "{op}: unsupported tensor kind {k:?} (f32, f64, i64)"
            ))),
        }
    }

    /// Gathers one i64 per rank.
    fn gather_counts(&self, value: i64) -> Vec<i64> {
        match self.world.comm() {
            Some(c) => {
                let mut out = vec![0i64; self.world.size];
                c.all_gather_into(&value, &mut out[..]);
                out
            }
            None => vec![value],
        }
    }
}

/// Views a contiguous CPU tensor's storage as a slice.
///
/// # Safety
/// `t` must be contiguous, on the CPU, of the element type `T`, and not aliased elsewhere
/// while the slice lives. (A libtorch handle is shared by design, so the exclusive borrow is
/// the caller's promise, not something `&Tensor` could express.)
#[allow(clippy::mut_from_ref)]
unsafe fn as_slice_mut<T>(t: &Tensor) -> &mut [T] {
    let n = t.numel();
    if n == 0 {
        return &mut [];
    }
    std::slice::from_raw_parts_mut(t.data_ptr() as *mut T, n)
}

fn all_reduce_typed<T: Equivalence + Copy>(comm: &mpi::topology::SimpleCommunicator, t: &Tensor) {
    // SAFETY: the caller made `t` contiguous CPU of kind T.
    let buf = unsafe { as_slice_mut::<T>(t) };
    let send = buf.to_vec();
    comm.all_reduce_into(&send[..], buf, SystemOperation::sum());
}

fn all_gather_typed<T: Equivalence + Copy>(
    comm: &mpi::topology::SimpleCommunicator,
    t: &Tensor,
    out: &Tensor,
    counts: &[i32],
) {
    // SAFETY: both tensors are contiguous CPU of kind T, freshly made by the caller.
    let send = unsafe { as_slice_mut::<T>(t) };
    let recv = unsafe { as_slice_mut::<T>(out) };
    let displs: Vec<i32> = counts
        .iter()
        .scan(0i32, |acc, &c| {
            let d = *acc;
            *acc += c;
            Some(d)
        })
        .collect();
    let mut part = PartitionMut::new(recv, counts, &displs[..]);
    comm.all_gather_varcount_into(&*send, &mut part);
}

fn reduce_scatter_typed<T: Equivalence + Copy>(
    comm: &mpi::topology::SimpleCommunicator,
    t: &Tensor,
    out: &Tensor,
) {
    // SAFETY: both tensors are contiguous CPU of kind T; `out` is freshly made by the caller and
    // holds 1/size of `t`'s elements.
    let send = unsafe { as_slice_mut::<T>(t) };
    let recv = unsafe { as_slice_mut::<T>(out) };
    comm.reduce_scatter_block_into(&*send, recv, SystemOperation::sum());
}

fn broadcast_typed<T: Equivalence + Copy>(
    comm: &mpi::topology::SimpleCommunicator,
    t: &Tensor,
    root: usize,
) {
    // SAFETY: the caller made `t` contiguous CPU of kind T.
    let buf = unsafe { as_slice_mut::<T>(t) };
    comm.process_at_rank(root as i32).broadcast_into(buf);
}

/// Runs `f` on a contiguous version of `t`, copying back when `t` itself was not contiguous.
fn on_contiguous(t: &mut Tensor, f: impl FnOnce(&Tensor)) {
    tch::no_grad(|| {
        if t.is_contiguous() {
            f(t);
        } else {
            let c = t.contiguous();
            f(&c);
            t.copy_(&c);
        }
    })
}

macro_rules! dispatch_kind {
    ($kind:expr, $f:ident, $($arg:expr),*) => {
        match $kind {
            Kind::Float => $f::<f32>($($arg),*),
            Kind::Double => $f::<f64>($($arg),*),
            _ => $f::<i64>($($arg),*),
        }
    };
}

impl Collectives for MpiCollectives<'_> {
    fn rank(&self) -> usize {
        self.world.rank
    }
    fn size(&self) -> usize {
        self.world.size
    }
    fn name(&self) -> &'static str {
        "mpi"
    }

    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), DistError> {
        self.check("all_reduce_sum", t)?;
        if let Some(comm) = self.world.comm() {
            let kind = t.kind();
            on_contiguous(t, |c| dispatch_kind!(kind, all_reduce_typed, comm, c));
        }
        Ok(())
    }

    fn all_gather(&self, t: &Tensor) -> Result<Tensor, DistError> {
        self.check("all_gather", t)?;
        let shape = t.size();
        if shape.is_empty() {
            return Err(self.err("all_gather: a 0-d tensor has no dim 0 to concatenate".into()));
        }
        if self.world.comm().is_none() {
            return Ok(t.detach().copy());
        }
        let inner: i64 = shape[1..].iter().product();
        // Every rank must agree on the trailing shape, else the concatenation is meaningless.
        let inners = self.gather_counts(inner);
        if let Some(bad) = inners.iter().position(|&i| i != inner) {
            return Err(self.err(format!(
                "all_gather: trailing shape {:?} ({inner} elements per row) differs from rank {bad}'s ({} per row)",
                &shape[1..],
                inners[bad]
            )));
        }
        let rows = self.gather_counts(shape[0]);
        self.all_gather_rows(t, &rows)
    }

    fn all_gather_rows(&self, t: &Tensor, rows: &[i64]) -> Result<Tensor, DistError> {
        self.check("all_gather", t)?;
        let out_shape = gather_shape(self.world.rank, self.world.size, t, rows)?;
        let Some(comm) = self.world.comm() else {
            return Ok(t.detach().copy());
        };
        let inner: i64 = out_shape[1..].iter().product();
        let counts = rows
            .iter()
            .map(|r| i32::try_from(r * inner))
            .collect::<Result<Vec<i32>, _>>()
            .map_err(|_| {
                self.err(format!(
                    "all_gather: {rows:?} rows of {inner} elements exceed MPI's 2^31 element counts"
                ))
            })?;
        let out = tch::no_grad(|| {
            let send = t.detach().contiguous();
            let out = Tensor::empty(out_shape.as_slice(), (t.kind(), Device::Cpu));
            dispatch_kind!(t.kind(), all_gather_typed, comm, &send, &out, &counts);
            out
        });
        Ok(out)
    }

    /// Equal counts (the optimizer's padded gradient shards) go through
    /// `MPI_Reduce_scatter_block`: each rank receives only its part, half an all-reduce's
    /// traffic. Unequal counts reduce everything and keep this rank's rows.
    fn reduce_scatter(&self, t: &Tensor, counts: &[i64]) -> Result<Tensor, DistError> {
        self.check("reduce_scatter", t)?;
        let (offset, rows) = scatter_slice(self.world.rank, t, counts)?;
        let Some(comm) = self.world.comm() else {
            return Ok(tch::no_grad(|| t.detach().narrow(0, offset, rows).copy()));
        };
        if counts.iter().any(|&c| c != rows) {
            return self.reduce_scatter_by_all_reduce(t, offset, rows);
        }
        let mut shape = t.size();
        shape[0] = rows;
        let out = Tensor::empty(shape.as_slice(), (t.kind(), Device::Cpu));
        let per_rank = out.numel();
        if i32::try_from(per_rank).is_err() {
            return Err(self.err(format!(
                "reduce_scatter: {per_rank} elements per rank exceed MPI's 2^31 element counts"
            )));
        }
        if per_rank > 0 {
            tch::no_grad(|| {
                let send = t.detach().contiguous();
                dispatch_kind!(t.kind(), reduce_scatter_typed, comm, &send, &out);
            });
        }
        Ok(out)
    }

    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), DistError> {
        self.check("broadcast", t)?;
        if root >= self.world.size {
            return Err(self.err(format!(
                "broadcast: root {root} outside a world of {}",
                self.world.size
            )));
        }
        let Some(comm) = self.world.comm() else {
            return Ok(());
        };
        let numel = t.numel() as i64;
        let all = self.gather_counts(numel);
        if let Some(bad) = all.iter().position(|&n| n != numel) {
            return Err(self.err(format!(
                "broadcast: this rank holds {numel} elements but rank {bad} holds {}",
                all[bad]
            )));
        }
        let kind = t.kind();
        on_contiguous(t, |c| dispatch_kind!(kind, broadcast_typed, comm, c, root));
        Ok(())
    }

    fn barrier(&self) -> Result<(), DistError> {
        self.world.barrier();
        Ok(())
    }
}

/// Chooses the backend for tensors living on `device`: NCCL for CUDA tensors (when built with
/// a usable NCCL), MPI for CPU tensors; a one-rank world always gets [`SingleProcess`].
pub fn select<'w>(
    world: &'w World,
    backend: Backend,
    device: Device,
    timeout_s: f64,
) -> Result<Box<dyn Collectives + 'w>, DistError> {
    if world.size == 1 {
        return Ok(Box::new(SingleProcess));
    }
    let want_nccl = match backend {
        Backend::Nccl => true,
        Backend::Mpi => false,
        Backend::Auto => device.is_cuda(),
    };
    if want_nccl {
        if !device.is_cuda() {
            return Err(DistError::Collective {
                rank: world.rank,
                message:
                    "dist.backend = \"nccl\" needs CUDA tensors, but this rank runs on the CPU"
                        .into(),
            });
        }
        let nccl = super::nccl::NcclCollectives::new(world, device, timeout_s)?;
        return Ok(Box::new(nccl));
    }
    Ok(Box::new(MpiCollectives::new(world)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_process_is_identity() {
        let c = SingleProcess;
        let mut t = Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
        c.all_reduce_sum(&mut t).unwrap();
        assert_eq!(Vec::<f32>::try_from(&t).unwrap(), vec![1.0, 2.0, 3.0]);
        let g = c.all_gather(&t.view([3, 1])).unwrap();
        assert_eq!(g.size(), vec![3, 1]);
        let s = c.reduce_scatter(&t, &[3]).unwrap();
        assert_eq!(Vec::<f32>::try_from(&s).unwrap(), vec![1.0, 2.0, 3.0]);
        assert!(c.reduce_scatter(&t, &[2]).is_err());
    }

    #[test]
    fn mpi_backend_without_communicator_is_identity_and_checks_kinds() {
        let w = World::single();
        let c = MpiCollectives::new(&w);
        let mut t = Tensor::from_slice(&[1i64, 2, 3]);
        c.all_reduce_sum(&mut t).unwrap();
        assert_eq!(Vec::<i64>::try_from(&t).unwrap(), vec![1, 2, 3]);
        let mut h = Tensor::from_slice(&[1u8, 2]);
        let e = c.all_reduce_sum(&mut h).unwrap_err().to_string();
        assert!(e.contains("unsupported tensor kind"), "{e}");
        let s = c
            .reduce_scatter(&Tensor::from_slice(&[1.0f64, 2.0, 3.0, 4.0]), &[1, 3])
            .unwrap();
        assert_eq!(Vec::<f64>::try_from(&s).unwrap(), vec![1.0]);
    }

    #[test]
    fn select_gives_single_for_one_rank() {
        let w = World::single();
        let c = select(&w, Backend::Auto, Device::Cpu, 10.0).unwrap();
        assert_eq!(c.name(), "single");
    }
}
