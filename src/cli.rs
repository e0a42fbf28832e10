//! Command-line interface. Each subcommand's arguments live beside the code that runs it;
//! this file sets up what every command shares (world, logging, fault injection) and dispatches.
//! Exit codes (for SLURM scripts): see [`crate::lifecycle`] (0 success, 1 error, 2 usage,
//! 3 preempted after a checkpoint, 4 watchdog).

use clap::{Args, Parser, Subcommand};
use std::path::PathBuf;

use crate::config::ConfigArgs;
use crate::dist::World;
use crate::lifecycle::{Fault, EXIT_ERROR};

#[derive(Parser, Debug)]
#[command(name = "ithn-dist", version, about = "Train and run R2GenCMN radiology report generators with ITHN, across many ranks", long_about = None)]
pub struct Cli {
    /// Write JSON-lines logs, one file per rank, into this directory.
    #[arg(long, global = true, value_name = "DIR")]
    pub log_dir: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Inspect configurations.
    #[command(subcommand)]
    Config(ConfigCmd),
    /// Check a launch: every rank reports rank/size/device and a tensor all-reduce is verified.
    World(WorldArgs),
    /// Preemption drill: a tiny deterministic training that exercises checkpoints, resume,
    /// signals and the watchdog on any world (checks a cluster's launch setup in seconds).
    Drill(crate::checkpoint::drill::DrillArgs),
    /// Report text: build a vocabulary, clean and encode reports (SPEC §1).
    #[command(subcommand)]
    Text(crate::data::text_cli::TextCmd),
    /// Raw datasets (R2Gen annotation, MIMIC-CXR-JPG, Open-i) into Parquet shards with mined hard negatives.
    Prepare(crate::data::prepare::cli::PrepareArgs),
    /// Summarise a prepared directory and verify its checksums (exit 1 on any mismatch).
    Inspect(crate::data::prepare::cli::InspectArgs),
    /// Score generated reports against references: BLEU-1..4, METEOR, ROUGE-L, CIDEr (pycocoevalcap-identical).
    Score(crate::eval::score::ScoreArgs),
    /// Benchmarks, each timed against a reference in the same run.
    #[command(subcommand)]
    Bench(crate::bench::BenchCmd),
    /// Render labelled-SYNTHETIC phantom radiographs that follow each study's report.
    Synth(crate::synth::SynthArgs),
    /// Render PNG charts (loss terms, λ, learning rates, val metrics) from RUN_DIR/metrics.jsonl.
    Plot(crate::plot::PlotArgs),
    /// Import reference (PyTorch) weights as safetensors into a model checkpoint directory.
    Import(crate::model::cli::ImportArgs),
    /// Export a model checkpoint as one safetensors file with the full reference state_dict.
    Export(crate::model::cli::ExportArgs),
    /// Write a freshly initialised model checkpoint (config + vocabulary).
    InitModel(crate::model::cli::InitArgs),
    /// Write the report of one study (one or two images) with a model checkpoint.
    Generate(crate::model::cli::GenerateArgs),
    /// Train a model (on every rank under mpirun/srun): the exact global-batch ITHN objective.
    Train(crate::train::cli::TrainArgs),
    /// Decode a split with a checkpoint on every rank and score it (predictions.jsonl, scores.json).
    Evaluate(crate::eval::evaluate::EvaluateArgs),
    /// GPU readiness parts (ops/gpu/check.sh): fixture parity on a device, FLOPs per sample / MFU.
    #[command(subcommand)]
    Gpu(crate::gpu::GpuCmd),
}

#[derive(Subcommand, Debug)]
pub enum ConfigCmd {
    /// Print the resolved configuration (file + overrides, validated) as TOML.
    Show(ConfigArgs),
}

#[derive(Args, Debug)]
pub struct WorldArgs {
    /// Elements in the test all-reduce (1 to 2^28).
    #[arg(long, default_value_t = 1024, value_parser = crate::bounds::between::<i64>(1, 1 << 28))]
    pub elements: i64,
    /// Print one JSON object per rank instead of text.
    #[arg(long)]
    pub json: bool,
}

/// Parses arguments, runs the command and returns the process exit code.
pub fn main() -> i32 {
    let cli = Cli::parse();
    if let Err(e) = crate::cpu::check() {
        eprintln!("error: {e}");
        return EXIT_ERROR;
    }
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            if !printed_by_rank_0(&e) {
                crate::logging::eprint_above_bars(&format!(
                    "error: {}",
                    crate::logging::error_message(&e)
                ));
            }
            EXIT_ERROR
        }
    }
}

/// This process's rank once the world is up (0 for commands without one).
static RANK: std::sync::OnceLock<usize> = std::sync::OnceLock::new();

/// Whether rank 0 says it for everyone: a refusal shared by [`contract::on_root`], or an
/// error every rank finds alike in the same inputs (the configuration, the world against
/// the batch), which would otherwise print once per rank under `mpirun`.
///
/// [`contract::on_root`]: crate::model::contract::on_root
fn printed_by_rank_0(e: &anyhow::Error) -> bool {
    if e.is::<crate::model::contract::RefusedOnRoot>() {
        return true;
    }
    let rank = RANK.get().copied().unwrap_or(0);
    rank != 0
        && (e.is::<crate::config::ConfigError>() || e.is::<crate::data::sampler::SamplerError>())
}

impl Command {
    /// Whether the command runs on every rank of a launch (and so needs the MPI [`World`]).
    fn runs_on_ranks(&self) -> bool {
        matches!(
            self,
            Command::Train(_) | Command::Evaluate(_) | Command::Drill(_) | Command::World(_)
        )
    }
}

/// Sets up what every command shares, once — the world (for commands that run on ranks) and
/// the logging of this rank — then dispatches. The scripted fault of the crash tests
/// (`ITHN_FAULT`) is read here, for the commands that inject one, and passed down.
fn run(cli: Cli) -> anyhow::Result<i32> {
    let world = cli.command.runs_on_ranks().then(World::init).transpose()?;
    let _ = RANK.set(world.as_ref().map_or(0, |w| w.rank));
    crate::logging::init(world.as_ref().map_or(0, |w| w.rank), cli.log_dir.as_deref())?;
    let on_ranks = || world.as_ref().expect("runs_on_ranks() lists this command");
    match cli.command {
        Command::Config(ConfigCmd::Show(args)) => {
            print!("{}", args.load()?.to_toml());
            Ok(0)
        }
        Command::Text(cmd) => crate::data::text_cli::run(cmd),
        Command::Prepare(args) => Ok(crate::data::prepare::cli::run_prepare(&args)?),
        Command::Inspect(args) => Ok(crate::data::prepare::cli::run_inspect(&args)?),
        Command::Score(args) => crate::eval::score::run(args),
        Command::Bench(cmd) => crate::bench::run(cmd),
        Command::Gpu(cmd) => crate::gpu::run(cmd),
        Command::Synth(args) => crate::synth::run_cli(args),
        Command::Plot(args) => crate::plot::run_cli(args),
        Command::Import(args) => crate::model::cli::import(&args).map(|()| 0),
        Command::Export(args) => crate::model::cli::export(&args).map(|()| 0),
        Command::InitModel(args) => crate::model::cli::init(&args).map(|()| 0),
        Command::Generate(args) => crate::model::cli::generate(&args).map(|()| 0),
        Command::Train(args) => crate::train::cli::run(args, on_ranks(), Fault::from_env()?),
        Command::Evaluate(args) => crate::eval::evaluate::run(args, on_ranks()),
        Command::Drill(args) => {
            crate::checkpoint::drill::run(on_ranks(), &args, Fault::from_env()?)
        }
        Command::World(args) => world_report(on_ranks(), &args),
    }
}

/// `ithn-dist world`: every rank reports itself and checks a tensor all-reduce.
fn world_report(world: &World, args: &WorldArgs) -> anyhow::Result<i32> {
    let report = crate::dist::smoke::run(world, args.elements);
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!(
            "rank {}/{} local {}/{} mpi={} cuda_devices={} all_reduce={} (max error {}){}",
            report.rank,
            report.size,
            report.local_rank,
            report.local_size,
            report.mpi,
            report.cuda_devices,
            if report.all_reduce_ok { "ok" } else { "WRONG" },
            report.all_reduce_max_error,
            report.nccl_summary()
        );
    }
    Ok(if report.ok() { 0 } else { 1 })
}
