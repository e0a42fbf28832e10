//! `ithn-dist train`: the command line of a training run.
//!
//! One rank:   `ithn-dist train --config configs/tiny.toml --run-dir runs/tiny`
//! Two ranks:  `mpirun -np 2 ithn-dist train --config configs/tiny.toml --run-dir runs/tiny`
//! (`train.batch_size` is the GLOBAL batch: both commands train the same model.)

use std::path::PathBuf;

use clap::Args;

use super::claim;
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
    /// Stop after N ≥ 1 optimizer steps (then save the final model and score the test split)
    /// [default: no limit, train.epochs decides].
    #[arg(long, value_name = "N", value_parser = crate::bounds::at_least::<u64>(1))]
    pub max_steps: Option<u64>,
    /// Threads per rank for libtorch's CPU kernels, 1..=4096 (default: libtorch's choice).
    #[arg(long, value_name = "N", value_parser = crate::bounds::threads::<i32>())]
    pub threads: Option<i32>,
    /// Delete the earlier run's outputs in --run-dir (config, metrics, predictions,
    /// checkpoints/, best/, final/) and start a new run there. Without it, a directory holding
    /// another run is refused.
    #[arg(long)]
    pub overwrite: bool,
    /// Checkpoint resume and preemption options (docs/resume.md).
    #[command(flatten)]
    pub resume: ResumeArgs,
}

/// Runs training on every rank; rank 0 prints the test scores. Exit code 3 after a signal
/// checkpoint (see [`crate::lifecycle`]).
pub fn run(args: TrainArgs, world: &World, fault: Option<Fault>) -> anyhow::Result<i32> {
    let cfg = args.config.load()?;
    // The world against the batch (a pure configuration check, same answer on every rank).
    let t = &cfg.train;
    crate::data::sampler::check_world(t.batch_size, t.accumulation_steps, world.size)?;
    args.config.prepared_dir(&cfg)?;
    // The config's claims about its prepared data, before any model or loader exists.
    contract::on_root(world, || {
        let data = contract::PreparedData::open(&cfg.data.prepared)?;
        Ok(contract::check_config_on_data(
            &cfg,
            &args.config.config,
            &data,
        )?)
    })?;
    // Whose run directory is it (refusals before anything is built or written).
    let run = crate::run_dir::RunDir::new(&args.run_dir);
    let request = claim::Request {
        run: &run,
        mode: &args.resume.mode()?,
        overwrite: args.overwrite,
        cfg: &cfg,
        max_steps: args.max_steps,
    };
    if let claim::Claim::Finished(f) = claim::claim(world, &request)? {
        if world.is_root() {
            tracing::info!(run = %run.root().display(), step = f.step, "the run finished already: nothing to train (ask for more --max-steps or train.epochs to continue it, or pass --overwrite to start afresh)");
            if let Some(s) = &f.scores {
                println!("{s}");
            }
        }
        return Ok(crate::lifecycle::EXIT_OK);
    }
    if let Some(n) = args.threads {
        tch::set_num_threads(n);
    }
    let opts = TrainOptions {
        max_steps: args.max_steps,
        resume: args.resume,
        fault,
    };
    let (epochs, max_steps) = (cfg.train.epochs as u64, args.max_steps);
    let hash = claim::fingerprint(&cfg);
    let mut trainer = Trainer::new(cfg, world, &args.run_dir, opts)?;
    let outcome = trainer.train()?;
    if let Outcome::Finished(scores) = &outcome {
        let scores = scores
            .as_ref()
            .map(|s| serde_json::Value::Object(s.to_json()));
        if world.is_root() {
            // Written last: a rerun with the same arguments trains nothing.
            let finished = claim::Finished {
                step: trainer.step(),
                epochs,
                max_steps,
                config_hash: hash,
                scores: scores.clone(),
            };
            finished
                .write(&run)
                .map_err(|e| anyhow::anyhow!("{}: {e}", run.finished().display()))?;
        }
        if let Some(s) = scores {
            println!("{s}");
        }
    }
    Ok(outcome.exit_code())
}
