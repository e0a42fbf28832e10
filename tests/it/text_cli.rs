//! `ithn-dist text …` error handling through the real binary (issue 2, build item 8): bad input
//! gets a clear error naming the line or the file. No fixture numbers are involved.

use std::io::Write;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: &str, dir: &std::path::Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_ithn-dist"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn encode_reports_line_numbers_and_bad_files() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::write(
        d.join("ann.json"),
        r#"{"train": [{"id": "a", "report": "Heart normal. Heart normal."}], "val": [], "test": []}"#,
    )
    .unwrap();
    let out = run(
        &[
            "text",
            "vocab",
            "--ann",
            "ann.json",
            "--dataset",
            "iu_xray",
            "--threshold",
            "1",
            "--out",
            "v.json",
        ],
        "",
        d,
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let ok = run(
        &["text", "encode", "--vocab", "v.json"],
        "{\"id\": 7, \"report\": \"Heart big.\"}\n",
        d,
    );
    assert!(ok.status.success());
    // vocab: "." "<unk>" "heart" "normal" → ids 1..4; "big" is unknown.
    assert_eq!(
        String::from_utf8(ok.stdout).unwrap().trim(),
        r#"{"cleaned":"heart big .","id":7,"ids":[0,3,2,1,0]}"#
    );

    let bad = run(
        &["text", "encode", "--vocab", "v.json"],
        "{\"id\": 1, \"report\": \"a\"}\n{\"id\": 2}\n",
        d,
    );
    assert_eq!(bad.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("stdin line 2: missing string key `report`")
    );

    let missing = run(&["text", "encode", "--vocab", "nope.json"], "", d);
    assert_eq!(missing.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&missing.stderr).contains("cannot read nope.json"));

    let no_train = run(
        &[
            "text",
            "vocab",
            "--ann",
            "v.json",
            "--dataset",
            "iu_xray",
            "--out",
            "x.json",
        ],
        "",
        d,
    );
    assert_eq!(no_train.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&no_train.stderr).contains("v.json: missing list `train`"));
}
