//! The index saved at a clean stop, so the next start serves every object
//! at once instead of walking the files first.
//!
//! The file is `<dir>/index`: a magic, the saving store's owner id, the
//! object count, one 29-byte record per object (key hash, size on disk,
//! CLOCK counter, place: 0 for files or its segment ring entry) and a CRC32
//! of all of it. It is written (to a temporary
//! file, renamed into place) only when the index is complete and nothing
//! will change the files before the next start, and it is *taken* at open:
//! read, then removed, so a process that dies later leaves no snapshot to
//! trust and its successor walks the files (see `crate::recovery`).
//!
//! Two processes share the directory for a few seconds during a binary
//! upgrade, and the old one saves its index as it exits, while the new one
//! serves and writes. So each store *claims* the directory when it opens,
//! writing a fresh owner id to `<dir>/owner`, and a snapshot is taken only
//! if it was saved by the store that claimed the directory last. A
//! missing, damaged or superseded snapshot is a walk, never an error.

use std::fs::{self, File};
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use crate::error::StoreError;
use crate::index::Index;
use crate::segments::Loc;

/// The file's name in the store directory.
const FILE: &str = "index";

/// The owner id's file in the store directory.
const OWNER: &str = "owner";

/// The file's first bytes: its format and version.
const MAGIC: &[u8; 8] = b"stvidx02";

/// Bytes per object: hash (big-endian), size (little-endian), counter,
/// place ([`Loc::packed`], little-endian).
const RECORD: usize = 29;

/// Magic, owner id and count.
const HEADER: usize = 24;

fn path(dir: &Path) -> PathBuf {
    dir.join(FILE)
}

/// Write `path` through `write` to a temporary file, then a rename. The
/// temporary file is this process's own: two stores on one directory (a
/// binary upgrade) never write the same one.
fn replace(path: &Path, write: impl FnOnce(&Path) -> io::Result<()>) -> io::Result<()> {
    let temp = path.with_extension(format!("tmp.{}", std::process::id()));
    let written = write(&temp).and_then(|()| fs::rename(&temp, path));
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// Claim `dir` for a store opening it: a new owner id, written to
/// `<dir>/owner`, which the store's snapshot will carry. Call it after
/// [`take`]. Blocking.
pub fn claim(dir: &Path) -> Result<u64, StoreError> {
    let id = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
        ^ (u64::from(std::process::id()) << 32);
    // The directory is synced after the rename: the new owner, and the
    // removal of the index `take` just read, are durable before this
    // store writes anything a resurrected old index would not know.
    replace(&dir.join(OWNER), |temp| fs::write(temp, id.to_le_bytes()))
        .and_then(|()| File::open(dir)?.sync_all())
        .map_err(|e| StoreError::Io("claim the store directory", e))?;
    Ok(id)
}

/// The id of the store that claimed `dir` last.
fn owner(dir: &Path) -> Option<u64> {
    let bytes = fs::read(dir.join(OWNER)).ok()?;
    Some(u64::from_le_bytes(bytes.try_into().ok()?))
}

/// Write `index` to `dir`'s snapshot as saved by owner `id`. Blocking.
/// The previous snapshot (if any) stays until the new one is complete.
pub fn save(dir: &Path, index: &Index, id: u64) -> Result<(), StoreError> {
    replace(&path(dir), |temp| write(temp, index, id))
        .map_err(|e| StoreError::Io("write index snapshot", e))
}

fn write(temp: &Path, index: &Index, id: u64) -> io::Result<()> {
    let mut out = Crc(
        BufWriter::new(File::create(temp)?),
        crc32fast::Hasher::new(),
    );
    let (objects, _) = index.totals();
    out.write_all(MAGIC)?;
    out.write_all(&id.to_le_bytes())?;
    out.write_all(&(objects as u64).to_le_bytes())?;
    let mut written = 0u64;
    let mut failed = Ok(());
    index.each(|hash, size, clock, loc| {
        if failed.is_ok() {
            let mut record = [0u8; RECORD];
            record[..16].copy_from_slice(&hash.to_be_bytes());
            record[16..20].copy_from_slice(&size.to_le_bytes());
            record[20] = clock;
            record[21..].copy_from_slice(&loc.map_or(0, Loc::packed).to_le_bytes());
            failed = out.write_all(&record);
            written += 1;
        }
    });
    failed?;
    if written != objects as u64 {
        // The index changed while it was written: it is not a clean stop.
        return Err(io::Error::other("the index changed while it was saved"));
    }
    let Crc(mut file, crc) = out;
    file.write_all(&crc.finalize().to_le_bytes())?;
    let file = file.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()
}

/// Read `dir`'s snapshot into `index` (empty) and remove the file: `true`
/// if it was there, whole, and saved by the store that claimed `dir` last.
/// Any other is removed and leaves `index` empty. Blocking; reads the file twice, the second time from the page
/// cache: once to check it, once to fill the index, so a damaged file
/// never puts a wrong entry in.
pub fn take(dir: &Path, index: &Index) -> bool {
    let file = path(dir);
    let taken = match check(&file) {
        Ok(None) => return false,
        Ok(Some((id, _))) if Some(id) != owner(dir) => Err(StoreError::Corrupt(
            "saved by a store that no longer owned the directory",
        )),
        Ok(Some((_, count))) => fill(&file, count, index).map(|()| true),
        Err(e) => Err(e),
    };
    // Whatever it held, it is not trusted twice.
    discard(dir);
    taken.unwrap_or_else(|error| {
        tracing::warn!(target: "edge_cdn_store", file = %file.display(), %error, "index snapshot unusable; the files are walked instead");
        false
    })
}

/// Remove `dir`'s snapshot unread, if there is one: it must not be
/// trusted later. Blocking; [`claim`] makes the removal durable.
pub fn discard(dir: &Path) {
    let _ = fs::remove_file(path(dir));
}

/// The owner id and record count of a whole snapshot; `None` if there is
/// none.
fn check(file: &Path) -> Result<Option<(u64, u64)>, StoreError> {
    let bad = || StoreError::Corrupt("damaged index snapshot");
    let opened = match File::open(file) {
        Ok(opened) => opened,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(StoreError::Io("open index snapshot", e)),
    };
    let len = opened
        .metadata()
        .map_err(|e| StoreError::Io("stat index snapshot", e))?
        .len();
    let Some(body) = len.checked_sub(4).filter(|n| *n >= HEADER as u64) else {
        return Err(bad());
    };
    let mut reader = BufReader::with_capacity(1 << 20, opened);
    let mut header = [0u8; HEADER];
    reader.read_exact(&mut header).map_err(|_| bad())?;
    let id = u64::from_le_bytes(header[8..16].try_into().expect("8 bytes"));
    let count = u64::from_le_bytes(header[16..].try_into().expect("8 bytes"));
    if &header[..8] != MAGIC || count.checked_mul(RECORD as u64) != Some(body - HEADER as u64) {
        return Err(bad());
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(&header);
    let mut rest = (&mut reader).take(body - HEADER as u64);
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = rest.read(&mut buf).map_err(|_| bad())?;
        if n == 0 {
            break;
        }
        crc.update(&buf[..n]);
    }
    let mut stored = [0u8; 4];
    reader.read_exact(&mut stored).map_err(|_| bad())?;
    if crc.finalize() != u32::from_le_bytes(stored) {
        return Err(bad());
    }
    Ok(Some((id, count)))
}

/// Put the `count` checked records of `file` into `index`.
fn fill(file: &Path, count: u64, index: &Index) -> Result<(), StoreError> {
    let read = |e| StoreError::Io("read index snapshot", e);
    let mut reader = BufReader::with_capacity(1 << 20, File::open(file).map_err(read)?);
    reader.read_exact(&mut [0u8; HEADER]).map_err(read)?;
    index.reserve(usize::try_from(count).unwrap_or(usize::MAX));
    let mut record = [0u8; RECORD];
    for _ in 0..count {
        reader.read_exact(&mut record).map_err(read)?;
        let hash = u128::from_be_bytes(record[..16].try_into().expect("16 bytes"));
        let size = u32::from_le_bytes(record[16..20].try_into().expect("4 bytes"));
        let place = u64::from_le_bytes(record[21..].try_into().expect("8 bytes"));
        index.restore(hash, size, record[20], Loc::unpacked(place));
    }
    Ok(())
}

/// A writer that checksums what passes through it.
struct Crc<W>(W, crc32fast::Hasher);

impl<W: Write> Write for Crc<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.0.write(buf)?;
        self.1.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.0.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spread(i: u128) -> u128 {
        i.wrapping_mul(0x9e37_79b9_7f4a_7c15_f39c_c060_5ced_c835)
    }

    fn entries(index: &Index) -> Vec<(u128, u32, u8, Option<Loc>)> {
        let mut all = Vec::new();
        index.each(|hash, size, clock, loc| all.push((hash, size, clock, loc)));
        all.sort_unstable();
        all
    }

    #[test]
    fn a_saved_index_is_taken_whole_once() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::default();
        for i in 1..=1000 {
            index.insert(spread(i), i as u64 * 7);
        }
        let loc = Loc {
            region: 4,
            offset: 4096,
        };
        index.insert_at(spread(1001), 300, Some(loc));
        index.touch(spread(3));
        let id = claim(dir.path()).unwrap();
        save(dir.path(), &index, id).unwrap();

        let restored = Index::default();
        assert!(take(dir.path(), &restored));
        assert_eq!(entries(&restored), entries(&index));
        assert_eq!(restored.totals(), index.totals());
        assert!(!path(dir.path()).exists(), "taken, not kept");
        assert!(!take(dir.path(), &Index::default()), "only once");
    }

    #[test]
    fn a_damaged_snapshot_fills_nothing_and_is_removed() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::default();
        for i in 1..=100 {
            index.insert(spread(i), 10);
        }
        let id = claim(dir.path()).unwrap();
        save(dir.path(), &index, id).unwrap();
        let whole = fs::read(path(dir.path())).unwrap();
        let mut flipped = whole.clone();
        flipped[HEADER + 5] ^= 1;
        for damaged in [
            &whole[..whole.len() - 1],
            &whole[..HEADER],
            &whole[..3],
            &flipped[..],
        ] {
            fs::write(path(dir.path()), damaged).unwrap();
            let restored = Index::default();
            assert!(!take(dir.path(), &restored));
            assert_eq!(restored.totals(), (0, 0));
            assert!(!path(dir.path()).exists());
        }
    }

    /// A binary upgrade: the old store saves as it exits, after the new
    /// one claimed the directory. Its snapshot must not be taken later.
    #[test]
    fn a_snapshot_of_a_store_that_lost_the_directory_is_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let index = Index::default();
        index.insert(spread(1), 10);
        let old = claim(dir.path()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(1));
        claim(dir.path()).unwrap();
        save(dir.path(), &index, old).unwrap();
        let restored = Index::default();
        assert!(!take(dir.path(), &restored));
        assert_eq!(restored.totals(), (0, 0));
    }
}
