//! Optimizer parity with the reference (issue 7, acceptance 2).
//!
//! Fixture: ../shared/reference/public/model — `weights.safetensors` (parameters before the
//! step), `grads.safetensors` (`grad.<name>`), `step.safetensors` (`param.<name>` after ONE step
//! of a fresh torch.optim.Adam(amsgrad, betas (0.9, 0.98), eps 1e-9, wd 5e-5), groups lr 1e-4 /
//! 5e-4) and `config.json` (`parameters`: optimizer order and group of each tensor).

use std::collections::HashMap;
use std::path::PathBuf;

use ithn_dist::train::optim::{Adam, AdamConfig};
use tch::{Kind, Tensor};

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../shared/reference/public/model")
        .join(name)
}

fn load(name: &str) -> HashMap<String, Tensor> {
    Tensor::read_safetensors(fixture(name))
        .unwrap_or_else(|e| panic!("fixture {name}: {e}"))
        .into_iter()
        .collect()
}

#[test]
fn one_adam_step_matches_the_reference() {
    let cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixture("config.json")).unwrap()).unwrap();
    let weights = load("weights.safetensors");
    let grads = load("grads.safetensors");
    let after = load("step.safetensors");

    let mut params = Vec::new();
    for p in cfg["parameters"].as_array().expect("parameters list") {
        let name = p["name"].as_str().unwrap().to_string();
        let group = p["optimizer_group"].as_u64().unwrap() as usize;
        let w = weights[&name].copy().set_requires_grad(true);
        // Install the fixture gradient: backward of Σ w·g gives exactly g.
        (&w * &grads[&format!("grad.{name}")])
            .sum(Kind::Float)
            .backward();
        params.push((name, w, group));
    }
    assert_eq!(params.len(), 157);
    let groups = &cfg["optimizer"]["groups"];
    let lrs = vec![
        groups[0]["lr"].as_f64().unwrap(),
        groups[1]["lr"].as_f64().unwrap(),
    ];
    let adam = AdamConfig {
        beta1: 0.9,
        beta2: 0.98,
        eps: 1e-9,
        weight_decay: 5e-5,
        amsgrad: true,
    };
    let tensors: Vec<(String, Tensor)> = params
        .iter()
        .map(|(n, t, _)| (n.clone(), t.shallow_clone()))
        .collect();
    let mut opt = Adam::new(params, lrs, adam).unwrap();
    opt.step();

    let mut worst = 0.0f64;
    let mut not_bit_exact = Vec::new();
    for (name, t) in tensors {
        let want = &after[&format!("param.{name}")];
        let got = t.detach();
        let rel = ((&got - want).abs() / want.abs().clamp_min(1e-30))
            .max()
            .double_value(&[]);
        worst = worst.max(rel);
        assert!(rel <= 1e-6, "{name}: relative error {rel}");
        if !got.equal(want) {
            not_bit_exact.push(name);
        }
    }
    eprintln!("worst relative error {worst:e}; not bit-exact: {not_bit_exact:?}");
    assert!(
        not_bit_exact.is_empty(),
        "every parameter bit-exact; differing: {not_bit_exact:?}"
    );
}
