//! Opening the catalog at start-up: never a reason not to start.
//!
//! The database lives in a *generation* directory, `<dir>/catalog/v<format>-<n>`.
//! The newest generation of this format is opened and reconciled with the
//! object files recovery found: an entry whose files are gone is dropped,
//! a committed object missing (or recorded differently, as a `kill -9`
//! between a meta rewrite and its catalog update leaves it) is written
//! again. A generation that does not open or read (corrupt, a format this
//! build does not know) is discarded and a new one filled from the files.
//!
//! A generation still locked by another store — the old process during a
//! binary upgrade, which shares the cache directory for a few seconds — is
//! left alone: this store fills a new generation and uses that. Every
//! generation not in use (unlocked) other than the one opened is removed.

use std::fs::{self, File};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use pingora_cache::key::{CacheHashKey, HashBinary};

use super::entry::{tag_entry, Entry};
use super::{Catalog, Record, LOAD_BATCH};
use crate::error::StoreError;

/// The catalog's own format: a generation of another is discarded. Bump it
/// on any change to [`super::entry`]'s layout.
const FORMAT: u32 = 1;

/// How one attempt to open a generation ended.
enum Attempt {
    /// Opened and reconciled.
    Ready(Catalog),
    /// Another store holds it.
    Locked,
    /// It does not open, or does not read.
    Unusable(String),
}

/// Open the catalog under `root` for the objects `found` on disk (each
/// once); `stored` says whether a hash is one of them. Fails only if a
/// new, empty database cannot be created there either.
pub fn open<'a>(
    root: &Path,
    found: impl Iterator<Item = &'a Record> + Clone,
    stored: impl Fn(&HashBinary) -> bool,
) -> Result<Catalog, StoreError> {
    fs::create_dir_all(root).map_err(|e| StoreError::Io("create catalog directory", e))?;
    let generations = generations(root);
    let newest = generations.iter().map(|(n, _)| *n).max();
    let mut opened = None;
    if let Some(n) = newest {
        let path = generation(root, n);
        match attempt(|| {
            let catalog = Catalog::at(&path)?;
            reconcile(&catalog, found.clone(), &stored)?;
            Ok(catalog)
        }) {
            Attempt::Ready(catalog) => opened = Some((n, catalog)),
            Attempt::Locked => {
                tracing::info!(target: "edge_cdn_store", path = %path.display(), "catalog in use by another store; filling a new one from the files");
            }
            Attempt::Unusable(error) => {
                tracing::warn!(target: "edge_cdn_store", path = %path.display(), %error, "catalog unusable; discarded and rebuilt from the files");
                let _ = fs::remove_dir_all(&path);
            }
        }
    }
    let (current, catalog) = match opened {
        Some(opened) => opened,
        None => {
            let n = newest.map_or(0, |n| n + 1);
            let path = generation(root, n);
            let _ = fs::remove_dir_all(&path);
            let fresh = match attempt(|| {
                let catalog = Catalog::at(&path)?;
                load(&catalog, found)?;
                Ok(catalog)
            }) {
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
            (n, fresh)
        }
    };
    remove_unused(root, current);
    Ok(catalog)
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

/// Make `catalog` agree with the files: re-record each found object
/// whose entry is missing or differs, then drop entries of objects not
/// stored.
fn reconcile<'a>(
    catalog: &Catalog,
    found: impl Iterator<Item = &'a Record>,
    stored: &impl Fn(&HashBinary) -> bool,
) -> Result<(), StoreError> {
    let mut rewritten = 0usize;
    for record in found {
        let hash = record.key.combined_bin();
        let want = Entry::from(record.clone());
        if catalog.entry(&hash)?.as_ref() != Some(&want) {
            catalog.insert(record.clone())?;
            rewritten += 1;
        }
    }
    let mut gone = Vec::new();
    let mut count = 0usize;
    for kv in catalog.objects.iter() {
        let key = kv.key().map_err(StoreError::Catalog)?;
        match <HashBinary>::try_from(&*key) {
            Ok(hash) if stored(&hash) => count += 1,
            Ok(hash) => gone.push(hash),
            Err(_) => {
                return Err(StoreError::Catalog(fjall::Error::Unrecoverable));
            }
        }
    }
    for hash in &gone {
        catalog.remove(hash)?;
    }
    catalog.object_count.store(count, Ordering::Relaxed);
    catalog.count_tags()?;
    if rewritten > 0 || !gone.is_empty() {
        tracing::info!(target: "edge_cdn_store", rewritten, dropped = gone.len(), objects = count, "catalog reconciled with the object files");
    }
    Ok(())
}

/// Fill an empty `catalog` with the objects `found`, in large batches.
fn load<'a>(catalog: &Catalog, found: impl Iterator<Item = &'a Record>) -> Result<(), StoreError> {
    let mut objects = 0usize;
    let mut batch = catalog.db.batch();
    for record in found {
        let hash = record.key.combined_bin();
        let entry = Entry::from(record.clone());
        batch.insert(&catalog.primaries, entry.primary_entry(&hash), []);
        batch.insert(&catalog.variants, entry.variant_entry(&hash), []);
        let value = entry.encode();
        for tag in &entry.tags {
            batch.insert(&catalog.tags, tag_entry(tag, &hash), value.as_slice());
        }
        batch.insert(&catalog.objects, hash, value);
        objects += 1;
        if objects.is_multiple_of(LOAD_BATCH) {
            std::mem::replace(&mut batch, catalog.db.batch())
                .commit()
                .map_err(StoreError::Catalog)?;
        }
    }
    batch.commit().map_err(StoreError::Catalog)?;
    catalog.object_count.store(objects, Ordering::Relaxed);
    catalog.count_tags()
}
