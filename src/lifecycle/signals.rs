//! Preemption signals and SLURM requeue.
//!
//! SIGUSR1 (SLURM's `--signal=B:USR1@T`, forwarded by mpirun), SIGTERM (preemption) and SIGINT
//! only set a flag; the training loop reads it at the next step boundary, where all ranks agree
//! through one all-reduce (`checkpoint::SaveSchedule::after_step`), save a checkpoint and leave
//! with [`EXIT_PREEMPTED`](super::EXIT_PREEMPTED). A second SIGINT (or any of them once the flag is set and SIGINT
//! follows) exits at once with [`EXIT_INTERRUPTED`]: the last complete checkpoint stays valid
//! because saves are atomic.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use super::EXIT_INTERRUPTED;

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
}
