//! Unit tests of the optimizer step with the toy model of `step_tests`: micro-batch
//! normalisation, the non-finite refusal, and the equivalence invariant for every kind of split
//! of a global batch over in-process ranks (empty ranks, uneven batches, both gather modes).

use std::collections::HashMap;

use super::*;
use crate::config::{Gather, Negatives};
use crate::dist::collectives::SingleProcess;
use crate::dist::threads::ThreadCollectives;
use crate::model::IthnBatch;
use crate::train::step::tests::{rows_of, toy_batch, Toy};
use crate::train::step::Micro;

/// The published optimizer (the default config's: amsgrad, betas (0.9, 0.98), eps 1e-9, wd 5e-5).
fn adam() -> AdamConfig {
    AdamConfig::from_train(&crate::config::Config::default().train)
}

/// The step of `toy` for `layout`, with buckets of `bucket_mb` MiB.
fn unit_for(toy: &Toy, objective: &IthnConfig, layout: Layout, bucket_mb: f64) -> OptimStep {
    OptimStep::from_parts(
        toy.params(),
        vec![1e-2, 1e-2],
        adam(),
        bucket_mb,
        objective.clone(),
        Vec::new(),
        layout,
    )
    .unwrap()
}

fn unit(toy: &Toy, objective: &IthnConfig) -> OptimStep {
    // Tiny buckets: several collectives per step.
    unit_for(toy, objective, Layout::of(&SingleProcess, false), 1e-5)
}

fn micro(batch: IthnBatch) -> Micro {
    Micro {
        batch,
        seeds: None,
        indices: Vec::new(),
    }
}

fn values(toy: &Toy) -> Vec<f64> {
    [&toy.w, &toy.t1, &toy.t3]
        .iter()
        .flat_map(|t| Vec::<f64>::try_from(&t.detach().reshape([-1])).unwrap())
        .collect()
}

#[test]
fn micro_batches_share_the_step_counts() {
    // Was `accumulation_averages_terms_and_sums_counts` (trainer): two equal micro-batches give
    // the loss of one and twice its samples.
    let cfg = IthnConfig::default();
    let one = Toy::new(3);
    let t1 = unit(&one, &cfg)
        .step(&one, &[micro(toy_batch(4, 9))], &SingleProcess, 1)
        .unwrap();
    let two = Toy::new(3);
    let t2 = unit(&two, &cfg)
        .step(
            &two,
            &[micro(toy_batch(4, 9)), micro(toy_batch(4, 9))],
            &SingleProcess,
            1,
        )
        .unwrap();
    assert!(
        (t2.loss - t1.loss).abs() < 1e-12 * t1.loss.abs(),
        "{t2:?} vs {t1:?}"
    );
    assert_eq!((t1.samples, t2.samples), (4.0, 8.0));
    // Uneven micro-batches (3 + 1): LM and L_cs are those of one pass over all 4 samples.
    let whole = Toy::new(3);
    let w = unit(&whole, &cfg)
        .step(&whole, &[micro(toy_batch(4, 5))], &SingleProcess, 1)
        .unwrap();
    let split = Toy::new(3);
    let b = toy_batch(4, 5);
    let s = unit(&split, &cfg)
        .step(
            &split,
            &[micro(rows_of(&b, 0, 3)), micro(rows_of(&b, 3, 1))],
            &SingleProcess,
            1,
        )
        .unwrap();
    assert!(
        (s.lm - w.lm).abs() < 1e-12 && (s.l_cs - w.l_cs).abs() < 1e-12,
        "{s:?} vs {w:?}"
    );
    assert!((s.l_cp - w.l_cp).abs() > 1e-6, "L_cp is per micro-batch");
}

#[test]
fn a_non_finite_loss_names_the_step_and_changes_nothing() {
    let toy = Toy::new(4);
    let before = values(&toy);
    let b = toy_batch(3, 1);
    let _ = b.images.get(1).fill_(f64::NAN);
    let e = unit(&toy, &IthnConfig::default())
        .step(&toy, &[micro(b)], &SingleProcess, 7)
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("step 7: loss is not finite (NaN"), "{e}");
    assert_eq!(values(&toy), before);
}

/// Runs one step of `sizes[r]` rows per rank (a global batch of Σ sizes) on in-process ranks;
/// returns every rank's parameters after the step and rank 0's loss terms.
fn threaded(sizes: &[i64], objective: &IthnConfig) -> (Vec<Vec<f64>>, LossTerms) {
    let global = toy_batch(sizes.iter().sum(), 21);
    let starts: Vec<i64> = sizes
        .iter()
        .scan(0, |a, &s| {
            let st = *a;
            *a += s;
            Some(st)
        })
        .collect();
    let jobs: Vec<_> = ThreadCollectives::world(sizes.len())
        .into_iter()
        .map(|c| {
            let r = c.rank();
            (
                c,
                Toy::new(8),
                rows_of(&global, starts[r], sizes[r]),
                objective.clone(),
            )
        })
        .collect();
    let handles: Vec<_> = jobs
        .into_iter()
        .map(|(c, toy, b, obj)| {
            std::thread::spawn(move || {
                let t = unit_for(&toy, &obj, Layout::of(&c, true), 1e-5)
                    .step(&toy, &[micro(b)], &c, 1)
                    .unwrap();
                (values(&toy), t)
            })
        })
        .collect();
    let out: Vec<_> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    let terms = out[0].1;
    (out.into_iter().map(|(v, _)| v).collect(), terms)
}

#[test]
fn every_split_of_the_global_batch_takes_the_single_process_step() {
    for negatives in [Negatives::Projection, Negatives::Ascent] {
        let objective = IthnConfig {
            negatives,
            ascent_steps: 2,
            ..IthnConfig::default()
        };
        for sizes in [
            &[1i64, 0][..],
            &[0, 1],
            &[2, 1],
            &[1, 1, 1],
            &[2, 2, 1],
            &[1, 0, 0],
            &[3, 0, 2],
        ] {
            let n: i64 = sizes.iter().sum();
            let single = Toy::new(8);
            let want = unit(&single, &objective)
                .step(&single, &[micro(toy_batch(n, 21))], &SingleProcess, 1)
                .unwrap();
            let want_p = values(&single);
            let (ranks, got) = threaded(sizes, &objective);
            for (r, p) in ranks.iter().enumerate() {
                assert_eq!(p, &ranks[0], "{sizes:?}: rank {r} diverged");
                let d = p
                    .iter()
                    .zip(&want_p)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0, f64::max);
                assert!(
                    d < 1e-12,
                    "{negatives:?} {sizes:?}: parameters differ by {d}"
                );
            }
            for (a, b) in [
                (got.loss, want.loss),
                (got.lm, want.lm),
                (got.l_cp, want.l_cp),
                (got.l_cs, want.l_cs),
            ] {
                assert!(
                    (a - b).abs() <= 1e-12 * b.abs().max(1.0),
                    "{sizes:?}: {got:?} vs {want:?}"
                );
            }
            assert_eq!(got.samples, n as f64);
        }
    }
}

#[test]
fn local_gather_weights_ranks_by_their_samples_and_ignores_empty_ones() {
    let objective = IthnConfig {
        gather: Gather::Local,
        ..IthnConfig::default()
    };
    // One rank holds everything: "local" is then the single-process objective.
    let single = Toy::new(8);
    let want = unit(&single, &objective)
        .step(&single, &[micro(toy_batch(3, 21))], &SingleProcess, 1)
        .unwrap();
    let (ranks, got) = threaded(&[3, 0], &objective);
    let d = ranks[0]
        .iter()
        .zip(&values(&single))
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f64::max);
    assert!(
        d < 1e-12 && (got.loss - want.loss).abs() < 1e-12,
        "{got:?} vs {want:?}"
    );
    assert_eq!(ranks[0], ranks[1]);
    // Equal halves: L_cp is the mean of the two ranks' own L_cp.
    let (_, halves) = threaded(&[2, 2], &objective);
    let b = toy_batch(4, 21);
    let own = |start| {
        let t = Toy::new(8);
        unit(&t, &objective)
            .step(&t, &[micro(rows_of(&b, start, 2))], &SingleProcess, 1)
            .unwrap()
            .l_cp
    };
    let mean = (own(0) + own(2)) / 2.0;
    assert!(
        (halves.l_cp - mean).abs() < 1e-12,
        "{} vs {mean}",
        halves.l_cp
    );
}

/// What one in-process rank ends with.
struct RankEnd {
    params: Vec<f64>,
    terms: Option<LossTerms>,
    /// The whole optimizer state, as a checkpoint gets it.
    state: Vec<(String, Tensor)>,
    /// Adam state elements this rank holds.
    state_numel: usize,
}

/// Where a run starts: parameters and optimizer state (a checkpoint), or fresh.
type Start = Option<(Vec<f64>, Vec<(String, Tensor)>)>;

/// `steps` optimizer steps on in-process ranks holding `sizes[r]` rows of each global batch,
/// sharded or not, from `start`.
fn run_ranks(
    sizes: &[i64],
    shard: bool,
    bucket_mb: f64,
    steps: usize,
    start: &Start,
) -> Vec<RankEnd> {
    let n: i64 = sizes.iter().sum();
    let offset = |r: usize| sizes[..r].iter().sum::<i64>();
    let handles: Vec<_> = ThreadCollectives::world(sizes.len())
        .into_iter()
        .map(|c| {
            // Each rank reads its own copy of the checkpoint.
            let start: Option<(Vec<f64>, HashMap<String, Tensor>)> =
                start.as_ref().map(|(p, st)| {
                    (
                        p.clone(),
                        st.iter().map(|(k, t)| (k.clone(), t.copy())).collect(),
                    )
                });
            let (r, rows) = (c.rank(), sizes[c.rank()]);
            let first = offset(r);
            std::thread::spawn(move || {
                let toy = Toy::new(8);
                let objective = IthnConfig::default();
                let mut unit = unit_for(&toy, &objective, Layout::of(&c, shard), bucket_mb);
                if let Some((p, st)) = start {
                    set_values(&toy, &p);
                    unit.load_state_tensors(&st).unwrap();
                }
                let mut terms = None;
                for s in 0..steps {
                    let b = rows_of(&toy_batch(n, 21 + s as i64), first, rows);
                    terms = Some(unit.step(&toy, &[micro(b)], &c, s as u64 + 1).unwrap());
                }
                RankEnd {
                    params: values(&toy),
                    terms,
                    state: unit.state_tensors(&c).unwrap(),
                    state_numel: unit.state_numel(),
                }
            })
        })
        .collect();
    handles.into_iter().map(|h| h.join().unwrap()).collect()
}

fn set_values(toy: &Toy, v: &[f64]) {
    tch::no_grad(|| {
        let mut at = 0;
        for t in [&toy.w, &toy.t1, &toy.t3] {
            let n = t.numel();
            let src = Tensor::from_slice(&v[at..at + n]).view_as(t);
            t.shallow_clone().copy_(&src);
            at += n;
        }
    });
}

fn copy_state(s: &[(String, Tensor)]) -> Vec<(String, Tensor)> {
    s.iter().map(|(k, t)| (k.clone(), t.copy())).collect()
}

fn bits(v: &[f64]) -> Vec<u64> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Same keys, same shapes, same bits.
fn same_state(a: &[(String, Tensor)], b: &[(String, Tensor)]) -> Result<(), String> {
    let keys = |s: &[(String, Tensor)]| s.iter().map(|(k, _)| k.clone()).collect::<Vec<_>>();
    if keys(a) != keys(b) {
        return Err(format!("keys {:?} vs {:?}", keys(a), keys(b)));
    }
    for ((k, x), (_, y)) in a.iter().zip(b) {
        if x.size() != y.size() || x.kind() != y.kind() || !x.equal(y) {
            return Err(format!("{k}: {x:?} vs {y:?}"));
        }
    }
    Ok(())
}

#[test]
fn sharded_steps_are_bit_identical_to_unsharded_ones() {
    // Buckets of 2 (the two temperatures) and 24 elements (ranks with empty shards), and one of
    // all 26 elements (not a multiple of 3: padding; shards that cross parameters). Worlds of 2
    // and 3, with a rank holding no sample.
    for bucket_mb in [1e-5, 1.0] {
        for sizes in [&[1i64, 0][..], &[2, 1], &[2, 1, 0], &[2, 2, 1], &[0, 1, 3]] {
            let what = format!("{sizes:?}, buckets of {bucket_mb} MiB");
            let plain = run_ranks(sizes, false, bucket_mb, 3, &None);
            let sharded = run_ranks(sizes, true, bucket_mb, 3, &None);
            for (r, (a, b)) in plain.iter().zip(&sharded).enumerate() {
                assert_eq!(
                    bits(&a.params),
                    bits(&b.params),
                    "{what}: rank {r}: parameters"
                );
                assert_eq!(
                    bits(&b.params),
                    bits(&sharded[0].params),
                    "{what}: rank {r} diverged"
                );
                assert_eq!(
                    a.terms.map(|t| t.loss.to_bits()),
                    b.terms.map(|t| t.loss.to_bits()),
                    "{what}"
                );
                same_state(&a.state, &b.state).unwrap_or_else(|e| panic!("{what}: rank {r}: {e}"));
                same_state(&b.state, &sharded[0].state)
                    .unwrap_or_else(|e| panic!("{what}: rank {r}: {e}"));
            }
            assert_eq!(
                plain[0].state.len(),
                12,
                "{what}: 3 parameters × 4 state tensors"
            );
            // Adam memory falls by the world size: each rank holds the moments of its chunk of
            // every bucket (⌈bucket / world⌉ elements, padding included).
            let whole = plain[0].state_numel;
            assert_eq!(whole, 3 * 26, "{what}");
            let w = sizes.len();
            let buckets: &[usize] = if bucket_mb < 1e-3 { &[2, 24] } else { &[26] };
            let share: usize = buckets.iter().map(|n| 3 * n.div_ceil(w)).sum();
            let held: Vec<usize> = sharded.iter().map(|e| e.state_numel).collect();
            assert!(
                held.iter().all(|&h| h == share),
                "{what}: {held:?}, share {share}"
            );
            assert!(
                share <= whole / w + 3 * buckets.len(),
                "{what}: share {share}"
            );
        }
    }
}

#[test]
fn checkpointed_state_is_whole_and_resumes_on_any_world() {
    let one_bucket = 1.0;
    // 3 → 2 and 3 → 1: a 3-rank sharded run's checkpoint.
    let three = run_ranks(&[1, 1, 1], true, one_bucket, 2, &None);
    let ck: Start = Some((three[0].params.clone(), copy_state(&three[0].state)));
    // Loaded and gathered again without a step: the same bits (each rank kept its part).
    for sizes in [&[3i64][..], &[2, 1], &[1, 1, 1]] {
        let back = run_ranks(sizes, true, one_bucket, 0, &ck);
        same_state(&back[0].state, &three[0].state).unwrap_or_else(|e| panic!("{sizes:?}: {e}"));
    }
    // Resumed on 2 ranks: sharded and unsharded continue identically.
    let a = run_ranks(&[2, 1], true, one_bucket, 2, &ck);
    let b = run_ranks(&[2, 1], false, one_bucket, 2, &ck);
    assert_eq!(bits(&a[1].params), bits(&b[1].params));
    same_state(&a[1].state, &b[1].state).unwrap();
    // 1 → 2: a single process's checkpoint, resumed sharded, continues like the unsharded run.
    let single = run_ranks(&[3], true, one_bucket, 2, &None);
    let ck1: Start = Some((single[0].params.clone(), copy_state(&single[0].state)));
    let a = run_ranks(&[1, 2], true, one_bucket, 1, &ck1);
    let b = run_ranks(&[1, 2], false, one_bucket, 1, &ck1);
    assert_eq!(bits(&a[0].params), bits(&b[0].params));
    same_state(&a[0].state, &b[0].state).unwrap();
    // The resumed run did continue from the checkpoint: its step counts went on from 2.
    let step = a[0].state.iter().find(|(k, _)| k == "w.step").unwrap();
    assert_eq!(step.1.double_value(&[]), 3.0);
}
