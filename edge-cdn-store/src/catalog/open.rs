//! Opening the catalog at start-up: never a reason not to start.
//!
//! The database lives in a *generation* directory, `<dir>/catalog/v<format>-<n>`.
//! The newest generation of this format is opened as it is: opening reads
//! nothing per object, so a catalog of tens of millions opens at once. The
//! store reconciles it with the files afterwards, in the background (see
//! `crate::recovery`). A generation that does not open (corrupt, a format
//! this build does not know) is discarded and a new, empty one made, which
//! the store fills from the files.
//!
//! A generation still locked by another store — the old process during a
//! binary upgrade, which shares the cache directory for a few seconds — is
//! left alone: this store fills a new generation and uses that. Every
//! generation not in use (unlocked) other than the one opened is removed.

use std::fs::{self, File};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use super::Catalog;
use crate::error::StoreError;

/// The catalog's own format: a generation of another is discarded. Bump it
/// on any change to [`super::entry`]'s layout or to the keyspaces (2: the
/// tag counts). A keyspace that an older generation opens empty, as
/// `purging` and `marks` do, needs none.
const FORMAT: u32 = 2;

/// How one attempt to open a generation ended.
enum Attempt {
    /// Opened.
    Ready(Catalog),
    /// Another store holds it.
    Locked,
    /// It does not open, or does not read.
    Unusable(String),
}

/// Open the catalog under `root`; with it, whether it is a new, empty one
/// (so everything on disk is missing from it). Fails only if a new, empty
/// database cannot be created there either.
pub fn open(root: &Path) -> Result<(Catalog, bool), StoreError> {
    fs::create_dir_all(root).map_err(|e| StoreError::Io("create catalog directory", e))?;
    let generations = generations(root);
    let newest = generations.iter().map(|(n, _)| *n).max();
    let mut opened = None;
    if let Some(n) = newest {
        let path = generation(root, n);
        match attempt(|| Catalog::at(&path)) {
            Attempt::Ready(catalog) => opened = Some((n, catalog, false)),
            Attempt::Locked => {
                tracing::info!(target: "edge_cdn_store", path = %path.display(), "catalog in use by another store; filling a new one from the files");
            }
            Attempt::Unusable(error) => {
                tracing::warn!(target: "edge_cdn_store", path = %path.display(), %error, "catalog unusable; discarded and rebuilt from the files");
                let _ = fs::remove_dir_all(&path);
            }
        }
    }
    let (current, catalog, fresh) = match opened {
        Some(opened) => opened,
        None => {
            let n = newest.map_or(0, |n| n + 1);
            let path = generation(root, n);
            let _ = fs::remove_dir_all(&path);
            let fresh = match attempt(|| Catalog::at(&path)) {
                Attempt::Ready(catalog) => catalog,
                Attempt::Locked => {
                    return Err(StoreError::Io(
                        "create catalog",
                        std::io::Error::other(format!("{} is locked", path.display())),
                    ))
                }
                Attempt::Unusable(error) => {
                    return Err(StoreError::Io(
                        "create catalog",
                        std::io::Error::other(format!("{}: {error}", path.display())),
                    ))
                }
            };
            (n, fresh, true)
        }
    };
    remove_unused(root, current);
    Ok((catalog, fresh))
}

/// Run `open`, sorting its outcome; a panic inside the database on
/// corrupt data is an unusable generation, not a failed start.
fn attempt(open: impl FnOnce() -> Result<Catalog, StoreError>) -> Attempt {
    match catch_unwind(AssertUnwindSafe(open)) {
        Ok(Ok(catalog)) => Attempt::Ready(catalog),
        Ok(Err(StoreError::Catalog(fjall::Error::Locked))) => Attempt::Locked,
        Ok(Err(e)) => Attempt::Unusable(e.to_string()),
        Err(_) => Attempt::Unusable("the database panicked while opening".into()),
    }
}

/// `<root>/v<FORMAT>-<n>`.
fn generation(root: &Path, n: u64) -> PathBuf {
    root.join(format!("v{FORMAT}-{n}"))
}

/// Every entry under `root` with its generation number, if it is a
/// generation of this format.
fn generations(root: &Path) -> Vec<(u64, PathBuf)> {
    let prefix = format!("v{FORMAT}-");
    fs::read_dir(root)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_prefix(&prefix)?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect()
}

/// Remove everything under `root` but generation `current`, except
/// generations another store still holds.
fn remove_unused(root: &Path, current: u64) {
    let keep = generation(root, current);
    for entry in fs::read_dir(root).into_iter().flatten().flatten() {
        let path = entry.path();
        if path == keep {
            continue;
        }
        // Held while removing, so no store opens it meanwhile.
        let lock = File::options()
            .read(true)
            .write(true)
            .open(path.join("lock"));
        match lock.as_ref().map(File::try_lock) {
            Ok(Err(std::fs::TryLockError::WouldBlock)) => continue,
            _ => {
                let removed = match entry.file_type() {
                    Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
                    _ => fs::remove_file(&path),
                };
                if let Err(error) = removed {
                    tracing::warn!(target: "edge_cdn_store", path = %path.display(), %error, "old catalog not removed");
                }
            }
        }
    }
}
