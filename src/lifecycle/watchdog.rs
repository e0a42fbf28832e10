//! The collective watchdog: a rank that died or hangs leaves the others blocked in a collective
//! forever, so a background thread ends the whole job when an armed phase (a training step, one
//! NCCL call) does not finish within `dist.timeout_s`. Every process then exits non-zero
//! ([`EXIT_WATCHDOG`]) instead of hanging until the allocation's time limit.
//!
//! One type serves both users: the step loop re-arms it after every step and disarms it for
//! phases whose length has nothing to do with the timeout (validation, the test pass); the NCCL
//! collectives arm it around each call.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::EXIT_WATCHDOG;

/// What is being timed and since when; `None` = disarmed.
type Armed = Arc<Mutex<Option<(Instant, &'static str)>>>;

/// Aborts the job when an armed phase exceeds the timeout. Dropping it stops the thread.
#[derive(Debug)]
pub struct Watchdog {
    armed: Armed,
    stop: Arc<AtomicBool>,
}

impl Watchdog {
    /// Starts the watchdog thread, disarmed: start-up (data, weights) is not timed. `rank` only
    /// appears in the message.
    pub fn start(timeout: Duration, rank: usize) -> Watchdog {
        let armed: Armed = Arc::new(Mutex::new(None));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, halt) = (Arc::clone(&armed), Arc::clone(&stop));
        // Poll often enough to fire within ~10% of the timeout, without spinning.
        let poll = (timeout / 10).clamp(Duration::from_millis(50), Duration::from_secs(1));
        std::thread::Builder::new()
            .name("ithn-watchdog".into())
            .spawn(move || {
                while !halt.load(Ordering::SeqCst) {
                    std::thread::sleep(poll);
                    let Some((since, what)) = *lock(&seen) else {
                        continue;
                    };
                    let idle = since.elapsed();
                    if idle > timeout && !halt.load(Ordering::SeqCst) {
                        eprintln!(
                            "rank {rank}: watchdog: no {what} completed for {:.1}s (dist.timeout_s = {:.1}s); \
                             a rank died or hangs in a collective; aborting the job",
                            idle.as_secs_f64(),
                            timeout.as_secs_f64()
                        );
                        abort_job(EXIT_WATCHDOG);
                    }
                }
            })
            .expect("spawning the watchdog thread");
        Watchdog { armed, stop }
    }

    /// Starts timing `what` (e.g. `"step"`, `"NCCL all_reduce"`) from now; re-arming restarts
    /// the clock.
    pub fn arm(&self, what: &'static str) {
        *lock(&self.armed) = Some((Instant::now(), what));
    }

    /// Stops timing until the next [`Watchdog::arm`].
    pub fn disarm(&self) {
        *lock(&self.armed) = None;
    }

    /// Whether a phase is being timed.
    pub fn is_armed(&self) -> bool {
        lock(&self.armed).is_some()
    }
}

impl Drop for Watchdog {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

/// The lock, also after a panic elsewhere (the value is a plain timestamp, always consistent).
fn lock(armed: &Armed) -> std::sync::MutexGuard<'_, Option<(Instant, &'static str)>> {
    armed.lock().unwrap_or_else(|p| p.into_inner())
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
    fn watchdog_that_is_rearmed_in_time_does_not_fire() {
        let w = Watchdog::start(Duration::from_millis(300), 0);
        assert!(!w.is_armed());
        for _ in 0..6 {
            w.arm("step");
            std::thread::sleep(Duration::from_millis(100));
        }
        assert!(w.is_armed());
        w.disarm();
        assert!(!w.is_armed());
        // Disarmed for longer than the timeout: still alive.
        std::thread::sleep(Duration::from_millis(500));
        drop(w);
    }
}
