//! Crash-safe file writing: a file is either its old self or its complete
//! new self, never half of one.
//!
//! [`write_atomic`] writes to a temporary file in the target's folder
//! (`.NAME.XXXXXX.tmp`), flushes it, syncs it to disk, renames it over the
//! target (an atomic step on POSIX file systems) and syncs the folder, so
//! the rename itself survives a power cut. If anything fails before the
//! rename, or the process is killed, the target is untouched; on an error
//! the temporary file is removed (after a `SIGKILL` a stray `.tmp` file can
//! remain beside the target, never in its place).
//!
//! Every file advgrad writes (models, gradients, checkpoints, results,
//! pictures) goes through here.

#[cfg(unix)]
use std::fs::{File, Permissions};
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

/// Writes the file at `path` through `write`, atomically: `write` gets a
/// buffered writer on a temporary file in the same folder, which replaces
/// `path` only once `write` has returned `Ok` and the bytes are on disk.
/// A new file gets the permissions [`File::create`] would give it (`0666`
/// less the umask); a replaced one keeps its own.
///
/// # Errors
/// [`Error::Io`] naming `path` if the folder does not exist or cannot be
/// written, or if flushing, syncing or renaming fails; whatever `write`
/// returns. In every error case `path` is left as it was.
pub fn write_atomic(path: &Path, write: impl FnOnce(&mut dyn Write) -> Result<()>) -> Result<()> {
    let io = |source| Error::Io {
        path: path.to_path_buf(),
        source,
    };
    let folder = parent_folder(path);
    let name = path
        .file_name()
        .ok_or_else(|| Error::file(path, "not a file name: cannot write here"))?;
    let prefix = format!(".{}.", name.to_string_lossy());
    let mut builder = tempfile::Builder::new();
    builder.prefix(&prefix).suffix(".tmp");
    #[cfg(unix)]
    builder.permissions(new_file_permissions());
    let mut temp = builder.tempfile_in(&folder).map_err(io)?;
    if let Ok(meta) = std::fs::metadata(path) {
        temp.as_file()
            .set_permissions(meta.permissions())
            .map_err(io)?;
    }
    {
        let mut out = BufWriter::new(temp.as_file_mut());
        write(&mut out)?;
        out.flush().map_err(io)?;
    }
    temp.as_file().sync_all().map_err(io)?;
    temp.persist(path).map_err(|e| io(e.error))?;
    sync_folder(&folder).map_err(io)
}

/// [`write_atomic`] of a byte slice.
///
/// # Errors
/// As [`write_atomic`].
pub fn write_bytes_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    write_atomic(path, |out| {
        out.write_all(bytes).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
    })
}

/// The folder `path` lives in (`.` for a bare file name).
fn parent_folder(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

/// The permissions a new file gets: `0666`, which the umask reduces as it
/// does for [`File::create`].
#[cfg(unix)]
fn new_file_permissions() -> Permissions {
    use std::os::unix::fs::PermissionsExt;
    Permissions::from_mode(0o666)
}

/// Makes a rename inside `folder` durable (a no-op where folders cannot be
/// opened as files).
fn sync_folder(folder: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(folder)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = folder;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn folder() -> tempfile::TempDir {
        tempfile::tempdir().expect("a temporary folder")
    }

    fn entries(dir: &Path) -> Vec<String> {
        let mut names: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        names
    }

    #[test]
    fn a_write_replaces_the_file_and_leaves_nothing_else() {
        let dir = folder();
        let path = dir.path().join("model.safetensors");
        write_bytes_atomic(&path, b"old").unwrap();
        write_bytes_atomic(&path, b"new contents").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new contents");
        assert_eq!(entries(dir.path()), ["model.safetensors"]);
    }

    #[test]
    fn a_failed_write_keeps_the_old_file_and_removes_the_temporary() {
        let dir = folder();
        let path = dir.path().join("results.json");
        write_bytes_atomic(&path, b"old").unwrap();
        let err = write_atomic(&path, |out| {
            out.write_all(b"half of the new").unwrap();
            Err(Error::invalid("disk full"))
        })
        .unwrap_err();
        assert!(err.to_string().contains("disk full"), "{err}");
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        assert_eq!(entries(dir.path()), ["results.json"]);
    }

    #[test]
    fn a_missing_folder_is_an_error_naming_the_file() {
        let dir = folder();
        let path = dir.path().join("no/such/folder/grid.png");
        let err = write_bytes_atomic(&path, b"x").unwrap_err().to_string();
        assert!(err.contains("no/such/folder/grid.png"), "{err}");
    }

    #[cfg(unix)]
    #[test]
    fn new_files_get_the_usual_permissions_and_replaced_ones_keep_theirs() {
        use std::os::unix::fs::PermissionsExt;
        let dir = folder();
        let fresh = dir.path().join("fresh");
        write_bytes_atomic(&fresh, b"x").unwrap();
        let created = dir.path().join("created");
        File::create(&created).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&fresh), mode(&created));

        std::fs::set_permissions(&created, Permissions::from_mode(0o640)).unwrap();
        write_bytes_atomic(&created, b"y").unwrap();
        assert_eq!(mode(&created), 0o640);
    }
}
