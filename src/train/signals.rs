//! Preemption signals, exit codes a batch script can act on, SLURM requeue, and the
//! collective watchdog.
//!
//! SIGUSR1 (SLURM's `--signal=B:USR1@T`, forwarded by mpirun), SIGTERM (preemption) and SIGINT
//! only set a flag; the training loop reads it at the next step boundary, where all ranks agree
//! through one all-reduce ([`crate::checkpoint::SaveSchedule::after_step`]), save a checkpoint
//! and leave with [`EXIT_PREEMPTED`]. A second SIGINT (or any of them once the flag is set and
//! SIGINT follows) exits at once with [`EXIT_INTERRUPTED`]: the last complete checkpoint stays
//! valid because saves are atomic.
//!
//! The watchdog covers the other failure: a rank that died or hangs leaves the others blocked
//! in a collective forever. If a step does not complete within `dist.timeout_s`, the watchdog
//! thread aborts the whole MPI job, so every process exits non-zero instead of hanging.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The run finished (all epochs, early stop or `--max-steps`).
pub const EXIT_OK: i32 = 0;
/// An error (bad config, bad data, a failed rank, ...): do not requeue blindly.
pub const EXIT_ERROR: i32 = 1;
/// Bad command line.
pub const EXIT_USAGE: i32 = 2;
/// Stopped by a signal after writing a checkpoint: requeue the job, `--resume auto` continues.
pub const EXIT_PREEMPTED: i32 = 3;
/// The watchdog aborted a step that exceeded `dist.timeout_s` (a rank hung or died).
pub const EXIT_WATCHDOG: i32 = 4;
/// A second SIGINT: left at once without a checkpoint (128 + SIGINT, as shells report it).
pub const EXIT_INTERRUPTED: i32 = 130;

/// The signals that request a checkpoint-and-stop.
pub const STOP_SIGNALS: [i32; 3] = [libc::SIGUSR1, libc::SIGTERM, libc::SIGINT];

/// Records that a stop signal arrived (and which one). Cheap to clone and to poll.
#[derive(Debug, Clone)]
pub struct SignalFlag {
    pending: Arc<AtomicBool>,
    which: Arc<AtomicUsize>,
}

impl SignalFlag {
    /// Installs the handlers for [`STOP_SIGNALS`]. Safe to call more than once per process
    /// (each flag sees every later signal).
    pub fn install() -> std::io::Result<SignalFlag> {
        let pending = Arc::new(AtomicBool::new(false));
        let which = Arc::new(AtomicUsize::new(0));
        // Order matters: the conditional exit must be registered before the flag is set by the
        // same signal, so the first SIGINT only arms it and the second one fires.
        signal_hook::flag::register_conditional_shutdown(
            libc::SIGINT,
            EXIT_INTERRUPTED,
            Arc::clone(&pending),
        )?;
        for sig in STOP_SIGNALS {
            signal_hook::flag::register_usize(sig, Arc::clone(&which), sig as usize)?;
            signal_hook::flag::register(sig, Arc::clone(&pending))?;
        }
        Ok(SignalFlag { pending, which })
    }

    /// A flag nobody sets (tests, or commands that must not be interrupted gracefully).
    pub fn inert() -> SignalFlag {
        SignalFlag {
            pending: Arc::new(AtomicBool::new(false)),
            which: Arc::new(AtomicUsize::new(0)),
        }
    }

    /// The signal this process received, if any.
    pub fn pending(&self) -> Option<i32> {
        self.pending
            .load(Ordering::SeqCst)
            .then(|| self.which.load(Ordering::SeqCst) as i32)
    }

    /// Marks a signal as received (for tests and for in-process stop requests).
    pub fn raise(&self, signal: i32) {
        self.which.store(signal as usize, Ordering::SeqCst);
        self.pending.store(true, Ordering::SeqCst);
    }
}

/// Human name of a stop signal for log lines.
pub fn signal_name(signal: i32) -> &'static str {
    match signal {
        libc::SIGUSR1 => "SIGUSR1",
        libc::SIGTERM => "SIGTERM",
        libc::SIGINT => "SIGINT",
        _ => "signal",
    }
}

/// Errors of `scontrol requeue`.
#[derive(Debug, thiserror::Error)]
pub enum RequeueError {
    #[error("SLURM_JOB_ID is not set: not inside a SLURM job, nothing to requeue")]
    NotInSlurm,
    #[error("cannot run `scontrol requeue {job}`: {source}")]
    Spawn { job: String, source: std::io::Error },
    #[error("`scontrol requeue {job}` failed ({status}): {stderr}")]
    Failed {
        job: String,
        status: String,
        stderr: String,
    },
}

/// Runs `scontrol requeue $SLURM_JOB_ID` (rank 0, after the signal checkpoint is complete).
/// SLURM then ends this allocation and starts the job again once its begin time is reached.
pub fn requeue_slurm_job() -> Result<String, RequeueError> {
    let job = std::env::var("SLURM_JOB_ID").map_err(|_| RequeueError::NotInSlurm)?;
    let out = std::process::Command::new("scontrol")
        .args(["requeue", &job])
        .output()
        .map_err(|source| RequeueError::Spawn {
            job: job.clone(),
            source,
        })?;
    if out.status.success() {
        Ok(job)
    } else {
        Err(RequeueError::Failed {
            job,
            status: out.status.to_string(),
            stderr: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// `last_beat_ms` value meaning "not armed".
const PAUSED: u64 = u64::MAX;

/// Aborts the job when no step completes within the timeout. Dropping it stops the thread.
#[derive(Debug)]
pub struct Watchdog {
    last_beat_ms: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    start: Instant,
}

impl Watchdog {
    /// Starts the watchdog thread, paused: the first [`Watchdog::beat`] (after the first step)
    /// arms it, so start-up (data, weights) is not timed. `rank` is only used in the message.
    pub fn start(timeout: Duration, rank: usize) -> Watchdog {
        let start = Instant::now();
        let last_beat_ms = Arc::new(AtomicU64::new(PAUSED));
        let stop = Arc::new(AtomicBool::new(false));
        let (beat, halt) = (Arc::clone(&last_beat_ms), Arc::clone(&stop));
        let poll = (timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
        std::thread::Builder::new()
            .name("ithn-watchdog".into())
            .spawn(move || {
                while !halt.load(Ordering::SeqCst) {
                    std::thread::sleep(poll);
                    let last = beat.load(Ordering::SeqCst);
                    if last == PAUSED {
                        continue;
                    }
                    let idle = start.elapsed().saturating_sub(Duration::from_millis(last));
                    if idle > timeout && !halt.load(Ordering::SeqCst) {
                        eprintln!(
                            "rank {rank}: watchdog: no step completed for {:.1}s (dist.timeout_s = {:.1}s); \
                             a rank died or hangs in a collective; aborting the job",
                            idle.as_secs_f64(),
                            timeout.as_secs_f64()
                        );
                        abort_job(EXIT_WATCHDOG);
                    }
                }
            })
            .expect("spawning the watchdog thread");
        Watchdog {
            last_beat_ms,
            stop,
            start,
        }
    }

    /// Records progress and arms the watchdog: the next timeout is measured from now.
    pub fn beat(&self) {
        self.last_beat_ms
            .store(self.start.elapsed().as_millis() as u64, Ordering::SeqCst);
    }

    /// Disarms the watchdog until the next [`Watchdog::beat`] (for phases outside the step
    /// loop, such as validation, whose length has nothing to do with `dist.timeout_s`).
    pub fn pause(&self) {
        self.last_beat_ms.store(PAUSED, Ordering::SeqCst);
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// Ends the job from any thread: `MPI_Abort` on the world communicator when MPI is running
/// (mpirun then kills every rank), else — or if the abort itself hangs for 10 s — `_exit`.
fn abort_job(code: i32) -> ! {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(10));
        // SAFETY: _exit ends the process without running destructors; nothing to uphold.
        unsafe { libc::_exit(code) }
    });
    let mut initialized: std::os::raw::c_int = 0;
    let mut finalized: std::os::raw::c_int = 0;
    // SAFETY: MPI_Initialized/MPI_Finalized may be called at any time, from any thread.
    unsafe {
        mpi::ffi::MPI_Initialized(&mut initialized);
        mpi::ffi::MPI_Finalized(&mut finalized);
        if initialized != 0 && finalized == 0 {
            mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, code);
        }
        libc::_exit(code)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_records_the_signal() {
        let f = SignalFlag::inert();
        assert_eq!(f.pending(), None);
        f.raise(libc::SIGUSR1);
        assert_eq!(f.pending(), Some(libc::SIGUSR1));
        assert_eq!(signal_name(libc::SIGUSR1), "SIGUSR1");
    }

    #[test]
    fn installed_flag_sees_a_real_sigusr1() {
        let f = SignalFlag::install().unwrap();
        // SAFETY: sending a signal to ourselves; the handler only stores atomics.
        unsafe { libc::raise(libc::SIGUSR1) };
        assert_eq!(f.pending(), Some(libc::SIGUSR1));
    }

    #[test]
    fn requeue_outside_slurm_is_an_error() {
        if std::env::var_os("SLURM_JOB_ID").is_none() {
            assert!(matches!(requeue_slurm_job(), Err(RequeueError::NotInSlurm)));
        }
    }

    #[test]
    fn watchdog_that_is_fed_does_not_fire() {
        let w = Watchdog::start(Duration::from_millis(300), 0);
        for _ in 0..6 {
            std::thread::sleep(Duration::from_millis(100));
            w.beat();
        }
        drop(w);
    }
}
