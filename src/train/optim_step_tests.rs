//! Unit tests of the optimizer step with the toy model of `step_tests`: micro-batch
//! normalisation, the non-finite refusal, and the equivalence invariant for every kind of split
//! of a global batch over in-process ranks (empty ranks, uneven batches, both gather modes).

use super::*;
use crate::config::{Gather, Negatives};
use crate::dist::collectives::SingleProcess;
use crate::dist::threads::ThreadCollectives;
use crate::model::IthnBatch;
use crate::train::step::tests::{rows_of, toy_batch, Toy};
use crate::train::step::Micro;

fn adam() -> AdamConfig {
    AdamConfig {
        beta1: 0.9,
        beta2: 0.98,
        eps: 1e-9,
        weight_decay: 5e-5,
        amsgrad: true,
    }
}

fn unit(toy: &Toy, objective: &IthnConfig) -> OptimStep {
    OptimStep::from_parts(
        toy.params(),
        vec![1e-2, 1e-2],
        adam(),
        1e-5, // tiny buckets: several collectives per step
        objective.clone(),
        Vec::new(),
    )
    .unwrap()
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
                let t = unit(&toy, &obj).step(&toy, &[micro(b)], &c, 1).unwrap();
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
