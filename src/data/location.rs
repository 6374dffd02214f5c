//! Where the Fashion-MNIST files are: the search order, and the download
//! on first use.
//!
//! 1. `--data DIR` (the `explicit` argument), else `$ADVGRAD_DATA`: that
//!    folder and no other, so a mistyped path is an error, not a silent
//!    fallback to other data;
//! 2. otherwise the first folder holding all four files among the system
//!    folder ([`SYSTEM_DATA_DIR`], or `$ADVGRAD_SYSTEM_DATA`) and advgrad's
//!    cache folder ([`cache_data_dir`]).
//!
//! When the files are missing and a download is allowed, the missing ones
//! are fetched ([`super::download`]) into the explicit folder if one was
//! named, else into the cache folder.

use std::path::{Path, PathBuf};

use super::download::{data_url, download_missing, offline_help, FASHION_MNIST_FILES};
use super::{DATA_ENV, STANDARD_FILES, SYSTEM_DATA_DIR};
use crate::error::{Error, Result};

/// The environment variable that replaces [`SYSTEM_DATA_DIR`] in the
/// search (for systems that install the data elsewhere, and for tests of a
/// machine without it).
pub const SYSTEM_DATA_ENV: &str = "ADVGRAD_SYSTEM_DATA";

/// The value of the environment variable `name`, if set and not empty.
fn env_path(name: &str) -> Option<PathBuf> {
    std::env::var_os(name)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
}

/// The system data folder: `$ADVGRAD_SYSTEM_DATA` if set, else
/// [`SYSTEM_DATA_DIR`] (where Debian's `dataset-fashion-mnist` installs).
pub fn system_data_dir() -> PathBuf {
    env_path(SYSTEM_DATA_ENV).unwrap_or_else(|| PathBuf::from(SYSTEM_DATA_DIR))
}

/// advgrad's cache folder for the data:
/// `$XDG_CACHE_HOME/advgrad/fashion-mnist`, or
/// `$HOME/.cache/advgrad/fashion-mnist`; `None` if neither variable is set
/// (to an absolute path).
pub fn cache_data_dir() -> Option<PathBuf> {
    let absolute = |p: PathBuf| p.is_absolute().then_some(p);
    env_path("XDG_CACHE_HOME")
        .and_then(absolute)
        .or_else(|| {
            env_path("HOME")
                .and_then(absolute)
                .map(|h| h.join(".cache"))
        })
        .map(|cache| cache.join("advgrad").join("fashion-mnist"))
}

/// The folder named by `--data` or, failing that, `$ADVGRAD_DATA`.
fn explicit_dir(explicit: Option<&Path>) -> Option<PathBuf> {
    explicit
        .map(Path::to_path_buf)
        .or_else(|| env_path(DATA_ENV))
}

/// Whether `dir` holds all four standard files (each gzipped or not).
pub fn has_all_files(dir: &Path) -> bool {
    STANDARD_FILES.iter().all(|gz| {
        let raw = gz.trim_end_matches(".gz");
        dir.join(gz).is_file() || dir.join(raw).is_file()
    })
}

/// The folders searched when none is named: the system folder, then the
/// cache folder.
pub fn search_path() -> Vec<PathBuf> {
    let mut dirs = vec![system_data_dir()];
    dirs.extend(cache_data_dir());
    dirs
}

/// The data folder without downloading anything: the explicit folder if
/// one is named, else the first folder of [`search_path`] holding all four
/// files, else the system folder (whose absence a load then reports, with
/// how to get the data).
pub fn default_data_dir() -> PathBuf {
    explicit_dir(None)
        .or_else(|| search_path().into_iter().find(|d| has_all_files(d)))
        .unwrap_or_else(system_data_dir)
}

/// Whether a data-reading command may fetch missing files, and how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Fetch {
    /// Never download; a missing file is an error that says how to get it.
    Never,
    /// Download missing files from `$ADVGRAD_DATA_URL` or the canonical
    /// location, with progress bars unless `quiet`.
    IfMissing {
        /// Hide the progress bars and messages.
        quiet: bool,
    },
}

/// The data folder to read, after downloading the missing files if `fetch`
/// allows it (see the module docs for the order).
///
/// # Errors
/// Download errors ([`Error::Download`], [`Error::Io`]); without a
/// download, [`Error::File`] naming the folders searched and how to get the
/// data, when none holds it.
pub fn resolve_data_dir(explicit: Option<&Path>, fetch: &Fetch) -> Result<PathBuf> {
    let explicit = explicit_dir(explicit);
    let found = match &explicit {
        Some(dir) => has_all_files(dir).then(|| dir.clone()),
        None => search_path().into_iter().find(|d| has_all_files(d)),
    };
    if let Some(dir) = found {
        return Ok(dir);
    }
    match fetch {
        Fetch::IfMissing { quiet } => {
            let target = match explicit.or_else(cache_data_dir) {
                Some(dir) => dir,
                None => {
                    return Err(Error::invalid(format!(
                        "nowhere to download Fashion-MNIST to: neither XDG_CACHE_HOME nor HOME \
                         is set; pass --data DIR. {}",
                        offline_help()
                    )))
                }
            };
            download_missing(&data_url(), &target, &FASHION_MNIST_FILES, *quiet)?;
            Ok(target)
        }
        // A named folder is returned as it is: a split it does hold loads,
        // and a missing file is reported by name when it is needed.
        Fetch::Never => match explicit {
            Some(dir) => Ok(dir),
            None => Err(not_found_error()),
        },
    }
}

/// Fashion-MNIST is in none of the searched folders.
fn not_found_error() -> Error {
    let searched: Vec<String> = search_path()
        .iter()
        .map(|d| d.display().to_string())
        .collect();
    Error::file(
        system_data_dir(),
        format!(
            "Fashion-MNIST not found (searched {}). {}",
            searched.join(" and "),
            super::missing_data_help()
        ),
    )
}
