//! The process lifecycle around a run, shared by every command that trains or communicates:
//! preemption signals and SLURM requeue ([`signals`]), the one watchdog that ends a job stuck in a
//! collective ([`watchdog`]), the scripted faults of the crash tests ([`fault`]), and the exit
//! codes a batch script acts on.
//!
//! It sits at the bottom of the crate (std, libc, signal-hook and the MPI abort call only), so
//! that the distributed layer (NCCL's watchdog), the checkpoint manager (signal-driven saves) and
//! the trainer all use the same pieces.

pub mod fault;
pub mod signals;
pub mod watchdog;

pub use fault::{raise_sigterm, Fault, FaultError, SavePoint};
pub use signals::{requeue_slurm_job, signal_name, RequeueError, SignalFlag, STOP_SIGNALS};
pub use watchdog::Watchdog;

/// The run finished (all epochs, early stop or `--max-steps`).
pub const EXIT_OK: i32 = 0;
/// An error (bad config, bad data, a failed rank, ...): do not requeue blindly.
pub const EXIT_ERROR: i32 = 1;
/// Bad command line.
pub const EXIT_USAGE: i32 = 2;
/// Stopped by a signal after writing a checkpoint: requeue the job, `--resume auto` continues.
pub const EXIT_PREEMPTED: i32 = 3;
/// The watchdog aborted a phase that exceeded `dist.timeout_s` (a rank hung or died).
pub const EXIT_WATCHDOG: i32 = 4;
/// A second SIGINT: left at once without a checkpoint (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: i32 = 130;
