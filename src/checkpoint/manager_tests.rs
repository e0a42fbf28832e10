//! Unit tests of the manager on real temporary directories (no MPI: `World::single`).

use super::*;
use crate::checkpoint::meta::{SaveReason, TrainState};
use crate::data::sampler::Cursor;

fn config(overrides: &[&str]) -> Config {
    let o: Vec<String> = overrides.iter().map(|s| s.to_string()).collect();
    Config::from_toml_str("", Path::new("<test>"), &o).unwrap()
}

fn meta(step: u64, cfg: &Config) -> TrainerMeta {
    TrainerMeta {
        format_version: FORMAT_VERSION,
        reason: SaveReason::Steps,
        world_size: 1,
        config_hash: config_hash(cfg),
        state: TrainState {
            epoch: 1,
            step,
            cursor: Cursor {
                epoch: 1,
                batches_consumed: step,
            },
            best_metric: None,
            best_epoch: None,
            epochs_without_improvement: 0,
            lrs: vec![1e-4, 5e-4],
        },
        extra: Default::default(),
    }
}

fn save(mgr: &CheckpointManager, step: u64, cfg: &Config) -> PathBuf {
    let w = Tensor::from_slice(&[step as f32, 1.5, -2.0]).reshape([3, 1]);
    let model = vec![("encoder.weight".to_string(), w)];
    let opt = vec![(
        "state.0.exp_avg".to_string(),
        Tensor::from_slice(&[0.25f32; 3]),
    )];
    let m = meta(step, cfg);
    let payload = Payload {
        model: &model,
        optimizer: &opt,
        meta: &m,
        config: cfg,
        extra_files: &[("vocab.json", b"[\"a\",\"<unk>\"]")],
    };
    mgr.save(&World::single(), &payload).unwrap()
}

#[test]
fn save_then_open_round_trips_tensors_meta_and_extras() {
    let run = tempfile::tempdir().unwrap();
    let cfg = config(&[]);
    let mgr = CheckpointManager::new(run.path(), 3);
    let dir = save(&mgr, 7, &cfg);
    assert_eq!(dir, run.path().join("checkpoints/step-00000007"));
    let ck = Checkpoint::open(&dir).unwrap();
    assert_eq!(ck.meta, meta(7, &cfg));
    let model = ck.model().unwrap();
    assert_eq!(model.len(), 1);
    assert_eq!(model[0].0, "encoder.weight");
    assert_eq!(
        Vec::<f32>::try_from(model[0].1.flatten(0, -1)).unwrap(),
        vec![7.0, 1.5, -2.0]
    );
    assert_eq!(ck.config().unwrap(), cfg);
    assert_eq!(
        std::fs::read(dir.join("vocab.json")).unwrap(),
        b"[\"a\",\"<unk>\"]"
    );
    // No temporary directory survives a successful save.
    let hidden: Vec<_> = std::fs::read_dir(mgr.root())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(hidden.is_empty());
}

#[test]
fn truncated_weights_in_newest_checkpoint_fall_back_to_previous() {
    let run = tempfile::tempdir().unwrap();
    let cfg = config(&[]);
    let mgr = CheckpointManager::new(run.path(), 3);
    save(&mgr, 1, &cfg);
    let newest = save(&mgr, 2, &cfg);
    let model = newest.join(MODEL_FILE);
    let len = std::fs::metadata(&model).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap()
        .set_len(len / 2)
        .unwrap();

    let (found, skipped) = mgr.newest_valid().unwrap();
    assert_eq!(found.unwrap().meta.state.step, 1);
    assert_eq!(skipped.len(), 1);
    assert!(
        skipped[0]
            .reason
            .contains("model.safetensors: checksum mismatch"),
        "{}",
        skipped[0].reason
    );
    assert!(matches!(
        Checkpoint::open(&newest),
        Err(CheckpointError::Invalid { .. })
    ));
}

#[test]
fn missing_marker_or_tampered_sums_make_a_checkpoint_invalid() {
    let run = tempfile::tempdir().unwrap();
    let cfg = config(&[]);
    let mgr = CheckpointManager::new(run.path(), 3);
    let a = save(&mgr, 1, &cfg);
    let b = save(&mgr, 2, &cfg);
    std::fs::remove_file(b.join(DONE_FILE)).unwrap();
    let err = Checkpoint::open(&b).unwrap_err().to_string();
    assert!(err.contains("no DONE marker"), "{err}");
    let sums = std::fs::read_to_string(a.join(SUMS_FILE)).unwrap();
    std::fs::write(
        a.join(SUMS_FILE),
        sums.replace("trainer.json", "extra.json"),
    )
    .unwrap();
    let err = Checkpoint::open(&a).unwrap_err().to_string();
    assert!(err.contains("does not match the DONE marker"), "{err}");
    assert!(mgr.newest_valid().unwrap().0.is_none());
    assert!(mgr.resolve(&ResumeMode::Auto).unwrap().is_none());
    assert!(mgr.resolve(&ResumeMode::Path(a)).is_err());
}

#[test]
fn retention_keeps_last_k() {
    let run = tempfile::tempdir().unwrap();
    let cfg = config(&[]);
    let mgr = CheckpointManager::new(run.path(), 2);
    save(&mgr, 1, &cfg);
    // A torn directory older than the newest complete one is garbage.
    std::fs::create_dir_all(mgr.step_dir(2)).unwrap();
    for step in 3..=5 {
        save(&mgr, step, &cfg);
    }
    let steps: Vec<u64> = mgr.list().unwrap().into_iter().map(|(s, _)| s).collect();
    assert_eq!(steps, vec![4, 5]);
}

#[test]
fn a_checkpoint_of_another_format_is_refused_not_skipped() {
    let run = tempfile::tempdir().unwrap();
    let cfg = config(&[]);
    let mgr = CheckpointManager::new(run.path(), 3);
    save(&mgr, 1, &cfg);
    let dir = save(&mgr, 2, &cfg);
    // Rewrite trainer.json as format 1 with consistent checksums (a complete older checkpoint).
    let path = dir.join(TRAINER_FILE);
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replace("\"format_version\": 2", "\"format_version\": 1"),
    )
    .unwrap();
    let sums: String = std::fs::read_to_string(dir.join(SUMS_FILE))
        .unwrap()
        .lines()
        .map(|l| {
            let name = l.split_once("  ").unwrap().1;
            format!("{}  {name}\n", super::sha256_file(&dir.join(name)).unwrap())
        })
        .collect();
    std::fs::write(dir.join(SUMS_FILE), &sums).unwrap();
    std::fs::write(
        dir.join(DONE_FILE),
        format!("{}\n", sha256_bytes(sums.as_bytes())),
    )
    .unwrap();
    let err = mgr.resolve(&ResumeMode::Auto).unwrap_err().to_string();
    assert!(
        err.contains("step-00000002")
            && err.contains("checkpoint format 1")
            && err.contains("--resume never"),
        "{err}"
    );
}

#[test]
fn saving_a_step_again_replaces_a_torn_directory() {
    let run = tempfile::tempdir().unwrap();
    let cfg = config(&[]);
    let mgr = CheckpointManager::new(run.path(), 2);
    std::fs::create_dir_all(mgr.step_dir(3)).unwrap();
    std::fs::write(mgr.step_dir(3).join(MODEL_FILE), b"torn").unwrap();
    save(&mgr, 3, &cfg);
    assert_eq!(
        Checkpoint::open(&mgr.step_dir(3)).unwrap().meta.state.step,
        3
    );
}

#[test]
fn config_change_is_refused_unless_allowed_and_free_keys_pass() {
    let run = tempfile::tempdir().unwrap();
    let cfg = config(&[]);
    let mgr = CheckpointManager::new(run.path(), 2);
    let ck = Checkpoint::open(&save(&mgr, 1, &cfg)).unwrap();
    assert!(ck
        .check_config(
            &config(&["dist.timeout_s=3.0", "data.num_workers=5"]),
            false
        )
        .unwrap()
        .is_empty());
    let changed = config(&["train.lr_ed=0.5"]);
    let err = ck.check_config(&changed, false).unwrap_err();
    assert!(
        err.to_string().contains("train.lr_ed: 0.0005 → 0.5"),
        "{err}"
    );
    assert_eq!(
        ck.check_config(&changed, true).unwrap(),
        vec!["train.lr_ed: 0.0005 → 0.5".to_string()]
    );
}

#[test]
fn resume_mode_parses() {
    assert_eq!("auto".parse::<ResumeMode>().unwrap(), ResumeMode::Auto);
    assert_eq!("never".parse::<ResumeMode>().unwrap(), ResumeMode::Never);
    assert_eq!(
        "runs/x/checkpoints/step-00000004"
            .parse::<ResumeMode>()
            .unwrap(),
        ResumeMode::Path("runs/x/checkpoints/step-00000004".into())
    );
    assert!("".parse::<ResumeMode>().is_err());
}
