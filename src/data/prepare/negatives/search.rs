//! Exact top-1 cosine search over the [`Index`] rows: for each query row, the admissible row
//! with the highest [`Index::dot`], ties to the smallest text id.
//!
//! Why this shape: templated reports (MIMIC, or the bench's IU sentences) have nearest
//! neighbours at cosine 0.6–0.9, but every report shares common words with every other, so a
//! plain inverted-index pass touches most of the corpus for each query. Three exact filters
//! keep the work small, each a bound that can only over-estimate a score (with [`SLACK`] for
//! float rounding), so no true winner is ever dropped:
//! 1. *Seed.* A probe over a small index of rare terms scores a few likely neighbours exactly;
//!    the best is a lower bound `s` on the answer.
//! 2. *Prefix filter* (as in AllPairs/L2AP). Terms are ranked rarest first; a level index for
//!    threshold θ ≤ s holds each row's terms only up to where the rest of the row has norm
//!    < θ (the rest alone cannot reach θ). A row scoring ≥ θ must share a term with the query
//!    that both have in their indexed prefix, and the query walks its terms rarest first only
//!    while its own remaining norm can still reach the threshold. A row first met at query
//!    term k is admitted only if ‖q_{≥k}‖·‖d_{≥t}‖ reaches the threshold; postings are
//!    banded by ‖d_{≥t}‖ so whole bands that cannot reach it are never read.
//! 3. *Remainder bound.* A touched row's unread part is bounded by Cauchy–Schwarz over the
//!    query terms after the last one read *that the row's 128-bit term signature may contain*
//!    times the row's unread norm. Survivors (typically a handful) get the exact dot product,
//!    best bound first, until the bound falls below the best exact score.
//!
//! Each query runs once, in the level of its seed (θ = the largest level ≤ s), so it always
//! ends with an answer ≥ θ, found among all rows that could beat it.

use rayon::prelude::*;

use super::index::Index;

/// Safety margin on every bound (scores live in [0, 1]; f32 partial sums err by ~1e-6).
const SLACK: f64 = 1e-4;
/// Level thresholds, high to low; a query runs in the first one at or below its seed score.
const LEVELS: [f64; 17] = [
    0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.3, 0.25, 0.2, 0.1, 0.0,
];
/// The probe's index level and how many of its best partial scores it checks exactly.
const PROBE_LEVEL: f64 = 0.9;
const PROBE_CHECKS: usize = 32;
/// The probe reads the query's terms only while their remaining norm is at least this: the
/// rare terms find the near-duplicates; the common ones would only add long postings.
const PROBE_DEPTH: f32 = 0.5;

/// Which rows a query may take: `(query position, text id) -> bool`. The query's own text is
/// never taken.
pub(super) type Admissible<'a> = dyn Fn(usize, usize) -> bool + Sync + 'a;

/// One inverted-index entry: row `doc` has weight `w` for the term, and its norm from this
/// term on is `incl` (inclusive) and `after` (exclusive).
#[derive(Clone, Copy, Default)]
struct Posting {
    doc: u32,
    w: f32,
    incl: f32,
    after: f32,
}

/// Lower edges of the bands a posting list is split into, by the row's norm from the term on
/// (`incl`), high to low. A term walked with admission limit `lim` skips every band whose
/// postings all have `incl` below it (see [`Query::accumulate`]).
const BANDS: [f32; 4] = [0.97, 0.9, 0.8, 0.0];

/// An inverted index of every row's prefix for threshold `theta`: per term, its postings in
/// [`BANDS`] order, each band in row order (rows that share terms stay close in memory).
struct Level {
    theta: f64,
    /// Postings of term t, band b: `post[ptr[t * NB + b]..ptr[t * NB + b + 1]]`.
    ptr: Vec<usize>,
    post: Vec<Posting>,
}

const NB: usize = BANDS.len();

fn band(incl: f32) -> usize {
    BANDS.iter().position(|&e| incl >= e).unwrap_or(NB - 1)
}

impl Level {
    fn build(ix: &Index, theta: f64) -> Level {
        // Prefix length of each row: up to the first term whose suffix norm is below θ.
        let prefix: Vec<usize> = (0..ix.n_rows())
            .map(|r| {
                let (t, _, s) = ix.row(r);
                s.iter()
                    .position(|&x| f64::from(x) + SLACK < theta)
                    .unwrap_or(t.len())
            })
            .collect();
        let slot = |t: u32, incl: f32| t as usize * NB + band(incl);
        let mut ptr = vec![0usize; ix.n_terms * NB + 1];
        for (r, &p) in prefix.iter().enumerate() {
            let (t, _, s) = ix.row(r);
            for k in 0..p {
                ptr[slot(t[k], s[k]) + 1] += 1;
            }
        }
        for i in 0..ix.n_terms * NB {
            ptr[i + 1] += ptr[i];
        }
        let mut fill = ptr.clone();
        let mut post = vec![Posting::default(); ptr[ix.n_terms * NB]];
        for (r, &p) in prefix.iter().enumerate() {
            let (t, w, s) = ix.row(r);
            for k in 0..p {
                let at = &mut fill[slot(t[k], s[k])];
                post[*at] = Posting {
                    doc: r as u32,
                    w: w[k],
                    incl: s[k],
                    after: s.get(k + 1).copied().unwrap_or(0.0),
                };
                *at += 1;
            }
        }
        Level { theta, ptr, post }
    }

    /// All postings of term `t` (every band).
    fn postings(&self, t: u32) -> std::ops::Range<usize> {
        self.ptr[t as usize * NB]..self.ptr[(t as usize + 1) * NB]
    }

    /// The postings of term `t` in band `b`.
    fn band(&self, t: u32, b: usize) -> std::ops::Range<usize> {
        self.ptr[t as usize * NB + b]..self.ptr[t as usize * NB + b + 1]
    }
}

/// The best row found so far and its exact score.
#[derive(Clone, Copy, Debug)]
struct Best {
    score: f64,
    row: u32,
}

/// A touched row that passed the cheap bound: its partial score, unread norm and the query
/// position of the last term read.
#[derive(Clone, Copy, Default)]
struct Cand {
    row: u32,
    acc: f32,
    after: f32,
    k: u32,
}

/// Per-thread buffers, reused across queries.
struct Scratch {
    /// Per row: partial score (0 = untouched), then the row's norm after and the query
    /// position of the last term added.
    acc: Vec<(f32, f32, u32)>,
    /// Rows touched by the current query (one spare slot for branch-free appends).
    touched: Vec<u32>,
    cands: Vec<Cand>,
    exact: Vec<(f32, u32)>,
    /// The query row scattered over the term ids.
    dense: Vec<f32>,
}

impl Scratch {
    fn new(ix: &Index) -> Scratch {
        Scratch {
            acc: vec![(0.0, 0.0, 0); ix.n_rows()],
            touched: vec![0; ix.n_rows() + 1],
            cands: Vec::new(),
            exact: Vec::new(),
            dense: vec![0.0; ix.n_terms],
        }
    }
}

/// One query: its row, position in the batch, and the admissibility test.
struct Query<'a> {
    ix: &'a Index,
    row: usize,
    pos: usize,
    admissible: &'a Admissible<'a>,
}

impl Query<'_> {
    fn may_take(&self, r: usize) -> bool {
        r != self.row && (self.admissible)(self.pos, self.ix.orig[r] as usize)
    }

    /// Scores row `r` exactly and keeps it if it beats `best` (ties: smaller text id).
    fn offer(&self, dense: &[f32], r: usize, best: &mut Option<Best>) {
        if !self.may_take(r) {
            return;
        }
        let score = self.ix.dot_dense(dense, r);
        let wins = best.is_none_or(|b| {
            score > b.score || (score == b.score && self.ix.orig[r] < self.ix.orig[b.row as usize])
        });
        if wins {
            *best = Some(Best {
                score,
                row: r as u32,
            });
        }
    }

    /// A lower bound on the answer: the best exact score among the rows with the highest
    /// partial scores over the probe level (each row's rarest terms only).
    fn probe(&self, lv: &Level, s: &mut Scratch) -> Option<Best> {
        let (qt, qw, qs) = self.ix.row(self.row);
        let mut nt = 0;
        let depth = qs.iter().take_while(|&&x| x >= PROBE_DEPTH).count().max(1);
        for (&t, &q) in qt.iter().zip(qw).take(depth) {
            for p in &lv.post[lv.postings(t)] {
                let a = &mut s.acc[p.doc as usize];
                s.touched[nt] = p.doc;
                nt += usize::from(a.0 == 0.0);
                a.0 += q * p.w;
            }
        }
        s.exact.clear();
        for &r in &s.touched[..nt] {
            s.exact.push((std::mem::take(&mut s.acc[r as usize]).0, r));
        }
        let m = PROBE_CHECKS.min(s.exact.len());
        if m == 0 {
            return None;
        }
        s.exact
            .select_nth_unstable_by(m - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        self.ix.scatter(self.row, &mut s.dense, false);
        let mut best = None;
        for i in 0..m {
            self.offer(&s.dense, s.exact[i].1 as usize, &mut best);
        }
        self.ix.scatter(self.row, &mut s.dense, true);
        best
    }

    /// The exact answer, given a seed `best` whose score is ≥ `lv.theta` (or none when
    /// `lv.theta` is 0). `None` only when no admissible row shares a term with the query.
    fn search(&self, lv: &Level, mut best: Option<Best>, s: &mut Scratch) -> Option<Best> {
        let thr = |b: &Option<Best>| b.map_or(lv.theta, |b| b.score.max(lv.theta));
        self.ix.scatter(self.row, &mut s.dense, false);
        let nt = self.accumulate(lv, &mut best, s);
        self.bound(nt, thr(&best), s);
        // Exact scores, best bound first, until no bound can beat the best score.
        s.exact
            .sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        for &(bound, r) in &s.exact {
            if f64::from(bound) < thr(&best) {
                break;
            }
            self.offer(&s.dense, r as usize, &mut best);
        }
        self.ix.scatter(self.row, &mut s.dense, true);
        best
    }

    /// Term-at-a-time over the query's rarest terms while they can still reach the threshold;
    /// returns how many rows were touched (listed in `s.touched`). After each term, the row
    /// with the best partial score is scored exactly to raise the threshold early.
    fn accumulate(&self, lv: &Level, best: &mut Option<Best>, s: &mut Scratch) -> usize {
        let (qt, qw, qs) = self.ix.row(self.row);
        let thr = |b: &Option<Best>| b.map_or(lv.theta, |b| b.score.max(lv.theta));
        let mut nt = 0;
        for k in 0..qt.len() {
            if f64::from(qs[k]) + SLACK < thr(best) {
                break;
            }
            let (q, qi) = (qw[k], qs[k]);
            let admit_at = (thr(best) - SLACK) as f32;
            let (mut top, mut top_row) = (0.0f32, u32::MAX);
            // A posting is read only if ‖q_{≥k}‖·‖d_{≥t}‖ can reach the threshold, for new and
            // touched rows alike: the limit only rises along the walk and a row's `incl` only
            // falls, so once a row misses a term it misses all later ones, and its bound (from
            // the last term read) still covers everything it missed. Whole bands below the
            // limit are skipped.
            for b in 0..NB {
                let top_incl = if b == 0 { 2.0 } else { BANDS[b - 1] };
                if qi * top_incl < admit_at {
                    break;
                }
                let range = lv.band(qt[k], b);
                // Branch-free body: the row's accumulator is the only random access, and the
                // loads of successive postings overlap.
                for p in &lv.post[range] {
                    let r = p.doc as usize;
                    let a = &mut s.acc[r];
                    let fresh = a.0 == 0.0;
                    let take = qi * p.incl >= admit_at && r != self.row;
                    s.touched[nt] = p.doc;
                    nt += usize::from(fresh & take);
                    a.0 += if take { q * p.w } else { 0.0 };
                    a.1 = if take { p.after } else { a.1 };
                    a.2 = if take { k as u32 } else { a.2 };
                    let up = a.0 > top;
                    top = if up { a.0 } else { top };
                    top_row = if up { p.doc } else { top_row };
                }
            }
            if top_row != u32::MAX {
                self.offer(&s.dense, top_row as usize, best);
            }
        }
        nt
    }

    /// Bounds every touched row (resetting its accumulator) and lists in `s.exact` those whose
    /// bound reaches `thr`, with the bound.
    fn bound(&self, nt: usize, thr: f64, s: &mut Scratch) {
        let (qt, qw, qs) = self.ix.row(self.row);
        let n = qt.len();
        let cheap_thr = (thr - SLACK) as f32;
        s.cands.clear();
        s.cands.resize(nt + 1, Cand::default());
        let mut nc = 0;
        for &r in &s.touched[..nt] {
            let (acc, after, k) = std::mem::take(&mut s.acc[r as usize]);
            let k = k as usize;
            let rest_q = qs.get(k + 1).copied().unwrap_or(0.0);
            // Cauchy–Schwarz on everything after the last term read.
            let cheap = acc + rest_q * after;
            s.cands[nc] = Cand {
                row: r,
                acc,
                after,
                k: k as u32,
            };
            nc += usize::from(cheap >= cheap_thr);
        }
        s.exact.clear();
        for c in &s.cands[..nc] {
            // Only query terms whose bit is in the row's signature can still be shared. (Read
            // here, not above: only rows that passed the cheap bound pay for the load.)
            let sig = self.ix.sig[c.row as usize];
            let mut m = 0.0f32;
            for j in c.k as usize + 1..n {
                let bit = (sig >> (qt[j] & 127)) & 1;
                m += qw[j] * qw[j] * bit as f32;
            }
            let rest = f64::from(m * (1.0 + 1e-5)).sqrt() * f64::from(c.after);
            let bound = f64::from(c.acc) + rest + 2.0 * SLACK;
            if bound >= thr {
                s.exact.push((bound as f32, c.row));
            }
        }
    }
}

/// For each query text (`queries[i]` a text id), the admissible text with the highest cosine
/// and that cosine; `None` when no text is admissible. Runs on the rayon pool; `tick` is
/// called once per finished query.
pub(super) fn best_texts(
    ix: &Index,
    queries: &[usize],
    admissible: &Admissible<'_>,
    tick: &(dyn Fn() + Sync),
) -> Vec<Option<(f64, usize)>> {
    let query = |pos: usize| Query {
        ix,
        row: ix.row_of[queries[pos]] as usize,
        pos,
        admissible,
    };
    // Queries in row order: neighbouring rows share postings and candidates in cache.
    let mut order: Vec<usize> = (0..queries.len()).collect();
    order.sort_by_key(|&p| ix.row_of[queries[p]]);
    let probe = Level::build(ix, PROBE_LEVEL);
    let mut best: Vec<Option<Best>> = vec![None; queries.len()];
    let seeds: Vec<(usize, Option<Best>)> = order
        .par_iter()
        .with_min_len(256)
        .map_init(|| Scratch::new(ix), |s, &p| (p, query(p).probe(&probe, s)))
        .collect();
    drop(probe);
    let mut by_level: Vec<Vec<usize>> = vec![Vec::new(); LEVELS.len()];
    for (p, seed) in seeds {
        let score = seed.map_or(0.0, |b| b.score);
        let l = LEVELS
            .iter()
            .position(|&th| th <= score)
            .unwrap_or(LEVELS.len() - 1);
        by_level[l].push(p);
        best[p] = seed;
    }
    for (l, todo) in by_level.iter().enumerate() {
        if todo.is_empty() {
            continue;
        }
        let lv = Level::build(ix, LEVELS[l]);
        let found: Vec<(usize, Option<Best>)> = todo
            .par_iter()
            .with_min_len(256)
            .map_init(
                || Scratch::new(ix),
                |s, &p| {
                    let b = query(p).search(&lv, best[p], s);
                    tick();
                    (p, b)
                },
            )
            .collect();
        for (p, b) in found {
            best[p] = b;
        }
    }
    best.iter()
        .enumerate()
        .map(|(p, b)| match b {
            Some(b) => Some((b.score, ix.orig[b.row as usize] as usize)),
            // Nothing admissible shares a term: every admissible text scores exactly 0.
            None => (0..ix.n_rows())
                .find(|&v| v != queries[p] && admissible(p, v))
                .map(|v| (0.0, v)),
        })
        .collect()
}
