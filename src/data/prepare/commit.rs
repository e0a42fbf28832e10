//! How `prepare` replaces an output directory without ever losing the previous one.
//!
//! The whole output (shards, `vocab.json`, `manifest.json`, and the image spill file under
//! `.prepare-work/`) is built in `OUT/.prepare-staging/`; nothing in `OUT` is touched until
//! it is complete. A refusal, a `--strict` failure, bad input or a full disk removes the
//! staging directory (and `OUT` itself when this run created it), so the earlier output stays
//! byte-identical and no space stays taken. The commit is renames within one file system
//! (no new space needed): the old manifest goes first (from then on `OUT` reads as incomplete),
//! the new files are renamed in, old shards not in the new output are removed, and the new
//! manifest is renamed in last. A crash inside the commit leaves an incomplete directory
//! (no manifest) that the next run rebuilds; leftovers of any earlier attempt are removed when
//! the next one starts. The price: while it runs, prepare needs space for the new output
//! beside the old one.

use std::path::Path;

use super::manifest::{MANIFEST_FILE, VOCAB_FILE};
use super::pipeline::{is_shard_name, PrepareOptions, WORK_DIR};
use super::PrepareError;

/// The staging directory inside `OUT`.
pub const STAGING_DIR: &str = ".prepare-staging";

fn werr(path: &Path) -> impl FnOnce(std::io::Error) -> PrepareError {
    let path = path.to_path_buf();
    move |source| PrepareError::Write { path, source }
}

/// Checks `opts.out`, runs `build` into a fresh staging directory, then commits its output.
pub fn staged<T>(
    opts: &PrepareOptions,
    build: impl FnOnce(&PrepareOptions) -> Result<T, PrepareError>,
) -> Result<T, PrepareError> {
    let out = &opts.out;
    let created = !out.exists();
    check_out(out)?;
    let staging = out.join(STAGING_DIR);
    let mut inner = opts.clone();
    inner.out = staging.clone();
    let result = build(&inner).and_then(|t| commit(&staging, out).map(|()| t));
    if result.is_err() {
        let _ = std::fs::remove_dir_all(&staging);
        if created {
            let _ = std::fs::remove_dir(out); // only when empty: nothing of ours is left in it
        }
    }
    result
}

/// Creates `out` or checks that it holds only a previous prepare's files; removes leftovers
/// of interrupted attempts (never the previous output itself).
fn check_out(out: &Path) -> Result<(), PrepareError> {
    std::fs::create_dir_all(out).map_err(werr(out))?;
    let read = |source| PrepareError::Read {
        path: out.into(),
        source,
    };
    let mut leftovers = Vec::new();
    for entry in std::fs::read_dir(out).map_err(read)? {
        let name = entry
            .map_err(read)?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name == STAGING_DIR
            || name == WORK_DIR
            || (name.starts_with('.') && name.contains(".tmp"))
        {
            leftovers.push(out.join(name));
        } else if name != MANIFEST_FILE && name != VOCAB_FILE && !is_shard_name(&name) {
            return Err(PrepareError::input(
                out,
                format!("refusing to write into a directory holding {name:?}, which prepare did not write"),
            ));
        }
    }
    for path in leftovers {
        let removed = if path.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        removed.map_err(werr(&path))?;
    }
    Ok(())
}

/// Moves the complete output from `staging` into `out` (see the module documentation).
fn commit(staging: &Path, out: &Path) -> Result<(), PrepareError> {
    let mut staged = Vec::new();
    for entry in std::fs::read_dir(staging).map_err(werr(staging))? {
        let name = entry
            .map_err(werr(staging))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if name != MANIFEST_FILE && !name.starts_with('.') {
            staged.push(name);
        }
    }
    let old_manifest = out.join(MANIFEST_FILE);
    match std::fs::remove_file(&old_manifest) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(werr(&old_manifest)(e)),
        _ => {}
    }
    sync_dir(out);
    for name in &staged {
        let to = out.join(name);
        std::fs::rename(staging.join(name), &to).map_err(werr(&to))?;
    }
    for entry in std::fs::read_dir(out).map_err(werr(out))? {
        let name = entry
            .map_err(werr(out))?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if is_shard_name(&name) && !staged.contains(&name) {
            let path = out.join(&name);
            std::fs::remove_file(&path).map_err(werr(&path))?;
        }
    }
    sync_dir(out);
    std::fs::rename(staging.join(MANIFEST_FILE), &old_manifest).map_err(werr(&old_manifest))?;
    sync_dir(out);
    std::fs::remove_dir_all(staging).map_err(werr(staging))
}

/// Makes renames in `dir` durable (best effort: some file systems refuse directory fsync).
fn sync_dir(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
}
