//! The reference side of `bench decode` (`ops/bench/decode_ref.py`, the PyTorch sampling loop
//! of SPEC §4) decodes what the reference decodes and what this crate decodes: on the fixture
//! model its greedy and beam-3 tokens equal the reference fixture's (`outputs.safetensors`), and
//! on perturbed features (reports that end at different lengths, batch 6) they equal
//! `greedy_with` / `beam_search_with`. Runs the script with the project venv's torch (CI
//! installs it via ops/setup.sh); without torch in the venv the test says so and skips.

use std::path::{Path, PathBuf};
use std::process::Command;

use ithn_dist::model::decode::{beam_search_with, greedy_with, StepMode};
use ithn_dist::model::weights::write_safetensors_atomic;
use ithn_dist::model::R2GenCmn;
use tch::{Kind, Tensor};

fn repo(p: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(p)
}

fn fixture(name: &str) -> PathBuf {
    repo("../shared/reference/public/model").join(name)
}

fn venv_has_torch() -> bool {
    Command::new(repo(".venv/bin/python"))
        .args(["-c", "import torch, safetensors"])
        .status()
        .is_ok_and(|s| s.success())
}

fn fixture_model() -> R2GenCmn {
    crate::util::reference_fixture_model()
}

fn fixture_outputs() -> Vec<(String, Tensor)> {
    Tensor::read_safetensors(fixture("outputs.safetensors")).unwrap()
}

fn output(name: &str) -> Tensor {
    let (_, t) = fixture_outputs()
        .into_iter()
        .find(|(k, _)| k == name)
        .unwrap();
    t
}

/// Runs the script on `att` (batch b) and returns its tokens per method ("greedy", "beam3");
/// with `serve`, as `bench decode` runs it: one process answering `<method> <batch>` lines.
fn script_tokens(att: &Tensor, max_len: usize, serve: bool) -> Vec<(String, Vec<Vec<i64>>)> {
    let dir = tempfile::tempdir().unwrap();
    let b = att.size()[0];
    let feats = dir.path().join("feats.safetensors");
    write_safetensors_atomic(&feats, &[(format!("att_feats.{b}"), att.shallow_clone())]).unwrap();
    let mut cmd = Command::new(repo(".venv/bin/python"));
    cmd.arg(repo("ops/bench/decode_ref.py"))
        .arg("--weights")
        .arg(fixture("weights.safetensors"))
        .arg("--feats")
        .arg(&feats)
        .args(["--heads", "4", "--topk", "8", "--repeat", "1"])
        .args(["--max-len", &max_len.to_string(), "--batch", &b.to_string()]);
    let out = if serve {
        use std::io::Write;
        use std::process::Stdio;
        let mut child = cmd
            .arg("--serve")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        // Asked in the opposite order to the batch mode's: answers follow the requests.
        write!(child.stdin.take().unwrap(), "beam3 {b}\ngreedy {b}\n").unwrap();
        child.wait_with_output().unwrap()
    } else {
        cmd.output().unwrap()
    };
    assert!(
        out.status.success(),
        "decode_ref.py failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["batch"].as_i64(), Some(b));
            let tokens = serde_json::from_value(v["tokens"].clone()).unwrap();
            (v["method"].as_str().unwrap().to_string(), tokens)
        })
        .collect()
}

fn rows(seq: &Tensor) -> Vec<Vec<i64>> {
    let seq: Vec<Vec<i64>> = Vec::<Vec<i64>>::try_from(seq).unwrap();
    seq.into_iter()
        .map(|r| r.into_iter().take_while(|&t| t != 0).collect())
        .collect()
}

#[test]
fn reference_script_reproduces_the_reference_fixture() {
    if !venv_has_torch() {
        eprintln!("skipped: .venv/bin/python has no torch/safetensors (run ops/setup.sh)");
        return;
    }
    for serve in [false, true] {
        let got = script_tokens(&output("att_feats"), 20, serve);
        assert_eq!(got.len(), 2, "one line per method (serve {serve})");
        let methods: Vec<&str> = got.iter().map(|(m, _)| m.as_str()).collect();
        let order = if serve {
            ["beam3", "greedy"]
        } else {
            ["greedy", "beam3"]
        };
        assert_eq!(methods, order, "answers in the order asked");
        check_fixture_tokens(got);
    }
}

fn check_fixture_tokens(got: Vec<(String, Vec<Vec<i64>>)>) {
    for (method, tokens) in got {
        let key = if method == "greedy" {
            "greedy_seq"
        } else {
            "beam_seq"
        };
        assert_eq!(
            tokens,
            rows(&output(key)),
            "{method} tokens vs the fixture's {key}"
        );
    }
}

#[test]
fn reference_script_tokens_equal_this_crates_decoding() {
    if !venv_has_torch() {
        eprintln!("skipped: .venv/bin/python has no torch/safetensors (run ops/setup.sh)");
        return;
    }
    let model = fixture_model();
    // The fixture's two images, each with three noise levels: reports of different lengths.
    tch::manual_seed(3);
    let base = output("att_feats").repeat([3, 1, 1]);
    let scale = Tensor::from_slice(&[0.0f32, 0.0, 0.3, 0.3, 1.0, 1.0]).view([6, 1, 1]);
    let att = (&base + Tensor::rand_like(&base) * scale).relu();
    let max_len = 30;
    let greedy = rows(&greedy_with(&model, &att, max_len, true, StepMode::Cached).seq);
    let beam = rows(&beam_search_with(&model, &att, max_len, 3, StepMode::Cached).seq);
    let lengths: Vec<usize> = beam.iter().map(Vec::len).collect();
    assert!(
        lengths.iter().any(|&n| n < max_len),
        "some beam report ends before the limit: {lengths:?}"
    );
    for (method, tokens) in script_tokens(&att.to_kind(Kind::Float), max_len, false) {
        let ours = if method == "greedy" { &greedy } else { &beam };
        assert_eq!(&tokens, ours, "{method}: decode_ref.py vs this crate");
    }
}
