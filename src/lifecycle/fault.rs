//! Scripted faults for the crash tests, from the `ITHN_FAULT` environment variable. The binary
//! reads it once ([`Fault::from_env`], in `cli`) and passes the value down to the code that
//! injects it, so that no production module reads the environment on its own.
//!
//! * `kill-in-checkpoint:STEP:before-rename|before-done` — SIGKILL at that point of the save of
//!   step STEP (what a preemption in the middle of a write looks like);
//! * `hang:STEP:RANK` — in `drill`, that rank stops responding before step STEP's all-reduce;
//! * `signal-in-eval:val|test` — rank 0 sends itself SIGTERM as the first evaluation of that
//!   split starts in the process, so the stop arrives in the middle of the pass;
//! * `signal-at-step:STEP` — rank 0 sends itself SIGTERM as optimizer step STEP starts, so the
//!   stop lands on exactly that step (e.g. an epoch's short last one).

use crate::dataset::Split;
use std::str::FromStr;

/// The environment variable that selects a fault.
pub const FAULT_ENV: &str = "ITHN_FAULT";

/// A point inside a checkpoint save.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SavePoint {
    /// Every file written and fsync'd in the temporary directory, not yet renamed into place.
    BeforeRename,
    /// Renamed into place, the `DONE` marker not yet written.
    BeforeDone,
}

impl SavePoint {
    /// The name `ITHN_FAULT` uses.
    pub fn as_str(self) -> &'static str {
        match self {
            SavePoint::BeforeRename => "before-rename",
            SavePoint::BeforeDone => "before-done",
        }
    }
}

/// One scripted fault (see the module documentation for the syntax).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    KillInCheckpoint { step: u64, at: SavePoint },
    Hang { step: u64, rank: usize },
    SignalInEval { split: Split },
    SignalAtStep { step: u64 },
}

/// An `ITHN_FAULT` value that does not parse.
#[derive(Debug, thiserror::Error)]
#[error(
    "{FAULT_ENV}={value:?}: expected kill-in-checkpoint:STEP:before-rename|before-done, \
     hang:STEP:RANK, signal-in-eval:val|test or signal-at-step:STEP"
)]
pub struct FaultError {
    pub value: String,
}

impl FromStr for Fault {
    type Err = FaultError;

    fn from_str(s: &str) -> Result<Fault, FaultError> {
        let bad = || FaultError { value: s.into() };
        let parts: Vec<&str> = s.split(':').collect();
        let num = |p: &str| p.parse::<u64>().map_err(|_| bad());
        match parts.as_slice() {
            ["kill-in-checkpoint", step, at] => Ok(Fault::KillInCheckpoint {
                step: num(step)?,
                at: match *at {
                    "before-rename" => SavePoint::BeforeRename,
                    "before-done" => SavePoint::BeforeDone,
                    _ => return Err(bad()),
                },
            }),
            ["hang", step, rank] => Ok(Fault::Hang {
                step: num(step)?,
                rank: num(rank)? as usize,
            }),
            ["signal-in-eval", "val"] => Ok(Fault::SignalInEval { split: Split::Val }),
            ["signal-in-eval", "test"] => Ok(Fault::SignalInEval { split: Split::Test }),
            ["signal-at-step", step] => Ok(Fault::SignalAtStep { step: num(step)? }),
            _ => Err(bad()),
        }
    }
}

impl Fault {
    /// The fault `ITHN_FAULT` selects: None when unset or empty, an error when it does not parse.
    pub fn from_env() -> Result<Option<Fault>, FaultError> {
        match std::env::var(FAULT_ENV) {
            Ok(v) if !v.is_empty() => v.parse().map(Some),
            _ => Ok(None),
        }
    }

    /// Whether the save of `step` must be killed at `at`.
    pub fn kills_checkpoint(&self, step: u64, at: SavePoint) -> bool {
        *self == Fault::KillInCheckpoint { step, at }
    }

    /// Whether `rank` must hang before step `step`.
    pub fn hangs(&self, step: u64, rank: usize) -> bool {
        *self == Fault::Hang { step, rank }
    }

    /// Whether a stop signal must arrive as optimizer step `step` (1-based) starts.
    pub fn signals_at_step(&self, step: u64) -> bool {
        *self == Fault::SignalAtStep { step }
    }

    /// Whether a stop signal must arrive during the evaluation of `split`.
    pub fn signals_in_eval(&self, split: Split) -> bool {
        *self == Fault::SignalInEval { split }
    }
}

/// Sends SIGTERM to this process (the stop handler only sets a flag): a scripted preemption.
pub fn raise_sigterm() {
    // SAFETY: raising a signal in our own process has no memory-safety preconditions.
    unsafe {
        libc::raise(libc::SIGTERM);
    }
}

/// Kills this process with SIGKILL (no handler runs, nothing is flushed): a preemption.
pub fn kill_self() -> ! {
    // SAFETY: raising a signal on our own pid has no memory-safety preconditions.
    unsafe {
        libc::kill(libc::getpid(), libc::SIGKILL);
    }
    unreachable!("SIGKILL cannot be caught")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_documented_form_parses() {
        assert_eq!(
            "kill-in-checkpoint:6:before-rename"
                .parse::<Fault>()
                .unwrap(),
            Fault::KillInCheckpoint {
                step: 6,
                at: SavePoint::BeforeRename
            }
        );
        let done: Fault = "kill-in-checkpoint:12:before-done".parse().unwrap();
        assert!(done.kills_checkpoint(12, SavePoint::BeforeDone));
        assert!(!done.kills_checkpoint(12, SavePoint::BeforeRename));
        assert!(!done.kills_checkpoint(11, SavePoint::BeforeDone));
        let hang: Fault = "hang:5:1".parse().unwrap();
        assert!(hang.hangs(5, 1) && !hang.hangs(5, 0) && !hang.hangs(4, 1));
        let eval: Fault = "signal-in-eval:test".parse().unwrap();
        assert!(eval.signals_in_eval(Split::Test) && !eval.signals_in_eval(Split::Val));
        let at: Fault = "signal-at-step:7".parse().unwrap();
        assert!(at.signals_at_step(7) && !at.signals_at_step(6));
    }

    #[test]
    fn malformed_values_are_refused_with_the_variable_named() {
        for bad in [
            "kill-in-checkpoint:x:before-done",
            "kill-in-checkpoint:3:after-done",
            "kill-in-checkpoint:3",
            "hang:5",
            "hang:5:1:2",
            "signal-in-eval:train",
            "signal-at-step:",
            "signal-at-step:x",
            "sigterm",
        ] {
            let e = bad.parse::<Fault>().unwrap_err().to_string();
            assert!(e.starts_with("ITHN_FAULT=") && e.contains(bad), "{e}");
        }
    }
}
