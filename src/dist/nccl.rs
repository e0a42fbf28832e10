//! NCCL collectives for CUDA tensors (cudarc, loaded at run time).
//!
//! Bootstrap in the llm.c way: rank 0 asks NCCL for a unique id (128 bytes), MPI broadcasts it,
//! every rank joins with `ncclCommInitRank` on its own device (`cuda:local_rank`). Collectives
//! run on the tensors' device memory (`Tensor::data_ptr`) on the legacy default stream, which is
//! the stream libtorch uses unless told otherwise, so they are ordered after the kernels that
//! produced the gradients; the call then waits for the device, so on return the result is ready.
//!
//! The [`Watchdog`] (the crate's one, in [`crate::lifecycle`]) is armed around each call and
//! ends the whole job when one collective takes longer than `dist.timeout_s`: a rank that died
//! or hangs would otherwise leave every other rank waiting in NCCL forever.
//!
//! This machine has no libcuda: cudarc panics when its dynamic loader is touched without it, so
//! [`NcclCollectives::new`] refuses to start unless `tch::Cuda::is_available()`. The code still
//! compiles everywhere (the `nccl` feature of cudarc is always on).

use std::sync::Arc;
use std::time::Duration;

use cudarc::nccl::{result, sys};
use tch::{Device, Kind, Tensor};

use super::collectives::{gather_shape, scatter_slice, Collectives};
use super::{DistError, World};
use crate::lifecycle::Watchdog;

/// One NCCL communicator spanning the MPI world.
pub struct NcclCollectives<'w> {
    world: &'w World,
    comm: sys::ncclComm_t,
    device: i64,
    watchdog: Watchdog,
    // Keeps the CUDA primary context bound while the communicator lives.
    _ctx: Arc<cudarc::driver::CudaContext>,
}

fn nccl_kind(kind: Kind) -> Option<sys::ncclDataType_t> {
    match kind {
        Kind::Float => Some(sys::ncclDataType_t::ncclFloat32),
        Kind::Double => Some(sys::ncclDataType_t::ncclFloat64),
        Kind::Int64 => Some(sys::ncclDataType_t::ncclInt64),
        _ => None,
    }
}

impl<'w> NcclCollectives<'w> {
    /// Joins (or, on rank 0, creates) the NCCL communicator of the world on `device`.
    pub fn new(world: &'w World, device: Device, timeout_s: f64) -> Result<Self, DistError> {
        let fail = |message: String| DistError::Collective {
            rank: world.rank,
            message,
        };
        let Device::Cuda(index) = device else {
            return Err(fail(format!("NCCL needs a CUDA device, got {device:?}")));
        };
        if !tch::Cuda::is_available() {
            return Err(fail(
                "NCCL requested but CUDA is not available on this rank".into(),
            ));
        }
        let ctx = cudarc::driver::CudaContext::new(index)
            .map_err(|e| fail(format!("cannot open CUDA device {index}: {e:?}")))?;
        ctx.bind_to_thread()
            .map_err(|e| fail(format!("cannot bind CUDA device {index}: {e:?}")))?;

        // Rank 0 makes the id; everyone else receives its 128 bytes over MPI.
        let mut bytes = if world.rank == 0 {
            let id = result::get_uniqueid().map_err(|e| {
                fail(format!(
                    "ncclGetUniqueId failed: {e:?} (is libnccl.so on the library path?)"
                ))
            })?;
            id.internal.iter().map(|&c| c as u8).collect()
        } else {
            Vec::new()
        };
        world.broadcast_bytes(0, &mut bytes);
        if bytes.len() != 128 {
            return Err(fail(format!(
                "NCCL unique id has {} bytes, expected 128",
                bytes.len()
            )));
        }
        let mut internal = [0 as std::ffi::c_char; 128];
        for (dst, &src) in internal.iter_mut().zip(&bytes) {
            *dst = src as std::ffi::c_char;
        }
        let id = sys::ncclUniqueId { internal };

        let watchdog = Watchdog::start(Duration::from_secs_f64(timeout_s), world.rank);
        watchdog.arm("NCCL init");
        let mut comm: sys::ncclComm_t = std::ptr::null_mut();
        // SAFETY: `comm` is a valid out-pointer; the id came from ncclGetUniqueId on rank 0.
        let status =
            unsafe { result::comm_init_rank(&mut comm, world.size as i32, id, world.rank as i32) };
        watchdog.disarm();
        status.map_err(|e| fail(format!("ncclCommInitRank failed: {e:?}")))?;
        Ok(NcclCollectives {
            world,
            comm,
            device: index as i64,
            watchdog,
            _ctx: ctx,
        })
    }

    fn err(&self, message: String) -> DistError {
        DistError::Collective {
            rank: self.world.rank,
            message,
        }
    }

    fn dtype(&self, op: &str, t: &Tensor) -> Result<sys::ncclDataType_t, DistError> {
        if t.device() != Device::Cuda(self.device as usize) {
            return Err(self.err(format!(
                "{op}: NCCL communicator lives on cuda:{} but the tensor is on {:?}",
                self.device,
                t.device()
            )));
        }
        nccl_kind(t.kind())
            .ok_or_else(|| self.err(format!("{op}: unsupported tensor kind {:?}", t.kind())))
    }

    /// Runs one enqueued NCCL call under the watchdog and waits for the device.
    fn run(
        &self,
        op: &'static str,
        call: impl FnOnce() -> Result<result::NcclStatus, result::NcclError>,
    ) -> Result<(), DistError> {
        self.watchdog.arm(op);
        let r = call();
        tch::Cuda::synchronize(self.device);
        self.watchdog.disarm();
        r.map(|_| ())
            .map_err(|e| self.err(format!("NCCL {op} failed: {e:?}")))
    }
}

/// The legacy default stream (libtorch's default), as NCCL's stream argument.
fn default_stream() -> sys::cudaStream_t {
    std::ptr::null_mut()
}

impl Collectives for NcclCollectives<'_> {
    fn rank(&self) -> usize {
        self.world.rank
    }
    fn size(&self) -> usize {
        self.world.size
    }
    fn name(&self) -> &'static str {
        "nccl"
    }
    fn device(&self) -> Device {
        Device::Cuda(self.device as usize)
    }

    fn all_reduce_sum(&self, t: &mut Tensor) -> Result<(), DistError> {
        let dt = self.dtype("all_reduce_sum", t)?;
        let c = if t.is_contiguous() {
            t.shallow_clone()
        } else {
            t.contiguous()
        };
        let n = c.numel();
        let ptr = c.data_ptr();
        // SAFETY: `c` is a contiguous device tensor of `n` elements of type `dt`, alive for the call.
        self.run("all_reduce", || unsafe {
            result::all_reduce(
                ptr,
                ptr,
                n,
                dt,
                sys::ncclRedOp_t::ncclSum,
                self.comm,
                default_stream(),
            )
        })?;
        if !t.is_contiguous() {
            tch::no_grad(|| t.copy_(&c));
        }
        Ok(())
    }

    fn all_gather(&self, t: &Tensor) -> Result<Tensor, DistError> {
        self.dtype("all_gather", t)?;
        let Some(&local) = t.size().first() else {
            return Err(self.err("all_gather: a 0-d tensor has no dim 0 to concatenate".into()));
        };
        // Row counts travel over MPI (the control plane); the rows themselves over NCCL.
        let rows: Vec<i64> = self
            .world
            .all_gather_f64(local as f64)
            .iter()
            .map(|&r| r as i64)
            .collect();
        self.all_gather_rows(t, &rows)
    }

    /// NCCL's own all-gather needs equal counts. Unequal ones (the last batch of an epoch, a rank
    /// with 0 samples) are gathered the way PyTorch's ProcessGroupNCCL gathers uneven tensors:
    /// one broadcast per rank from its rows into its slot of the output, all in one NCCL group
    /// (so they run as one collective). Ranks with 0 rows send nothing; no padding travels.
    fn all_gather_rows(&self, t: &Tensor, rows: &[i64]) -> Result<Tensor, DistError> {
        let dt = self.dtype("all_gather", t)?;
        let out_shape = gather_shape(self.world.rank, self.world.size, t, rows)?;
        let inner: i64 = out_shape[1..].iter().product();
        let out = Tensor::empty(out_shape.as_slice(), (t.kind(), t.device()));
        if out.numel() == 0 {
            return Ok(out);
        }
        let send = tch::no_grad(|| t.detach().contiguous());
        if rows.iter().all(|&r| r == rows[0]) {
            // Equal counts (the optimizer's parameter shards): NCCL's own all-gather.
            let count = send.numel();
            let (sp, rp) = (send.data_ptr(), out.data_ptr());
            // SAFETY: `send` holds `count` elements of type `dt`, `out` size·count, both
            // contiguous on this device and alive until `run` has synchronised.
            self.run("all_gather", || unsafe {
                result::all_gather(sp, rp, count, dt, self.comm, default_stream())
            })?;
            return Ok(out);
        }
        let elem = t.kind().elt_size_in_bytes();
        let (sp, rp) = (send.data_ptr(), out.data_ptr().cast::<u8>());
        // Byte offset of each rank's slot in the output.
        let slots: Vec<(usize, usize)> = rows
            .iter()
            .scan(0usize, |at, &r| {
                let count = (r * inner) as usize;
                let slot = (*at, count);
                *at += count * elem;
                Some(slot)
            })
            .collect();
        self.run("all_gather", || {
            result::group_start()?;
            let mut first_err = None;
            for (root, &(byte_offset, count)) in slots.iter().enumerate() {
                if count == 0 {
                    continue;
                }
                // SAFETY: `send` holds this rank's `rows[rank]·inner` elements (only read on
                // the root), the slot lies inside `out` (Σ rows·inner elements), both contiguous
                // on this device and alive until `run` has synchronised.
                let r = unsafe {
                    result::broadcast(
                        sp,
                        rp.add(byte_offset).cast(),
                        count,
                        dt,
                        root as i32,
                        self.comm,
                        default_stream(),
                    )
                };
                if let Err(e) = r {
                    first_err.get_or_insert(e);
                }
            }
            // The group is always closed, also after a failed enqueue.
            let end = result::group_end();
            match first_err {
                Some(e) => Err(e),
                None => end,
            }
        })?;
        Ok(out)
    }

    /// Equal counts (the optimizer's padded gradient shards) use `ncclReduceScatter`, which
    /// moves (size − 1)/size of the tensor per rank, half an all-reduce; unequal counts reduce
    /// everything and keep this rank's rows.
    fn reduce_scatter(&self, t: &Tensor, counts: &[i64]) -> Result<Tensor, DistError> {
        let dt = self.dtype("reduce_scatter", t)?;
        let (offset, rows) = scatter_slice(self.world.rank, t, counts)?;
        if counts.iter().any(|&c| c != rows) {
            return self.reduce_scatter_by_all_reduce(t, offset, rows);
        }
        let mut shape = t.size();
        shape[0] = rows;
        let out = Tensor::empty(shape.as_slice(), (t.kind(), t.device()));
        let recvcount = out.numel();
        if recvcount == 0 {
            return Ok(out);
        }
        let send = tch::no_grad(|| t.detach().contiguous());
        let (sp, rp) = (send.data_ptr(), out.data_ptr());
        // SAFETY: `send` holds size·recvcount elements of type `dt` and `out` recvcount, both
        // contiguous on this device and alive until `run` has synchronised.
        self.run("reduce_scatter", || unsafe {
            result::reduce_scatter(
                sp,
                rp,
                recvcount,
                dt,
                sys::ncclRedOp_t::ncclSum,
                self.comm,
                default_stream(),
            )
        })?;
        Ok(out)
    }

    fn broadcast(&self, t: &mut Tensor, root: usize) -> Result<(), DistError> {
        let dt = self.dtype("broadcast", t)?;
        let c = if t.is_contiguous() {
            t.shallow_clone()
        } else {
            t.contiguous()
        };
        let n = c.numel();
        let ptr = c.data_ptr();
        // SAFETY: contiguous device tensor of n elements, alive for the call.
        self.run("broadcast", || unsafe {
            result::broadcast(ptr, ptr, n, dt, root as i32, self.comm, default_stream())
        })?;
        if !t.is_contiguous() {
            tch::no_grad(|| t.copy_(&c));
        }
        Ok(())
    }

    fn barrier(&self) -> Result<(), DistError> {
        self.world.barrier();
        Ok(())
    }
}

impl Drop for NcclCollectives<'_> {
    fn drop(&mut self) {
        // SAFETY: the communicator was created by ncclCommInitRank and is destroyed once.
        unsafe {
            let _ = result::comm_destroy(self.comm);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_cpu_devices_without_touching_cuda() {
        let w = World::single();
        let e = NcclCollectives::new(&w, Device::Cpu, 1.0)
            .err()
            .expect("must refuse");
        assert!(e.to_string().contains("needs a CUDA device"), "{e}");
    }

    #[test]
    fn maps_supported_kinds() {
        assert!(nccl_kind(Kind::Float).is_some());
        assert!(nccl_kind(Kind::Int64).is_some());
        assert!(nccl_kind(Kind::Uint8).is_none());
    }
}
