//! Issue 14, acceptance 3: a checkpoint evaluated, resumed or run on data, a config or images
//! it does not fit is refused before any work, with a message naming both files.
//! Data: prepared subsets of the bundled IU annotation with phantom images.

use serde_json::Value;

use super::util::*;

#[test]
fn a_checkpoint_is_refused_on_data_it_does_not_fit() {
    let tmp = tempfile::tempdir().unwrap();
    let w = World::new(tmp.path(), 8, 2, 3);
    let dir = tmp.path();
    let (ann, images, data) = (s(&w.ann), s(&w.images), s(&w.data));
    let evaluate = |ck: &str, data: &str| {
        vec![
            "evaluate".to_string(),
            "--checkpoint".into(),
            ck.into(),
            "--data".into(),
            data.into(),
            "--out".into(),
            s(&dir.join("eval")),
        ]
    };
    let refuse = |args: Vec<String>, needles: &[&str]| refused_owned(&args, 1, needles);
    let ck = s(&w.ckpt);
    let ck_vocab = s(&w.ckpt.join("vocab.json"));

    // Another vocabulary (threshold 1 keeps more tokens).
    let wide = s(&dir.join("wide"));
    let mut args = prepare_args(&ann, &images, &wide);
    args.extend(["--threshold", "1"]);
    ok(&args);
    let wide_vocab = format!("{wide}/vocab.json");
    refuse(
        evaluate(&ck, &wide),
        &[&ck_vocab, &wide_vocab, "different vocabularies"],
    );

    // The same number of tokens, one of them different: the content hash, not the size.
    let edited = dir.join("edited");
    std::fs::create_dir_all(&edited).unwrap();
    for f in ["model.safetensors", "config.toml"] {
        std::fs::copy(w.ckpt.join(f), edited.join(f)).unwrap();
    }
    let mut v: Value =
        serde_json::from_str(&std::fs::read_to_string(w.ckpt.join("vocab.json")).unwrap()).unwrap();
    let toks = v["tokens"].as_array_mut().unwrap();
    let last = toks.len() - 1;
    toks[last] = Value::String("zzzz".into());
    std::fs::write(edited.join("vocab.json"), v.to_string()).unwrap();
    let e = refuse(
        evaluate(&s(&edited), &data),
        &["edited/vocab.json", "different vocabularies"],
    );
    assert!(
        e.contains(&format!("id {}", last + 1)) && e.contains("zzzz"),
        "{e}"
    );

    // Another dataset (cleaner).
    let mimic = dir.join("mimic");
    init_model(&w.data, &mimic, &["data.dataset=\"mimic_cxr\""]);
    refuse(
        evaluate(&s(&mimic), &data),
        &[
            "mimic/config.toml",
            "prepared/manifest.json",
            "data.dataset is mimic_cxr",
        ],
    );

    // A two-view model on one-view data, and given one image.
    let one = s(&dir.join("one-view"));
    let mut args = prepare_args(&ann, &images, &one);
    args.extend(["--views", "1"]);
    ok(&args);
    let two_view = dir.join("two-view");
    init_model(&w.data, &two_view, &["data.views=2"]);
    refuse(
        evaluate(&s(&two_view), &one),
        &[
            "two-view/config.toml",
            "one-view/manifest.json",
            "data.views = 2",
        ],
    );
    let image = s(&w
        .images
        .join(format!("{}/0.png", iu_records(1, 0, 0)[0].1[0].0)));
    refused(
        &["generate", "--checkpoint", &s(&two_view), "--image", &image],
        1,
        &["two-view/config.toml", "2 view(s)", "1 --image"],
    );

    // A model that crops larger images than the data stores.
    let big = dir.join("big");
    init_model(&w.data, &big, &["data.image_size=96", "data.resize=110"]);
    refuse(
        evaluate(&s(&big), &data),
        &[
            "big/config.toml",
            "prepared/manifest.json",
            "data.image_size = 96",
            "--resize 96",
        ],
    );

    // A model whose vocabulary lists no tokens cannot be checked: refused, saying how to fix.
    let bare = dir.join("bare");
    std::fs::create_dir_all(&bare).unwrap();
    for f in ["model.safetensors", "config.toml"] {
        std::fs::copy(w.ckpt.join(f), bare.join(f)).unwrap();
    }
    let n = tokens(&w.data.join("vocab.json")).len();
    std::fs::write(
        bare.join("vocab.json"),
        serde_json::json!({"logit_dim": n + 1, "tokens": []}).to_string(),
    )
    .unwrap();
    refuse(evaluate(&s(&bare), &data), &["bare/vocab.json", "--vocab"]);

    // And the checkpoint on the data it fits is evaluated.
    ok(&[
        "evaluate",
        "--checkpoint",
        &ck,
        "--data",
        &data,
        "--beam",
        "1",
        "--out",
        &s(&dir.join("fits")),
    ]);
}

#[test]
fn a_run_is_refused_when_resumed_on_data_or_a_config_it_does_not_fit() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let w = World::new(dir, 8, 2, 3);
    // Other studies: same dataset, threshold, sizes — a different vocabulary.
    let other_ann = dir.join("other.json");
    write_annotation(&other_ann, iu_records_at(40, 8, 2, 3));
    write_images(&other_ann, &w.images, &w.png, &[]);
    let other = dir.join("other");
    ok(&prepare_args(&s(&other_ann), &s(&w.images), &s(&other)));
    assert_ne!(
        tokens(&other.join("vocab.json")),
        tokens(&w.data.join("vocab.json"))
    );

    let cfg = tiny_config();
    let run_dir = s(&dir.join("run"));
    let train = |data: &std::path::Path, extra: &[&str], steps: &str| {
        let set = format!("data.prepared={:?}", s(data));
        let mut args: Vec<String> = [
            "train",
            "--config",
            &cfg,
            "--set",
            &set,
            "--set",
            "eval.max_seq_length=4",
            "--run-dir",
            &run_dir,
            "--max-steps",
            steps,
        ]
        .iter()
        .map(|x| x.to_string())
        .collect();
        for e in extra {
            args.extend(["--set".to_string(), e.to_string()]);
        }
        args
    };
    ok(&strs(&train(&w.data, &[], "1")));
    let saved = "checkpoints/step-00000001/vocab.json";
    refused_owned(
        &train(&other, &[], "2"),
        1,
        &[
            saved,
            &format!("{}/vocab.json", s(&other)),
            "different vocabularies",
        ],
    );
    refused_owned(
        &train(&w.data, &["train.lr_ed=0.5"], "2"),
        1,
        &["step-00000001", "train.lr_ed", "--allow-config-change"],
    );
    // Resumed on the data and config it was written with: it runs.
    ok(&strs(&train(&w.data, &[], "2")));
}
