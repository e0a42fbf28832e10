//! The MPI collectives backend on 2 real ranks (`mpirun -np 2`): all-reduce for f32/f64/i64 and
//! non-contiguous tensors, all-gather with unequal first dimensions (rank-major, a rank with 0
//! rows included, with and without known counts), reduce-scatter,
//! broadcast, bucketed gradient all-reduce, and the errors for mismatched shapes.
//!
//! No fixture: every expected value is a closed form of the rank numbers. Like
//! `train_equivalence`, this binary is its own MPI program (harness = false): without
//! `ITHN_COLL_CHILD` it launches itself under mpirun and checks that both ranks passed.

use std::process::Command;

use ithn_dist::config::Backend;
use ithn_dist::dist::buckets::BucketPlan;
use ithn_dist::dist::collectives::select;
use ithn_dist::dist::World;
use tch::{Device, Kind, Tensor};

fn f32s(t: &Tensor) -> Vec<f32> {
    Vec::try_from(&t.reshape([-1])).expect("f32 tensor")
}

/// Runs every check on this rank; panics (non-zero exit) on the first failure.
fn child() {
    let world = World::init().expect("MPI world");
    assert_eq!(world.size, 2, "run with -np 2");
    let coll = select(&world, Backend::Auto, Device::Cpu, 60.0).expect("collectives");
    assert_eq!(coll.name(), "mpi");
    let r = world.rank as f64;

    // all-reduce, three kinds, and a transposed (non-contiguous) view.
    let mut a = Tensor::from_slice(&[1.0f32, 2.0, 3.0]) * (r + 1.0);
    coll.all_reduce_sum(&mut a).unwrap();
    assert_eq!(f32s(&a), vec![3.0, 6.0, 9.0]);
    let mut d = Tensor::from_slice(&[0.1f64]) + r;
    coll.all_reduce_sum(&mut d).unwrap();
    assert_eq!(Vec::<f64>::try_from(&d).unwrap(), vec![0.1 + 1.1]);
    let mut i = Tensor::from_slice(&[1i64 << 40]) * (world.rank as i64 + 1);
    coll.all_reduce_sum(&mut i).unwrap();
    assert_eq!(Vec::<i64>::try_from(&i).unwrap(), vec![3i64 << 40]);
    let base = Tensor::arange(6, (Kind::Float, Device::Cpu)).reshape([2, 3]);
    let t = (base.tr() * (r + 1.0)).contiguous();
    let mut view = t.tr();
    assert!(!view.is_contiguous());
    coll.all_reduce_sum(&mut view).unwrap();
    assert_eq!(f32s(&t.tr()), f32s(&(&base * 3.0)));

    // all-gather with unequal first dims: rank 0 has 1 row, rank 1 has 2.
    let rows = world.rank as i64 + 1;
    let g = coll
        .all_gather(&(Tensor::ones([rows, 2], (Kind::Float, Device::Cpu)) * (r + 1.0)))
        .unwrap();
    assert_eq!(g.size(), vec![3, 2]);
    assert_eq!(f32s(&g), vec![1.0, 1.0, 2.0, 2.0, 2.0, 2.0], "rank-major");
    let bad = coll.all_gather(&Tensor::ones(
        [1, 2 + world.rank as i64],
        (Kind::Float, Device::Cpu),
    ));
    let msg = bad.expect_err("trailing shapes differ").to_string();
    assert!(msg.contains("rank"), "{msg}");

    // A rank with 0 rows (issue 13): both the plain and the known-count gather.
    let rows = if world.rank == 0 { 2 } else { 0 };
    let mine = Tensor::arange(rows * 2, (Kind::Double, Device::Cpu)).reshape([rows, 2]);
    let g = coll.all_gather(&mine).unwrap();
    assert_eq!(g.size(), vec![2, 2]);
    let h = coll.all_gather_rows(&mine, &[2, 0]).unwrap();
    assert!(
        h.equal(&g) && g.equal(&Tensor::arange(4, (Kind::Double, Device::Cpu)).reshape([2, 2]))
    );
    let none = Tensor::zeros([0, 3], (Kind::Int64, Device::Cpu));
    assert_eq!(
        coll.all_gather_rows(&none, &[0, 0]).unwrap().size(),
        vec![0, 3]
    );
    // Counts that do not describe the world are refused on every rank (before any transfer).
    let msg = coll
        .all_gather_rows(&mine, &[2])
        .expect_err("counts that do not fit")
        .to_string();
    assert!(msg.contains("row counts [2]"), "{msg}");

    // reduce-scatter: rows [0, 1) to rank 0, [1, 3) to rank 1.
    let full = Tensor::arange(3, (Kind::Float, Device::Cpu)) + 10.0 * r;
    let mine = coll.reduce_scatter(&full, &[1, 2]).unwrap();
    let want: Vec<f32> = if world.rank == 0 {
        vec![10.0]
    } else {
        vec![12.0, 14.0]
    };
    assert_eq!(f32s(&mine), want);

    // broadcast from rank 1.
    let mut b = Tensor::from_slice(&[r as f32, 7.0 * r as f32]);
    coll.broadcast(&mut b, 1).unwrap();
    assert_eq!(f32s(&b), vec![1.0, 7.0]);

    // bucketed gradient all-reduce: tiny buckets force several collectives.
    let params: Vec<Tensor> = (0..4)
        .map(|k| {
            let p = Tensor::zeros([k + 1], (Kind::Float, Device::Cpu)).set_requires_grad(true);
            (&p * (r + 1.0 + k as f64)).sum(Kind::Float).backward();
            p
        })
        .collect();
    let plan = BucketPlan::for_params(&params, 8.0 / (1024.0 * 1024.0));
    assert!(plan.buckets.len() > 1);
    plan.all_reduce_grads(&params, coll.as_ref()).unwrap();
    for (k, p) in params.iter().enumerate() {
        let want = (1.0 + k as f32) + (2.0 + k as f32);
        assert_eq!(f32s(&p.grad()), vec![want; k + 1], "param {k}");
    }
    coll.barrier().unwrap();
    println!("rank {}: collectives ok", world.rank);
}

fn main() {
    if std::env::var_os("ITHN_COLL_CHILD").is_some() {
        child();
        return;
    }
    let exe = std::env::current_exe().expect("own path");
    let out = Command::new("mpirun")
        .args(["--oversubscribe", "-np", "2"])
        .arg(&exe)
        .env("ITHN_COLL_CHILD", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("mpirun must be on PATH");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "2-rank collectives failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("collectives ok").count(), 2, "{stdout}");
    println!("dist_collectives: ok");
}
