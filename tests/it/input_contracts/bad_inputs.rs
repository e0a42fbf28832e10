//! Issue 14, acceptance 2: every user-facing subcommand, over a table of bad inputs and bad
//! option values, exits 1 (bad input) or 2 (usage) with a message naming the input — never a
//! panic (101), never a libtorch frame dump, never a silent success. The subcommands are read
//! from the real binary's `--help`, so a new one without rows here fails the test.

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Stdio};

use super::util::*;

/// One bad invocation: arguments, expected exit code, what the message must name, stdin.
struct Row {
    args: Vec<String>,
    code: i32,
    names: Vec<String>,
    stdin: Option<&'static str>,
}

fn row(args: &[&str], code: i32, names: &[&str]) -> Row {
    Row {
        args: args.iter().map(|a| a.to_string()).collect(),
        code,
        names: names.iter().map(|a| a.to_string()).collect(),
        stdin: None,
    }
}

fn with_stdin(mut r: Row, input: &'static str) -> Row {
    r.stdin = Some(input);
    r
}

/// Leaf subcommands (`config show`, `text vocab`, …) listed by `--help`.
fn leaf_commands(prefix: &[&str]) -> Vec<String> {
    let mut args: Vec<&str> = prefix.to_vec();
    args.push("--help");
    let help = stdout(&ok(&args));
    let mut names = Vec::new();
    let mut in_commands = false;
    for line in help.lines() {
        if line.starts_with("Commands:") {
            in_commands = true;
            continue;
        }
        if in_commands && line.trim().is_empty() {
            break;
        }
        let is_name = line.starts_with("  ") && !line.starts_with("   ");
        if in_commands && is_name {
            let name = line.split_whitespace().next().unwrap_or("");
            if name != "help" {
                names.push(name.to_string());
            }
        }
    }
    let mut leaves = Vec::new();
    for name in names {
        let mut path: Vec<&str> = prefix.to_vec();
        path.push(&name);
        let sub = leaf_commands(&path);
        if sub.is_empty() {
            leaves.push(path.join(" "));
        } else {
            leaves.extend(sub);
        }
    }
    leaves
}

fn run_row(r: &Row) -> std::process::Output {
    let mut child = Command::new(bin())
        .args(&r.args)
        .env("OMP_NUM_THREADS", "1")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run ithn-dist");
    let input = r.stdin.unwrap_or("");
    let mut pipe = child.stdin.take().expect("stdin");
    pipe.write_all(input.as_bytes()).expect("write stdin");
    drop(pipe);
    child.wait_with_output().expect("wait")
}

#[test]
fn every_subcommand_refuses_bad_inputs_with_a_message_naming_them() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let w = World::new(dir, 8, 2, 2);
    let p = |rel: &str| s(&dir.join(rel));
    let (ck, data, ann, images, cfg) = (
        s(&w.ckpt),
        s(&w.data),
        s(&w.ann),
        s(&w.images),
        tiny_config(),
    );
    let image = s(&w
        .images
        .join(format!("{}/0.png", iu_records(1, 0, 0)[0].1[0].0)));
    let set = format!("data.prepared={data:?}");
    std::fs::write(dir.join("bad.json"), "{not json").unwrap();
    std::fs::write(dir.join("no-val.json"), r#"{"train": [], "test": []}"#).unwrap();
    std::fs::write(dir.join("bad.toml"), "[data]\nviews = \"two\"\n").unwrap();
    std::fs::create_dir_all(dir.join("foreign")).unwrap();
    std::fs::write(dir.join("foreign/notes.txt"), "mine").unwrap();
    std::fs::write(
        dir.join("dup.jsonl"),
        "{\"id\": \"a\", \"report\": \"x\"}\n{\"id\": \"a\", \"report\": \"y\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("one.jsonl"),
        "{\"id\": \"a\", \"report\": \"x\"}\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("other.jsonl"),
        "{\"id\": \"b\", \"report\": \"x\"}\n",
    )
    .unwrap();
    let (bad_json, no_val, bad_toml, foreign) =
        (p("bad.json"), p("no-val.json"), p("bad.toml"), p("foreign"));
    std::fs::write(
        dir.join("float-id.jsonl"),
        "{\"id\": 1.5, \"report\": \"x\"}\n",
    )
    .unwrap();
    let (dup, one, other) = (p("dup.jsonl"), p("one.jsonl"), p("other.jsonl"));
    let float_id = p("float-id.jsonl");
    let missing = p("missing");
    let fixture_weights = s(&shared("reference/public/model/weights.safetensors"));
    let vocab = format!("{data}/vocab.json");
    let out = p("out");

    #[rustfmt::skip]
    let table: Vec<Row> = vec![
        // config show
        row(&["config", "show", "--config", &missing], 1, &[&missing]),
        row(&["config", "show", "--config", &bad_toml], 1, &[&bad_toml, "data.views"]),
        row(&["config", "show", "--config", &cfg, "--set", "data.views=3"], 1, &["data.views", "1 or 2"]),
        row(&["config", "show", "--config", &cfg, "--set", "nosuch.key=1"], 1, &["nosuch"]),
        row(&["config", "show", "--config", &cfg, "--set", "eval.max_seq_length=6000"], 1, &["eval.max_seq_length", "5000"]),
        row(&["config", "show", "--config", &cfg, "--set", "data.image_size=4096"], 1, &["data.image_size", "positional"]),
        row(&["config", "show", "--config", &cfg, "--set", "train.batch_size=0"], 1, &["train.batch_size"]),
        row(&["config", "show", "--config", &cfg, "--set", "model.topk=100"], 1, &["model.topk", "cmm_size"]),
        row(&["config", "show", "--config", &cfg, "--set", "model.d_model=10000000", "--set", "model.cmm_dim=10000000"], 1, &["model.d_model", "65536"]),
        row(&["config", "show", "--config", &cfg, "--set", "model.num_layers=100000"], 1, &["model.num_layers", "256"]),
        row(&["gpu", "parity", "--fixture", &missing], 1, &[&missing]),
        row(&["gpu", "parity", "--fixture", &out, "--device", "cuda:x"], 1, &["--device", "cuda:N"]),
        row(&["gpu", "flops", "--config", &cfg, "--report-len", "1"], 2, &["--report-len"]),
        row(&["gpu", "flops", "--config", &cfg, "--vocab", "0"], 2, &["--vocab"]),
        row(&["gpu", "flops", "--config", &cfg, "--samples-per-s", "nan"], 2, &["--samples-per-s"]),
        row(&["gpu", "flops", "--config", &cfg, "--peak-tflops", "0"], 2, &["--peak-tflops"]),
        row(&["config", "show", "--config", &cfg, "--set", "dist.timeout_s=1e300"], 1, &["dist.timeout_s"]),
        // world, drill
        row(&["world", "--elements", "0"], 2, &["--elements"]),
        row(&["drill", "--config", &cfg, "--run-dir", &p("drill"), "--max-steps", "0"], 2, &["--max-steps"]),
        row(&["drill", "--config", &missing, "--run-dir", &p("drill")], 1, &[&missing]),
        row(&["drill", "--config", &cfg, "--run-dir", &p("drill"), "--resume", "nonsense"], 1, &["nonsense"]),
        // text
        row(&["text", "vocab", "--ann", &missing, "--dataset", "iu_xray", "--out", &out], 1, &[&missing]),
        row(&["text", "vocab", "--ann", &bad_json, "--dataset", "iu_xray", "--out", &out], 1, &[&bad_json]),
        row(&["text", "vocab", "--ann", &no_val, "--dataset", "iu_xray", "--out", &out, "--threshold", "0"], 2, &["--threshold"]),
        row(&["text", "vocab", "--ann", &ann, "--dataset", "chest", "--out", &out], 2, &["--dataset"]),
        row(&["text", "encode", "--vocab", &missing], 1, &[&missing]),
        row(&["text", "encode", "--vocab", &vocab, "--max-seq-length", "1"], 2, &["--max-seq-length"]),
        with_stdin(row(&["text", "encode", "--vocab", &vocab], 1, &["stdin line 2", "report"]), "{\"id\": 1, \"report\": \"a\"}\n{\"id\": 2}\n"),
        with_stdin(row(&["text", "clean", "--dataset", "iu_xray"], 1, &["stdin line 1", "invalid JSON"]), "{oops\n"),
        // prepare, inspect
        row(&["prepare", "--source", "r2gen", "--images", &images, "--dataset", "iu_xray", "--out", &out], 1, &["--ann"]),
        row(&["prepare", "--source", "r2gen", "--ann", &bad_json, "--images", &images, "--dataset", "iu_xray", "--out", &out], 1, &[&bad_json]),
        row(&["prepare", "--source", "r2gen", "--ann", &no_val, "--images", &images, "--dataset", "iu_xray", "--out", &out], 1, &[&no_val, "val"]),
        row(&["prepare", "--source", "r2gen", "--ann", &ann, "--images", &images, "--dataset", "iu_xray", "--out", &foreign], 1, &[&foreign, "notes.txt"]),
        row(&["prepare", "--source", "r2gen", "--ann", &ann, "--images", &images, "--dataset", "iu_xray", "--out", &out, "--jpeg-quality", "0"], 2, &["--jpeg-quality"]),
        row(&["prepare", "--source", "r2gen", "--ann", &ann, "--images", &images, "--dataset", "iu_xray", "--out", &out, "--views", "3"], 2, &["--views"]),
        row(&["prepare", "--source", "r2gen", "--ann", &ann, "--images", &images, "--dataset", "iu_xray", "--out", &out, "--shard-rows", "0"], 2, &["--shard-rows"]),
        row(&["prepare", "--source", "r2gen", "--ann", &ann, "--images", &images, "--dataset", "iu_xray", "--out", &out, "--max-seq-length", "1"], 2, &["--max-seq-length"]),
        row(&["prepare", "--source", "r2gen", "--ann", &ann, "--images", &images, "--dataset", "iu_xray", "--out", &out, "--resize", "99999"], 2, &["--resize"]),
        row(&["prepare", "--source", "mimic-cxr-jpg", "--root", &missing, "--out", &out, "--views", "2"], 1, &["--views 2", "mimic-cxr-jpg"]),
        row(&["prepare", "--source", "openi", "--reports", &missing, "--images", &images, "--out", &out], 1, &[&missing]),
        row(&["inspect", &missing], 1, &[&missing]),
        // score
        row(&["score", "--refs", &missing, "--hyps", &one, "--no-meteor"], 1, &[&missing]),
        row(&["score", "--refs", &one, "--hyps", &dup, "--no-meteor"], 1, &[&dup, "duplicate ids", "a"]),
        row(&["score", "--refs", &one, "--hyps", &other, "--no-meteor"], 1, &["a", "b"]),
        row(&["score", "--refs", &one, "--hyps", &float_id, "--no-meteor"], 1, &[&float_id, ":1", "`id`"]),
        // bench
        row(&["bench", "metrics", "--pairs", "0"], 2, &["--pairs"]),
        row(&["bench", "metrics", "--ann", &missing, "--pairs", "10", "--repeat", "1"], 1, &[&missing]),
        row(&["bench", "decode", "--config", &cfg, "--batch", "0"], 2, &["--batch"]),
        row(&["bench", "decode", "--config", &cfg, "--max-len", "1"], 2, &["--max-len"]),
        row(&["bench", "decode", "--config", &cfg, "--threads", "0"], 2, &["--threads"]),
        row(&["bench", "step", "--config", &cfg, "--steps", "0"], 2, &["--steps"]),
        row(&["bench", "step", "--config", &cfg, "--report-len", "1"], 2, &["--report-len"]),
        row(&["bench", "loader", "--data", &data, "--views", "3"], 2, &["--views"]),
        row(&["bench", "loader", "--data", &missing, "--no-python", "--batches", "1"], 1, &[&missing]),
        row(&["bench", "loader", "--data", &data, "--no-python", "--batches", "1", "--image-size", "300"], 1, &["image_size"]),
        row(&["bench", "prepare", "--studies", "0"], 2, &["--studies"]),
        row(&["bench", "prepare", "--image-size", "0"], 2, &["--image-size"]),
        // synth, plot
        row(&["synth", "--ann", &ann, "--out", &out, "--size", "0"], 1, &["--size"]),
        row(&["synth", "--ann", &missing, "--out", &out], 1, &[&missing]),
        row(&["synth", "--ann", &ann, "--out", &out, "--limit", "0"], 2, &["--limit"]),
        row(&["synth", "--ann", &ann, "--out", &out, "--splits", "training"], 1, &["training"]),
        row(&["plot", &missing], 1, &[&missing]),
        // import, export, init-model
        row(&["import", "--state-dict", &missing, "--config", &cfg, "--out", &out], 1, &[&missing]),
        row(&["import", "--state-dict", &fixture_weights, "--config", &cfg, "--vocab", &vocab, "--out", &out], 1, &[&vocab]),
        row(&["export", "--checkpoint", &missing, "--out", &p("x.safetensors")], 1, &[&missing]),
        row(&["init-model", "--config", &cfg, "--vocab", &missing, "--out", &out], 1, &[&missing]),
        row(&["init-model", "--config", &bad_toml, "--vocab", &vocab, "--out", &out], 1, &[&bad_toml]),
        // generate
        row(&["generate", "--checkpoint", &ck, "--image", &image, "--beam", "0"], 2, &["--beam"]),
        row(&["generate", "--checkpoint", &ck, "--image", &missing], 1, &[&missing]),
        row(&["generate", "--checkpoint", &ck, "--image", &image, "--image", &image], 1, &["config.toml", "--image"]),
        row(&["generate", "--checkpoint", &missing, "--image", &image], 1, &[&missing]),
        row(&["generate", "--checkpoint", &ck, "--image", &bad_json], 1, &[&bad_json]),
        // train
        row(&["train", "--config", &cfg, "--set", &set, "--run-dir", &p("r"), "--threads", "0"], 2, &["--threads"]),
        row(&["train", "--config", &cfg, "--set", &set, "--run-dir", &p("r"), "--max-steps", "0"], 2, &["--max-steps"]),
        row(&["train", "--config", &missing, "--run-dir", &p("r")], 1, &[&missing]),
        row(&["train", "--config", &cfg, "--set", &format!("data.prepared={missing:?}"), "--run-dir", &p("r")], 1, &[&missing]),
        row(&["train", "--config", &cfg, "--set", &set, "--set", "data.threshold=2", "--run-dir", &p("r")], 1, &["data.threshold", "manifest.json"]),
        row(&["train", "--config", &cfg, "--set", &set, "--set", "eval.beam_size=5000", "--run-dir", &p("r")], 1, &["eval.beam_size", &vocab]),
        row(&["train", "--config", &cfg, "--set", &set, "--run-dir", &p("r"), "--resume", &missing], 1, &[&missing]),
        // evaluate
        row(&["evaluate", "--checkpoint", &ck, "--data", &data, "--beam", "0"], 2, &["--beam"]),
        row(&["evaluate", "--checkpoint", &ck, "--data", &data, "--split", "train"], 2, &["--split"]),
        row(&["evaluate", "--checkpoint", &ck, "--data", &missing], 1, &[&missing]),
        row(&["evaluate", "--checkpoint", &missing, "--data", &data], 1, &[&missing]),
    ];

    let leaves = leaf_commands(&[]);
    assert!(leaves.len() >= 20, "subcommands from --help: {leaves:?}");
    let covered: BTreeSet<String> = leaves
        .iter()
        .filter(|leaf| {
            table.iter().any(|r| {
                let words: Vec<&str> = leaf.split(' ').collect();
                r.args.len() >= words.len() && r.args[..words.len()] == words[..]
            })
        })
        .cloned()
        .collect();
    let uncovered: Vec<&String> = leaves.iter().filter(|l| !covered.contains(*l)).collect();
    assert!(
        uncovered.is_empty(),
        "subcommands without bad-input rows: {uncovered:?}"
    );

    let mut failures = Vec::new();
    for r in &table {
        let o = run_row(r);
        let err = stderr(&o);
        let problem = if o.status.code() != Some(r.code) {
            Some(format!("exit {:?}, expected {}", o.status.code(), r.code))
        } else if let Some(sign) = ["panicked", "frame #", "Exception raised from"]
            .iter()
            .find(|sign| err.contains(**sign))
        {
            Some(format!("crashed ({sign})"))
        } else {
            r.names
                .iter()
                .find(|n| !err.contains(n.as_str()))
                .map(|n| format!("the message does not name {n:?}"))
        };
        if let Some(problem) = problem {
            failures.push(format!("ithn-dist {:?}: {problem}\n{err}", r.args));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} rows failed:\n{}",
        failures.len(),
        table.len(),
        failures.join("\n")
    );
    // No refused `prepare` left a prepared directory behind.
    assert!(!dir.join("out").join("manifest.json").exists());
}
