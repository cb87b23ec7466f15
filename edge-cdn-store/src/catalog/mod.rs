//! What each stored object is: its primary key and its surrogate tags, so an
//! operator can find and purge objects by URL (every Vary variant), by key
//! prefix and by tag — which the hash-named files alone cannot answer.
//!
//! The catalog lives on the cache disk, in an embedded LSM database
//! (`fjall`) under `<dir>/catalog/`, not in RAM: one value per object and
//! three ordered indexes (see [`entry`]), so a prefix purge is a range scan
//! and a tag purge one scan of that tag's entries, which carry their
//! objects' values. RAM holds only the
//! database's bounded caches and write buffers, and two counters.
//!
//! Every method blocks (it reads or writes the database): the store calls
//! them on the blocking pool, through `crate::io`. A mutation reads the
//! object's entry and commits one atomic batch, under one writer lock, so
//! the indexes always agree with the entries; reads take no lock.
//!
//! The object files stay the truth: the catalog is rebuilt or reconciled
//! from them at start-up (see [`open`]), so after a `kill -9` an entry may
//! lag or lead its files only until the next start.

mod entry;
mod mark;
mod open;
mod pending;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicIsize, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use fjall::config::{CompressionPolicy, FilterPolicy};
use fjall::{Database, Keyspace, KeyspaceCreateOptions, Readable};
use pingora_cache::key::{CacheHashKey, CompactCacheKey, HashBinary};

use crate::error::StoreError;
use entry::{hash_after, primary_match, tag_entry, tag_prefix, Entry};
pub use open::open;
pub use pending::{Pending, PurgeId};

/// Tags kept per object; more are ignored (a response header cannot
/// sensibly carry more, and the catalog must stay bounded).
pub const MAX_TAGS: usize = 128;
/// Longest tag kept, in bytes; longer ones are ignored.
pub const MAX_TAG_LEN: usize = 256;

/// Block cache of the catalog database: bounded, whatever the number of
/// objects.
const CACHE_BYTES: u64 = 16 << 20;
/// Write buffer of each keyspace before it is flushed to a table: smaller
/// ones stalled fills behind compactions (see `docs/benchmarks.md`).
const MEMTABLE_BYTES: u64 = 32 << 20;

/// Journal kept before the keyspaces holding its oldest writes are
/// flushed: what a start replays. Room for the five keyspaces a fill
/// writes; the rarely written ones (pending purges, the ring's mark) would
/// otherwise pin fjall's default of 512 MiB, which took 5 s to replay at
/// a million objects.
const JOURNAL_BYTES: u64 = 5 * MEMTABLE_BYTES;

/// How an operator selects objects.
#[derive(Debug, Clone, Copy)]
pub enum Selector<'a> {
    /// Every variant stored under this primary key hash.
    Primary(&'a HashBinary),
    /// Every object whose primary key bytes start with these.
    Prefix(&'a [u8]),
    /// Every object carrying this surrogate tag.
    Tag(&'a str),
}

/// A [`Selector`] that owns its bytes, to carry to the blocking pool.
#[derive(Debug, Clone)]
pub enum OwnedSelector {
    /// See [`Selector::Primary`].
    Primary(HashBinary),
    /// See [`Selector::Prefix`].
    Prefix(Vec<u8>),
    /// See [`Selector::Tag`].
    Tag(String),
}

impl From<Selector<'_>> for OwnedSelector {
    fn from(selector: Selector<'_>) -> OwnedSelector {
        match selector {
            Selector::Primary(hash) => OwnedSelector::Primary(*hash),
            Selector::Prefix(prefix) => OwnedSelector::Prefix(prefix.to_vec()),
            Selector::Tag(tag) => OwnedSelector::Tag(tag.to_owned()),
        }
    }
}

/// When a change's journal entry is handed to the OS. Either way the
/// change is visible at once (selections see it), and a crash keeps a
/// prefix of the journal, so what a later change saw is never lost while
/// that change is kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Journal {
    /// With the change: one `write` each.
    Now,
    /// With the next change that is written now, or at the next
    /// [`Catalog::flush`]: the store's commit thread records each object it
    /// commits this way and flushes once per round, so a round's objects
    /// share one `write`. A `kill -9` before then loses their entries,
    /// which the walk at the next start makes again: from the ring for
    /// entries past its mark (`crate::catalog::mark`, itself journaled
    /// after them), and from the files of an object the ring refused.
    Later,
}

/// What the store records for one object when it is committed.
#[derive(Debug, Clone)]
pub struct Record {
    /// The key the eviction manager and purges use.
    pub key: CompactCacheKey,
    /// The primary key's bytes, as the caller built them.
    pub primary_key: Box<[u8]>,
    /// Its surrogate tags.
    pub tags: Vec<Box<str>>,
}

/// An object as the catalog describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    /// Its key.
    pub key: CompactCacheKey,
    /// The primary key bytes.
    pub primary_key: Box<[u8]>,
    /// Its surrogate tags.
    pub tags: Vec<Arc<str>>,
}

/// The secondary index of stored objects, on disk.
pub struct Catalog {
    db: Database,
    objects: Keyspace,
    primaries: Keyspace,
    variants: Keyspace,
    tags: Keyspace,
    /// How many objects carry each tag: a tag is counted as distinct while
    /// its count is above zero, with one point read per tag a change
    /// touches (a scan of the tag's entries would cross the tombstones of
    /// every object just removed, making a purge of a large tag
    /// quadratic).
    tag_counts: Keyspace,
    /// Purges answered but not yet carried out (see [`pending`]).
    purging: Keyspace,
    /// How far the segment ring is cataloged (see [`mark`]).
    marks: Keyspace,
    /// The next purge's id.
    next_purge: AtomicU64,
    /// Held by every mutation from its reads to its commit.
    writer: Mutex<()>,
    /// Objects recorded.
    object_count: AtomicUsize,
    /// Distinct tags recorded.
    tag_count: AtomicUsize,
    /// How the changes since the last [`Catalog::recount`]'s snapshot
    /// moved `object_count`: what the recount adds to what it counted.
    objects_moved: AtomicIsize,
    /// The same for `tag_count`.
    tags_moved: AtomicIsize,
}

fn db(e: fjall::Error) -> StoreError {
    StoreError::Catalog(e)
}

impl Catalog {
    /// Open (creating) the database in `path`. Its counters start at
    /// zero and move with each change; [`Catalog::recount`] sets them from
    /// what is there.
    fn at(path: &Path) -> Result<Catalog, StoreError> {
        let catalog = Catalog::open_db(path).map_err(db)?;
        let next = catalog.first_free_purge()?;
        catalog.next_purge.store(next, Ordering::Relaxed);
        Ok(catalog)
    }

    /// [`Catalog::at`], in the database's errors.
    fn open_db(path: &Path) -> Result<Catalog, fjall::Error> {
        let db = Database::builder(path)
            .cache_size(CACHE_BYTES)
            .max_journaling_size(JOURNAL_BYTES)
            .open()?;
        // Uncompressed: on the fill path, CPU is dearer than disk.
        let point = || {
            KeyspaceCreateOptions::default()
                .max_memtable_size(MEMTABLE_BYTES)
                .data_block_compression_policy(CompressionPolicy::disabled())
        };
        // Index keyspaces are only ever scanned: no filters to build or hold.
        let scanned = || point().filter_policy(FilterPolicy::disabled());
        let catalog = Catalog {
            objects: db.keyspace("objects", point)?,
            primaries: db.keyspace("primaries", scanned)?,
            variants: db.keyspace("variants", scanned)?,
            tags: db.keyspace("tags", scanned)?,
            tag_counts: db.keyspace("tag_counts", point)?,
            purging: db.keyspace("purging", point)?,
            marks: db.keyspace("marks", point)?,
            next_purge: AtomicU64::new(0),
            db,
            writer: Mutex::new(()),
            object_count: AtomicUsize::new(0),
            tag_count: AtomicUsize::new(0),
            objects_moved: AtomicIsize::new(0),
            tags_moved: AtomicIsize::new(0),
        };
        Ok(catalog)
    }

    /// Record a committed object, replacing what was recorded for its hash.
    pub fn insert(&self, record: Record, journal: Journal) -> Result<(), StoreError> {
        let hash = record.key.combined_bin();
        self.change_all([(&hash, |_| Some(Entry::from(record)))], journal)
    }

    /// Record committed objects (of distinct hashes) in one batch, each
    /// replacing what was recorded for its hash.
    pub fn insert_all(&self, records: Vec<Record>) -> Result<(), StoreError> {
        let hashes: Vec<HashBinary> = records.iter().map(|r| r.key.combined_bin()).collect();
        self.change_all(
            hashes
                .iter()
                .zip(records)
                .map(|(hash, record)| (hash, move |_| Some(Entry::from(record)))),
            Journal::Now,
        )
    }

    /// Forget `hash`'s object.
    pub fn remove(&self, hash: &HashBinary) -> Result<(), StoreError> {
        self.change(hash, |_| None)
    }

    /// Forget the objects of `hashes` (distinct) in one batch: each tag's
    /// count moves once for all of them, so a purge or a reclaimed region
    /// costs one batch, not one per object.
    pub fn remove_all(&self, hashes: &[HashBinary]) -> Result<(), StoreError> {
        self.change_all(hashes.iter().map(|hash| (hash, |_| None)), Journal::Now)
    }

    /// Replace `hash`'s tags (its response headers were rewritten).
    pub fn retag(&self, hash: &HashBinary, tags: Vec<Box<str>>) -> Result<(), StoreError> {
        let tags = entry::distinct(tags);
        self.change(hash, |old| old.map(|old| Entry { tags, ..old }))
    }

    /// Replace `hash`'s entry by what `new` makes of the old one: see
    /// [`Catalog::change_all`].
    fn change(
        &self,
        hash: &HashBinary,
        new: impl FnOnce(Option<Entry>) -> Option<Entry>,
    ) -> Result<(), StoreError> {
        self.change_all([(hash, new)], Journal::Now)
    }

    /// Replace each hash's entry by what its function makes of the old one,
    /// with their index entries and their tags' counts, in one batch under
    /// the writer lock; then move the counters. The hashes are distinct (a
    /// change does not see an earlier one of the same batch).
    fn change_all<'h, F>(
        &self,
        changes: impl IntoIterator<Item = (&'h HashBinary, F)>,
        journal: Journal,
    ) -> Result<(), StoreError>
    where
        F: FnOnce(Option<Entry>) -> Option<Entry>,
    {
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let mut batch = self.db.batch();
        if journal == Journal::Later {
            batch = batch.durability(None);
        }
        let mut changed = Vec::new();
        for (hash, new) in changes {
            let old = self.entry(hash)?;
            let new = new(old.clone());
            if old != new {
                self.stage(&mut batch, hash, &old, &new);
                changed.push((old, new));
            }
        }
        if changed.is_empty() {
            return Ok(());
        }
        let mut carried: HashMap<&str, i64> = HashMap::new();
        for (old, new) in &changed {
            for tag in old.iter().flat_map(|e| e.tags.iter()) {
                *carried.entry(tag).or_default() -= 1;
            }
            for tag in new.iter().flat_map(|e| e.tags.iter()) {
                *carried.entry(tag).or_default() += 1;
            }
        }
        // Each tag's count moves in the same batch, under the writer lock,
        // so no other change moves it meanwhile.
        let (mut gained, mut lost) = (0usize, 0usize);
        for (tag, delta) in carried.into_iter().filter(|(_, d)| *d != 0) {
            let before = self.tag_count_of(tag)?;
            match (before, (before as i64 + delta).max(0) as u64) {
                (0, 0) => {}
                (_, 0) => {
                    batch.remove(&self.tag_counts, tag.as_bytes());
                    lost += 1;
                }
                (before, after) => {
                    batch.insert(&self.tag_counts, tag.as_bytes(), after.to_le_bytes());
                    gained += usize::from(before == 0);
                }
            }
        }
        batch.commit().map_err(db)?;
        self.tag_count.fetch_add(gained, Ordering::Relaxed);
        self.tag_count.fetch_sub(lost, Ordering::Relaxed);
        let (mut added, mut removed) = (0, 0);
        for (old, new) in &changed {
            match (old.is_some(), new.is_some()) {
                (false, true) => added += 1,
                (true, false) => removed += 1,
                _ => {}
            }
        }
        self.object_count.fetch_add(added, Ordering::Relaxed);
        self.object_count.fetch_sub(removed, Ordering::Relaxed);
        self.objects_moved
            .fetch_add(added as isize - removed as isize, Ordering::Relaxed);
        self.tags_moved
            .fetch_add(gained as isize - lost as isize, Ordering::Relaxed);
        Ok(())
    }

    /// How many objects carry `tag`.
    fn tag_count_of(&self, tag: &str) -> Result<u64, StoreError> {
        Ok(self
            .tag_counts
            .get(tag.as_bytes())
            .map_err(db)?
            .and_then(|v| <[u8; 8]>::try_from(&*v).ok())
            .map_or(0, u64::from_le_bytes))
    }

    /// Put into `batch` what turns `hash`'s entry `old` into `new`, index
    /// entries included.
    fn stage(
        &self,
        batch: &mut fjall::OwnedWriteBatch,
        hash: &HashBinary,
        old: &Option<Entry>,
        new: &Option<Entry>,
    ) {
        let keys = |entry: &Option<Entry>| -> [HashSet<Vec<u8>>; 3] {
            let Some(entry) = entry else {
                return Default::default();
            };
            [
                HashSet::from([entry.primary_entry(hash)]),
                HashSet::from([entry.variant_entry(hash)]),
                entry.tags.iter().map(|t| tag_entry(t, hash)).collect(),
            ]
        };
        let (before, after) = (keys(old), keys(new));
        let indexes = [&self.primaries, &self.variants, &self.tags];
        for ((index, before), after) in indexes.into_iter().zip(&before).zip(&after) {
            for gone in before.difference(after) {
                batch.remove(index, gone.as_slice());
            }
        }
        for added in after[0].difference(&before[0]) {
            batch.insert(&self.primaries, added.as_slice(), []);
        }
        for added in after[1].difference(&before[1]) {
            batch.insert(&self.variants, added.as_slice(), []);
        }
        if let Some(entry) = new {
            // Every tag entry carries the object's entry, which changed.
            let value = entry.encode();
            for key in &after[2] {
                batch.insert(&self.tags, key.as_slice(), value.as_slice());
            }
            batch.insert(&self.objects, hash, value);
        } else {
            batch.remove(&self.objects, hash.as_slice());
        }
    }

    /// Count the objects and the distinct tags afresh, and list the
    /// entries whose objects `stored` does not know, for the caller to
    /// drop: one scan of a snapshot, after recovery. Exact while changes go
    /// on: the snapshot is taken under the writer lock, and what changes
    /// made since moved the counters is added to what it holds.
    pub fn recount(
        &self,
        stored: impl Fn(&HashBinary) -> bool,
    ) -> Result<Vec<HashBinary>, StoreError> {
        let snapshot = {
            let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
            self.objects_moved.store(0, Ordering::Relaxed);
            self.tags_moved.store(0, Ordering::Relaxed);
            self.db.snapshot()
        };
        let mut gone = Vec::new();
        let mut objects = 0usize;
        for kv in snapshot.iter(&self.objects) {
            let key = kv.key().map_err(db)?;
            let hash = <HashBinary>::try_from(&*key)
                .map_err(|_| StoreError::Catalog(fjall::Error::Unrecoverable))?;
            objects += 1;
            if !stored(&hash) {
                gone.push(hash);
            }
        }
        let mut tags = 0usize;
        for kv in snapshot.iter(&self.tag_counts) {
            kv.key().map_err(db)?;
            tags += 1;
        }
        let _writer = self.writer.lock().unwrap_or_else(|e| e.into_inner());
        let counted =
            |n: usize, moved: &AtomicIsize| n.saturating_add_signed(moved.load(Ordering::Relaxed));
        self.object_count
            .store(counted(objects, &self.objects_moved), Ordering::Relaxed);
        self.tag_count
            .store(counted(tags, &self.tags_moved), Ordering::Relaxed);
        Ok(gone)
    }

    /// `hash`'s entry. One that does not decode is treated as absent (and
    /// replaced by the next write of its object).
    fn entry(&self, hash: &HashBinary) -> Result<Option<Entry>, StoreError> {
        let Some(bytes) = self.objects.get(hash).map_err(db)? else {
            return Ok(None);
        };
        let entry = Entry::decode(&bytes);
        if entry.is_none() {
            tracing::warn!(target: "edge_cdn_store", hash = %format!("{:032x}", u128::from_be_bytes(*hash)), "undecodable catalog entry ignored");
        }
        Ok(entry)
    }

    /// What is recorded for `hash`.
    pub fn get(&self, hash: &HashBinary) -> Result<Option<Listed>, StoreError> {
        Ok(self.entry(hash)?.map(Entry::listed))
    }

    /// The objects `selector` picks, as they are recorded now.
    pub fn select(&self, selector: &OwnedSelector) -> Result<Vec<Listed>, StoreError> {
        let (index, prefix) = match selector {
            OwnedSelector::Primary(primary) => (&self.variants, primary.to_vec()),
            OwnedSelector::Prefix(prefix) => (&self.primaries, prefix.clone()),
            OwnedSelector::Tag(tag) => (&self.tags, tag_prefix(tag)),
        };
        let mut hashes = Vec::new();
        let mut out = Vec::new();
        for kv in index.prefix(&prefix) {
            let (key, value) = kv.into_inner().map_err(db)?;
            let hash = match selector {
                OwnedSelector::Prefix(prefix) => primary_match(&key, prefix),
                _ => hash_after(&key, prefix.len()),
            };
            let Some(hash) = hash else {
                continue;
            };
            // A tag entry carries its object's entry: a tag's selection
            // is one scan. Other index entries are keys only.
            match Entry::decode(&value) {
                Some(entry) => out.push(entry.listed()),
                None => hashes.push(hash),
            }
        }
        // In key order, the entries' reads walk the objects keyspace
        // forwards, each block read once for all its objects.
        hashes.sort_unstable();
        for hash in &hashes {
            out.extend(self.get(hash)?);
        }
        Ok(out)
    }

    /// Hand the journal entries of the changes made with
    /// [`Journal::Later`] to the OS (one `write`, none if there are none).
    /// A failure poisons the database, so every later change fails and is
    /// counted where it is made; here it is only logged. Blocking.
    pub fn flush(&self) {
        if let Err(error) = self.db.persist(fjall::PersistMode::Buffer) {
            tracing::warn!(target: "edge_cdn_store", error = %db(error), "catalog journal not written");
        }
    }

    /// Make every change so far durable (the journal is otherwise
    /// written to the OS per batch, not synced): before the store saves
    /// an index that counts on it.
    pub fn persist(&self) -> Result<(), StoreError> {
        self.db.persist(fjall::PersistMode::SyncAll).map_err(db)
    }

    /// Objects recorded, and distinct tags. Two counters: no I/O.
    pub fn totals(&self) -> (usize, usize) {
        (
            self.object_count.load(Ordering::Relaxed),
            self.tag_count.load(Ordering::Relaxed),
        )
    }
}

/// The surrogate tags in `headers`' fields named in `fields`: lists split
/// on commas and whitespace, which covers `Surrogate-Key` (space-separated)
/// and `Cache-Tag` (comma-separated). Bounded by [`MAX_TAGS`] and
/// [`MAX_TAG_LEN`]; duplicates removed.
pub fn tags_in(headers: &http::HeaderMap, fields: &[String]) -> Vec<Box<str>> {
    let mut out: Vec<Box<str>> = Vec::new();
    let values = fields
        .iter()
        .flat_map(|f| headers.get_all(f.as_str()))
        .filter_map(|v| v.to_str().ok());
    for tag in values.flat_map(|v| v.split(|c: char| c == ',' || c.is_ascii_whitespace())) {
        if out.len() == MAX_TAGS {
            break;
        }
        if !tag.is_empty() && tag.len() <= MAX_TAG_LEN && !out.iter().any(|t| &**t == tag) {
            out.push(tag.into());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::key::CacheKey;

    fn record(primary: &str, variance: Option<u8>, tags: &[&str]) -> Record {
        let mut key = CacheKey::new(primary, "site");
        if let Some(v) = variance {
            key.set_variance_key([v; 16]);
        }
        Record {
            key: key.to_compact(),
            primary_key: primary.as_bytes().into(),
            tags: tags.iter().map(|t| Box::from(*t)).collect(),
        }
    }

    fn primaries(listed: &[Listed]) -> Vec<String> {
        let mut out: Vec<String> = listed
            .iter()
            .map(|l| String::from_utf8_lossy(&l.primary_key).into_owned())
            .collect();
        out.sort();
        out
    }

    /// A new, empty catalog in `dir`.
    fn empty(dir: &Path) -> Catalog {
        open(dir).unwrap().0
    }

    fn select(catalog: &Catalog, selector: Selector<'_>) -> Vec<Listed> {
        catalog.select(&selector.into()).unwrap()
    }

    /// Whether any file under `dir` holds `needle`.
    fn on_disk(dir: &Path, needle: &str) -> bool {
        std::fs::read_dir(dir).unwrap().flatten().any(|entry| {
            if entry.file_type().unwrap().is_dir() {
                return on_disk(&entry.path(), needle);
            }
            let bytes = std::fs::read(entry.path()).unwrap();
            bytes.windows(needle.len()).any(|w| w == needle.as_bytes())
        })
    }

    /// A change journaled `Later` is selected at once, but written only
    /// with the next flush (or the next change written `Now`).
    #[test]
    fn a_later_journal_entry_is_written_by_the_next_flush() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = empty(dir.path());
        let path = |name: &str| format!("journal-test/{name}");
        catalog
            .insert(record(&path("now"), None, &["t"]), Journal::Now)
            .unwrap();
        assert!(on_disk(dir.path(), &path("now")));
        catalog
            .insert(record(&path("later-1"), None, &["t"]), Journal::Later)
            .unwrap();
        catalog
            .insert(record(&path("later-2"), None, &[]), Journal::Later)
            .unwrap();
        assert_eq!(
            primaries(&select(&catalog, Selector::Prefix(b"journal-test/"))),
            [path("later-1"), path("later-2"), path("now")]
        );
        assert_eq!(
            primaries(&select(&catalog, Selector::Tag("t"))),
            [path("later-1"), path("now")]
        );
        assert!(!on_disk(dir.path(), &path("later-1")), "not written yet");
        catalog.flush();
        assert!(
            on_disk(dir.path(), &path("later-1")),
            "written by the flush"
        );
        assert!(
            on_disk(dir.path(), &path("later-2")),
            "written by the flush"
        );
        catalog
            .insert(record(&path("later-3"), None, &[]), Journal::Later)
            .unwrap();
        catalog
            .remove(&record(&path("now"), None, &[]).key.combined_bin())
            .unwrap();
        assert!(
            on_disk(dir.path(), &path("later-3")),
            "written with a change made now"
        );
    }

    #[test]
    fn selects_variants_prefixes_and_tags() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = empty(dir.path());
        catalog
            .insert(record("h/a", None, &["t1"]), Journal::Now)
            .unwrap();
        catalog
            .insert(record("h/a", Some(1), &["t1", "t2"]), Journal::Now)
            .unwrap();
        catalog
            .insert(record("h/a", Some(2), &[]), Journal::Now)
            .unwrap();
        catalog
            .insert(record("h/b/c", None, &["t2"]), Journal::Now)
            .unwrap();
        catalog
            .insert(record("g/a", None, &["t1"]), Journal::Now)
            .unwrap();
        // A tag that extends another is not selected with it.
        catalog
            .insert(record("g/b", None, &["t10"]), Journal::Now)
            .unwrap();

        let primary = CacheKey::new("h/a", "site").primary_bin();
        assert_eq!(select(&catalog, Selector::Primary(&primary)).len(), 3);
        assert_eq!(
            primaries(&select(&catalog, Selector::Prefix(b"h/"))),
            ["h/a", "h/a", "h/a", "h/b/c"]
        );
        assert_eq!(
            primaries(&select(&catalog, Selector::Tag("t1"))),
            ["g/a", "h/a", "h/a"]
        );
        assert_eq!(catalog.totals(), (6, 3));

        // Removing a variant leaves its siblings; removing the last drops
        // the primary and any tag nobody carries any more.
        let variant = record("h/a", Some(1), &[]).key.combined_bin();
        catalog.remove(&variant).unwrap();
        assert_eq!(select(&catalog, Selector::Primary(&primary)).len(), 2);
        assert_eq!(primaries(&select(&catalog, Selector::Tag("t2"))), ["h/b/c"]);
        catalog
            .remove(&record("h/b/c", None, &[]).key.combined_bin())
            .unwrap();
        assert_eq!(catalog.totals(), (4, 2));
        assert!(select(&catalog, Selector::Prefix(b"h/b")).is_empty());
    }

    #[test]
    fn removing_many_in_one_batch_moves_every_count_once() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = empty(dir.path());
        let records: Vec<Record> = (0..10)
            .map(|i| {
                record(
                    &format!("h/{i}"),
                    None,
                    &["all", if i % 2 == 0 { "even" } else { "odd" }],
                )
            })
            .collect();
        for r in &records {
            catalog.insert(r.clone(), Journal::Now).unwrap();
        }
        assert_eq!(catalog.totals(), (10, 3));
        let evens: Vec<HashBinary> = records
            .iter()
            .step_by(2)
            .map(|r| r.key.combined_bin())
            .collect();
        catalog.remove_all(&evens).unwrap();
        assert_eq!(catalog.totals(), (5, 2), "\"even\" is carried by none");
        assert!(select(&catalog, Selector::Tag("even")).is_empty());
        assert_eq!(select(&catalog, Selector::Tag("all")).len(), 5);
        // Removing what is gone, or nothing, changes nothing.
        catalog.remove_all(&evens).unwrap();
        catalog.remove_all(&[]).unwrap();
        assert_eq!(catalog.totals(), (5, 2));
        // The counts agree with a fresh count.
        assert!(catalog.recount(|_| true).unwrap().is_empty());
        assert_eq!(catalog.totals(), (5, 2));
    }

    #[test]
    fn reinsert_and_retag_replace_tags() {
        let dir = tempfile::tempdir().unwrap();
        let catalog = empty(dir.path());
        let r = record("h/a", None, &["old"]);
        let hash = r.key.combined_bin();
        catalog.insert(r, Journal::Now).unwrap();
        catalog
            .insert(record("h/a", None, &["new", "new"]), Journal::Now)
            .unwrap();
        assert!(select(&catalog, Selector::Tag("old")).is_empty());
        assert_eq!(select(&catalog, Selector::Tag("new")).len(), 1);
        catalog.retag(&hash, vec!["newer".into()]).unwrap();
        assert!(select(&catalog, Selector::Tag("new")).is_empty());
        let listed = catalog.get(&hash).unwrap().unwrap();
        assert_eq!(listed.tags, [Arc::from("newer")]);
        assert_eq!(listed.key.user_tag.as_ref(), "site");
        assert_eq!(catalog.totals(), (1, 1));
        // Retagging what is not recorded records nothing.
        catalog.retag(&[9; 16], vec!["x".into()]).unwrap();
        assert_eq!(catalog.totals(), (1, 1));
    }

    /// Selections at a few thousand objects, with variants, shared
    /// prefixes, replacements, retags and removals, against a plain model.
    #[test]
    fn selections_agree_with_a_model_at_scale() {
        use std::collections::BTreeMap;
        let dir = tempfile::tempdir().unwrap();
        let catalog = empty(dir.path());
        /// Primary key, variance and tags.
        type Modelled = (String, Option<u8>, Vec<String>);
        let mut model: BTreeMap<HashBinary, Modelled> = BTreeMap::new();
        let mut step = 0x2545_f491_u64;
        let mut next = |n: u64| {
            step ^= step << 13;
            step ^= step >> 7;
            step ^= step << 17;
            step % n
        };
        for _ in 0..6000 {
            let primary = format!("site\0h{}/p{}", next(4), next(500));
            let variance = (next(3) == 0).then(|| next(3) as u8);
            let tags: Vec<String> = (0..next(3)).map(|_| format!("t{}", next(40))).collect();
            let r = record(
                &primary,
                variance,
                &tags.iter().map(|t| t.as_str()).collect::<Vec<_>>(),
            );
            let hash = r.key.combined_bin();
            match next(10) {
                0 => {
                    catalog.remove(&hash).unwrap();
                    model.remove(&hash);
                }
                1 => {
                    catalog
                        .retag(&hash, tags.iter().map(|t| t.as_str().into()).collect())
                        .unwrap();
                    if let Some(entry) = model.get_mut(&hash) {
                        entry.2 = tags;
                    }
                }
                _ => {
                    catalog.insert(r, Journal::Now).unwrap();
                    model.insert(hash, (primary, variance, tags));
                }
            }
        }
        let expect = |pick: &dyn Fn(&Modelled) -> bool| {
            let mut out: Vec<String> = model
                .values()
                .filter(|e| pick(e))
                .map(|e| e.0.clone())
                .collect();
            out.sort();
            out
        };
        for t in 0..40 {
            let tag = format!("t{t}");
            assert_eq!(
                primaries(&select(&catalog, Selector::Tag(&tag))),
                expect(&|e| e.2.contains(&tag)),
                "{tag}"
            );
        }
        for prefix in ["site\0h1/", "site\0h2/p1", "site\0h3/p49", "site\0", "x"] {
            assert_eq!(
                primaries(&select(&catalog, Selector::Prefix(prefix.as_bytes()))),
                expect(&|e| e.0.starts_with(prefix)),
                "{prefix:?}"
            );
        }
        for p in 0..20 {
            let primary = format!("site\0h0/p{p}");
            let hash = CacheKey::new(primary.as_str(), "site").primary_bin();
            assert_eq!(
                primaries(&select(&catalog, Selector::Primary(&hash))),
                expect(&|e| e.0 == primary),
            );
        }
        let distinct: HashSet<&String> = model.values().flat_map(|e| &e.2).collect();
        assert_eq!(catalog.totals(), (model.len(), distinct.len()));
    }

    #[test]
    fn tags_split_on_commas_and_spaces_bounded() {
        let mut headers = http::HeaderMap::new();
        headers.append("surrogate-key", "a b  c".parse().unwrap());
        headers.append("cache-tag", "c,d, e".parse().unwrap());
        headers.append("other", "x".parse().unwrap());
        let long = "x".repeat(MAX_TAG_LEN + 1);
        headers.append("cache-tag", long.parse().unwrap());
        let fields = vec!["surrogate-key".to_owned(), "cache-tag".to_owned()];
        let tags = tags_in(&headers, &fields);
        assert_eq!(
            tags.iter().map(|t| &**t).collect::<Vec<_>>(),
            ["a", "b", "c", "d", "e"]
        );
        let many = (0..MAX_TAGS + 10)
            .map(|i| format!("t{i}"))
            .collect::<Vec<_>>()
            .join(" ");
        let mut headers = http::HeaderMap::new();
        headers.append("surrogate-key", many.parse().unwrap());
        assert_eq!(tags_in(&headers, &fields).len(), MAX_TAGS);
    }
}
