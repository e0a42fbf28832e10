//! A truncated weights file in the newest checkpoint: `--resume auto` skips it with a warning
//! naming the file and uses the previous checkpoint (issue 8, acceptance 5). Also checks that
//! `--resume PATH` on such a checkpoint is an error rather than a silent fallback.

use crate::resume_support;

use resume_support::*;

#[test]
fn truncated_weights_are_skipped_with_a_warning_and_the_previous_checkpoint_is_used() {
    let run = tempfile::tempdir().unwrap();
    let (status, _, err) = run_drill(run.path(), &["--max-steps", "8"], &[]);
    assert!(status.success(), "{err}");
    let steps: Vec<u64> = ithn_dist::checkpoint::CheckpointManager::new(run.path(), 2)
        .list()
        .unwrap()
        .into_iter()
        .map(|(s, _)| s)
        .collect();
    assert_eq!(
        steps,
        vec![6, 8],
        "every 3 steps + epoch end at 6 + final at 8, last 2 kept"
    );

    let model = run
        .path()
        .join("checkpoints/step-00000008/model.safetensors");
    let len = std::fs::metadata(&model).unwrap().len();
    std::fs::OpenOptions::new()
        .write(true)
        .open(&model)
        .unwrap()
        .set_len(len - 7)
        .unwrap();

    let explicit = run.path().join("checkpoints/step-00000008");
    let (status, _, err) = run_drill(
        run.path(),
        &["--max-steps", "9", "--resume", explicit.to_str().unwrap()],
        &[],
    );
    assert_eq!(status.code(), Some(1));
    assert!(
        err.contains("model.safetensors: checksum mismatch"),
        "{err}"
    );

    let (status, out, err) = run_drill(run.path(), &["--max-steps", "9"], &[]);
    assert!(status.success(), "{err}");
    assert!(
        err.contains("WARN") && err.contains("skipping checkpoint"),
        "{err}"
    );
    assert!(
        err.contains("step-00000008") && err.contains("model.safetensors: checksum mismatch"),
        "{err}"
    );
    assert!(err.contains("resuming") && err.contains("step=6"), "{err}");
    assert!(
        out.starts_with("drill: step 7 "),
        "continues with step 7: {out}"
    );
}
