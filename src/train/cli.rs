//! `ithn-dist train`: the command line of a training run.
//!
//! One rank:   `ithn-dist train --config configs/tiny.toml --run-dir runs/tiny`
//! Two ranks:  `mpirun -np 2 ithn-dist train --config configs/tiny.toml --run-dir runs/tiny`
//! (`train.batch_size` is the GLOBAL batch: both commands train the same model.)

use std::path::PathBuf;

use clap::Args;

use super::trainer::Trainer;
use crate::checkpoint::hook::{resume_trainer, TrainCheckpointing};
use crate::checkpoint::ResumeArgs;
use crate::cli::ConfigArgs;
use crate::data::contract;
use crate::dist::World;

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

/// Runs training on every rank; rank 0 prints the test scores.
pub fn run(args: TrainArgs, world: &World) -> anyhow::Result<i32> {
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
    let mut trainer = Trainer::new(cfg, world, &args.run_dir, args.max_steps)?;
    // Checkpoints, --resume and preemption signals (exit code 3 after a signal checkpoint).
    resume_trainer(&mut trainer, &args.resume)?;
    let mut hook = TrainCheckpointing::new(
        &trainer.cfg,
        world,
        &args.run_dir,
        &args.resume,
        args.max_steps,
    )?;
    let scores = trainer.run(&mut hook)?;
    if let Some(s) = scores {
        println!("{}", serde_json::Value::Object(s.to_json()));
    }
    Ok(hook.exit_code())
}
