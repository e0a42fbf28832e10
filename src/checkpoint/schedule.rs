//! When to save, decided identically on every rank.
//!
//! Triggers: every N optimizer steps, every M minutes, at the end of an epoch, and on a
//! signal. Step and epoch triggers are the same on every rank by construction. The clock and
//! the signal flag are not (ranks start at different instants; SLURM signals one process), so
//! they are combined in one all-reduce (max) per step: rank 0's clock decides for everyone, and
//! a signal seen by any rank stops all of them at the same step boundary.

use std::time::{Duration, Instant};

use super::meta::SaveReason;
use crate::config::CheckpointConfig;
use crate::dist::World;

/// What the ranks agreed on after an optimizer step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StepDecision {
    /// Save a checkpoint now, for this reason.
    pub save: Option<SaveReason>,
    /// The signal number some rank received (the highest one), when the run must stop.
    pub signal: Option<i32>,
}

/// Checkpoint cadence state of one rank.
#[derive(Debug)]
pub struct SaveSchedule {
    every_steps: u64,
    every: Option<Duration>,
    every_epoch: bool,
    last_save: Instant,
}

impl SaveSchedule {
    pub fn new(cfg: &CheckpointConfig) -> SaveSchedule {
        let every =
            (cfg.every_minutes > 0.0).then(|| Duration::from_secs_f64(cfg.every_minutes * 60.0));
        SaveSchedule {
            every_steps: cfg.every_steps as u64,
            every,
            every_epoch: cfg.every_epoch,
            last_save: Instant::now(),
        }
    }

    /// Collective (one small all-reduce): call on every rank after each optimizer step.
    /// `signal` is this rank's pending signal number, if any.
    pub fn after_step(
        &mut self,
        world: &World,
        step: u64,
        epoch_end: bool,
        signal: Option<i32>,
    ) -> StepDecision {
        let clock_due =
            world.is_root() && self.every.is_some_and(|d| self.last_save.elapsed() >= d);
        let mut flags = [signal.map_or(0, |s| s.max(0) as u64), u64::from(clock_due)];
        world.all_reduce_max_u64(&mut flags);
        let signal = (flags[0] > 0).then_some(flags[0] as i32);
        let save = if signal.is_some() {
            Some(SaveReason::Signal)
        } else if epoch_end && self.every_epoch {
            Some(SaveReason::EpochEnd)
        } else if self.every_steps > 0 && step.is_multiple_of(self.every_steps) {
            Some(SaveReason::Steps)
        } else if flags[1] > 0 {
            Some(SaveReason::Minutes)
        } else {
            None
        };
        StepDecision { save, signal }
    }

    /// Restarts the wall-clock interval (call after every save, whatever triggered it).
    pub fn saved(&mut self) {
        self.last_save = Instant::now();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(every_steps: usize, every_minutes: f64, every_epoch: bool) -> CheckpointConfig {
        CheckpointConfig {
            every_steps,
            every_minutes,
            every_epoch,
            keep_last: 2,
        }
    }

    #[test]
    fn step_epoch_and_signal_triggers() {
        let w = World::single();
        let mut s = SaveSchedule::new(&cfg(3, 0.0, true));
        assert_eq!(s.after_step(&w, 1, false, None).save, None);
        assert_eq!(
            s.after_step(&w, 3, false, None).save,
            Some(SaveReason::Steps)
        );
        assert_eq!(
            s.after_step(&w, 4, true, None).save,
            Some(SaveReason::EpochEnd)
        );
        let d = s.after_step(&w, 5, false, Some(15));
        assert_eq!(
            d,
            StepDecision {
                save: Some(SaveReason::Signal),
                signal: Some(15)
            }
        );
        let mut off = SaveSchedule::new(&cfg(0, 0.0, false));
        assert_eq!(off.after_step(&w, 3, true, None).save, None);
    }

    #[test]
    fn clock_trigger_fires_after_the_interval_and_resets() {
        let w = World::single();
        // 0.6 ms interval: already due after a short sleep.
        let mut s = SaveSchedule::new(&cfg(0, 1e-5, false));
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(
            s.after_step(&w, 1, false, None).save,
            Some(SaveReason::Minutes)
        );
        let mut slow = SaveSchedule::new(&cfg(0, 60.0, false));
        assert_eq!(slow.after_step(&w, 1, false, None).save, None);
        s.saved();
        s.every = Some(Duration::from_secs(3600));
        assert_eq!(s.after_step(&w, 2, false, None).save, None);
    }
}
