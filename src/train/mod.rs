//! Training: the trainer loop, optimizer and schedule, and the process lifecycle around them
//! (preemption signals, exit codes, watchdog).

pub mod cli;
pub mod optim;
pub mod optim_step;
pub mod schedule;
pub mod signals;
pub mod step;
pub mod trainer;
