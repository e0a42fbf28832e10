//! A real training run (issue 7, acceptance 3): configs/tiny.toml on a prepared subset of the
//! bundled IU X-Ray annotation (phantom images), 2 ranks under mpirun, 3 epochs. Checks what the
//! run directory must hold: the resolved config, one train line per optimizer step with every
//! loss term, a val line per epoch, the best and final model checkpoints, test scores and
//! predictions — and that the loss falls.
//!
//! Expected numbers: none from a fixture; the checks are structural plus "the mean loss of the
//! last epoch is below the first epoch's".

use crate::train_support;

use train_support::{jsonl, mpirun, prepared, repo};

#[test]
fn tiny_config_two_ranks_three_epochs() {
    let dir = tempfile::tempdir().unwrap();
    let data = prepared(dir.path(), 32, 8, 8);
    let run_dir = dir.path().join("run");
    let config = repo("configs/tiny.toml");
    let prepared_set = format!("data.prepared={:?}", data.to_string_lossy());
    let out = mpirun(
        2,
        &[
            "train",
            "--config",
            &config.to_string_lossy(),
            "--set",
            &prepared_set,
            "--set",
            "train.epochs=3",
            "--set",
            "train.batch_size=8",
            "--set",
            "eval.batch_size=8",
            "--set",
            "eval.max_seq_length=20",
            "--set",
            "eval.beam_size=1",
            "--set",
            "dist.checksum_every=2",
            "--run-dir",
            &run_dir.to_string_lossy(),
            "--threads",
            "1",
        ],
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("BLEU_4"),
        "rank 0 prints the test scores: {stdout}"
    );

    assert!(run_dir.join("config.toml").is_file());
    let lines = jsonl(&run_dir.join("metrics.jsonl"));
    let train: Vec<_> = lines.iter().filter(|l| l["kind"] == "train").collect();
    // 32 samples / global batch 8 = 4 steps per epoch.
    assert_eq!(train.len(), 12, "one line per optimizer step");
    for (i, l) in train.iter().enumerate() {
        assert_eq!(l["step"], (i + 1) as u64);
        assert_eq!(l["epoch"], (i / 4 + 1) as u64);
        for k in [
            "loss",
            "lm",
            "l_cp",
            "l_cs",
            "lr_ve",
            "lr_ed",
            "lambda",
            "samples_per_s",
            "tokens_per_s",
        ] {
            assert!(
                l[k].as_f64().is_some_and(f64::is_finite),
                "step {}: {k} = {}",
                i + 1,
                l[k]
            );
        }
        let recombined = 0.7 * l["lm"].as_f64().unwrap()
            + 0.1 * l["l_cp"].as_f64().unwrap()
            + 0.2 * l["l_cs"].as_f64().unwrap();
        assert!(
            (recombined - l["loss"].as_f64().unwrap()).abs() < 1e-9,
            "loss = 0.7 lm + 0.1 l_cp + 0.2 l_cs"
        );
    }
    let mean = |e: u64| {
        let v: Vec<f64> = train
            .iter()
            .filter(|l| l["epoch"] == e)
            .map(|l| l["loss"].as_f64().unwrap())
            .collect();
        v.iter().sum::<f64>() / v.len() as f64
    };
    assert!(
        mean(3) < mean(1),
        "loss falls: epoch 1 {} → epoch 3 {}",
        mean(1),
        mean(3)
    );

    let val: Vec<_> = lines.iter().filter(|l| l["kind"] == "val").collect();
    assert_eq!(
        val.iter()
            .map(|l| l["epoch"].as_u64().unwrap())
            .collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    for l in &val {
        for k in ["BLEU_1", "BLEU_2", "BLEU_3", "BLEU_4", "ROUGE_L", "CIDEr"] {
            assert!(l[k].as_f64().is_some(), "val line has {k}: {l}");
        }
    }
    let test: Vec<_> = lines.iter().filter(|l| l["kind"] == "test").collect();
    assert_eq!(test.len(), 1, "one test line");
    // The test line names the best epoch: the one with the highest val BLEU_4 (first on ties).
    let best = val
        .iter()
        .fold(None::<&serde_json::Value>, |b, l| match b {
            Some(b) if b["BLEU_4"].as_f64() >= l["BLEU_4"].as_f64() => Some(b),
            _ => Some(l),
        })
        .unwrap();
    assert_eq!(
        test[0]["epoch"], best["epoch"],
        "test scores come from the best checkpoint"
    );

    for ckpt in ["best", "final"] {
        for f in ["model.safetensors", "config.toml", "vocab.json"] {
            assert!(run_dir.join(ckpt).join(f).is_file(), "{ckpt}/{f}");
        }
    }
    assert_eq!(
        jsonl(&run_dir.join("predictions-test.jsonl")).len(),
        8,
        "every test sample once"
    );
    assert_eq!(jsonl(&run_dir.join("predictions-val.jsonl")).len(), 8);
}
