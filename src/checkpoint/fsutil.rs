//! Durable file-system primitives for checkpoints: fsync of files and directories, atomic
//! small-file writes (temp file in the same directory, fsync, rename, fsync of the directory)
//! and streaming SHA-256. A crash at any instant leaves either the old or the new content,
//! never a torn mixture, because `rename(2)` within one directory is atomic on POSIX systems.

use sha2::{Digest, Sha256};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::Path;

use super::CheckpointError;

/// Flushes a file's data and metadata to stable storage.
pub fn fsync_file(path: &Path) -> Result<(), CheckpointError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| CheckpointError::io("fsync", path, e))
}

/// Flushes a directory, so that entries created or renamed in it survive a power loss.
pub fn fsync_dir(path: &Path) -> Result<(), CheckpointError> {
    File::open(path)
        .and_then(|f| f.sync_all())
        .map_err(|e| CheckpointError::io("fsync directory", path, e))
}

/// Writes `bytes` to `path` atomically: the file either keeps its old content or has all of
/// the new one. The temporary name starts with a dot so that directory listings skip it.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    crate::fsutil::write_atomic(path, bytes).map_err(|e| CheckpointError::io("write", path, e))
}

/// Writes `bytes` to a new file and fsyncs it (inside a directory that is itself renamed
/// into place later, so the file needs no rename of its own).
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<(), CheckpointError> {
    let write = || -> io::Result<()> {
        let mut f = File::create(path)?;
        f.write_all(bytes)?;
        f.sync_all()
    };
    write().map_err(|e| CheckpointError::io("write", path, e))
}

/// Hex SHA-256 of a file's content, read in 1 MiB blocks.
pub fn sha256_file(path: &Path) -> Result<String, CheckpointError> {
    let mut f = File::open(path).map_err(|e| CheckpointError::io("open", path, e))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f
            .read(&mut buf)
            .map_err(|e| CheckpointError::io("read", path, e))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

/// Hex SHA-256 of a byte string.
pub fn sha256_bytes(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The directory a path lives in (`.` for a bare file name).
pub fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_replaces_content_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("a.json");
        write_atomic(&p, b"old").unwrap();
        write_atomic(&p, b"new content").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"new content");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 1, "temporary file left behind: {names:?}");
    }

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
}
