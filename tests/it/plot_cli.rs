//! `ithn-dist plot` end to end: the real binary on a metrics.jsonl written by the test (in the
//! trainer's line format, see src/plot.rs); expected sizes are the documented 1200×800.

use std::path::Path;
use std::process::{Command, Output};

fn plot(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ithn-dist"))
        .arg("plot")
        .args(args)
        .output()
        .expect("run ithn-dist")
}

fn metrics(epochs: u64, with_eval: bool) -> String {
    let mut lines = Vec::new();
    for e in 1..=epochs {
        for k in 0..10u64 {
            let s = (e - 1) * 10 + k + 1;
            let lm = 4.0 / (1.0 + 0.1 * s as f64);
            lines.push(format!(
                r#"{{"kind":"train","epoch":{e},"step":{s},"loss":{},"lm":{lm},"l_cp":{},"l_cs":0.05,"lr_ve":{},"lr_ed":{},"lambda":{},"samples_per_s":{},"tokens_per_s":{}}}"#,
                0.7 * lm + 0.1 * 2.7 + 0.2 * 0.05,
                2.7 - 0.01 * s as f64,
                1e-4 * 0.8f64.powi((e / 3) as i32),
                5e-4 * 0.8f64.powi((e / 3) as i32),
                (-0.01 * e as f64).exp(),
                100.0 + k as f64,
                3000.0 + 10.0 * k as f64
            ));
        }
        if with_eval {
            let b = 0.05 * e as f64;
            lines.push(format!(
                r#"{{"kind":"val","epoch":{e},"step":{},"BLEU_1":{},"BLEU_2":{},"BLEU_3":{},"BLEU_4":{b},"METEOR":{},"ROUGE_L":{},"CIDEr":{}}}"#,
                e * 10,
                b * 4.0,
                b * 3.0,
                b * 2.0,
                b * 1.5,
                b * 3.5,
                b * 5.0
            ));
        }
    }
    if with_eval {
        lines.push(r#"{"kind":"test","epoch":4,"step":40,"BLEU_1":0.8,"BLEU_2":0.6,"BLEU_3":0.4,"BLEU_4":0.2,"ROUGE_L":0.7,"CIDEr":1.0}"#.into());
    }
    lines.join("\n") + "\n"
}

/// Decodes a chart and checks its size and that it is not blank: some pixels are not white
/// and the first series colour (31,119,180) is drawn.
fn assert_chart(path: &Path) {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let img = image::load_from_memory(&bytes)
        .expect("valid PNG")
        .to_rgb8();
    assert_eq!(img.dimensions(), (1200, 800), "{}", path.display());
    let non_white = img.pixels().filter(|p| p.0 != [255, 255, 255]).count();
    assert!(
        non_white > 5_000,
        "{}: only {non_white} non-white pixels",
        path.display()
    );
    assert!(
        img.pixels().any(|p| p.0 == [31, 119, 180]),
        "{}: no series drawn",
        path.display()
    );
}

#[test]
fn writes_four_charts_of_the_stated_size() {
    let run = tempfile::tempdir().expect("tempdir");
    std::fs::write(run.path().join("metrics.jsonl"), metrics(4, true)).expect("write");
    let o = plot(&[run.path().as_os_str()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for name in [
        "loss.png",
        "schedule.png",
        "throughput.png",
        "val_metrics.png",
    ] {
        assert_chart(&run.path().join("plots").join(name));
    }
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert_eq!(stdout.lines().count(), 4, "{stdout}");
}

#[test]
fn out_dir_and_missing_validation() {
    let run = tempfile::tempdir().expect("tempdir");
    let out = run.path().join("charts");
    std::fs::write(run.path().join("metrics.jsonl"), metrics(2, false)).expect("write");
    let o = plot(&[run.path().as_os_str(), "--out".as_ref(), out.as_os_str()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_chart(&out.join("loss.png"));
    assert!(
        !out.join("val_metrics.png").exists(),
        "no val records → no val chart"
    );
}

#[test]
fn malformed_or_missing_metrics_name_the_file_and_line() {
    let run = tempfile::tempdir().expect("tempdir");
    let mut text = metrics(1, false);
    text.push_str("{\"kind\":\"train\",\"epoch\":2,\"step\":\n");
    std::fs::write(run.path().join("metrics.jsonl"), text).expect("write");
    let o = plot(&[run.path().as_os_str()]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("metrics.jsonl:11:"), "{err}");
    assert!(!run.path().join("plots").exists());

    let empty = tempfile::tempdir().expect("tempdir");
    let o = plot(&[empty.path().as_os_str()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        o.status.code() == Some(1) && err.contains("metrics.jsonl"),
        "{err}"
    );
}
