//! Atomic file writes, shared by every module that writes user-visible files (vocabularies,
//! shards' side files, weights, checkpoints, phantoms, plots). Readers see the old file or the
//! whole new one, never a torn one: the content goes to a temporary name in the same
//! directory, is fsync'd, renamed over the target, and the directory is fsync'd so the rename
//! survives a power loss. Parent directories are created.
//!
//! Besides single files: [`write_files_atomic`] (several files that belong together: all
//! written beside, then all renamed), [`StagedDir`] (a whole directory such as a model
//! directory, built beside and swapped in, with a `SHA256SUMS` its readers check through
//! [`verify_checksums`]) and [`probe_writable`] (an output checked before the expensive work).

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A failed file-system operation: what was done (`op`, e.g. "read", "fsync directory"), to
/// which path, and the OS error. Domain errors wrap it (`CheckpointError::Io`) or take its
/// path and source into their own variant, so every message names the file.
#[derive(Debug, thiserror::Error)]
#[error("cannot {op} {}: {source}", path.display())]
pub struct IoError {
    pub op: &'static str,
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

impl IoError {
    pub fn new(op: &'static str, path: &Path, source: std::io::Error) -> IoError {
        IoError {
            op,
            path: path.to_path_buf(),
            source,
        }
    }
}

/// Flushes a directory, so that entries created or renamed in it survive a power loss.
pub fn fsync_dir(path: &Path) -> Result<(), IoError> {
    std::fs::File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| IoError::new("fsync directory", path, e))
}

/// Writes `bytes` to a new file and fsyncs it (inside a directory that is itself renamed
/// into place later, so the file needs no rename of its own).
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(|e| IoError::new("write", path, e))
}

/// Runs `write` on a temporary path beside `path`, then fsyncs it and renames it into place.
/// The temporary file is removed when anything fails.
pub fn write_atomic_with(
    path: &Path,
    write: impl FnOnce(&Path) -> std::io::Result<()>,
) -> std::io::Result<()> {
    let dir = parent_dir(path);
    let tmp = temp_beside(path)?;
    let result = write(&tmp)
        .and_then(|_| std::fs::File::open(&tmp)?.sync_all())
        .and_then(|_| std::fs::rename(&tmp, path));
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable (best effort: some filesystems refuse directory fsync).
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Writes `bytes` to `path` atomically (see [`write_atomic_with`]); the error names the path.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), IoError> {
    write_atomic_with(path, |tmp| std::fs::File::create(tmp)?.write_all(bytes))
        .map_err(|e| IoError::new("write", path, e))
}

/// Writes several files that belong together (e.g. `predictions.jsonl` and `scores.json`):
/// every content goes to a temporary beside its target first (fsync'd); only when all of them
/// are written are they renamed into place. A failure (a full disk) removes every temporary
/// and leaves every target as it was.
pub fn write_files_atomic(files: &[(&Path, &[u8])]) -> std::io::Result<()> {
    let mut staged: Vec<(PathBuf, &Path)> = Vec::new();
    let result = (|| {
        for (path, bytes) in files {
            let tmp = temp_beside(path)?;
            staged.push((tmp.clone(), path));
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
        }
        for (tmp, path) in &staged {
            std::fs::rename(tmp, path)?;
        }
        Ok(())
    })();
    if result.is_err() {
        for (tmp, _) in &staged {
            let _ = std::fs::remove_file(tmp);
        }
    }
    result
}

/// A unique hidden temporary name beside `path` (its directory is created). Unique per
/// process and call: threads may write into the same directory at once. The leading dot keeps
/// the temporary out of directory listings and shard globs.
fn temp_beside(path: &Path) -> std::io::Result<PathBuf> {
    let dir = parent_dir(path);
    std::fs::create_dir_all(dir)?;
    let name = path
        .file_name()
        .ok_or_else(|| std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a file path"))?;
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let k = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok(dir.join(format!(
        ".{}.tmp-{}-{k}",
        name.to_string_lossy(),
        std::process::id()
    )))
}

/// The directory a path lives in (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> &Path {
    path.parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."))
}

/// Checks, before any expensive work, that files can be created in `dir` (created if
/// missing): writes, fsyncs and removes a small hidden probe file. A full disk, a read-only
/// mount or missing permissions fail here, naming nothing yet written.
pub fn probe_writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".write-probe-{}", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&probe)?;
        // One page: tmpfs and most file systems allocate on the first byte.
        f.write_all(&[0u8; 4096])?;
        f.sync_all()
    })();
    let _ = std::fs::remove_file(&probe);
    result
}

/// The checksum file of a directory: `HEX  NAME` per line (`sha256sum`'s format).
pub const SUMS_FILE: &str = "SHA256SUMS";

/// Hex SHA-256 of a file's content, read in 1 MiB blocks (the one implementation: shards,
/// checkpoints, model directories and vocabularies all hash through it).
pub fn sha256_file(path: &Path) -> Result<String, IoError> {
    use sha2::{Digest, Sha256};
    use std::io::Read;
    let mut f = std::fs::File::open(path).map_err(|e| IoError::new("open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| IoError::new("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Hex SHA-256 of a byte string.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(bytes))
}

/// Writes `dir/SHA256SUMS` over every regular, non-hidden file of `dir` (by name), fsync'd.
pub fn write_checksums(dir: &Path) -> std::io::Result<()> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name().to_string_lossy().into_owned();
        if entry.file_type()?.is_file() && !name.starts_with('.') && name != SUMS_FILE {
            names.push(name);
        }
    }
    names.sort();
    let mut sums = String::new();
    for name in names {
        let hash = sha256_file(&dir.join(&name)).map_err(|e| e.source)?;
        sums.push_str(&format!("{hash}  {name}\n"));
    }
    let mut f = std::fs::File::create(dir.join(SUMS_FILE))?;
    f.write_all(sums.as_bytes())?;
    f.sync_all()
}

/// Why a directory's files do not match its `SHA256SUMS`.
#[derive(Debug, thiserror::Error)]
pub enum ChecksumError {
    #[error("{dir}: no {SUMS_FILE}; its files cannot be checked")]
    Missing { dir: PathBuf },
    #[error("{path}: {reason}")]
    Mismatch { path: PathBuf, reason: String },
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Checks every file listed in `dir/SHA256SUMS` against its recorded SHA-256. Errors name
/// the file: missing, changed (edited, truncated, corrupt), or a malformed line.
pub fn verify_checksums(dir: &Path) -> Result<(), ChecksumError> {
    let sums_path = dir.join(SUMS_FILE);
    let text = match std::fs::read_to_string(&sums_path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Err(ChecksumError::Missing { dir: dir.into() })
        }
        Err(source) => {
            return Err(ChecksumError::Io {
                path: sums_path,
                source,
            })
        }
    };
    for (i, line) in text.lines().enumerate() {
        let bad = |reason: String| ChecksumError::Mismatch {
            path: sums_path.clone(),
            reason,
        };
        let (hash, name) = line
            .split_once("  ")
            .ok_or_else(|| bad(format!("line {}: malformed", i + 1)))?;
        if name.contains('/') || name.starts_with('.') {
            return Err(bad(format!("line {}: bad name {name:?}", i + 1)));
        }
        let path = dir.join(name);
        let found = match sha256_file(&path) {
            Ok(h) => h,
            Err(e) if e.source.kind() == std::io::ErrorKind::NotFound => {
                return Err(ChecksumError::Mismatch {
                    path,
                    reason: format!("missing, but listed in {SUMS_FILE}"),
                })
            }
            Err(e) => {
                return Err(ChecksumError::Io {
                    path,
                    source: e.source,
                })
            }
        };
        if found != hash {
            return Err(ChecksumError::Mismatch {
                path,
                reason: format!(
                    "SHA-256 differs from {SUMS_FILE} (changed, truncated or corrupt after it was written)"
                ),
            });
        }
    }
    Ok(())
}

/// A directory built beside its target and swapped in whole (model directories `best/`,
/// `final/`, `import`/`init` outputs). Until [`StagedDir::commit`], the target is untouched;
/// dropping an uncommitted `StagedDir` (an error, a full disk) removes the staging directory,
/// so a failed attempt leaves nothing behind.
#[derive(Debug)]
pub struct StagedDir {
    staging: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl StagedDir {
    /// Creates the empty staging directory `.NAME.staging-PID` beside `target` (removing
    /// leftovers of earlier attempts that crashed).
    pub fn new(target: &Path) -> std::io::Result<StagedDir> {
        let name = target
            .file_name()
            .ok_or_else(|| {
                std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a directory path")
            })?
            .to_string_lossy()
            .into_owned();
        let parent = parent_dir(target);
        std::fs::create_dir_all(parent)?;
        remove_leftovers(parent, &name)?;
        let staging = parent.join(format!(".{name}.staging-{}", std::process::id()));
        std::fs::create_dir(&staging)?;
        Ok(StagedDir {
            staging,
            target: target.to_path_buf(),
            committed: false,
        })
    }

    /// Where to write the directory's files.
    pub fn path(&self) -> &Path {
        &self.staging
    }

    /// Writes `SHA256SUMS` over the staged files, then replaces the target: the old directory
    /// is renamed aside, the staged one renamed into place, the old one removed. Readers see
    /// the old directory or the whole new one (a crash between the two renames leaves the old
    /// one as `.NAME.old-PID`, which the next attempt removes).
    pub fn commit(mut self) -> std::io::Result<()> {
        write_checksums(&self.staging)?;
        std::fs::File::open(&self.staging)?.sync_all()?;
        let parent = parent_dir(&self.target).to_path_buf();
        let name = self
            .target
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let old = parent.join(format!(".{name}.old-{}", std::process::id()));
        let had_old = self.target.exists();
        if had_old {
            std::fs::rename(&self.target, &old)?;
        }
        if let Err(e) = std::fs::rename(&self.staging, &self.target) {
            if had_old {
                let _ = std::fs::rename(&old, &self.target);
            }
            return Err(e);
        }
        self.committed = true;
        if let Ok(d) = std::fs::File::open(&parent) {
            let _ = d.sync_all();
        }
        if had_old {
            std::fs::remove_dir_all(&old)?;
        }
        Ok(())
    }
}

impl Drop for StagedDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_dir_all(&self.staging);
        }
    }
}

/// Removes `.NAME.staging-*` and `.NAME.old-*` left in `parent` by attempts that crashed.
fn remove_leftovers(parent: &Path, name: &str) -> std::io::Result<()> {
    let (staging, old) = (format!(".{name}.staging-"), format!(".{name}.old-"));
    for entry in std::fs::read_dir(parent)? {
        let entry = entry?;
        let n = entry.file_name().to_string_lossy().into_owned();
        if n.starts_with(&staging) || n.starts_with(&old) {
            std::fs::remove_dir_all(entry.path())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_matches_known_vector() {
        // FIPS 180-2 test vector for "abc".
        let expected = "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad";
        assert_eq!(sha256_bytes(b"abc"), expected);
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("abc");
        std::fs::write(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), expected);
    }

    #[test]
    fn replaces_content_creates_parents_and_leaves_no_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a/b/file.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(path.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, vec![std::ffi::OsString::from("file.json")]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_the_temporary() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        write_atomic(&path, b"old").unwrap();
        let err = write_atomic_with(&path, |tmp| {
            std::fs::write(tmp, b"partial")?;
            Err(std::io::Error::other("disk full"))
        });
        assert!(err.is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn staged_dir_swaps_whole_and_failed_attempt_leaves_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("best");
        let s = StagedDir::new(&target).unwrap();
        std::fs::write(s.path().join("a"), b"one").unwrap();
        s.commit().unwrap();
        verify_checksums(&target).unwrap();
        // A failed second attempt: the old directory stays, the staging one goes.
        let s = StagedDir::new(&target).unwrap();
        std::fs::write(s.path().join("a"), b"two").unwrap();
        drop(s);
        assert_eq!(std::fs::read(target.join("a")).unwrap(), b"one");
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        // A change after the commit is caught, naming the file.
        std::fs::write(target.join("a"), b"ONE").unwrap();
        let e = verify_checksums(&target).unwrap_err().to_string();
        assert!(e.contains("best/a") && e.contains("SHA-256 differs"), "{e}");
    }

    #[test]
    fn several_files_all_or_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("sub/b"));
        write_files_atomic(&[(&a, b"1"), (&b, b"2")]).unwrap();
        // The second target's directory is a file: the write fails, `a` keeps its content.
        let bad = dir.path().join("a/x");
        assert!(write_files_atomic(&[(&b, b"3"), (&bad, b"4")]).is_err());
        assert_eq!(std::fs::read(&b).unwrap(), b"2");
        assert_eq!(
            std::fs::read_dir(dir.path().join("sub")).unwrap().count(),
            1
        );
    }
}
