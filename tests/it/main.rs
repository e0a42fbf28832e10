//! Every integration test that runs under the ordinary test harness, in one binary: one
//! link of the library instead of one per file. Each former `tests/NAME.rs` is the module
//! `NAME` here (`cargo test --test it NAME::` runs one of them); the helpers they share live
//! in `util`, `train_support`, `resume_support` and `prepare_util`. The two MPI programs that
//! need their own harness (`dist_collectives`, `train_equivalence`) stay separate binaries.

mod prepare_util;
mod resume_support;
mod train_support;
mod util;

mod bench_decode_ref;
mod ce_evaluate;
mod ce_hand_labelled;
mod ce_mesh_agreement;
mod checkpoint_truncated;
mod cli_help;
mod evaluate_mpi;
mod gpu_parity_cli;
mod image_jpeg_parity;
mod image_resize_parity;
mod input_contracts;
mod loader_prepared;
mod metrics_edge_cases;
mod metrics_parity;
mod metrics_score_cli;
mod model_cli;
mod model_decode;
mod model_parity;
mod model_train;
mod newcomer;
mod plot_cli;
mod prepare_robustness;
mod prepare_sources;
mod resume_drill;
mod resume_mpi;
mod resume_train;
mod slurm_requeue;
mod synth_cli;
mod text_cli;
mod text_parity;
mod train_any_split;
mod train_optim_parity;
mod train_run;
mod user_work;
