//! Issue 14, acceptance 1: one test per reported case, each asserting the right value.
//! Expected vocabularies come from `../shared/reference/public/text.json` (the reference's
//! `create_vocabulary` on the IU X-Ray annotation: `vocab`, 760 tokens) or are spelled out by
//! hand for hand-written reports; images are phantoms from `ithn-dist synth`.

use serde_json::Value;

use super::util::*;

/// Case 1 on the bundled IU annotation: 5 % of the train studies lose an image (plus one
/// truncated PNG and one one-view study); the vocabulary stays the reference's 760 tokens.
#[test]
fn case1_vocabulary_is_the_references_whatever_prepare_skips() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fx: Value = serde_json::from_str(
        &std::fs::read_to_string(shared("reference/public/text.json")).unwrap(),
    )
    .unwrap();
    let mut splits: Splits = [("train", vec![]), ("val", vec![]), ("test", vec![])];
    for r in fx["records"].as_array().unwrap() {
        let k = ["train", "val", "test"]
            .iter()
            .position(|x| *x == r["split"].as_str().unwrap())
            .unwrap();
        let (id, report) = (r["id"].as_str().unwrap(), r["report_raw"].as_str().unwrap());
        splits[k].1.push((id.to_string(), report.to_string(), 2));
    }
    let n_train = splits[0].1.len();
    assert_eq!(n_train, 2069, "the fixture's train list");
    splits[0].1[11].2 = 1; // a one-view study: skipped by a two-view prepare
    let missing: Vec<String> = (0..n_train)
        .filter(|k| k % 20 == 7)
        .map(|k| splits[0].1[k].0.clone())
        .collect();
    let truncated = splits[0].1[3].0.clone();
    let ann = dir.join("ann.json");
    write_annotation(&ann, splits);
    let png = png_bytes(dir, 16);
    let images = dir.join("images");
    let missing_refs: Vec<&str> = missing.iter().map(String::as_str).collect();
    write_images(&ann, &images, &png, &missing_refs);
    std::fs::write(images.join(&truncated).join("0.png"), &png[..png.len() / 2]).unwrap();

    let out = dir.join("prepared");
    let mut args = prepare_args(
        ann.to_str().unwrap(),
        images.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    *args.last_mut().unwrap() = "16"; // --resize 16: the phantoms are 16 px
    ok(&args);
    let m = manifest(&out);
    let skipped_train = m["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["split"] == "train")
        .count();
    assert_eq!(skipped_train, missing.len() + 2, "{:#}", m["skipped"]);
    assert!(missing.len() * 20 >= n_train - 20, "about 5 % dropped");
    assert_eq!(m["counts"]["train"], (n_train - skipped_train) as u64);
    assert_eq!(m["vocab"]["train_records"], n_train as u64);

    let reference: Vec<String> = serde_json::from_value(fx["vocab"].clone()).unwrap();
    assert_eq!(reference.len(), 760);
    assert_eq!(tokens(&out.join("vocab.json")), reference);
    let text_vocab = dir.join("text-vocab.json");
    ok(&[
        "text",
        "vocab",
        "--ann",
        &s(&ann),
        "--dataset",
        "iu_xray",
        "--out",
        &s(&text_vocab),
    ]);
    assert_eq!(
        std::fs::read(&text_vocab).unwrap(),
        std::fs::read(out.join("vocab.json")).unwrap(),
        "prepare's vocab.json is byte-identical to `text vocab`"
    );
}

/// Case 1 as filed: 6 train studies, 3 skipped (missing image, truncated PNG, empty report).
#[test]
fn case1_skipped_rows_still_count_in_the_vocabulary() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let rec = |id: &str, report: &str| (id.to_string(), report.to_string(), 2);
    let ann = dir.join("ann.json");
    write_annotation(
        &ann,
        [
            (
                "train",
                vec![
                    rec("k1", "Heart normal."),
                    rec("k2", "Lungs clear."),
                    rec("k3", "No effusion."),
                    rec("gone", "Small pneumothorax."),
                    rec("cut", "Large opacity."),
                    rec("blank", ""),
                ],
            ),
            ("val", vec![rec("v1", "Heart normal.")]),
            ("test", vec![rec("t1", "Lungs clear.")]),
        ],
    );
    let png = png_bytes(dir, 16);
    let images = dir.join("images");
    write_images(&ann, &images, &png, &["gone"]);
    std::fs::write(images.join("cut/1.png"), &png[..png.len() / 3]).unwrap();
    let out = dir.join("prepared");
    let mut args = prepare_args(
        ann.to_str().unwrap(),
        images.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    args.extend(["--threshold", "1"]);
    ok(&args);
    assert_eq!(manifest(&out)["counts"]["train"], 3);
    let expected: Vec<&str> = vec![
        ".",
        "<unk>",
        "clear",
        "effusion",
        "heart",
        "large",
        "lungs",
        "no",
        "normal",
        "opacity",
        "pneumothorax",
        "small",
    ];
    assert_eq!(tokens(&out.join("vocab.json")), expected);
    let text_vocab = dir.join("text-vocab.json");
    ok(&[
        "text",
        "vocab",
        "--ann",
        &s(&ann),
        "--dataset",
        "iu_xray",
        "--threshold",
        "1",
        "--out",
        &s(&text_vocab),
    ]);
    assert_eq!(
        std::fs::read(&text_vocab).unwrap(),
        std::fs::read(out.join("vocab.json")).unwrap()
    );
}

/// Case 2: an id twice in test and an id in both train and test. `prepare` keeps one sample
/// per id (test over train; the first record within a split) and names the records it skips;
/// `evaluate` then writes each id once and `score` accepts the predictions.
#[test]
fn case2_duplicate_ids_are_decided_once_at_prepare() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let [(_, mut train), (_, val), (_, mut test)] = iu_records(6, 2, 3);
    let leaked = train[5].clone();
    test.push(test[0].clone()); // test[3] repeats test[0]
    test.push(leaked.clone()); // test[4] = train[5]
    train.truncate(6);
    let ann = dir.join("ann.json");
    write_annotation(
        &ann,
        [("train", train), ("val", val), ("test", test.clone())],
    );
    let png = png_bytes(dir, 80);
    let images = dir.join("images");
    write_images(&ann, &images, &png, &[]);
    let out = dir.join("prepared");
    let args = prepare_args(
        ann.to_str().unwrap(),
        images.to_str().unwrap(),
        out.to_str().unwrap(),
    );
    let printed = stdout(&ok(&args));
    let m = manifest(&out);
    assert_eq!(m["counts"]["train"], 5);
    assert_eq!(m["counts"]["test"], 4);
    let skipped: Vec<(String, String, String)> = m["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| {
            (
                x["id"].as_str().unwrap().to_string(),
                x["split"].as_str().unwrap().to_string(),
                x["reason"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(skipped.len(), 2, "{skipped:?}");
    assert_eq!(
        (skipped[0].0.as_str(), skipped[0].1.as_str()),
        (leaked.0.as_str(), "train")
    );
    assert!(
        skipped[0].2.contains("record train[5]") && skipped[0].2.contains("test[4]"),
        "{skipped:?}"
    );
    assert_eq!(
        (skipped[1].0.as_str(), skipped[1].1.as_str()),
        (test[0].0.as_str(), "test")
    );
    assert!(
        skipped[1].2.contains("record test[3]") && skipped[1].2.contains("test[0]"),
        "{skipped:?}"
    );
    assert!(
        printed.contains("duplicate id"),
        "prepare says so: {printed}"
    );
    // --strict makes the first duplicate fatal, naming it.
    let strict_out = s(&dir.join("strict"));
    let mut strict = prepare_args(ann.to_str().unwrap(), images.to_str().unwrap(), &strict_out);
    strict.push("--strict");
    refused(&strict, 1, &[&leaked.0, "(train)", "duplicate id"]);

    let ckpt = dir.join("ckpt");
    init_model(&out, &ckpt, &[]);
    let eval = dir.join("eval");
    ok(&[
        "evaluate",
        "--checkpoint",
        &s(&ckpt),
        "--data",
        &s(&out),
        "--split",
        "test",
        "--beam",
        "1",
        "--out",
        &s(&eval),
    ]);
    let preds: Vec<Value> = std::fs::read_to_string(eval.join("predictions.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let ids: Vec<&str> = preds.iter().map(|p| p["id"].as_str().unwrap()).collect();
    let want: Vec<&str> = vec![&test[0].0, &test[1].0, &test[2].0, &leaked.0];
    assert_eq!(ids, want, "each id once, in split order");
    let refs = dir.join("refs.jsonl");
    let hyps = dir.join("hyps.jsonl");
    let line = |p: &Value, key: &str| {
        serde_json::json!({"id": p["id"], "report": p[key]}).to_string() + "\n"
    };
    std::fs::write(
        &refs,
        preds
            .iter()
            .map(|p| line(p, "reference"))
            .collect::<String>(),
    )
    .unwrap();
    std::fs::write(
        &hyps,
        preds
            .iter()
            .map(|p| line(p, "prediction"))
            .collect::<String>(),
    )
    .unwrap();
    ok(&[
        "score",
        "--refs",
        &s(&refs),
        "--hyps",
        &s(&hyps),
        "--no-meteor",
        "--json",
    ]);
}

/// Case 3: `"val": []` is reported by `prepare` and `inspect`, and `train` refuses once
/// (one process and two ranks), naming the manifest and what to do.
#[test]
fn case3_an_empty_val_split_is_said_at_prepare_and_once_in_train() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let [train, _, test] = iu_records(8, 0, 3);
    let ann = dir.join("ann.json");
    write_annotation(&ann, [train, ("val", vec![]), test]);
    let png = png_bytes(dir, 80);
    let images = dir.join("images");
    write_images(&ann, &images, &png, &[]);
    let out = dir.join("prepared");
    let prep = ok(&prepare_args(
        ann.to_str().unwrap(),
        images.to_str().unwrap(),
        out.to_str().unwrap(),
    ));
    let warning = stderr(&prep);
    assert!(
        warning.contains("split val is empty") && warning.contains("train"),
        "{warning}"
    );
    let inspect = stdout(&ok(&["inspect", &s(&out)]));
    assert!(inspect.contains("warning: split val is empty"), "{inspect}");

    let set = format!("data.prepared={:?}", s(&out));
    let run_dir = s(&dir.join("run"));
    let cfg = tiny_config();
    let args = [
        "train",
        "--config",
        &cfg,
        "--set",
        &set,
        "--run-dir",
        &run_dir,
        "--max-steps",
        "1",
    ];
    let err = refused(
        &args,
        1,
        &["manifest.json", "split val is empty", "rerun prepare"],
    );
    assert_eq!(
        err.matches("split val is empty").count(),
        1,
        "said once:\n{err}"
    );
    let two = std::process::Command::new("mpirun")
        .args(["--oversubscribe", "-np", "2", bin()])
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env("OMP_NUM_THREADS", "1")
        .output()
        .expect("mpirun must be on PATH");
    assert!(!two.status.success());
    let both = stderr(&two) + &stdout(&two);
    assert_eq!(
        both.matches("split val is empty").count(),
        1,
        "two ranks say it once:\n{both}"
    );
}

/// Case 4: a one-view study no longer aborts `prepare`: a two-view prepare skips it with its
/// reason (and still counts its report in the vocabulary), `--views 1` keeps it, and a
/// one-view model trains on that data.
#[test]
fn case4_a_one_view_study_is_kept_for_one_view_models() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let [(_, mut train), val, (_, mut test)] = iu_records(6, 2, 3);
    train[2].2 = 1;
    test[1].2 = 1;
    let (one_train, one_test) = (train[2].0.clone(), test[1].0.clone());
    let ann = dir.join("ann.json");
    write_annotation(&ann, [("train", train), val, ("test", test)]);
    let png = png_bytes(dir, 80);
    let images = dir.join("images");
    write_images(&ann, &images, &png, &[]);
    let (a, i) = (s(&ann), s(&images));

    let two = dir.join("two");
    ok(&prepare_args(&a, &i, &s(&two)));
    let m = manifest(&two);
    assert_eq!(m["preprocessing"]["views"], 2);
    assert_eq!(
        (m["counts"]["train"].clone(), m["counts"]["test"].clone()),
        (5.into(), 2.into())
    );
    let reasons: Vec<(&str, &str)> = m["skipped"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| (x["id"].as_str().unwrap(), x["reason"].as_str().unwrap()))
        .collect();
    assert_eq!(reasons.len(), 2, "{reasons:?}");
    assert_eq!(reasons[0].0, one_train);
    assert_eq!(reasons[1].0, one_test);
    assert!(reasons
        .iter()
        .all(|(_, r)| r.contains("1 image(s)") && r.contains("--views 1")));
    let text_vocab = dir.join("text-vocab.json");
    ok(&[
        "text",
        "vocab",
        "--ann",
        &a,
        "--dataset",
        "iu_xray",
        "--out",
        &s(&text_vocab),
    ]);
    assert_eq!(
        std::fs::read(&text_vocab).unwrap(),
        std::fs::read(two.join("vocab.json")).unwrap()
    );

    let one = dir.join("one");
    let one_s = s(&one);
    let mut args = prepare_args(&a, &i, &one_s);
    args.extend(["--views", "1"]);
    ok(&args);
    let m = manifest(&one);
    assert_eq!(m["preprocessing"]["views"], 1);
    assert_eq!(
        (m["counts"]["train"].clone(), m["counts"]["test"].clone()),
        (6.into(), 3.into())
    );
    assert_eq!(m["skipped"], serde_json::json!([]));
    assert_eq!(
        std::fs::read(one.join("vocab.json")).unwrap(),
        std::fs::read(&text_vocab).unwrap()
    );

    let set = format!("data.prepared={:?}", s(&one));
    let (cfg, run_dir) = (tiny_config(), s(&dir.join("run")));
    ok(&[
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
        "1",
    ]);
    // A two-view model cannot read that data: refused, naming both files.
    refused(
        &[
            "train",
            "--config",
            &cfg,
            "--set",
            &set,
            "--set",
            "data.views=2",
            "--run-dir",
            &s(&dir.join("run2")),
            "--max-steps",
            "1",
        ],
        1,
        &["tiny.toml", "manifest.json", "data.views = 2", "--views 2"],
    );
}

/// Case 5: `--beam 0` is refused (it used to run greedy), and so is a beam wider than the
/// vocabulary, in `generate` and `evaluate`.
#[test]
fn case5_beam_zero_and_beams_wider_than_the_vocabulary_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let w = World::new(tmp.path(), 8, 2, 2);
    let (ck, data) = (s(&w.ckpt), s(&w.data));
    let image = s(&w
        .images
        .join(format!("{}/0.png", iu_records(1, 0, 0)[0].1[0].0)));
    refused(
        &[
            "generate",
            "--checkpoint",
            &ck,
            "--image",
            &image,
            "--beam",
            "0",
        ],
        2,
        &["--beam", "at least 1"],
    );
    refused(
        &[
            "evaluate",
            "--checkpoint",
            &ck,
            "--data",
            &data,
            "--beam",
            "0",
        ],
        2,
        &["--beam", "at least 1"],
    );
    let v = tokens(&w.data.join("vocab.json")).len();
    let too_wide = (v + 2).to_string();
    refused(
        &[
            "generate",
            "--checkpoint",
            &ck,
            "--image",
            &image,
            "--beam",
            &too_wide,
        ],
        1,
        &["--beam", "vocab.json", &format!("1..={}", v + 1)],
    );
    refused(
        &[
            "evaluate",
            "--checkpoint",
            &ck,
            "--data",
            &data,
            "--beam",
            &too_wide,
        ],
        1,
        &["--beam", "vocab.json"],
    );
    let widest = (v + 1).to_string();
    let out = ok(&[
        "generate",
        "--checkpoint",
        &ck,
        "--image",
        &image,
        "--beam",
        &widest,
    ]);
    assert!(!stdout(&out).is_empty(), "the widest beam runs");
}
