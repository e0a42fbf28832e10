//! `ithn-dist world`: checks a launch before a long job does. Every rank reports its placement,
//! then a tensor all-reduce is verified against the closed-form sum. CI runs it under
//! `mpirun -np 2` so the MPI path is exercised from day one.

use super::World;
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
}

/// All-reduces a tensor whose rank r holds (r+1)·[0, 1, …, n−1] and compares the result with
/// size(size+1)/2·[0, 1, …, n−1].
pub fn run(world: &World, n: i64) -> SmokeReport {
    let local = Tensor::arange(n, (Kind::Float, Device::Cpu)) * (world.rank as f64 + 1.0);
    let mut buf: Vec<f32> = Vec::<f32>::try_from(&local).expect("contiguous f32 tensor");
    world.all_reduce_sum_f32(&mut buf);
    let got = Tensor::from_slice(&buf);
    let s = world.size as f64;
    let expected = Tensor::arange(n, (Kind::Float, Device::Cpu)) * (s * (s + 1.0) / 2.0);
    let err = (got - expected).abs().max().double_value(&[]);
    SmokeReport {
        rank: world.rank,
        size: world.size,
        local_rank: world.local_rank,
        local_size: world.local_size,
        mpi: world.comm().is_some(),
        cuda_devices: if tch::Cuda::is_available() {
            tch::Cuda::device_count() as usize
        } else {
            0
        },
        all_reduce_ok: err == 0.0,
        all_reduce_max_error: err,
    }
}
