//! The process group: who am I, how many are we, which device is mine.
//!
//! One [`World`] is built in `main` and passed down by reference. Under `mpirun` or `srun` it
//! initialises MPI (the communicator is the truth; the node-local rank comes from a
//! shared-memory split, not from environment variables) and checks that the launcher agrees
//! with MPI — Open MPI under `srun` without PMIx silently starts N singletons, each "rank 0 of
//! 1", which would train N independent models. Without a launcher, [`World::single`] runs
//! everything in one process without touching MPI.

use mpi::collective::SystemOperation;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::traits::*;

/// Errors of the distributed layer; each names the rank that saw it.
#[derive(Debug, thiserror::Error)]
pub enum DistError {
    #[error(
        "rank {rank}: the launcher started {expected} tasks ({source_var}) but MPI sees a world of {got}; \
         Open MPI was probably started by srun without PMIx support, so every task is its own \
         singleton. Use `srun --mpi=pmix` (check `srun --mpi=list`) or launch with mpirun inside \
         the allocation (launch/slurm/train.sbatch does)"
    )]
    WorldMismatch {
        rank: usize,
        expected: usize,
        got: usize,
        source_var: &'static str,
    },
    #[error("MPI could not be initialised (already initialised, or the MPI library failed)")]
    InitFailed,
    #[error("rank {rank}: {message}")]
    Collective { rank: usize, message: String },
    #[error(
        "rank {rank}: parameters diverged across ranks at step {step}: checksums {checksums:?}"
    )]
    Diverged {
        rank: usize,
        step: u64,
        checksums: Vec<f64>,
    },
}

/// Rank, size and node-local placement of this process.
pub struct World {
    pub rank: usize,
    pub size: usize,
    pub local_rank: usize,
    pub local_size: usize,
    comm: Option<SimpleCommunicator>,
    // Dropping the universe finalises MPI, so it lives exactly as long as the World.
    _universe: Option<mpi::environment::Universe>,
}

impl std::fmt::Debug for World {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("World")
            .field("rank", &self.rank)
            .field("size", &self.size)
            .field("local_rank", &self.local_rank)
            .field("local_size", &self.local_size)
            .field("mpi", &self.comm.is_some())
            .finish()
    }
}

/// Environment variables by which launchers announce a multi-process job.
const LAUNCHER_VARS: [&str; 5] = [
    "OMPI_COMM_WORLD_SIZE",
    "PMIX_RANK",
    "PMI_RANK",
    "SLURM_PROCID",
    "ITHN_FORCE_MPI",
];

impl World {
    /// A one-process world that never calls MPI.
    pub fn single() -> World {
        World {
            rank: 0,
            size: 1,
            local_rank: 0,
            local_size: 1,
            comm: None,
            _universe: None,
        }
    }

    /// MPI when a launcher is detected, else [`World::single`].
    pub fn init() -> Result<World, DistError> {
        if LAUNCHER_VARS.iter().any(|v| std::env::var_os(v).is_some()) {
            Self::init_mpi()
        } else {
            Ok(Self::single())
        }
    }

    /// Initialises MPI and checks the world against the launcher's view.
    pub fn init_mpi() -> Result<World, DistError> {
        let universe = mpi::initialize().ok_or(DistError::InitFailed)?;
        let comm = universe.world();
        let rank = comm.rank() as usize;
        let size = comm.size() as usize;
        let local = comm.split_shared(comm.rank());
        let local_rank = local.rank() as usize;
        let local_size = local.size() as usize;
        check_launcher(rank, size)?;
        Ok(World {
            rank,
            size,
            local_rank,
            local_size,
            comm: Some(comm),
            _universe: Some(universe),
        })
    }

    pub fn is_root(&self) -> bool {
        self.rank == 0
    }

    /// The MPI communicator, absent in a single-process world.
    pub fn comm(&self) -> Option<&SimpleCommunicator> {
        self.comm.as_ref()
    }

    pub fn barrier(&self) {
        if let Some(c) = &self.comm {
            c.barrier();
        }
    }

    /// In-place element-wise sum over ranks.
    pub fn all_reduce_sum_f64(&self, values: &mut [f64]) {
        if let Some(c) = &self.comm {
            let send = values.to_vec();
            c.all_reduce_into(&send[..], values, SystemOperation::sum());
        }
    }

    /// In-place element-wise sum over ranks.
    pub fn all_reduce_sum_f32(&self, values: &mut [f32]) {
        if let Some(c) = &self.comm {
            let send = values.to_vec();
            c.all_reduce_into(&send[..], values, SystemOperation::sum());
        }
    }

    /// In-place element-wise maximum over ranks (used to agree on flags such as a pending signal).
    pub fn all_reduce_max_u64(&self, values: &mut [u64]) {
        if let Some(c) = &self.comm {
            let send = values.to_vec();
            c.all_reduce_into(&send[..], values, SystemOperation::max());
        }
    }

    /// Broadcasts a byte buffer of any length from `root` (length first, then the bytes).
    pub fn broadcast_bytes(&self, root: usize, bytes: &mut Vec<u8>) {
        if let Some(c) = &self.comm {
            let r = c.process_at_rank(root as i32);
            let mut len = bytes.len() as u64;
            r.broadcast_into(&mut len);
            bytes.resize(len as usize, 0);
            r.broadcast_into(&mut bytes[..]);
        }
    }

    /// Gathers one f64 from every rank, in rank order, on every rank.
    pub fn all_gather_f64(&self, value: f64) -> Vec<f64> {
        match &self.comm {
            Some(c) => {
                let mut out = vec![0.0f64; self.size];
                c.all_gather_into(&value, &mut out[..]);
                out
            }
            None => vec![value],
        }
    }

    /// Ends every process of the job at once (used when a rank cannot continue, so that the
    /// others do not wait forever in a collective).
    pub fn abort(&self, code: i32) -> ! {
        match &self.comm {
            Some(c) => c.abort(code),
            None => std::process::exit(code),
        }
    }
}

/// Compares the MPI world size with what the launcher says it started.
fn check_launcher(rank: usize, size: usize) -> Result<(), DistError> {
    for var in ["SLURM_NTASKS", "OMPI_COMM_WORLD_SIZE"] {
        // Inside an sbatch allocation SLURM_NTASKS is set for the batch shell too; mpirun started
        // from there exports OMPI_COMM_WORLD_SIZE, which is the better witness, so prefer it.
        if var == "SLURM_NTASKS" && std::env::var_os("OMPI_COMM_WORLD_SIZE").is_some() {
            continue;
        }
        if var == "SLURM_NTASKS" && std::env::var_os("SLURM_STEP_ID").is_none() {
            continue; // the batch shell itself, not a job step started by srun
        }
        if let Some(expected) = std::env::var(var)
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
        {
            if expected != size {
                return Err(DistError::WorldMismatch {
                    rank,
                    expected,
                    got: size,
                    source_var: if var == "SLURM_NTASKS" {
                        "SLURM_NTASKS"
                    } else {
                        "OMPI_COMM_WORLD_SIZE"
                    },
                });
            }
        }
    }
    Ok(())
}
