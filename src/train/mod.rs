//! Training: the trainer's recipe, its optimizer step, optimizer and schedules, the metrics log
//! and the replicas' consistency checks. Sits above `checkpoint` (the trainer drives a
//! [`crate::checkpoint::Checkpointer`]) and `eval` (validation and the test pass).

pub mod claim;
pub mod cli;
pub mod metrics_log;
pub mod optim;
pub mod optim_shard;
pub mod optim_step;
pub mod replicas;
pub mod schedule;
pub mod step;
pub mod trainer;
