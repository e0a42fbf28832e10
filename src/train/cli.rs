//! `ithn-dist train`: the command line of a training run.
//!
//! One rank:   `ithn-dist train --config configs/tiny.toml --run-dir runs/tiny`
//! Two ranks:  `mpirun -np 2 ithn-dist train --config configs/tiny.toml --run-dir runs/tiny`
//! (`train.batch_size` is the GLOBAL batch: both commands train the same model.)

use std::path::PathBuf;

use clap::Args;

use super::trainer::{Outcome, TrainOptions, Trainer};
use crate::checkpoint::ResumeArgs;
use crate::config::ConfigArgs;
use crate::dist::World;
use crate::lifecycle::Fault;
use crate::model::contract;

#[derive(Args, Debug)]
pub struct TrainArgs {
    #[command(flatten)]
    pub config: ConfigArgs,
    /// Run directory: config.toml, metrics.jsonl, predictions-*.jsonl, best/, final/.
    #[arg(long, value_name = "DIR")]
    pub run_dir: PathBuf,
    /// Stop after N ≥ 1 optimizer steps (then save the final model and score the test split).
    #[arg(long, value_name = "N", value_parser = crate::bounds::at_least::<u64>(1))]
    pub max_steps: Option<u64>,
    /// Threads per rank for libtorch's CPU kernels, 1..=4096 (default: libtorch's choice).
    #[arg(long, value_name = "N", value_parser = crate::bounds::threads::<i32>())]
    pub threads: Option<i32>,
    /// Checkpoint resume and preemption options (docs/resume.md).
    #[command(flatten)]
    pub resume: ResumeArgs,
}

/// Runs training on every rank; rank 0 prints the test scores. Exit code 3 after a signal
/// checkpoint (see [`crate::lifecycle`]).
pub fn run(args: TrainArgs, world: &World, fault: Option<Fault>) -> anyhow::Result<i32> {
    let cfg = args.config.load()?;
    // The config's claims about its prepared data, before any model or loader exists.
    contract::on_root(world, || {
        let data = contract::PreparedData::open(std::path::Path::new(&cfg.data.prepared))?;
        Ok(contract::check_config_on_data(
            &cfg,
            &args.config.config,
            &data,
        )?)
    })?;
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    let opts = TrainOptions {
        max_steps: args.max_steps,
        resume: args.resume,
        fault,
    };
    let mut trainer = Trainer::new(cfg, world, &args.run_dir, opts)?;
    let outcome = trainer.train()?;
    if let Outcome::Finished(Some(s)) = &outcome {
        println!("{}", serde_json::Value::Object(s.to_json()));
    }
    Ok(outcome.exit_code())
}
