//! `ithn-dist gpu parity` and `gpu flops` through the real binary (issue 16: the checks that
//! ops/gpu/check.sh runs on the GPU machine, here on the CPU). The fixture is
//! `../shared/reference/public/model` (README there); the reduced copies below are what travels
//! to the GPU machine (no grads/step) and a deliberately wrong one (one output perturbed).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use tch::Tensor;

fn fixture_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../shared/reference/public/model")
}

fn bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_ithn-dist"))
        .env("OMP_NUM_THREADS", "1")
        .args(args)
        .output()
        .expect("run ithn-dist")
}

fn parity(dir: &Path, json: &Path) -> (Output, serde_json::Value) {
    let out = bin(&[
        "gpu",
        "parity",
        "--fixture",
        dir.to_str().unwrap(),
        "--device",
        "cpu",
        "--json",
        json.to_str().unwrap(),
    ]);
    let report = std::fs::read_to_string(json)
        .map(|t| serde_json::from_str(&t).expect("report is JSON"))
        .unwrap_or(serde_json::Value::Null);
    (out, report)
}

/// A fixture folder of links to the real files, without `leave_out`.
fn linked_copy(dir: &Path, leave_out: &[&str]) {
    for f in [
        "config.json",
        "decode.json",
        "weights.safetensors",
        "inputs.safetensors",
        "outputs.safetensors",
        "grads.safetensors",
        "step.safetensors",
    ] {
        if !leave_out.contains(&f) {
            std::os::unix::fs::symlink(fixture_dir().join(f), dir.join(f)).unwrap();
        }
    }
}

fn names(report: &serde_json::Value) -> Vec<String> {
    report["checks"]
        .as_array()
        .expect("checks")
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn full_fixture_passes_every_check_on_the_cpu() {
    let tmp = tempfile::tempdir().unwrap();
    let (out, report) = parity(&fixture_dir(), &tmp.path().join("p.json"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(report["failed"], 0, "{stdout}");
    let names = names(&report);
    // 21 forward tensors, 2 token and 2 log-prob tensors, 2 beam scores, 157 gradients, 157 steps.
    assert_eq!(names.len(), 21 + 4 + 2 + 157 + 157, "{names:?}");
    for want in [
        "loss",
        "beam_seq",
        "greedy_seq",
        "grad.temp_1",
        "step.param.temp_1",
    ] {
        assert!(names.iter().any(|n| n == want), "no check {want}");
    }
}

#[test]
fn travelling_fixture_without_grads_and_step_still_checks_forward_and_decoding() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fixture");
    std::fs::create_dir(&dir).unwrap();
    linked_copy(&dir, &["grads.safetensors", "step.safetensors"]);
    let (out, report) = parity(&dir, &tmp.path().join("p.json"));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert_eq!(names(&report).len(), 21 + 4 + 2, "{stdout}");
    assert!(stdout.contains("optimizer step not checked"), "{stdout}");
}

#[test]
fn a_wrong_reference_output_fails_the_check_and_is_named() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("fixture");
    std::fs::create_dir(&dir).unwrap();
    linked_copy(&dir, &["outputs.safetensors"]);
    let mut outputs = Tensor::read_safetensors(fixture_dir().join("outputs.safetensors")).unwrap();
    for (name, t) in outputs.iter_mut() {
        if name == "l_cs" {
            *t = &*t * 1.01;
        }
    }
    Tensor::write_safetensors(&outputs, dir.join("outputs.safetensors")).unwrap();
    let (out, report) = parity(&dir, &tmp.path().join("p.json"));
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(report["failed"], 1);
    let failed: Vec<&str> = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["ok"] == false)
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(failed, ["l_cs"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("FAIL  fixture  l_cs"));
}

#[test]
fn missing_fixture_and_absent_cuda_are_clear_errors() {
    let tmp = tempfile::tempdir().unwrap();
    let out = bin(&["gpu", "parity", "--fixture", tmp.path().to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("config.json"), "{err}");
    if !tch::Cuda::is_available() {
        let fx = fixture_dir();
        let out = bin(&[
            "gpu",
            "parity",
            "--fixture",
            fx.to_str().unwrap(),
            "--device",
            "cuda",
        ]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("0 CUDA device"), "{err}");
    }
}

#[test]
fn flops_of_the_published_config_give_an_mfu() {
    let config = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs/mimic_cxr.toml");
    let out = bin(&[
        "gpu",
        "flops",
        "--config",
        config.to_str().unwrap(),
        "--samples-per-s",
        "1000",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let train = v["train"].as_f64().unwrap();
    // Two ResNet-101 passes (2 × 15.6 GFLOP) dominate the forward; training is 3× the forward.
    assert!(train > 3.0 * 31e9 && train < 3.0 * 40e9, "{v}");
    let mfu = v["mfu"].as_f64().unwrap();
    assert!((mfu - 1000.0 * train / 790e12).abs() < 1e-12, "{v}");
}
