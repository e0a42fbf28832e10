//! Turning a list of rows into a [`Batch`]: fetch the row groups, decode and augment every view
//! on the decode pool, and pad the report ids to the *global* batch.
//!
//! Why padding is global: the ITHN text feature averages decoder states over every position,
//! padding included (SPEC §2), so a rank must pad its slice exactly as one process would pad the
//! whole global batch; only then do W ranks compute what one process computes.
//!
//! Determinism: each view's pixels depend only on (seed, epoch, row, view, role) through
//! [`sample_rng`]; threads only decide *when* a slot is filled, never *what* goes in it.

use std::collections::HashMap;
use std::ops::Range;
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;
use tch::Tensor;

use super::store::{Meta, PixelFormat, RowGroup, Store};
use super::{Batch, LoaderError, LoaderOptions};
use crate::data::image::{self, ImageView, Window};
use crate::data::sampler::sample_rng;

/// Train (random crop + flip, negatives) or eval (exact resize, no negatives).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    Train { epoch: u64 },
    Eval,
}

/// Keeps the augmentation streams of a sample used as a positive and as someone's negative
/// apart (a bit above every real view number).
const NEGATIVE_ROLE: u64 = 1 << 32;

pub(crate) struct Assembler<'a> {
    pub opts: &'a LoaderOptions,
    pub store: &'a Store,
    pub meta: &'a Meta,
    pub pool: &'a rayon::ThreadPool,
}

impl Assembler<'_> {
    /// `global` = the rows of the whole global batch in order; `local` = this rank's part.
    pub fn batch(
        &self,
        mode: Mode,
        global: &[u64],
        local: Range<usize>,
    ) -> Result<Batch, LoaderError> {
        let rows = &global[local.clone()];
        let negs_of = |rs: &[u64]| -> Result<Vec<u64>, LoaderError> {
            if self.meta.neg.iter().all(Option::is_none) {
                return Err(LoaderError::NoNegatives);
            }
            rs.iter()
                .map(|&r| self.meta.neg[r as usize].ok_or(LoaderError::MissingNegative { row: r }))
                .collect()
        };
        let (neg_global, neg_rows) = match mode {
            Mode::Train { .. } => (negs_of(global)?, negs_of(rows)?),
            Mode::Eval => (Vec::new(), Vec::new()),
        };
        let groups = self.fetch(rows.iter().chain(&neg_rows))?;
        let (reports_ids, reports_masks) = self.pad(global, rows);
        let (neg_reports_ids, neg_reports_masks) = self.pad(&neg_global, &neg_rows);
        let images = self.images(mode, rows, false, &groups)?;
        let neg_images = match mode {
            Mode::Train { .. } => self.images(mode, &neg_rows, true, &groups)?,
            Mode::Eval => Tensor::zeros([0], (tch::Kind::Float, tch::Device::Cpu)),
        };
        let ids = rows
            .iter()
            .map(|&r| groups[&self.store.locate(r)].id(r))
            .collect();
        Ok(Batch {
            indices: rows.to_vec(),
            ids,
            images,
            neg_images,
            reports_ids,
            reports_masks,
            neg_reports_ids,
            neg_reports_masks,
            global_batch: global.len(),
            offset: local.start,
            start: 0, // set by the caller, which knows the batch's place in the epoch
        })
    }

    /// Every row group the rows live in, read in parallel (each distinct group once).
    fn fetch<'r>(
        &self,
        rows: impl Iterator<Item = &'r u64>,
    ) -> Result<HashMap<(usize, usize), Arc<RowGroup>>, LoaderError> {
        let mut keys: Vec<(usize, usize)> = rows.map(|&r| self.store.locate(r)).collect();
        keys.sort_unstable();
        keys.dedup();
        let groups: Result<Vec<_>, _> = self.pool.install(|| {
            keys.par_iter()
                .map(|&k| self.store.row_group(k).map(|g| (k, g)))
                .collect()
        });
        Ok(groups?.into_iter().collect())
    }

    /// ids and masks `[rows, T]`, T = the longest id list among `global` (the reference
    /// collate pads the whole batch to its longest report). Mask = 1 over the ids, 0 on padding.
    fn pad(&self, global: &[u64], rows: &[u64]) -> (Tensor, Tensor) {
        let t = global
            .iter()
            .map(|&r| self.meta.ids(r).len())
            .max()
            .unwrap_or(0);
        let mut ids = vec![0i64; rows.len() * t];
        let mut mask = vec![0i64; rows.len() * t];
        for (i, &r) in rows.iter().enumerate() {
            for (j, &tok) in self.meta.ids(r).iter().enumerate() {
                ids[i * t + j] = i64::from(tok);
                mask[i * t + j] = 1;
            }
        }
        let shape = [rows.len() as i64, t as i64];
        (
            Tensor::from_slice(&ids).view(shape),
            Tensor::from_slice(&mask).view(shape),
        )
    }

    /// `[rows, views, 3, S, S]` normalised f32, decoded on the pool.
    fn images(
        &self,
        mode: Mode,
        rows: &[u64],
        negative: bool,
        groups: &HashMap<(usize, usize), Arc<RowGroup>>,
    ) -> Result<Tensor, LoaderError> {
        let views = self.opts.views;
        let s = self.opts.image_size as usize;
        let plane = 3 * s * s;
        for &r in rows {
            let have = self.meta.n_views[r as usize] as usize;
            if have < views {
                return Err(LoaderError::Views {
                    row: r,
                    have,
                    want: views,
                });
            }
        }
        let shape = [rows.len() as i64, views as i64, 3, s as i64, s as i64];
        let mut tensor = Tensor::empty(shape, (tch::Kind::Float, tch::Device::Cpu));
        let buf = tensor_slice(&mut tensor);
        self.pool.install(|| {
            buf.par_chunks_mut(plane)
                .enumerate()
                .try_for_each(|(slot, out)| {
                    let (row, view) = (rows[slot / views], slot % views);
                    let group = &groups[&self.store.locate(row)];
                    self.write_view(mode, group, (row, view), negative, out)
                })
        })?;
        Ok(tensor)
    }

    /// Decode view `view` of `row`, apply SPEC §1's transform for `mode` and write it,
    /// normalised, into `out` (`3 * S * S` values of the batch tensor). Raw-pixel cells are
    /// read in place from the Arrow buffer and prepared images already have the train size, so
    /// on raw shards the bytes go from the Parquet page to the tensor in one pass.
    fn write_view(
        &self,
        mode: Mode,
        group: &RowGroup,
        (row, view): (u64, usize),
        negative: bool,
        out: &mut [f32],
    ) -> Result<(), LoaderError> {
        let cell = group.cell(row, view)?;
        let origin = format!("{}: row {row} image_{view}", self.opts.dir.display());
        let mut decoded = None;
        let src = match cell.format {
            PixelFormat::Encoded => {
                let buffer = DECODE_BUFFER.take();
                let img = image::decode_into(cell.bytes, Path::new(&origin), buffer)?;
                ImageView::from(&*decoded.insert(img))
            }
            PixelFormat::Raw(ch) => {
                ImageView::from_raw(cell.width, cell.height, ch, cell.bytes, &origin)?
            }
        };
        let s = self.opts.image_size;
        let mode = match mode {
            Mode::Train { .. } if !self.opts.augment => Mode::Eval,
            m => m,
        };
        let target = match mode {
            Mode::Eval => (s, s),
            Mode::Train { .. } => {
                image::shorter_side_size(src.width(), src.height(), self.opts.resize)
            }
        };
        let resized = (target != (src.width(), src.height()))
            .then(|| image::resize_exact(src, target.0, target.1));
        let img = resized.as_ref().map_or(src, ImageView::from);
        let win = match mode {
            Mode::Eval => Window::full(img),
            Mode::Train { epoch } => {
                let role = if negative { NEGATIVE_ROLE } else { 0 };
                let mut rng = sample_rng(self.opts.seed, epoch, row, view as u64 | role);
                // torchvision RandomCrop: top in 0..=H-S, left in 0..=W-S; then flip with p=0.5.
                let y = rng.below(u64::from(img.height() - s) + 1) as u32;
                let x = rng.below(u64::from(img.width() - s) + 1) as u32;
                let flip = rng.unit() < 0.5;
                Window {
                    x,
                    y,
                    w: s,
                    h: s,
                    flip,
                }
            }
        };
        image::write_normalized(img, win, out)?;
        if let Some(img) = decoded {
            DECODE_BUFFER.set(img.into_pixels());
        }
        Ok(())
    }
}

thread_local! {
    /// The pixel buffer each decode thread decodes its next JPEG into (see
    /// [`image::decode_into`]): the last image's, handed back once it has been written.
    static DECODE_BUFFER: std::cell::Cell<Vec<u8>> = const { std::cell::Cell::new(Vec::new()) };
}

/// The f32 storage of a freshly allocated CPU tensor, so images are written in place instead of
/// being built in a Vec and copied (a batch of 16×2 views is ~20 MB).
fn tensor_slice(t: &mut Tensor) -> &mut [f32] {
    let n = t.numel();
    if n == 0 {
        return &mut [];
    }
    debug_assert!(t.is_contiguous() && t.kind() == tch::Kind::Float);
    // SAFETY: `t` was just created by `Tensor::empty` as a contiguous CPU f32 tensor of `n`
    // elements; nothing else references its storage, and the returned slice borrows `t`
    // mutably, so the storage outlives the slice and is not aliased while it is written.
    let buf = unsafe { std::slice::from_raw_parts_mut(t.data_ptr() as *mut f32, n) };
    advise_huge_pages(buf);
    buf
}

/// Ask Linux to back the 2 MiB-aligned part of a fresh batch buffer with huge pages. The buffer
/// (~10 MB for 16 views) is written once, in full, right after allocation, and the allocator
/// usually hands back memory the kernel has just unmapped: with 4 KiB pages that is ~2,400 page
/// faults per batch. Measured on raw-pixel shards (release build, `bench loader`): the faults
/// took ~20% of the decode thread's samples under `perf`, half that with this hint, and with two
/// decode threads faulting at once an A/B run gave 13–20k instead of 8–12k images per
/// CPU-second. Only a hint: nothing changes where transparent huge pages are disabled.
fn advise_huge_pages(buf: &mut [f32]) {
    #[cfg(target_os = "linux")]
    {
        const HUGE: usize = 2 << 20;
        let start = buf.as_mut_ptr() as usize;
        let end = start + std::mem::size_of_val(buf);
        let (lo, hi) = (start.next_multiple_of(HUGE), end / HUGE * HUGE);
        if hi > lo {
            // SAFETY: [lo, hi) lies inside `buf`, which is borrowed mutably here, and
            // MADV_HUGEPAGE only changes how later page faults are served, never the contents.
            // The result is ignored on purpose: a refused hint leaves ordinary pages.
            unsafe { libc::madvise(lo as *mut libc::c_void, hi - lo, libc::MADV_HUGEPAGE) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn huge_page_hint_keeps_and_accepts_contents() {
        // Test batches are too small to span an aligned 2 MiB range, so exercise the hint on a
        // bench-sized buffer: contents written before it survive, writes after it land.
        let mut t = Tensor::empty([3 << 20], (tch::Kind::Float, tch::Device::Cpu));
        let n = t.numel();
        let buf = tensor_slice(&mut t);
        buf.iter_mut().enumerate().for_each(|(i, v)| *v = i as f32);
        advise_huge_pages(buf);
        assert!(buf.iter().enumerate().all(|(i, &v)| v == i as f32));
        buf.iter_mut().for_each(|v| *v = -1.0);
        assert_eq!(n, 3 << 20);
        assert_eq!(
            t.sum(tch::Kind::Double).double_value(&[]),
            -((3 << 20) as f64)
        );
    }
}
