//! What a newcomer sees (issue 19): plain text off a terminal, every error printed once, in
//! words, naming the right source and the fix; `score` reading `evaluate`'s own output.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_ithn-dist"));
    // Colour must depend on the terminal, not on the caller's environment.
    c.env_remove("NO_COLOR").env("RUST_LOG", "info");
    c
}

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// The one `error:` line of a failed run (stdout/stderr are pipes here, not terminals).
fn one_error(o: &Output) -> String {
    assert!(!o.status.success(), "must fail");
    let err = stderr(o);
    assert!(
        !err.contains('\u{1b}'),
        "escape codes off a terminal: {err:?}"
    );
    let lines: Vec<&str> = err.lines().filter(|l| l.contains("error")).collect();
    assert_eq!(lines.len(), 1, "one error line expected:\n{err}");
    assert!(lines[0].starts_with("error: "), "{err}");
    assert!(!lines[0].starts_with("error: error"), "{err}");
    lines[0].to_string()
}

fn count(hay: &str, needle: &str) -> usize {
    hay.matches(needle).count()
}

#[test]
fn set_key_errors_blame_the_set_not_the_file() {
    let cfg = repo().join("configs/tiny.toml");
    let o = bin()
        .args(["config", "show", "--config"])
        .arg(&cfg)
        .args(["--set", "train.lr_edd=1e-4"])
        .output()
        .unwrap();
    let e = one_error(&o);
    assert!(e.starts_with("error: --set \"train.lr_edd=1e-4\""), "{e}");
    assert!(
        e.contains("unknown field `lr_edd`") && !e.contains("tiny.toml"),
        "{e}"
    );
}

#[test]
fn missing_prepared_data_names_key_origin_directory_and_fix() {
    let dir = tempfile::tempdir().unwrap();
    let o = bin()
        .current_dir(dir.path())
        .args(["train", "--config"])
        .arg(repo().join("configs/tiny.toml"))
        .args([
            "--set",
            "data.prepared=no/such/prepared",
            "--run-dir",
            "run",
        ])
        .output()
        .unwrap();
    let e = one_error(&o);
    for part in [
        "data.prepared = \"no/such/prepared\"",
        "from --set data.prepared=no/such/prepared",
        "relative, so from the current directory",
        "ithn-dist prepare",
    ] {
        assert!(e.contains(part), "{part:?} missing in {e}");
    }
    assert!(
        !dir.path().join("run").exists(),
        "a refused run leaves no run dir"
    );
}

#[test]
fn os_errors_are_printed_once() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("gone.jsonl");
    let o = bin()
        .arg("score")
        .arg("--hyps")
        .arg(&gone)
        .output()
        .unwrap();
    let e = one_error(&o);
    assert_eq!(count(&e, "No such file or directory"), 1, "{e}");
    assert_eq!(count(&e, "gone.jsonl"), 1, "{e}");
    // A symlink loop: the OS text once too.
    let a = dir.path().join("a");
    std::os::unix::fs::symlink(dir.path().join("b"), &a).unwrap();
    std::os::unix::fs::symlink(&a, dir.path().join("b")).unwrap();
    let o = bin().arg("score").arg("--hyps").arg(&a).output().unwrap();
    let e = one_error(&o);
    assert_eq!(count(&e, "symbolic links"), 1, "{e}");
}

/// A tiny checkpoint made by `init-model` (no training), shared by the generate cases.
fn checkpoint(dir: &Path) -> PathBuf {
    let vocab = dir.join("vocab.json");
    std::fs::write(&vocab, r#"["lungs","are","clear","no","effusion","."]"#).unwrap();
    let out = dir.join("ckpt");
    let o = bin()
        .args(["init-model", "--config"])
        .arg(repo().join("configs/tiny.toml"))
        .arg("--vocab")
        .arg(&vocab)
        .arg("--out")
        .arg(&out)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    let text = String::from_utf8_lossy(&o.stdout);
    // Both counts: values and tensors (issue 19: "157 parameters" for 157 tensors).
    assert!(
        text.contains("parameter values in") && text.contains("parameter tensors"),
        "{text}"
    );
    out
}

fn png(path: &Path, w: u32, h: u32) {
    image::GrayImage::from_pixel(w, h, image::Luma([90]))
        .save(path)
        .unwrap();
}

#[test]
fn generate_warns_on_tiny_images_and_refuses_unsupported_or_broken_files() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt = checkpoint(dir.path());
    // 1×1 px: a report, plus a warning in plain text.
    let one = dir.path().join("one.png");
    png(&one, 1, 1);
    let o = bin()
        .arg("generate")
        .arg("--checkpoint")
        .arg(&ckpt)
        .arg("--image")
        .arg(&one)
        .output()
        .unwrap();
    let err = stderr(&o);
    assert!(o.status.success(), "{err}");
    assert!(
        !err.contains('\u{1b}'),
        "escape codes off a terminal: {err:?}"
    );
    assert!(
        err.contains("WARN") && err.contains("1×1 px is far outside what the model was trained on"),
        "{err}"
    );
    // A normal-sized image: no warning.
    let ok = dir.path().join("ok.png");
    png(&ok, 80, 72);
    let o = bin()
        .arg("generate")
        .arg("--checkpoint")
        .arg(&ckpt)
        .arg("--image")
        .arg(&ok)
        .output()
        .unwrap();
    assert!(
        o.status.success() && !stderr(&o).contains("WARN"),
        "{}",
        stderr(&o)
    );
    // TIFF (little-endian signature): unsupported, not "corrupt".
    let tif = dir.path().join("x.tif");
    std::fs::write(&tif, b"II*\0\x08\0\0\0\0\0\0\0\0\0\0\0").unwrap();
    let o = bin()
        .arg("generate")
        .arg("--checkpoint")
        .arg(&ckpt)
        .arg("--image")
        .arg(&tif)
        .output()
        .unwrap();
    let e = one_error(&o);
    assert!(e.contains("TIFF images are not supported"), "{e}");
    assert!(!e.contains("corrupt"), "{e}");
    // A truncated safetensors file: the checksum list written with the model names it first.
    let w = ckpt.join("model.safetensors");
    let bytes = std::fs::read(&w).unwrap();
    std::fs::write(&w, &bytes[..100]).unwrap();
    let o = bin()
        .arg("generate")
        .arg("--checkpoint")
        .arg(&ckpt)
        .arg("--image")
        .arg(&ok)
        .output()
        .unwrap();
    let e = one_error(&o);
    assert!(
        e.contains("SHA-256 differs") && e.contains("truncated"),
        "{e}"
    );
    assert_eq!(count(&e, "model.safetensors"), 1, "{e}");
    // Without SHA256SUMS (a directory from before checksums, or assembled by hand) the reader
    // itself says what is wrong: the path once, the problem in words.
    std::fs::remove_file(ckpt.join("SHA256SUMS")).unwrap();
    let o = bin()
        .arg("generate")
        .arg("--checkpoint")
        .arg(&ckpt)
        .arg("--image")
        .arg(&ok)
        .output()
        .unwrap();
    let e = one_error(&o);
    assert!(e.contains("not a complete safetensors file"), "{e}");
    assert_eq!(count(&e, "model.safetensors"), 1, "{e}");
    assert!(!e.contains("safetensors error"), "{e}");
}

#[test]
fn non_utf8_annotation_is_located_by_line() {
    let dir = tempfile::tempdir().unwrap();
    let ann = dir.path().join("annotation.json");
    let mut bytes = b"{\"train\": [\n  {\"id\": \"a\", \"report\": \"no ".to_vec();
    bytes.push(0xff);
    bytes.extend_from_slice(b"\"}\n]}\n");
    std::fs::write(&ann, bytes).unwrap();
    let o = bin()
        .args([
            "prepare",
            "--source",
            "r2gen",
            "--dataset",
            "iu_xray",
            "--ann",
        ])
        .arg(&ann)
        .arg("--images")
        .arg(dir.path())
        .arg("--out")
        .arg(dir.path().join("out"))
        .output()
        .unwrap();
    let e = one_error(&o);
    assert!(e.contains("annotation.json"), "{e}");
    assert!(e.contains("line 2, column 29"), "{e}");
}

#[test]
fn a_world_error_is_printed_once_under_mpirun() {
    let o = Command::new("mpirun")
        .args(["--oversubscribe", "-np", "2"])
        .arg(env!("CARGO_BIN_EXE_ithn-dist"))
        .args(["train", "--config"])
        .arg(repo().join("configs/tiny.toml"))
        .args(["--set", "train.batch_size=3", "--run-dir"])
        .arg(tempfile::tempdir().unwrap().path().join("run"))
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .env_remove("NO_COLOR")
        .output()
        .expect("mpirun must be on PATH");
    let err = stderr(&o);
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(lines.len(), 1, "{err}");
    assert!(lines[0].contains("train.batch_size = 3"), "{err}");
}

#[test]
fn score_reads_evaluate_predictions() {
    let dir = tempfile::tempdir().unwrap();
    let rows = [
        ("s1", "no pleural effusion .", "no effusion ."),
        ("s2", "the lungs are clear .", "lungs are clear ."),
        ("s3", "heart size is normal .", "the heart is normal ."),
    ];
    let (mut preds, mut refs, mut hyps) = (String::new(), String::new(), String::new());
    for (id, r, h) in rows {
        let rec = |k: &str, v: &str| serde_json::json!({"id": id, k: v}).to_string() + "\n";
        preds +=
            &(serde_json::json!({"id": id, "reference": r, "prediction": h}).to_string() + "\n");
        refs += &rec("report", r);
        hyps += &rec("report", h);
    }
    let p = dir.path().join("predictions.jsonl");
    let (rf, hf) = (dir.path().join("refs.jsonl"), dir.path().join("hyps.jsonl"));
    std::fs::write(&p, preds).unwrap();
    std::fs::write(&rf, refs).unwrap();
    std::fs::write(&hf, hyps).unwrap();
    let score = |args: &[&Path]| {
        let mut c = bin();
        c.args(["score", "--no-meteor", "--json"]);
        for (flag, path) in ["--hyps", "--refs"].iter().zip(args) {
            c.arg(flag).arg(path);
        }
        let o = c.output().unwrap();
        assert!(o.status.success(), "{}", stderr(&o));
        String::from_utf8(o.stdout).unwrap()
    };
    let separate = score(&[&hf, &rf]);
    assert!(separate.contains("BLEU_1"), "{separate}");
    assert_eq!(score(&[&p]), separate, "predictions.jsonl alone");
    assert_eq!(score(&[&p, &p]), separate, "as both --hyps and --refs");
}
