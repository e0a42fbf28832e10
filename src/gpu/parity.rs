//! `ithn-dist gpu parity`: the public parity checks of tests/it/model_parity.rs and
//! tests/it/train_optim_parity.rs (forward, losses, gradients, greedy and beam decoding, one Adam
//! step) as a command of the binary itself, so that a binary built elsewhere (the GPU machine's,
//! against libtorch 2.11: ops/gpu/build.sh) is checked on the libtorch it loads.
//!
//! On `--device cpu` every tensor is compared with the fixture. On a CUDA device the same model
//! also runs on the CPU in the same process: the CUDA run is compared with the fixture's
//! outputs and decoded tokens and with the CPU run's gradients and optimizer step (the fixture's
//! gradients and step stay behind when it travels to the GPU machine). `--bf16` adds a
//! `model.precision = "bf16"` run on the device, compared with its fp32 run.
//!
//! Tolerances (docs/gpu.md, the constants below): CPU vs fixture as tests/it/model_parity.rs
//! (elementwise rtol 1e-4, atol 1e-5); CUDA fp32 rel-L2 ≤ 1e-4 for forward tensors and
//! log-probs, ≤ 1e-3 for gradients (each with a small absolute floor); the Adam step elementwise
//! rtol 1e-6, atol 1e-8 everywhere; bf16 vs fp32 rel-L2 ≤ 3e-2 forward, ≤ 1e-1 per gradient and
//! ≤ 5e-2 for the whole concatenated gradient. Token ids must be identical.

use std::path::PathBuf;

use clap::Args;
use serde::Serialize;
use tch::{Device, Kind, Tensor};

use super::compare::{compare, compare_scalar, print, Check, Tol};
use super::fixture::Fixture;
use crate::config::{IthnConfig, Precision};
use crate::model::weights::read_safetensors;
use crate::model::{beam_search, greedy, ithn_forward, Decoded, R2GenCmn};
use crate::train::optim::Adam;

#[derive(Args, Debug)]
pub struct ParityArgs {
    /// Fixture folder: config.json, weights/inputs/outputs.safetensors, and optionally
    /// grads.safetensors, step.safetensors, decode.json (../shared/reference/public/model).
    #[arg(long, value_name = "DIR")]
    pub fixture: PathBuf,
    /// `cpu`, `cuda` or `cuda:N`.
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// Also run the model in bf16 on the device and compare it with fp32 (CUDA only).
    #[arg(long)]
    pub bf16: bool,
    /// Write every check as JSON here (written atomically).
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
}

/// The JSON report.
#[derive(Debug, Serialize)]
pub struct ParityReport {
    pub device: String,
    pub checks: Vec<Check>,
    pub failed: usize,
}

/// Everything one model run produced, on the CPU.
struct Run {
    outputs: Vec<(&'static str, Tensor)>,
    /// `(name, gradient, optimizer group)` in the reference's parameter order.
    grads: Vec<(String, Tensor, usize)>,
    greedy: Decoded,
    beam: Decoded,
}

/// Parses `cpu`, `cuda`, `cuda:N`; errors when CUDA is asked for and absent.
pub fn parse_device(s: &str) -> anyhow::Result<Device> {
    let d = match s {
        "cpu" => Device::Cpu,
        "cuda" => Device::Cuda(0),
        _ => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => Device::Cuda(i),
            _ => anyhow::bail!("--device {s}: expected cpu, cuda or cuda:N"),
        },
    };
    if let Device::Cuda(i) = d {
        let n = if tch::Cuda::is_available() {
            tch::Cuda::device_count() as usize
        } else {
            0
        };
        anyhow::ensure!(
            i < n,
            "--device {s}: this libtorch sees {n} CUDA device(s) (is it a CUDA build, is the driver's libcuda.so.1 on the library path?)"
        );
    }
    Ok(d)
}

fn to_cpu(d: Decoded) -> Decoded {
    Decoded {
        seq: d.seq.to_device(Device::Cpu),
        logprobs: d.logprobs.to_device(Device::Cpu),
        scores: d.scores,
    }
}

/// Forward + backward of the fixture batch in eval mode, then greedy and beam decoding.
fn run_model(fx: &Fixture, device: Device, precision: Precision) -> anyhow::Result<Run> {
    let cfg = crate::config::ModelConfig {
        precision,
        ..fx.model.clone()
    };
    let model = R2GenCmn::new(&cfg, 1, fx.logit_dim, device, 0)?;
    model.load_safetensors(&fx.weights_path())?;
    let out = ithn_forward(
        &model,
        &fx.batch(device)?,
        &IthnConfig::default(),
        false,
        None,
    );
    model.zero_grad();
    out.loss.backward();
    let cpu = |t: &Tensor| t.detach().to_device(Device::Cpu).to_kind(Kind::Float);
    let grads = model
        .parameters()
        .iter()
        .map(|(name, p, group)| (name.clone(), cpu(&p.grad()), *group))
        .collect();
    let att = out.forward.att_feats.detach();
    let (g, b) = tch::no_grad(|| {
        (
            greedy(&model, &att, fx.max_len, true),
            beam_search(&model, &att, fx.max_len, fx.beam),
        )
    });
    let outputs = out.named().into_iter().map(|(n, t)| (n, cpu(t))).collect();
    Ok(Run {
        outputs,
        grads,
        greedy: to_cpu(g),
        beam: to_cpu(b),
    })
}

/// One step of a fresh reference optimizer on `device` from the given gradients; returns the
/// parameters after it (CPU), in the fixture's parameter order.
fn adam_step(
    fx: &Fixture,
    device: Device,
    grads: &[(String, Tensor, usize)],
) -> anyhow::Result<Vec<(String, Tensor)>> {
    let weights = read_safetensors(&fx.weights_path())?;
    let mut params = Vec::new();
    for (name, g, group) in grads {
        let w = weights
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("weights.safetensors: no parameter {name}"))?
            .to_device(device)
            // A fresh tensor of its own, as the model's parameters are: the step on the tensor
            // read from the file (not a copy) differs from torch's in the last bit of some
            // elements.
            .copy()
            .set_requires_grad(true);
        // Installs exactly g as w's gradient: d/dw Σ w·g = g.
        (&w * g.to_device(device)).sum(Kind::Float).backward();
        params.push((name.clone(), w, *group));
    }
    let tensors: Vec<(String, Tensor)> = params
        .iter()
        .map(|(n, t, _)| (n.clone(), t.shallow_clone()))
        .collect();
    let mut opt = Adam::new(params, fx.learning_rates()?, fx.adam()?)?;
    opt.step();
    Ok(tensors
        .into_iter()
        .map(|(n, t)| (n, t.detach().to_device(Device::Cpu)))
        .collect())
}

const CPU_EXACT: Tol = Tol::Elementwise {
    atol: 1e-5,
    rtol: 1e-4,
};
/// CUDA fp32 forward tensors and log-probs against the fixture.
const CUDA_FORWARD: Tol = Tol::RelL2 {
    bound: 1e-4,
    atol: 1e-7,
};
/// CUDA fp32 gradients against the CPU's.
const CUDA_GRAD: Tol = Tol::RelL2 {
    bound: 1e-3,
    atol: 1e-8,
};
/// One Adam step: a few units in the last place (CPUs with other vector units, and GPUs,
/// round some elements differently), far below what a wrong step changes (≥ 1e-5 of lr 1e-4).
const STEP: Tol = Tol::Elementwise {
    atol: 1e-8,
    rtol: 1e-6,
};

/// A run against the fixture: every forward tensor, the decoded tokens and log-probs, the best
/// beams' scores and, when the fixture has them, the gradients.
fn vs_fixture(fx: &Fixture, label: &str, run: &Run, fwd: Tol, grad: Tol) -> Vec<Check> {
    let want = |k: &str| fx.outputs.get(k).map(|t| t.shallow_clone());
    let mut out = Vec::new();
    let mut against = |name: &str, got: &Tensor, tol: Tol| match want(name) {
        Some(w) => out.push(compare(label, name, got, &w, tol)),
        None => out.push(missing(label, name, "outputs.safetensors")),
    };
    for (name, t) in &run.outputs {
        against(name, t, fwd);
    }
    against("greedy_seq", &run.greedy.seq, Tol::Exact);
    against("beam_seq", &run.beam.seq, Tol::Exact);
    against("greedy_logprobs", &run.greedy.logprobs, fwd);
    against("beam_logprobs", &run.beam.logprobs, fwd);
    if let Some(scores) = &fx.beam_scores {
        for (i, (&got, &want)) in run.beam.scores.iter().zip(scores).enumerate() {
            out.push(compare_scalar(
                label,
                &format!("beam_score[{i}]"),
                got,
                want,
                1e-4,
            ));
        }
    }
    if let Some(grads) = &fx.grads {
        for (name, g, _) in &run.grads {
            let key = format!("grad.{name}");
            out.push(match grads.get(&key) {
                Some(w) => compare(label, &key, g, w, grad),
                None => missing(label, &key, "grads.safetensors"),
            });
        }
    }
    out
}

fn missing(against: &str, name: &str, file: &str) -> Check {
    Check {
        against: against.into(),
        name: name.into(),
        max_abs: f64::NAN,
        rel_l2: f64::NAN,
        tolerance: "present".into(),
        ok: false,
        note: Some(format!("no key {name} in {file}")),
    }
}

/// Gradients of two runs, per tensor and (when `global` is given) as one concatenated vector.
fn grads_vs(
    label: &str,
    got: &[(String, Tensor, usize)],
    want: &[(String, Tensor, usize)],
    each: Tol,
    global: Option<f64>,
) -> Vec<Check> {
    let mut out: Vec<Check> = got
        .iter()
        .zip(want)
        .map(|((n, g, _), (_, w, _))| compare(label, &format!("grad.{n}"), g, w, each))
        .collect();
    if let Some(bound) = global {
        let flat = |v: &[(String, Tensor, usize)]| {
            Tensor::cat(
                &v.iter()
                    .map(|(_, t, _)| t.reshape([-1]))
                    .collect::<Vec<_>>(),
                0,
            )
        };
        out.push(compare(
            label,
            "grad (all, concatenated)",
            &flat(got),
            &flat(want),
            Tol::RelL2 { bound, atol: 0.0 },
        ));
    }
    out
}

/// One Adam step: from the fixture's gradients against step.safetensors when both travelled,
/// else (on CUDA) from the CPU run's gradients against the same step taken on the CPU.
fn step_checks(fx: &Fixture, device: Device, cpu_run: Option<&Run>) -> anyhow::Result<Vec<Check>> {
    let tol = STEP;
    if let (Some(grads), Some(after)) = (&fx.grads, &fx.step) {
        let order = R2GenCmn::new(&fx.model, 1, fx.logit_dim, Device::Cpu, 0)?.parameters();
        let mut g = Vec::new();
        for (name, _, group) in order {
            let key = format!("grad.{name}");
            let t = grads
                .get(&key)
                .ok_or_else(|| anyhow::anyhow!("grads.safetensors: no key {key}"))?;
            g.push((name, t.shallow_clone(), group));
        }
        let got = adam_step(fx, device, &g)?;
        return Ok(got
            .iter()
            .map(|(n, t)| {
                let key = format!("param.{n}");
                match after.get(&key) {
                    Some(w) => compare("fixture", &format!("step.{key}"), t, w, tol),
                    None => missing("fixture", &key, "step.safetensors"),
                }
            })
            .collect());
    }
    let Some(cpu) = cpu_run else {
        println!(
            "(no grads.safetensors + step.safetensors in the fixture: optimizer step not checked)"
        );
        return Ok(Vec::new());
    };
    let on_device = adam_step(fx, device, &cpu.grads)?;
    let on_cpu = adam_step(fx, Device::Cpu, &cpu.grads)?;
    Ok(on_device
        .iter()
        .zip(&on_cpu)
        .map(|((n, g), (_, w))| compare("cpu", &format!("step.param.{n}"), g, w, tol))
        .collect())
}

/// The bf16 run against the fp32 run on the same device.
fn bf16_checks(bf16: &Run, fp32: &Run) -> Vec<Check> {
    let mut out: Vec<Check> = bf16
        .outputs
        .iter()
        .zip(&fp32.outputs)
        .map(|((n, g), (_, w))| {
            compare(
                "fp32",
                &format!("bf16.{n}"),
                g,
                w,
                Tol::RelL2 {
                    bound: 3e-2,
                    atol: 1e-6,
                },
            )
        })
        .collect();
    out.extend(grads_vs(
        "fp32",
        &bf16.grads,
        &fp32.grads,
        Tol::RelL2 {
            bound: 1e-1,
            atol: 1e-7,
        },
        Some(5e-2),
    ));
    out
}

/// All checks for `a`.
fn checks(a: &ParityArgs, fx: &Fixture, device: Device) -> anyhow::Result<Vec<Check>> {
    let main = run_model(fx, device, Precision::Fp32)?;
    let mut out = Vec::new();
    if device.is_cuda() {
        out.extend(vs_fixture(fx, "fixture", &main, CUDA_FORWARD, CUDA_GRAD));
        let cpu = run_model(fx, Device::Cpu, Precision::Fp32)?;
        out.extend(vs_fixture(fx, "fixture[cpu]", &cpu, CPU_EXACT, CPU_EXACT));
        out.extend(grads_vs("cpu", &main.grads, &cpu.grads, CUDA_GRAD, None));
        out.extend(step_checks(fx, device, Some(&cpu))?);
    } else {
        out.extend(vs_fixture(fx, "fixture", &main, CPU_EXACT, CPU_EXACT));
        out.extend(step_checks(fx, device, None)?);
    }
    if a.bf16 {
        let half = run_model(fx, device, Precision::Bf16)?;
        out.extend(bf16_checks(&half, &main));
    }
    Ok(out)
}

/// Runs the checks, prints one line each and a summary; exit code 1 when any failed.
pub fn run(a: ParityArgs) -> anyhow::Result<i32> {
    let device = parse_device(&a.device)?;
    anyhow::ensure!(
        !a.bf16 || device.is_cuda(),
        "--bf16 needs a CUDA device (model.precision = \"bf16\" only changes CUDA runs)"
    );
    let fx = Fixture::load(&a.fixture)?;
    let checks = checks(&a, &fx, device)?;
    checks.iter().for_each(print);
    let failed = checks.iter().filter(|c| !c.ok).count();
    // Forward tensors only: a gradient whose true value is zero has a meaningless rel-L2.
    let worst = |against: &str| {
        checks
            .iter()
            .filter(|c| {
                c.against == against && !c.name.starts_with("grad") && !c.name.starts_with("step")
            })
            .map(|c| c.rel_l2)
            .fold(0.0f64, f64::max)
    };
    let all_grads = |against: &str| {
        checks
            .iter()
            .find(|c| c.against == against && c.name.starts_with("grad (all"))
            .map_or(f64::NAN, |c| c.rel_l2)
    };
    println!(
        "parity on {}: {} checks, {} failed; worst forward rel-L2 vs fixture {:.3e}; bf16 vs fp32: forward {:.3e}, whole gradient {:.3e}",
        a.device,
        checks.len(),
        failed,
        worst("fixture"),
        worst("fp32"),
        all_grads("fp32"),
    );
    if let Some(path) = &a.json {
        let report = ParityReport {
            device: a.device.clone(),
            checks,
            failed,
        };
        crate::fsutil::write_atomic(path, serde_json::to_string_pretty(&report)?.as_bytes())
            .map_err(|e| anyhow::anyhow!("writing {}: {}", path.display(), e.source))?;
    }
    Ok(i32::from(failed > 0))
}
