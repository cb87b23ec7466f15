//! Bringing the index and the purge catalog back to what the files hold,
//! in the background, while the store serves.
//!
//! After a clean stop the store takes its saved index back at open (see
//! `crate::snapshot`) and has nothing to recover. After an unclean one (a
//! `kill -9`, a power loss), or when its catalog had to be made anew, it
//! opens with what it has — an empty index, or a catalog missing entries —
//! and one thread, `store-recovery`, walks the object files: each whole
//! object is recorded in the catalog and put in the index, anything
//! incomplete or corrupt removed; then it scans the segment ring's regions,
//! oldest first, doing the same for each whole entry (a later entry of an
//! object replaces an earlier one; one older than the object's files is
//! removed). Until the walk reaches an object its lookups are misses; a
//! miss filled meanwhile is stored as usual, in files: the ring takes
//! appends only once the walk is done, so nothing is appended to a region
//! the walk has yet to scan.
//!
//! # Races with the live store
//!
//! The walk, a commit and a removal of the same object each hold that
//! object's lock ([`Tiers::hold`]) while they change its index entry and
//! catalog entry, and the walk first checks that the meta file it read is
//! still the one at its name (the same inode): a commit renames a new
//! file over it, a removal unlinks it. So the walk never puts back an
//! object removed meanwhile, nor overwrites a newer one's entries.
//!
//! # Purges during the walk
//!
//! A purge selects through the catalog, which may not yet list an object
//! the walk has not reached, and an invalidation of one key cannot see a
//! ring entry the walk has not indexed (an eviction need not: an evicted
//! object that comes back is harmless). So while the walk runs, each
//! purge's selector (or key) is remembered with its time before it selects
//! ([`Recovery::purging`], [`Recovery::forgetting`]), and the walk removes
//! any object it recovers that one of them picks and that was written
//! before it, after recording it in the catalog: whichever comes first,
//! the purge's selection or the walk's check sees the object. A fill
//! after the purge is not its business. Past [`MAX_PURGES`] remembered
//! selectors the walk keeps no object written before that point at all,
//! so no purge is ever missed. Their records (below) are kept until the
//! walk is done ([`Recovery::keep_record`]): a crash before then leaves
//! them for the next start's walk.
//!
//! # Purges the last run did not carry out
//!
//! A purge answers before its objects are off the disk (`crate::purging`),
//! and records which it took until they are. A store that opens with such
//! a record walks its files, whatever else it has, and the walk removes
//! each object a record names that was written before its purge, just as
//! for a purge made during the walk; once the walk is done, the records
//! are dropped.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use pingora_cache::key::HashBinary;

use tokio::sync::watch;

use crate::catalog::{Journal, OwnedSelector, Pending, PurgeId, Record};
use crate::disk::{record_of, Recovered, Walked};
use crate::eviction::ClockEviction;
use crate::index::Placed;
use crate::segments::entry::Header;
use crate::segments::{Loc, Segments};
use crate::tiers::{hash_of, Tiers};

/// Ring entries recovered per catalog batch.
const RECOVER_BATCH: usize = 256;

/// Purges (selectors, and keys invalidated one by one) remembered during
/// one walk, at most.
pub const MAX_PURGES: usize = 65_536;

/// Where recovery stands, shared by the walk and the store.
pub struct Recovery {
    /// The walk is running: lookups may miss objects on disk, and purges
    /// are remembered.
    walking: AtomicBool,
    /// The store was dropped: the walk stops.
    stopped: AtomicBool,
    /// Objects the walk has recovered so far.
    found: AtomicUsize,
    started: Instant,
    purges: Mutex<Purges>,
    /// Objects whose catalog entry was removed while the walk runs: an
    /// entry of theirs below the ring's catalog mark is recorded again
    /// (the mark vouched for an entry since dropped).
    uncataloged: Mutex<HashSet<u128>>,
    /// The recovery thread has finished (see [`Recovery::finished`]).
    done: watch::Sender<bool>,
}

/// The purges made while the walk runs, each with when it was made (the
/// latest, for a selector made twice), looked up by what they select.
#[derive(Default)]
struct Purges {
    primaries: HashMap<HashBinary, SystemTime>,
    tags: HashMap<String, SystemTime>,
    /// Objects taken by purges the last run did not carry out (not
    /// counted against [`MAX_PURGES`]: the records bound them), and
    /// objects invalidated by key during the walk (counted).
    objects: HashMap<u128, SystemTime>,
    prefixes: Vec<(Vec<u8>, SystemTime)>,
    /// How many are remembered.
    count: usize,
    /// When more than [`MAX_PURGES`] had been made: every object written
    /// before is taken as purged.
    overflowed: Option<SystemTime>,
    /// The records of purges carried out during the walk, kept until it
    /// is done; `None` once it is (or if there is none).
    records: Option<Vec<PurgeId>>,
}

impl Purges {
    /// Count one more purge remembered; false (and the overflow noted)
    /// past [`MAX_PURGES`].
    fn counted(&mut self, at: SystemTime) -> bool {
        if self.count >= MAX_PURGES {
            if self.overflowed.is_none() {
                self.overflowed = Some(at);
                tracing::warn!(target: "edge_cdn_store", "over {MAX_PURGES} purges during recovery: the objects not yet recovered are dropped instead");
            }
            return false;
        }
        self.count += 1;
        true
    }

    /// `hash`'s object was purged at `at` (the latest, if more than once).
    fn object(&mut self, hash: u128, at: SystemTime) {
        let kept = self.objects.entry(hash).or_insert(at);
        *kept = (*kept).max(at);
    }

    fn remember(&mut self, selector: &OwnedSelector, at: SystemTime) {
        if !self.counted(at) {
            return;
        }
        match selector {
            OwnedSelector::Primary(primary) => {
                self.primaries.insert(*primary, at);
            }
            OwnedSelector::Tag(tag) => {
                self.tags.insert(tag.clone(), at);
            }
            OwnedSelector::Prefix(prefix) => self.prefixes.push((prefix.clone(), at)),
        }
    }

    /// Whether a purge made after `written` picks `hash`'s object, which
    /// `record` describes.
    fn pick(&self, hash: u128, record: &Record, written: SystemTime) -> bool {
        let after = |at: &SystemTime| written <= *at;
        self.overflowed.as_ref().is_some_and(after)
            || self.objects.get(&hash).is_some_and(after)
            || self.primaries.get(&record.key.primary).is_some_and(after)
            || record
                .tags
                .iter()
                .any(|t| self.tags.get(&**t).is_some_and(after))
            || self
                .prefixes
                .iter()
                .any(|(prefix, at)| after(at) && record.primary_key.starts_with(prefix))
    }
}

/// How far a running walk has come.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Recovering {
    /// Objects recovered so far.
    pub found: usize,
    /// Since the store opened.
    pub elapsed: Duration,
}

impl Recovery {
    /// The state of a store that walks its files (`walking`) or has
    /// nothing to recover; the walk removes what the purges `unfinished`
    /// took (a store with any walks).
    pub fn new(walking: bool, unfinished: &[Pending]) -> Recovery {
        let mut purges = Purges::default();
        for pending in unfinished {
            for hash in &pending.hashes {
                purges.object(*hash, pending.at);
            }
        }
        purges.records = walking.then(Vec::new);
        Recovery {
            walking: AtomicBool::new(walking),
            stopped: AtomicBool::new(false),
            found: AtomicUsize::new(0),
            started: Instant::now(),
            purges: Mutex::new(purges),
            uncataloged: Mutex::default(),
            done: watch::Sender::new(false),
        }
    }

    /// How far the walk has come; `None` when it is not running.
    pub fn progress(&self) -> Option<Recovering> {
        self.walking.load(Ordering::Acquire).then(|| Recovering {
            found: self.found.load(Ordering::Relaxed),
            elapsed: self.started.elapsed(),
        })
    }

    /// A purge is about to select by `selector`: while the walk runs, it
    /// is remembered, so an object the walk recovers later is checked
    /// against it. Call it before selecting.
    pub fn purging(&self, selector: &OwnedSelector) {
        if self.walking.load(Ordering::Acquire) {
            self.purges().remember(selector, SystemTime::now());
        }
    }

    /// `hash`'s object is about to be purged by its key: while the walk
    /// runs, it is remembered, so a ring entry of it the walk has yet to
    /// reach (the purge cannot see it) is removed when the walk does.
    /// Returns whether the walk runs. Call it before taking the object
    /// out of the index.
    pub fn forgetting(&self, hash: u128) -> bool {
        if !self.walking.load(Ordering::Acquire) {
            return false;
        }
        let at = SystemTime::now();
        let mut purges = self.purges();
        if purges.counted(at) {
            purges.object(hash, at);
        }
        true
    }

    /// A purge recorded as `id` is carried out: while the walk runs, its
    /// record is kept until the walk is done (it removes the purge's ring
    /// entries it has yet to reach, and a crash before then must find the
    /// record). Returns whether it is kept; if not, the caller drops it.
    pub fn keep_record(&self, id: PurgeId) -> bool {
        match &mut self.purges().records {
            Some(records) => {
                records.push(id);
                true
            }
            None => false,
        }
    }

    /// The walk is done: the records it kept, to drop.
    fn records_kept(&self) -> Vec<PurgeId> {
        self.purges().records.take().unwrap_or_default()
    }

    /// Whether a purge made during the walk, or left unfinished by the
    /// last run, after `written`, picks `hash`'s object (`record`).
    fn purged(&self, hash: u128, record: &Record, written: SystemTime) -> bool {
        self.purges().pick(hash, record, written)
    }

    /// The catalog entries of `hashes` are being removed: while the walk
    /// runs, it records those objects' entries again whatever the mark.
    pub fn uncataloging(&self, hashes: &[HashBinary]) {
        if self.walking.load(Ordering::Acquire) {
            self.uncataloged()
                .extend(hashes.iter().map(|h| u128::from_be_bytes(*h)));
        }
    }

    /// Whether `hash`'s catalog entry was removed during the walk.
    fn was_uncataloged(&self, hash: u128) -> bool {
        self.uncataloged().contains(&hash)
    }

    fn uncataloged(&self) -> std::sync::MutexGuard<'_, HashSet<u128>> {
        self.uncataloged.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn purges(&self) -> std::sync::MutexGuard<'_, Purges> {
        self.purges.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Wait until the recovery thread has finished: the walk, if there is
    /// one, and the catalog's recount after it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it only waits.
    pub async fn finished(&self) {
        let mut done = self.done.subscribe();
        // The sender lives as long as `self`: an error cannot happen here.
        let _ = done.wait_for(|done| *done).await;
    }

    /// Stop the walk at its next object: the store is being dropped.
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Relaxed);
    }

    fn finish(&self) {
        self.walking.store(false, Ordering::Release);
        *self.purges() = Purges::default();
        *self.uncataloged() = HashSet::new();
        self.done.send_replace(true);
    }
}

/// The `store-recovery` thread: walk the files if the store opened without
/// them (`walk`), then drop catalog entries of objects not stored, count
/// the catalog, drop the records of the purges `unfinished` and of those
/// carried out during the walk (the walk removed their objects), and
/// evict down to the limit (a store reopened
/// with a smaller `disk_bytes`). Blocking, for as long as the walk takes.
///
/// # Panics
///
/// Does not, by design; if it did, waiters are released, but the store
/// stays "recovering" (it never saves an index it did not complete).
pub fn run(
    tiers: Arc<Tiers>,
    eviction: Arc<ClockEviction>,
    walk: bool,
    unfinished: Vec<Pending>,
    ring_mark: u64,
) {
    let recovery = &tiers.recovery;
    let _release = Release(recovery);
    if walk {
        let fields = tiers.config.tag_headers.clone();
        tiers
            .disk
            .walk(&fields, &recovery.stopped, |walked| match walked {
                Walked::Object(object, record) => {
                    if recover(&tiers, object, record) {
                        recovery.found.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Walked::Unusable(hash, error) => {
                    // Only what an earlier process left and is still
                    // broken under the lock: a commit of this key may be
                    // under way right now.
                    let _held = tiers.hold(hash);
                    if tiers.disk.before_open(hash) {
                        tracing::warn!(target: "edge_cdn_store", hash = %format!("{hash:032x}"), %error, "removing unusable cache object");
                        if tiers.index.placed(hash).is_some_and(|p| p.loc.is_some()) {
                            // Only these files are unusable: the object
                            // was filled into the ring since this store
                            // opened (or the walk already removed its
                            // older files and sees what is left of them).
                            tiers.disk.remove(hash);
                        } else {
                            tiers.remove_held(hash, None);
                        }
                    }
                }
            });
        if let Some(ring) = tiers.segments.as_ref().filter(|ring| !ring.is_on()) {
            scan_ring(&tiers, ring, ring_mark);
        }
    }
    if recovery.stopped.load(Ordering::Relaxed) {
        return;
    }
    tidy_catalog(&tiers);
    let ids = unfinished.into_iter().map(|pending| pending.id);
    for id in ids.chain(recovery.records_kept()) {
        if let Err(error) = tiers.catalog.purge_done(id) {
            tracing::warn!(target: "edge_cdn_store", %error, "purge finished by the walk but still recorded; the next start walks again");
        }
    }
    for victim in eviction.evict_to_limit() {
        let hash = hash_of(victim.key());
        let _held = tiers.hold(hash);
        tiers.remove_held(hash, None);
    }
    if let Some(ring) = tiers.segments.as_ref().filter(|_| walk) {
        // Every region is scanned: appends may reuse them now.
        ring.start();
    }
    if walk {
        let (objects, bytes) = tiers.index.totals();
        tracing::info!(
            target: "edge_cdn_store",
            recovered = recovery.found.load(Ordering::Relaxed),
            objects,
            bytes,
            took_ms = recovery.started.elapsed().as_millis() as u64,
            "store recovered from its files"
        );
    }
    recovery.finish();
}

/// Releases the waiters of a walk that ends without finishing (a panic):
/// they must not wait for ever.
struct Release<'a>(&'a Recovery);

impl Drop for Release<'_> {
    fn drop(&mut self) {
        if !*self.0.done.borrow() {
            if std::thread::panicking() {
                tracing::error!(target: "edge_cdn_store", "store recovery failed; objects not reached stay misses until the next start");
            }
            self.0.done.send_replace(true);
        }
    }
}

/// Put one object the walk found back: in the catalog, then the index,
/// unless it changed since it was read or a purge made meanwhile picks it.
/// Returns whether it is stored.
fn recover(tiers: &Tiers, object: Recovered, record: Record) -> bool {
    let hash = object.hash;
    let _held = tiers.hold(hash);
    if !tiers.disk.is_current(hash, &object) {
        return false;
    }
    if tiers.index.placed(hash).is_some_and(|p| p.loc.is_some()) {
        // Filled into the ring since this store opened (a ring that was
        // empty takes appends during the walk): these files are older.
        tiers.disk.remove(hash);
        return false;
    }
    let files = Placed {
        size: object.size,
        loc: None,
    };
    cataloged_and_indexed(tiers, hash, object.written, files, &record)
}

/// Scan the ring's regions, oldest first, and recover each whole live
/// entry (see the module's documentation); those below `ring_mark` are
/// cataloged already. A region that cannot be read is skipped and
/// retired: its objects are misses, and the ring reuses it in turn.
fn scan_ring(tiers: &Tiers, ring: &Segments, ring_mark: u64) {
    let fields = &tiers.config.tag_headers;
    for region in ring.regions_oldest_first() {
        if tiers.recovery.stopped.load(Ordering::Relaxed) {
            return;
        }
        let scanned = match ring.scan(region, true) {
            Ok(scanned) => scanned,
            Err(error) => {
                // Its objects' catalog entries are dropped with those of
                // every object not stored (`tidy_catalog`), but its entries
                // stay on disk until the reclaimer frees it. Retired, it
                // cannot bring those below the mark back uncataloged, out of
                // every purge's reach, to a walk after another crash that
                // reads it.
                match ring.retire(region) {
                    Ok(()) => {
                        tracing::warn!(target: "edge_cdn_store", region, %error, "segment region unreadable; its objects are not recovered, and it is retired")
                    }
                    Err(retiring) => {
                        tracing::warn!(target: "edge_cdn_store", region, %error, %retiring, "segment region unreadable and not retired; its objects are not recovered, and a walk after another crash may bring them back out of the catalog")
                    }
                }
                continue;
            }
        };
        let mut found = Vec::new();
        for (header, loc, entry) in scanned.entries {
            let Some(entry) = entry else { continue };
            match record_of(&entry.key, &entry.internal, &entry.meta_header, fields) {
                Ok(record) => found.push((header, loc, record)),
                Err(error) => {
                    tracing::warn!(target: "edge_cdn_store", hash = %format!("{:032x}", header.hash), %error, "removing unusable segment entry");
                    let _ = ring.remove(loc, header.hash);
                }
            }
        }
        // The last entry of an object in the region is its latest: a batch
        // changes each hash once.
        let mut seen = HashSet::new();
        found.reverse();
        found.retain(|(header, _, _)| seen.insert(header.hash));
        found.reverse();
        while !found.is_empty() {
            let batch: Vec<_> = found.drain(..found.len().min(RECOVER_BATCH)).collect();
            let recovered = recover_entries(tiers, ring, batch, ring_mark);
            tiers.recovery.found.fetch_add(recovered, Ordering::Relaxed);
        }
    }
}

/// Put a batch of ring entries (of distinct objects) back, as
/// [`recover_entry`] does one but with one catalog batch, under their
/// locks; returns how many are stored. An entry below `ring_mark` was
/// cataloged before the stop (see `crate::catalog`'s `mark`), so only the
/// others are recorded again: the catalog's reads are most of a walk's
/// cost. If the catalog fails the batch, each is tried alone, so one
/// object's failure costs only that object.
fn recover_entries(
    tiers: &Tiers,
    ring: &Segments,
    batch: Vec<(Header, Loc, Record)>,
    ring_mark: u64,
) -> usize {
    let failed = {
        let _held = tiers
            .holds
            .lock_all(batch.iter().map(|(header, _, _)| header.hash as usize));
        let batch: Vec<_> = batch
            .into_iter()
            .filter(|(header, loc, _)| !superseded_by_files(tiers, ring, header, *loc))
            .collect();
        let records = batch
            .iter()
            .filter(|(header, _, _)| {
                header.seq >= ring_mark || tiers.recovery.was_uncataloged(header.hash)
            })
            .map(|(_, _, record)| record.clone())
            .collect();
        match tiers.catalog.insert_all(records) {
            Ok(()) => {
                return batch
                    .into_iter()
                    .filter(|(header, loc, record)| {
                        let here = placed_at(header, *loc);
                        indexed(tiers, header.hash, header.written, here, record)
                    })
                    .count()
            }
            Err(error) => (error, batch),
        }
    };
    let (error, batch) = failed;
    tracing::warn!(target: "edge_cdn_store", objects = batch.len(), %error, "catalog batch failed; recovering its objects one by one");
    batch
        .into_iter()
        .filter(|(header, loc, record)| recover_entry(tiers, ring, (*header, *loc), record.clone()))
        .count()
}

/// Whether `hash`'s files are newer than its ring entry at `loc` (it moved
/// between the two around a crash); the entry is then removed. Call it
/// holding the object's lock.
fn superseded_by_files(tiers: &Tiers, ring: &Segments, header: &Header, loc: Loc) -> bool {
    let hash = header.hash;
    let in_files = tiers.index.placed(hash).is_some_and(|p| p.loc.is_none());
    let newer = in_files && tiers.disk.written(hash).is_some_and(|w| w > header.written);
    if newer {
        let _ = ring.remove(loc, hash);
    }
    newer
}

/// Where a ring entry puts its object.
fn placed_at(header: &Header, loc: Loc) -> Placed {
    Placed {
        size: header.len(),
        loc: Some(loc),
    }
}

/// Record `hash`'s object found `here` (written at `written`) in the
/// catalog, then index it ([`indexed`]); if the catalog cannot, the object
/// is removed. Returns whether it is stored. Call it holding the object's
/// lock.
fn cataloged_and_indexed(
    tiers: &Tiers,
    hash: u128,
    written: SystemTime,
    here: Placed,
    record: &Record,
) -> bool {
    if let Err(error) = tiers.catalog.insert(record.clone(), Journal::Now) {
        tiers.uncataloged(hash, error, Some(here));
        return false;
    }
    indexed(tiers, hash, written, here, record)
}

/// After its catalog entry is made: index `hash`'s object found `here`,
/// unless a purge remembered meanwhile picks it (it is then removed);
/// returns whether it is stored. After the insert, because a purge
/// remembered before this check is seen by it, and one remembered after
/// selects through the entry just made. Call it holding the object's lock.
fn indexed(tiers: &Tiers, hash: u128, written: SystemTime, here: Placed, record: &Record) -> bool {
    if tiers.recovery.purged(hash, record, written) {
        tiers.remove_held(hash, Some(here));
        return false;
    }
    let old = tiers.index.insert_at(hash, here.size, here.loc);
    tiers.drop_replaced(hash, old, here.loc);
    true
}

/// Put one ring entry back: in the catalog, then the index, unless the
/// object's files are newer or a purge made meanwhile picks it. Returns
/// whether it is stored.
fn recover_entry(
    tiers: &Tiers,
    ring: &Segments,
    (header, loc): (Header, Loc),
    record: Record,
) -> bool {
    let hash = header.hash;
    let _held = tiers.hold(hash);
    if superseded_by_files(tiers, ring, &header, loc) {
        return false;
    }
    cataloged_and_indexed(
        tiers,
        hash,
        header.written,
        placed_at(&header, loc),
        &record,
    )
}

/// Count the catalog, and drop the entries whose objects are not stored
/// (their files went while the entry stayed: a `kill -9` between the two,
/// a failed removal), in one scan.
fn tidy_catalog(tiers: &Tiers) {
    let stored = |hash: &[u8; 16]| tiers.index.get(u128::from_be_bytes(*hash)).is_some();
    let tidied = tiers.catalog.recount(stored).and_then(|gone| {
        let mut dropped = 0;
        for hash in &gone {
            let _held = tiers.hold(u128::from_be_bytes(*hash));
            // Committed since the scan: it stays.
            if !stored(hash) {
                tiers.catalog.remove(hash)?;
                dropped += 1;
            }
        }
        if dropped > 0 {
            tracing::info!(target: "edge_cdn_store", dropped, "catalog entries of objects no longer stored dropped");
        }
        Ok(())
    });
    if let Err(error) = tidied {
        tracing::warn!(target: "edge_cdn_store", %error, "catalog not tidied; its entries of removed objects stay until the next start");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pingora_cache::key::CompactCacheKey;

    fn record(path: &str, tags: &[&str]) -> Record {
        Record {
            key: CompactCacheKey {
                primary: [7; 16],
                variance: None,
                user_tag: "".into(),
            },
            primary_key: path.as_bytes().into(),
            tags: tags.iter().map(|t| (*t).into()).collect(),
        }
    }

    fn before() -> SystemTime {
        SystemTime::now() - Duration::from_secs(1)
    }

    #[test]
    fn purges_are_remembered_only_while_walking() {
        let idle = Recovery::new(false, &[]);
        idle.purging(&OwnedSelector::Tag("red".into()));
        assert!(!idle.purged(7, &record("/a", &["red"]), before()));
        assert_eq!(idle.progress(), None);

        let walking = Recovery::new(true, &[]);
        walking.purging(&OwnedSelector::Tag("red".into()));
        walking.purging(&OwnedSelector::Prefix(b"/img/".to_vec()));
        assert!(walking.purged(7, &record("/a", &["blue", "red"]), before()));
        assert!(walking.purged(7, &record("/img/1.png", &[]), before()));
        assert!(!walking.purged(7, &record("/a", &["blue"]), before()));
        assert!(walking.progress().is_some());
        walking.finish();
        assert!(walking.progress().is_none());

        let by_url = Recovery::new(true, &[]);
        by_url.purging(&OwnedSelector::Primary([7; 16]));
        assert!(by_url.purged(7, &record("/any/variant", &[]), before()));
    }

    #[test]
    fn a_purge_by_key_and_the_records_of_purges_are_kept_only_while_walking() {
        let idle = Recovery::new(false, &[]);
        assert!(!idle.forgetting(7));
        assert!(!idle.purged(7, &record("/a", &[]), before()));
        assert!(!idle.keep_record(PurgeId::default()));

        let walking = Recovery::new(true, &[]);
        assert!(walking.forgetting(7));
        assert!(walking.purged(7, &record("/a", &[]), before()));
        assert!(!walking.purged(8, &record("/a", &[]), before()));
        let filled_after = SystemTime::now() + Duration::from_secs(1);
        assert!(!walking.purged(7, &record("/a", &[]), filled_after));
        assert!(walking.keep_record(PurgeId::default()));
        assert_eq!(walking.records_kept(), [PurgeId::default()]);
        assert!(
            !walking.keep_record(PurgeId::default()),
            "the walk's end took the records: later ones are the caller's"
        );
    }

    #[test]
    fn a_purge_the_last_run_left_unfinished_removes_what_it_took() {
        let at = SystemTime::now();
        let unfinished = [
            Pending {
                id: crate::catalog::PurgeId::default(),
                at: at - Duration::from_secs(60),
                hashes: vec![1, 2],
            },
            Pending {
                id: crate::catalog::PurgeId::default(),
                at,
                hashes: vec![2],
            },
        ];
        let walking = Recovery::new(true, &unfinished);
        let written = at - Duration::from_secs(30);
        // Written after the first purge took it: filled again since.
        assert!(!walking.purged(1, &record("/a", &[]), written));
        // The later purge took it again.
        assert!(walking.purged(2, &record("/b", &[]), written));
        assert!(!walking.purged(3, &record("/c", &[]), written));
        walking.finish();
        assert!(!walking.purged(2, &record("/b", &[]), written));
    }

    #[test]
    fn an_object_written_after_a_purge_is_not_its_business() {
        let walking = Recovery::new(true, &[]);
        walking.purging(&OwnedSelector::Tag("red".into()));
        let later = SystemTime::now() + Duration::from_secs(1);
        assert!(!walking.purged(7, &record("/a", &["red"]), later));
    }

    #[test]
    fn past_the_bound_every_object_written_before_is_taken_as_purged() {
        let walking = Recovery::new(true, &[]);
        for i in 0..=MAX_PURGES {
            walking.purging(&OwnedSelector::Tag(format!("t{i}")));
        }
        assert!(walking.purged(7, &record("/anything", &[]), before()));
        let later = SystemTime::now() + Duration::from_secs(1);
        assert!(!walking.purged(7, &record("/anything", &[]), later));
    }
}
