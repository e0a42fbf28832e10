//! `ithn-dist world`: checks a launch before a long job does. Every rank reports its placement,
//! then a tensor all-reduce is verified against the closed-form sum. CI runs it under
//! `mpirun -np 2` so the MPI path is exercised from day one. Where CUDA is available the same
//! all-reduce also runs on `cuda:<local rank>` through NCCL (any world size, 1 included: the
//! GPU check, ops/gpu/check.sh, runs it on one rank without a launcher).

use super::nccl::NcclCollectives;
use super::{Collectives, World};
use tch::{Device, Kind, Tensor};

/// What one rank found; returned so tests and the CLI can print or assert on it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct SmokeReport {
    pub rank: usize,
    pub size: usize,
    pub local_rank: usize,
    pub local_size: usize,
    pub mpi: bool,
    pub cuda_devices: usize,
    pub all_reduce_ok: bool,
    pub all_reduce_max_error: f64,
    /// The NCCL all-reduce of a CUDA tensor; absent where CUDA is not available.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nccl: Option<NcclReport>,
}

/// The CUDA all-reduce through NCCL.
#[derive(Debug, Clone, serde::Serialize)]
pub struct NcclReport {
    pub device: String,
    pub ok: bool,
    pub max_error: f64,
    /// Why NCCL could not run, when it could not.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl SmokeReport {
    /// Both all-reduces (the NCCL one where it ran) gave the exact sum.
    pub fn ok(&self) -> bool {
        self.all_reduce_ok && self.nccl.as_ref().is_none_or(|n| n.ok)
    }

    /// ` nccl=ok (cuda:0, max error 0)`, or nothing without CUDA.
    pub fn nccl_summary(&self) -> String {
        match &self.nccl {
            None => String::new(),
            Some(n) => match &n.error {
                Some(e) => format!(" nccl=FAILED ({}: {e})", n.device),
                None => format!(
                    " nccl={} ({}, max error {})",
                    if n.ok { "ok" } else { "WRONG" },
                    n.device,
                    n.max_error
                ),
            },
        }
    }
}

/// (r+1)·[0, n) on `device`, and the world's sum s(s+1)/2·[0, n).
fn operands(world: &World, n: i64, device: Device) -> (Tensor, Tensor) {
    let base = Tensor::arange(n, (Kind::Float, device));
    let s = world.size as f64;
    (
        &base * (world.rank as f64 + 1.0),
        base * (s * (s + 1.0) / 2.0),
    )
}

/// The NCCL all-reduce of a CUDA tensor on this rank's device.
fn nccl_check(world: &World, n: i64) -> NcclReport {
    let device = Device::Cuda(world.local_rank);
    let mut report = NcclReport {
        device: format!("cuda:{}", world.local_rank),
        ok: false,
        max_error: f64::NAN,
        error: None,
    };
    let result = NcclCollectives::new(world, device, 60.0).and_then(|nccl| {
        let (mut t, expected) = operands(world, n, device);
        nccl.all_reduce_sum(&mut t)?;
        Ok((t - expected).abs().max().double_value(&[]))
    });
    match result {
        Ok(err) => {
            report.ok = err == 0.0;
            report.max_error = err;
        }
        Err(e) => report.error = Some(e.to_string()),
    }
    report
}

/// All-reduces a tensor whose rank r holds (r+1)·[0, 1, …, n−1] and compares the result with
/// size(size+1)/2·[0, 1, …, n−1].
pub fn run(world: &World, n: i64) -> SmokeReport {
    let (local, expected) = operands(world, n, Device::Cpu);
    let mut buf: Vec<f32> = Vec::<f32>::try_from(&local).expect("contiguous f32 tensor");
    world.all_reduce_sum_f32(&mut buf);
    let got = Tensor::from_slice(&buf);
    let err = (got - expected).abs().max().double_value(&[]);
    let cuda = tch::Cuda::is_available();
    SmokeReport {
        rank: world.rank,
        size: world.size,
        local_rank: world.local_rank,
        local_size: world.local_size,
        mpi: world.comm().is_some(),
        cuda_devices: if cuda {
            tch::Cuda::device_count() as usize
        } else {
            0
        },
        all_reduce_ok: err == 0.0,
        all_reduce_max_error: err,
        nccl: cuda.then(|| nccl_check(world, n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_world_reduces_exactly_and_checks_nccl_only_with_cuda() {
        let r = run(&World::single(), 16);
        assert!(r.all_reduce_ok && r.ok(), "{r:?}");
        assert_eq!(r.nccl.is_some(), tch::Cuda::is_available());
        if r.nccl.is_none() {
            assert_eq!(r.nccl_summary(), "");
        }
        let wrong = SmokeReport {
            nccl: Some(NcclReport {
                device: "cuda:0".into(),
                ok: false,
                max_error: f64::NAN,
                error: Some("ncclCommInitRank failed".into()),
            }),
            ..r
        };
        assert!(!wrong.ok());
        assert!(wrong
            .nccl_summary()
            .contains("nccl=FAILED (cuda:0: ncclCommInitRank failed)"));
    }
}
