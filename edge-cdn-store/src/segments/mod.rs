//! The segment ring: small objects appended to a ring of regions, so a
//! small fill is one `pwrite` instead of two files created, written and
//! renamed, and a removal is a 4-byte overwrite instead of two unlinks.
//!
//! `<dir>/segments/ring` is one sparse file of `regions` regions of
//! [`REGION_BYTES`] each (one descriptor, however large the ring). Entries
//! (`entry.rs`: checksummed header, meta blobs, key, body) are appended at
//! the head; when the head region is full the head moves to the next
//! region, which must be free: the reclaimer (`crate::reclaim`) frees the
//! region after the head in the background, retiring it (so no scan after
//! a crash reads it) and then copying forward the objects there that were
//! read since they were stored, and dropping the rest from the index,
//! memory and catalog. So the ring is first in, first out for objects
//! nobody reads, as Apache Traffic Server's stripes are; the CLOCK manager
//! evicts only objects kept in files. A region not yet freed when the head
//! needs it sends writes to the file engine until it is. An append whose
//! write fails leaves a hole that later scans stop at, so it closes its
//! region: the appends after it go to the next one. Entries already placed
//! past the hole (appends racing the failed one) are not recovered after a
//! crash, and while the store runs they are dropped only as they are read
//! or purged.
//!
//! The index holds an object's [`Loc`] and its entry's length. A read
//! checks that the entry there is whole, live and the object's: an entry
//! torn by a crash, or overwritten by a later lap of the ring after the
//! object was reclaimed, is a miss, never a wrong byte.
//!
//! # Recovery
//!
//! Appends take their sequence number and offset under one lock, so in a
//! region sequence numbers grow with offsets. A scan of a region reads
//! entries from its start, stepping by their lengths, while their headers
//! are whole and their sequence grows: it stops at a torn header, at the
//! unwritten rest, or at the entries of an earlier lap after the head. An
//! entry whose checksum fails (torn or decayed payload) is not recovered,
//! and the scan goes on past it. The regions are scanned in the order
//! of their first entries' sequence, so a later copy of an object wins.

pub mod entry;

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, RwLock};
use std::time::SystemTime;

use bytes::Bytes;

use crate::error::StoreError;
use crate::io::Engine;
use entry::{Entry, Header, Parts, HEADER};

/// What a failed read of an entry was, in its error.
const READ: &str = "read segment entry";
/// An entry the file ends within: torn by a crash, or the file truncated.
const CUT_SHORT: &str = "segment entry cut short";

/// Bytes per region: entries up to this size fit, and a reclaim reads one
/// region at a time.
pub const REGION_BYTES: u64 = 8 << 20;

/// The ring's format, recorded in `segments/layout`.
const FORMAT: u32 = 1;

/// Where an entry is: a region and an offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Loc {
    /// The region's number.
    pub region: u32,
    /// Byte offset in the region.
    pub offset: u32,
}

impl Loc {
    /// As the index keeps it: never 0, which means "in files".
    pub fn packed(self) -> u64 {
        (u64::from(self.region) + 1) << 32 | u64::from(self.offset)
    }

    /// Back from [`Loc::packed`]; `None` for 0.
    pub fn unpacked(packed: u64) -> Option<Loc> {
        let region = (packed >> 32).checked_sub(1)?;
        Some(Loc {
            region: region as u32,
            offset: packed as u32,
        })
    }
}

/// Where the next entry goes.
struct Head {
    region: u32,
    offset: u64,
    seq: u64,
    /// Sequence numbers of entries appended and not yet recorded in the
    /// catalog (their [`Appended`] not dropped), oldest first.
    uncataloged: Vec<u64>,
}

/// An entry just appended: where it is and its length. Until it is
/// dropped, its sequence number holds [`Segments::cataloged_below`] back,
/// so keep it until the catalog records the object.
pub struct Appended<'a> {
    /// Where the entry is.
    pub loc: Loc,
    /// Bytes it takes in its region.
    pub len: u64,
    seq: u64,
    ring: &'a Segments,
}

impl Drop for Appended<'_> {
    fn drop(&mut self) {
        let mut head = self.ring.head();
        if let Some(at) = head.uncataloged.iter().position(|&seq| seq == self.seq) {
            head.uncataloged.remove(at);
        }
    }
}

/// Why an entry was not appended; the object goes to the file engine.
#[derive(Debug, PartialEq, Eq)]
pub enum Refused {
    /// The ring is off, or not yet on (while the store recovers).
    Off,
    /// Larger than the ring takes.
    TooLarge,
    /// The region after the head is not yet free.
    Behind,
}

/// A live entry whose dead mark could not be written: a walk after a
/// crash would find it.
#[derive(Debug)]
pub struct Unmarked {
    /// Why.
    pub error: StoreError,
    /// When the entry was written: a purge recorded as of then removes it
    /// and no later copy of its object.
    pub written: SystemTime,
}

/// The ring of regions.
pub struct Segments {
    /// `<dir>/segments/`.
    dir: PathBuf,
    /// The ring file; replaced by a new one if it is deleted.
    file: RwLock<Arc<File>>,
    max_entry: u64,
    fsync: bool,
    head: Mutex<Head>,
    /// `free[r]`: region `r` holds nothing the index points to, so the head
    /// may enter it and overwrite it from its start.
    free: Vec<AtomicBool>,
    /// Appends are taken (off until a walk after a crash is done).
    on: AtomicBool,
    /// No region held an entry when the ring was opened.
    empty: AtomicBool,
    /// The next append checks that the ring file is still linked (see
    /// [`Segments::recheck`]).
    unchecked: AtomicBool,
    /// Wakes the reclaimer: set when the head moves, and when the store
    /// closes.
    wake: (Mutex<bool>, Condvar),
    stopped: AtomicBool,
    /// Held while a region is being freed: see [`Segments::freeing`].
    freeing: Mutex<()>,
}

/// Set in a test's child process to the regions whose scans fail (bit `r`
/// for region `r`), as on a disk that cannot read them: the ring scans as
/// the store opens, before a test could reach the ring itself.
#[cfg(test)]
pub static UNREADABLE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The sequence number of `region`'s first entry, if it holds one (one
/// retired or never written holds none) and it reads. Blocking.
fn first_seq(file: &File, region: u32) -> Option<u64> {
    let mut first = [0u8; HEADER];
    file.read_exact_at(&mut first, start(region)).ok()?;
    Some(Header::decode(&first)?.seq)
}

fn io_err(what: &'static str) -> impl FnOnce(io::Error) -> StoreError {
    move |e| StoreError::Io(what, e)
}

/// What the scan of one region found: entries, in order, each with where
/// it is, and its payload if the scan was asked to check them and it is
/// live and whole.
pub struct Scanned {
    /// Headers and locations of the entries, live and removed.
    pub entries: Vec<(Header, Loc, Option<Entry>)>,
    /// Where the region's valid entries end.
    pub end: u64,
}

impl Segments {
    /// Open (or make) the ring of `regions` regions under `dir`, taking
    /// entries up to `max_entry` bytes, each synced to disk if `fsync`. A
    /// ring laid out otherwise (another region count or format) is
    /// emptied: its second value is then true, and a saved index that
    /// points into it must not be used. Blocking.
    pub fn open(
        dir: &Path,
        regions: usize,
        max_entry: u64,
        fsync: bool,
    ) -> Result<(Segments, bool), StoreError> {
        let dir = dir.join("segments");
        let (file, wiped) = lay_out(&dir, regions)?;
        let segments = Segments {
            dir,
            file: RwLock::new(Arc::new(file)),
            max_entry: max_entry.min(REGION_BYTES),
            fsync,
            head: Mutex::new(Head {
                region: 0,
                offset: 0,
                seq: 1,
                uncataloged: Vec::new(),
            }),
            free: (0..regions).map(|_| AtomicBool::new(true)).collect(),
            on: AtomicBool::new(false),
            empty: AtomicBool::new(true),
            unchecked: AtomicBool::new(true),
            wake: (Mutex::new(false), Condvar::new()),
            stopped: AtomicBool::new(false),
            freeing: Mutex::new(()),
        };
        segments.find_head()?;
        Ok((segments, wiped))
    }

    /// Find the newest region (the one whose first entry has the highest
    /// sequence) and the end of its entries: the head. Every other region
    /// that holds entries is not free until reclaimed.
    fn find_head(&self) -> Result<(), StoreError> {
        let written = self.regions_oldest_first();
        for &r in &written {
            self.free[r as usize].store(false, Ordering::Relaxed);
        }
        let Some(&region) = written.last() else {
            // An empty ring: the head starts in region 0.
            self.free[0].store(false, Ordering::Relaxed);
            return Ok(());
        };
        self.empty.store(false, Ordering::Relaxed);
        let scanned = match self.scan(region, false) {
            Ok(scanned) => scanned,
            Err(error) => {
                // Where its entries end is unknown: it is taken as full, and
                // its sequence numbers as running to as many as two regions
                // can hold past its first entry's.
                tracing::warn!(target: "edge_cdn_store", region, %error, "segment ring's newest region unreadable; appends start in the next one");
                let first = first_seq(&self.file(), region).unwrap_or(0);
                *self.head() = Head {
                    region,
                    offset: REGION_BYTES,
                    seq: first + 1 + 2 * REGION_BYTES,
                    uncataloged: Vec::new(),
                };
                return Ok(());
            }
        };
        // Appends made before a crash past a torn one are not scanned, and
        // their sequence numbers must not be handed out again (a later scan
        // could step from a new entry into one of them): skip more numbers
        // than a region can hold entries.
        let seq = scanned.entries.last().map_or(0, |(h, _, _)| h.seq) + 1 + REGION_BYTES;
        *self.head() = Head {
            region,
            offset: scanned.end,
            seq,
            uncataloged: Vec::new(),
        };
        Ok(())
    }

    /// Whether no region held an entry when the ring was opened: there is
    /// nothing in it to recover, so appends may start at once.
    pub fn was_empty(&self) -> bool {
        self.empty.load(Ordering::Relaxed)
    }

    /// Take appends from now on.
    pub fn start(&self) {
        self.on.store(true, Ordering::Release);
        self.nudge();
    }

    /// Whether appends are taken.
    pub fn is_on(&self) -> bool {
        self.on.load(Ordering::Acquire)
    }

    /// Whether an append of `len` bytes would be taken now, unless the
    /// reclaimer is behind.
    pub fn takes(&self, len: Option<u64>) -> bool {
        self.is_on() && len.is_some_and(|len| len <= self.max_entry)
    }

    /// Append an entry for `hash` with `parts`; returns where it is and its
    /// length, to keep until the catalog records the object. Blocking (one
    /// `pwrite`).
    pub fn append(
        &self,
        hash: u128,
        parts: &Parts<'_>,
    ) -> Result<Result<Appended<'_>, Refused>, StoreError> {
        if !self.is_on() {
            return Ok(Err(Refused::Off));
        }
        let Some(len) = parts.len().filter(|len| *len <= self.max_entry) else {
            return Ok(Err(Refused::TooLarge));
        };
        let (file, loc, seq) = {
            let mut head = self.head();
            if self.unchecked.swap(false, Ordering::Relaxed) {
                self.replace_if_deleted(&mut head)?;
            }
            if head.offset + len > REGION_BYTES {
                let next = (head.region as usize + 1) % self.free.len();
                if !self.free[next].swap(false, Ordering::AcqRel) {
                    drop(head);
                    self.nudge();
                    return Ok(Err(Refused::Behind));
                }
                head.region = next as u32;
                head.offset = 0;
                self.nudge();
            }
            let loc = Loc {
                region: head.region,
                offset: head.offset as u32,
            };
            head.offset += len;
            head.seq += 1;
            let seq = head.seq - 1;
            head.uncataloged.push(seq);
            (self.file(), loc, seq)
        };
        let appended = Appended {
            loc,
            len,
            seq,
            ring: self,
        };
        let bytes = entry::encode(hash, seq, parts);
        if let Err(error) = file.write_all_at(&bytes, at(loc)) {
            self.close_region(loc);
            return Err(io_err("write segment entry")(error));
        }
        if self.fsync {
            file.sync_data().map_err(io_err("fsync segment entry"))?;
        }
        Ok(Ok(appended))
    }

    /// An append at `loc` failed, leaving a hole a scan stops at: send the
    /// appends after it to the next region, so only those already placed
    /// past the hole are lost to a walk after a crash, not the rest of the
    /// region's.
    fn close_region(&self, loc: Loc) {
        let mut head = self.head();
        if head.region == loc.region {
            head.offset = REGION_BYTES;
        }
    }

    /// The sequence number below which every entry appended has been
    /// recorded in the catalog (or dropped): the oldest entry appended
    /// whose [`Appended`] is alive, or else the next to be appended.
    pub fn cataloged_below(&self) -> u64 {
        let head = self.head();
        head.uncataloged.first().copied().unwrap_or(head.seq)
    }

    fn head(&self) -> std::sync::MutexGuard<'_, Head> {
        self.head.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The ring file now.
    fn file(&self) -> Arc<File> {
        self.file.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Swap the ring file for a read-only handle on it (`fail`), so every
    /// later write fails as a failing disk's would while reads still work,
    /// or back for a read-write one.
    #[cfg(test)]
    pub fn fail_writes(&self, fail: bool) {
        let file = OpenOptions::new()
            .read(true)
            .write(!fail)
            .open(self.dir.join("ring"))
            .unwrap();
        *self.file.write().unwrap() = Arc::new(file);
    }

    /// Have the next append check that the ring file is still linked
    /// (one `statx`), and make a new ring if it was deleted. The store's
    /// commit thread calls this once per round of commits, so a round's
    /// appends share one check (it was one per append, about 1% of a
    /// fill's CPU); appends made meanwhile go into the open, unlinked file
    /// and read back from it.
    pub fn recheck(&self) {
        self.unchecked.store(true, Ordering::Relaxed);
    }

    /// Make a new ring now if the file was deleted: the store's health
    /// probe calls this, so a deleted ring is replaced even while nothing
    /// is appended. Blocking (one `statx`).
    pub fn heal(&self) -> Result<(), StoreError> {
        self.replace_if_deleted(&mut self.head())
    }

    /// If the ring file was deleted (its directory removed while the store
    /// runs), lay a new one out and start it from region 0, every region
    /// free: objects indexed in the old one become misses as they are read
    /// (their entries are not in the new file). Called holding the head.
    fn replace_if_deleted(&self, head: &mut Head) -> Result<(), StoreError> {
        let linked = self
            .file()
            .metadata()
            .map_err(io_err("stat segment ring"))?
            .nlink();
        if linked > 0 {
            return Ok(());
        }
        let (file, _) = lay_out(&self.dir, self.free.len())?;
        *self.file.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(file);
        for free in &self.free {
            free.store(true, Ordering::Release);
        }
        self.free[0].store(false, Ordering::Release);
        head.region = 0;
        head.offset = 0;
        tracing::warn!(target: "edge_cdn_store", dir = %self.dir.display(), "segment ring was deleted; a new one was made");
        Ok(())
    }

    /// Read and check `hash`'s entry of `len` bytes at `loc`. Blocking.
    pub fn read(&self, loc: Loc, len: u64, hash: u128) -> Result<Entry, StoreError> {
        let file = self.locate(loc, len)?;
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, at(loc))
            .map_err(|e| match e.kind() {
                io::ErrorKind::UnexpectedEof => StoreError::Corrupt(CUT_SHORT),
                _ => StoreError::Io(READ, e),
            })?;
        entry::check(Bytes::from(bytes), hash)
    }

    /// [`Segments::read`] through `engine`, so a lookup waits for the disk
    /// without a thread blocked on it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing.
    pub async fn read_with(
        &self,
        engine: &Engine,
        loc: Loc,
        len: u64,
        hash: u128,
    ) -> Result<Entry, StoreError> {
        let file = self.locate(loc, len)?;
        let bytes = engine.read_at(&file, at(loc), len as usize, READ).await?;
        if bytes.len() as u64 != len {
            return Err(StoreError::Corrupt(CUT_SHORT));
        }
        entry::check(Bytes::from(bytes), hash)
    }

    /// The ring file, if `len` bytes at `loc` are within the ring.
    fn locate(&self, loc: Loc, len: u64) -> Result<Arc<File>, StoreError> {
        if loc.region as usize >= self.free.len() || u64::from(loc.offset) + len > REGION_BYTES {
            return Err(StoreError::Corrupt("segment entry out of the ring"));
        }
        Ok(self.file())
    }

    /// Mark `hash`'s entry at `loc` removed, if it is still there, so no
    /// scan brings it back. Blocking. Call it under the object's lock,
    /// after taking the object out of the index. An entry the ring reused
    /// meanwhile is not touched (its hash differs); the rare removal that
    /// races that reuse costs the new entry a miss, never a wrong byte.
    pub fn remove(&self, loc: Loc, hash: u128) -> Result<(), Unmarked> {
        let mut first = [0u8; HEADER];
        let file = self.file();
        if loc.region as usize >= self.free.len()
            || file.read_exact_at(&mut first, at(loc)).is_err()
        {
            return Ok(());
        }
        match Header::decode(&first) {
            Some(header) if header.live && header.hash == hash => file
                .write_all_at(&entry::DEAD_MAGIC, at(loc))
                .map_err(|e| Unmarked {
                    error: io_err("remove segment entry")(e),
                    written: header.written,
                }),
            _ => Ok(()),
        }
    }

    /// Read `region` and list its entries (see the module's *Recovery*);
    /// with `check`, each live entry's checksum is verified and, if it
    /// holds, its payload returned. Blocking: reads the region whole.
    pub fn scan(&self, region: u32, check: bool) -> Result<Scanned, StoreError> {
        #[cfg(test)]
        if UNREADABLE.load(Ordering::Relaxed) & 1u64.checked_shl(region).unwrap_or(0) != 0 {
            return Err(io_err("read segment region")(io::Error::other(
                "the test fails this region's scans",
            )));
        }
        let file = self.file();
        let len = file
            .metadata()
            .map_err(io_err("stat segment ring"))?
            .len()
            .saturating_sub(start(region))
            .min(REGION_BYTES);
        let mut bytes = vec![0u8; len as usize];
        file.read_exact_at(&mut bytes, start(region))
            .map_err(io_err("read segment region"))?;
        let bytes = Bytes::from(bytes);
        let mut entries = Vec::new();
        let mut pos = 0u64;
        let mut last_seq = 0;
        while let Some(header) = bytes.get(pos as usize..).and_then(Header::decode) {
            let end = pos + header.len();
            if header.seq <= last_seq || end > len {
                break;
            }
            let payload = match check && header.live {
                true => entry::check(bytes.slice(pos as usize..end as usize), header.hash).ok(),
                false => None,
            };
            let loc = Loc {
                region,
                offset: pos as u32,
            };
            entries.push((header, loc, payload));
            last_seq = header.seq;
            pos = end;
        }
        Ok(Scanned { entries, end: pos })
    }

    /// The regions in the order they were written, oldest first: those
    /// holding entries, by their first entry's sequence. Blocking.
    pub fn regions_oldest_first(&self) -> Vec<u32> {
        let file = self.file();
        let mut found: Vec<(u64, u32)> = (0..self.free.len() as u32)
            .filter_map(|r| Some((first_seq(&file, r)?, r)))
            .collect();
        found.sort_unstable();
        found.into_iter().map(|(_, r)| r).collect()
    }

    /// The region the reclaimer should free next, if it is not free: the
    /// one after the head.
    pub fn to_free(&self) -> Option<u32> {
        let head = self.head();
        let next = (head.region as usize + 1) % self.free.len();
        (!self.free[next].load(Ordering::Acquire) && next != head.region as usize)
            .then_some(next as u32)
    }

    /// Mark `region` free: the reclaimer has dropped everything in it.
    pub fn freed(&self, region: u32) {
        self.free[region as usize].store(true, Ordering::Release);
    }

    /// Make `region` invisible to the scans after a crash, before the
    /// reclaimer drops or copies what it holds: its first header is
    /// overwritten, so no scan reads it (nor brings back an object dropped,
    /// copied forward or purged since), and the next open takes it as
    /// free. A lookup of an object still placed there reads its entry
    /// (only the first one becomes a miss) until the reclaimer drops it.
    /// Blocking.
    pub fn retire(&self, region: u32) -> Result<(), StoreError> {
        let file = self.file();
        file.write_all_at(&[0u8; 4], start(region))
            .map_err(io_err("retire segment region"))?;
        if self.fsync {
            file.sync_data().map_err(io_err("fsync segment ring"))?;
        }
        Ok(())
    }

    /// Take no more appends (the store is saving its index).
    pub fn stop_appends(&self) {
        self.on.store(false, Ordering::Release);
    }

    /// Wake the reclaimer.
    fn nudge(&self) {
        let (woken, wake) = &self.wake;
        *woken.lock().unwrap_or_else(|e| e.into_inner()) = true;
        wake.notify_one();
    }

    /// Wait until there may be work for the reclaimer, or the store closes
    /// (then false).
    pub fn wait_for_work(&self) -> bool {
        let (woken, wake) = &self.wake;
        let mut woken = woken.lock().unwrap_or_else(|e| e.into_inner());
        while !*woken && !self.stopped.load(Ordering::Acquire) {
            woken = wake.wait(woken).unwrap_or_else(|e| e.into_inner());
        }
        *woken = false;
        !self.stopped.load(Ordering::Acquire)
    }

    /// Stop the reclaimer: at its next wait, or at the next entry of a
    /// region it is freeing (which then stays unfreed).
    pub fn stop(&self) {
        self.stopped.store(true, Ordering::Release);
        self.nudge();
    }

    /// Whether the ring was stopped.
    pub fn is_stopped(&self) -> bool {
        self.stopped.load(Ordering::Acquire)
    }

    /// Held by the reclaimer while it frees a region; taken after
    /// [`Segments::stop`], it waits until no region is being freed, so
    /// nothing changes the index after it (what saving the index needs).
    pub fn freeing(&self) -> std::sync::MutexGuard<'_, ()> {
        self.freeing.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Make `dir` and its ring file of `regions` regions, if they are not
/// there; a ring laid out otherwise is emptied first (then true).
fn lay_out(dir: &Path, regions: usize) -> Result<(File, bool), StoreError> {
    fs::create_dir_all(dir).map_err(io_err("create segments directory"))?;
    let layout = format!("stavka segments {FORMAT} regions {regions} bytes {REGION_BYTES}\n");
    let layout_path = dir.join("layout");
    let wiped = match fs::read_to_string(&layout_path) {
        Ok(found) if found == layout => false,
        Ok(_) | Err(_) => {
            for stale in fs::read_dir(dir).into_iter().flatten().flatten() {
                let _ = fs::remove_file(stale.path());
            }
            fs::write(&layout_path, &layout).map_err(io_err("write segments layout"))?;
            true
        }
    };
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(dir.join("ring"))
        .map_err(io_err("open segment ring"))?;
    Ok((file, wiped))
}

/// Where `region` starts in the ring file.
fn start(region: u32) -> u64 {
    u64::from(region) * REGION_BYTES
}

/// Where `loc` is in the ring file.
fn at(loc: Loc) -> u64 {
    start(loc.region) + u64::from(loc.offset)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(byte: u8, len: usize) -> [Bytes; 1] {
        [Bytes::from(vec![byte; len])]
    }

    fn append(ring: &Segments, hash: u128, body: &[Bytes]) -> Result<(Loc, u64), Refused> {
        let parts = Parts {
            internal: b"i",
            header: b"h",
            key: b"k",
            body,
        };
        let appended = ring.append(hash, &parts).unwrap()?;
        Ok((appended.loc, appended.len))
    }

    #[test]
    fn the_catalog_mark_waits_for_the_oldest_entry_not_yet_cataloged() {
        let dir = tempfile::tempdir().unwrap();
        let (ring, _) = Segments::open(dir.path(), 3, 2 << 20, false).unwrap();
        ring.start();
        let parts = Parts {
            internal: b"i",
            header: b"h",
            key: b"k",
            body: &body(1, 10),
        };
        let start = ring.cataloged_below();
        let first = ring.append(1, &parts).unwrap().unwrap();
        let second = ring.append(2, &parts).unwrap().unwrap();
        assert_eq!(ring.cataloged_below(), start);
        drop(second);
        assert_eq!(ring.cataloged_below(), start, "the first is not cataloged");
        drop(first);
        assert_eq!(ring.cataloged_below(), start + 2);
        drop(ring.append(3, &parts).unwrap().unwrap());
        assert_eq!(ring.cataloged_below(), start + 3);
    }

    #[test]
    fn a_failed_append_closes_its_region_so_later_appends_survive_a_scan() {
        let dir = tempfile::tempdir().unwrap();
        let (ring, _) = Segments::open(dir.path(), 3, 2 << 20, false).unwrap();
        ring.start();
        let (first, _) = append(&ring, 1, &body(1, 10)).unwrap();
        ring.fail_writes(true);
        let parts = Parts {
            internal: b"i",
            header: b"h",
            key: b"k",
            body: &body(2, 10),
        };
        assert!(ring.append(2, &parts).is_err(), "the disk failed it");
        ring.fail_writes(false);
        let (third, _) = append(&ring, 3, &body(3, 10)).unwrap();
        assert_eq!(third.region, first.region + 1, "the region was closed");
        assert_eq!(third.offset, 0);
        drop(ring);
        let (ring, _) = Segments::open(dir.path(), 3, 2 << 20, false).unwrap();
        let hashes: Vec<u128> = ring
            .regions_oldest_first()
            .into_iter()
            .flat_map(|region| ring.scan(region, true).unwrap().entries)
            .map(|(header, _, _)| header.hash)
            .collect();
        assert_eq!(hashes, [1, 3], "both whole entries are found");
    }

    #[test]
    fn locations_pack_into_a_nonzero_word() {
        let loc = Loc {
            region: 0,
            offset: 0,
        };
        assert_ne!(loc.packed(), 0);
        assert_eq!(Loc::unpacked(loc.packed()), Some(loc));
        assert_eq!(Loc::unpacked(0), None);
        let far = Loc {
            region: 70_000,
            offset: REGION_BYTES as u32 - 8,
        };
        assert_eq!(Loc::unpacked(far.packed()), Some(far));
    }

    #[test]
    fn the_head_moves_on_only_into_a_free_region_and_survives_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (ring, wiped) = Segments::open(dir.path(), 3, 2 << 20, false).unwrap();
        assert!(wiped, "a new ring is laid out");
        assert_eq!(append(&ring, 1, &body(1, 10)), Err(Refused::Off));
        ring.start();
        let big = body(7, 1 << 20);
        let mut locs = Vec::new();
        // Three regions of eight 1 MiB entries less a header: seven each.
        for hash in 0..21u128 {
            locs.push(append(&ring, hash, &big).unwrap());
        }
        assert_eq!(
            append(&ring, 99, &big),
            Err(Refused::Behind),
            "wrapped onto region 0"
        );
        assert_eq!(ring.to_free(), Some(0));
        let (loc, len) = locs[20];
        assert_eq!(ring.read(loc, len, 20).unwrap().body, big[0]);
        assert!(ring.read(loc, len, 21).is_err(), "not the object's entry");
        ring.remove(locs[3].0, 3).unwrap();
        assert!(ring.read(locs[3].0, locs[3].1, 3).is_err(), "removed");
        drop(ring);

        let (ring, wiped) = Segments::open(dir.path(), 3, 2 << 20, false).unwrap();
        assert!(!wiped);
        assert_eq!(ring.regions_oldest_first(), vec![0, 1, 2]);
        let scanned = ring.scan(0, true).unwrap();
        assert_eq!(scanned.entries.len(), 7);
        let live: Vec<u128> = scanned
            .entries
            .iter()
            .filter(|(h, _, e)| h.live && e.is_some())
            .map(|(h, _, _)| h.hash)
            .collect();
        assert_eq!(
            live,
            vec![0, 1, 2, 4, 5, 6],
            "the removed entry stays removed"
        );
        assert_eq!(ring.to_free(), Some(0), "the head is found again");
        // Retired, region 0 is nothing a scan after a crash reads.
        ring.retire(0).unwrap();
        assert_eq!(ring.regions_oldest_first(), vec![1, 2]);
        ring.freed(0);
        ring.start();
        let (loc, _) = append(&ring, 100, &big).unwrap();
        assert_eq!(loc.region, 0);
        assert_eq!(loc.offset, 0);
        // Sequence numbers after a reopen skip more than a region holds,
        // so none handed out before a crash is handed out again.
        let last_before = ring.scan(2, false).unwrap().entries.last().unwrap().0.seq;
        let first_after = ring.scan(0, false).unwrap().entries[0].0.seq;
        assert!(first_after > last_before + REGION_BYTES);
        let (ring2, wiped) = Segments::open(dir.path(), 4, 2 << 20, false).unwrap();
        assert!(wiped, "another layout empties the ring");
        assert!(ring2.regions_oldest_first().is_empty());
    }

    #[test]
    fn a_scan_stops_at_a_torn_tail_and_at_an_earlier_lap() {
        let dir = tempfile::tempdir().unwrap();
        let (ring, _) = Segments::open(dir.path(), 2, 1 << 20, false).unwrap();
        ring.start();
        let small = body(3, 100);
        let locs: Vec<(Loc, u64)> = (0..5u128)
            .map(|h| append(&ring, h, &small).unwrap())
            .collect();
        // A decayed payload in the second entry: not recovered, the scan
        // goes on. A torn header in the fourth: the scan ends there.
        let at = |i: usize| u64::from(locs[i].0.offset);
        ring.file().write_all_at(b"\xff", at(1) + 100).unwrap();
        ring.file().write_all_at(b"\0\0", at(3)).unwrap();
        let scanned = ring.scan(0, true).unwrap();
        let whole: Vec<bool> = scanned
            .entries
            .iter()
            .map(|(_, _, e)| e.is_some())
            .collect();
        assert_eq!(whole, vec![true, false, true]);
        assert_eq!(scanned.end, at(3));

        // An earlier lap's entries after the head are not read as current.
        let dir = tempfile::tempdir().unwrap();
        let (ring, _) = Segments::open(dir.path(), 2, 1 << 20, false).unwrap();
        ring.start();
        let (first, _) = append(&ring, 1, &small).unwrap();
        append(&ring, 2, &small).unwrap();
        // Rewrite the region's start as a later lap would.
        let later = entry::encode(
            3,
            10,
            &Parts {
                internal: b"i",
                header: b"h",
                key: b"k",
                body: &small,
            },
        );
        ring.file()
            .write_all_at(&later, u64::from(first.offset))
            .unwrap();
        let hashes: Vec<u128> = ring
            .scan(0, true)
            .unwrap()
            .entries
            .iter()
            .map(|(h, _, _)| h.hash)
            .collect();
        assert_eq!(hashes, vec![3]);
    }
}
