//! The disk tier: where object files live, and the blocking operations on
//! them. Every function here blocks; the store calls them through its one
//! blocking I/O seam (`crate::io`), never on an async worker.
//!
//! Files are `<dir>/<h0h1>/<hash>.{meta,body}`: one level of 256 shard
//! directories named by the first byte of `<hash>`, the hex of the 128-bit
//! cache key hash — never the raw key. Writes go to `<dir>/tmp/` first and
//! are renamed into place. A directory deleted while running (the store's
//! own, `tmp/` or a shard) is recreated by the next write that needs it.

pub mod format;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use pingora_cache::key::{CacheKey, CompactCacheKey};

use crate::catalog::{tags_in, Record};
use crate::error::StoreError;
use crate::io::Engine;
use crate::space::Space;
use format::{BodyHeader, MetaBlobs, MetaHeader, BLOCK, BODY_HEADER_LEN};

/// The store's directory and how it writes.
pub struct DiskTier {
    dir: PathBuf,
    fsync: bool,
    min_free_percent: u8,
    /// The filesystem was under the free-space floor when last asked.
    low: AtomicBool,
    generation: AtomicU64,
    /// When this store opened: the walk of the files removes only what is
    /// older.
    opened: SystemTime,
}

/// An object the walk of the files found, for the index.
pub struct Recovered {
    /// Its key hash.
    pub hash: u128,
    /// Bytes on disk.
    pub size: u64,
    /// When its meta file was written.
    pub written: SystemTime,
    /// The meta file read, kept open until [`DiskTier::is_current`] has
    /// compared it with what is at its name: an open file's inode cannot
    /// be reused by a newer one meanwhile.
    meta: File,
}

/// What the walk of the files finds.
pub enum Walked {
    /// A whole object, with its catalog record.
    Object(Recovered, Record),
    /// An object whose files fail their checks (or a body without a meta
    /// file), and why: to remove, if it is still so and older than the
    /// store.
    Unusable(u128, StoreError),
}

fn hex(hash: u128) -> String {
    format!("{hash:032x}")
}

/// What a failed read of a body block was, in its error.
const READ_BLOCK: &str = "read body block";

fn io(what: &'static str) -> impl FnOnce(io::Error) -> StoreError {
    move |e| StoreError::Io(what, e)
}

/// Run `create`, which makes a file in `dir`; if `dir` is gone (deleted
/// while the store runs), recreate it and try once more.
fn in_dir<T>(dir: &Path, mut create: impl FnMut() -> io::Result<T>) -> io::Result<T> {
    match create() {
        Err(e) if e.kind() == io::ErrorKind::NotFound => {
            fs::create_dir_all(dir)?;
            tracing::warn!(target: "edge_cdn_store", dir = %dir.display(), "store directory was missing; recreated");
            create()
        }
        other => other,
    }
}

/// A cache key as the meta file keeps it: the compact key the eviction
/// manager and purges use, and the primary key's bytes, which the catalog
/// selects on (the hash alone cannot answer "everything under /img/").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredKey {
    /// Hashes and user tag.
    pub compact: CompactCacheKey,
    /// The bytes the primary hash was computed over.
    pub primary_key: Box<[u8]>,
}

/// Encode `key` for the meta file: primary hash, a variance flag and hash,
/// the user tag (length-prefixed), then the primary key bytes.
pub fn encode_key(key: &CacheKey) -> Vec<u8> {
    let compact = key.to_compact();
    let primary_key = key.primary_key();
    let mut out = Vec::with_capacity(35 + compact.user_tag.len() + primary_key.len());
    out.extend_from_slice(&compact.primary);
    match &compact.variance {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(v.as_ref());
        }
        None => out.push(0),
    }
    let tag = compact.user_tag.as_bytes();
    let tag = &tag[..tag.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(tag.len() as u16).to_le_bytes());
    out.extend_from_slice(tag);
    out.extend_from_slice(primary_key);
    out
}

/// Decode a cache key written by [`encode_key`].
pub fn decode_key(bytes: &[u8]) -> Result<StoredKey, StoreError> {
    let bad = || StoreError::Corrupt("bad cache key in meta file");
    let hash = |at: usize| -> Result<[u8; 16], StoreError> {
        bytes
            .get(at..at + 16)
            .and_then(|b| b.try_into().ok())
            .ok_or_else(bad)
    };
    let primary = hash(0)?;
    let (variance, at) = match bytes.get(16) {
        Some(0) => (None, 17),
        Some(1) => (Some(Box::new(hash(17)?)), 33),
        _ => return Err(bad()),
    };
    let tag_len = bytes
        .get(at..at + 2)
        .map(|b| u16::from_le_bytes([b[0], b[1]]) as usize)
        .ok_or_else(bad)?;
    let tag = bytes.get(at + 2..at + 2 + tag_len).ok_or_else(bad)?;
    let user_tag = std::str::from_utf8(tag).map_err(|_| bad())?;
    Ok(StoredKey {
        compact: CompactCacheKey {
            primary,
            variance,
            user_tag: user_tag.into(),
        },
        primary_key: bytes[at + 2 + tag_len..].into(),
    })
}

/// A committed object's body, opened for reading with its block checksums.
pub struct BodyReader {
    file: Arc<File>,
    /// Body bytes.
    pub len: u64,
    crcs: Vec<u32>,
}

impl BodyReader {
    /// Read and check block `index`. Blocking.
    pub fn block(&self, index: usize) -> Result<Bytes, StoreError> {
        let (at, len) = self.place(index);
        let mut buf = vec![0u8; len];
        self.file
            .read_exact_at(&mut buf, at)
            .map_err(io(READ_BLOCK))?;
        self.checked(index, buf)
    }

    /// [`BodyReader::block`] through `engine`, so a streamed hit waits for
    /// the disk without a thread blocked on it.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe: it changes nothing.
    pub async fn block_with(&self, engine: &Engine, index: usize) -> Result<Bytes, StoreError> {
        let (at, len) = self.place(index);
        let buf = engine.read_at(&self.file, at, len, READ_BLOCK).await?;
        if buf.len() != len {
            return Err(StoreError::Io(
                READ_BLOCK,
                io::Error::from(io::ErrorKind::UnexpectedEof),
            ));
        }
        self.checked(index, buf)
    }

    /// Where block `index` is in the file, and its length.
    fn place(&self, index: usize) -> (u64, usize) {
        let start = index * BLOCK;
        (
            (BODY_HEADER_LEN + start) as u64,
            (self.len as usize - start).min(BLOCK),
        )
    }

    /// Block `index` as read, if its checksum holds.
    fn checked(&self, index: usize, buf: Vec<u8>) -> Result<Bytes, StoreError> {
        if crc32fast::hash(&buf) != self.crcs[index] {
            return Err(StoreError::Corrupt("body block checksum mismatch"));
        }
        Ok(Bytes::from(buf))
    }

    /// Blocks in the body.
    pub fn blocks(&self) -> usize {
        self.crcs.len()
    }

    /// The whole body, every block checked.
    pub fn read_all(&self) -> Result<Bytes, StoreError> {
        let mut all = Vec::with_capacity(self.len as usize);
        for i in 0..self.blocks() {
            all.extend_from_slice(&self.block(i)?);
        }
        Ok(Bytes::from(all))
    }
}

/// A body being written to a temporary file.
///
/// Dropped before its commit renamed the file into place, it removes the
/// temporary file: a failed, cancelled or abandoned write leaves nothing
/// behind, wherever it is dropped. That removal is file I/O like the rest
/// of this module, so an async caller drops a writer on the blocking pool.
pub struct BodyWriter {
    file: File,
    temp: PathBuf,
    hash: u128,
    generation: u64,
    written: u64,
    block: crc32fast::Hasher,
    block_fill: usize,
    crcs: Vec<u32>,
    committed: bool,
}

impl BodyWriter {
    /// Bytes of body written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The temporary file opened again (the same file, not by name), for
    /// readers following the write: it stays readable after the commit
    /// renames it.
    pub fn share(&self) -> Result<File, StoreError> {
        self.file.try_clone().map_err(io("share temporary body"))
    }

    /// Append body bytes.
    pub fn write(&mut self, mut data: &[u8]) -> Result<(), StoreError> {
        self.file.write_all(data).map_err(io("write body"))?;
        self.written += data.len() as u64;
        while !data.is_empty() {
            let take = (BLOCK - self.block_fill).min(data.len());
            self.block.update(&data[..take]);
            self.block_fill += take;
            data = &data[take..];
            if self.block_fill == BLOCK {
                let full = std::mem::replace(&mut self.block, crc32fast::Hasher::new());
                self.crcs.push(full.finalize());
                self.block_fill = 0;
            }
        }
        Ok(())
    }

    /// Finish the body file: checksum table, header, fsync if configured,
    /// rename into place. Returns what the meta file must record.
    fn finish(mut self, disk: &DiskTier) -> Result<(u64, u32), StoreError> {
        if self.block_fill > 0 {
            let last = std::mem::replace(&mut self.block, crc32fast::Hasher::new());
            self.crcs.push(last.finalize());
        }
        let table = format::encode_table(&self.crcs);
        self.file
            .write_all(&table)
            .map_err(io("write block table"))?;
        let header = BodyHeader {
            key: self.hash.to_be_bytes(),
            generation: self.generation,
            body_len: self.written,
        };
        self.file
            .write_all_at(&header.encode(), 0)
            .map_err(io("write body header"))?;
        if disk.fsync {
            self.file.sync_all().map_err(io("fsync body"))?;
        }
        let (_, body) = disk.paths(self.hash);
        fs::create_dir_all(body.parent().expect("sharded path")).map_err(io("create shard dir"))?;
        fs::rename(&self.temp, &body).map_err(io("commit body"))?;
        self.committed = true;
        Ok((self.written, crc32fast::hash(&table)))
    }

    /// Finish the body and write its meta file: commit the object.
    /// Returns the body and meta file lengths.
    pub fn commit(self, disk: &DiskTier, blobs: MetaBlobs<'_>) -> Result<(u64, u64), StoreError> {
        let MetaBlobs {
            internal,
            header,
            key,
        } = blobs;
        let (hash, generation) = (self.hash, self.generation);
        let (body_len, table_crc) = self.finish(disk)?;
        let meta = MetaHeader {
            key: hash.to_be_bytes(),
            generation,
            body_len,
            table_crc,
            internal_len: internal.len() as u32,
            header_len: header.len() as u32,
            key_len: key.len() as u32,
        };
        let meta_len = disk
            .commit_meta(hash, &meta, internal, header, key)
            .inspect_err(|_| {
                // The body is in place but nothing describes it: remove it
                // now rather than at the next start.
                let _ = fs::remove_file(disk.paths(hash).1);
            })?;
        Ok((body_len, meta_len))
    }
}

impl Drop for BodyWriter {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

impl DiskTier {
    /// Open (creating) `dir`; leftovers of interrupted writes are removed.
    /// No write begins while less than `min_free_percent` of its
    /// filesystem is free.
    pub fn open(dir: &Path, fsync: bool, min_free_percent: u8) -> Result<DiskTier, StoreError> {
        fs::create_dir_all(dir.join("tmp")).map_err(io("create store directory"))?;
        for entry in fs::read_dir(dir.join("tmp"))
            .map_err(io("read tmp directory"))?
            .flatten()
        {
            let _ = fs::remove_file(entry.path());
        }
        // Generations only need to differ between writes of one key; seeding
        // from the clock keeps them increasing across restarts.
        let seed = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Ok(DiskTier {
            dir: dir.to_path_buf(),
            fsync,
            min_free_percent,
            low: AtomicBool::new(false),
            generation: AtomicU64::new(seed),
            opened: SystemTime::now(),
        })
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Meta and body paths of `hash`'s object.
    pub fn paths(&self, hash: u128) -> (PathBuf, PathBuf) {
        let name = hex(hash);
        let shard = self.dir.join(&name[0..2]);
        (
            shard.join(format!("{name}.meta")),
            shard.join(format!("{name}.body")),
        )
    }

    /// Room on the filesystem, and whether it is under the floor; `None`
    /// if it cannot be read.
    pub fn space(&self) -> Option<(Space, bool)> {
        let space = Space::of(&self.dir).or_else(|| {
            // The directory itself may be gone: its filesystem is its parent's.
            Space::of(self.dir.parent().filter(|p| !p.as_os_str().is_empty())?)
        })?;
        let low = space.is_low(self.min_free_percent);
        self.low.store(low, Ordering::Relaxed);
        Some((space, low))
    }

    /// Whether the filesystem was under the free-space floor when last
    /// asked (by [`DiskTier::room`], [`DiskTier::begin`] or
    /// [`DiskTier::space`]): no I/O.
    pub fn was_low(&self) -> bool {
        self.low.load(Ordering::Relaxed)
    }

    /// [`StoreError::LowSpace`] if the filesystem is under the free-space
    /// floor now. Blocking (a `statvfs`), and nothing to ask with no floor.
    pub fn room(&self) -> Result<(), StoreError> {
        if self.min_free_percent == 0 {
            return Ok(());
        }
        match self.space() {
            Some((space, true)) => Err(StoreError::LowSpace {
                free: space.free,
                total: space.total,
            }),
            _ => Ok(()),
        }
    }

    /// Create and remove a file in `tmp/` (recreating the directories if
    /// they were deleted): whether a write could begin at all.
    pub fn probe(&self) -> Result<(), StoreError> {
        let tmp = self.dir.join("tmp");
        let probe = tmp.join(".health");
        in_dir(&tmp, || File::create(&probe)).map_err(io("create probe file"))?;
        fs::remove_file(&probe).map_err(io("remove probe file"))
    }

    /// Start writing a body for `hash`; refused with
    /// [`StoreError::LowSpace`] under the free-space floor.
    pub fn begin(&self, hash: u128) -> Result<BodyWriter, StoreError> {
        self.room()?;
        let generation = self.generation.fetch_add(1, Ordering::Relaxed);
        let tmp = self.dir.join("tmp");
        let temp = tmp.join(format!("{}.{generation}.body", hex(hash)));
        let file = in_dir(&tmp, || {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create_new(true)
                .open(&temp)
        })
        .map_err(io("create temporary body"))?;
        // Owned by the writer before its first write, so a failure here
        // removes the file too.
        let mut writer = BodyWriter {
            file,
            temp,
            hash,
            generation,
            written: 0,
            block: crc32fast::Hasher::new(),
            block_fill: 0,
            crcs: Vec::new(),
            committed: false,
        };
        writer
            .file
            .write_all(&[0u8; BODY_HEADER_LEN])
            .map_err(io("reserve body header"))?;
        Ok(writer)
    }

    /// Write the meta file for a committed body: this is the commit.
    pub fn commit_meta(
        &self,
        hash: u128,
        meta: &MetaHeader,
        internal: &[u8],
        header: &[u8],
        key: &[u8],
    ) -> Result<u64, StoreError> {
        let bytes = meta.encode(internal, header, key);
        let tmp = self.dir.join("tmp");
        let temp = tmp.join(format!("{}.{}.meta", hex(hash), meta.generation));
        let mut file = in_dir(&tmp, || File::create(&temp)).map_err(io("create temporary meta"))?;
        let (path, _) = self.paths(hash);
        let committed = file
            .write_all(&bytes)
            .map_err(io("write meta"))
            .and_then(|()| match self.fsync {
                true => file.sync_all().map_err(io("fsync meta")),
                false => Ok(()),
            })
            .and_then(|()| {
                fs::create_dir_all(path.parent().expect("sharded path"))
                    .map_err(io("create shard dir"))
            })
            .and_then(|()| fs::rename(&temp, &path).map_err(io("commit meta")));
        if committed.is_err() {
            let _ = fs::remove_file(&temp);
        }
        committed.map(|()| bytes.len() as u64)
    }

    /// The meta file of `hash`, checked: `None` if there is none.
    pub fn read_meta(&self, hash: u128) -> Result<Option<Vec<u8>>, StoreError> {
        let (path, _) = self.paths(hash);
        match fs::read(&path) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io("read meta", e)),
        }
    }

    /// Open the body `meta` describes, checking that it belongs to it.
    pub fn open_body(&self, hash: u128, meta: &MetaHeader) -> Result<BodyReader, StoreError> {
        let (_, path) = self.paths(hash);
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(StoreError::Corrupt("body file missing"))
            }
            Err(e) => return Err(StoreError::Io("open body", e)),
        };
        let mut head = [0u8; BODY_HEADER_LEN];
        file.read_exact_at(&mut head, 0)
            .map_err(|_| StoreError::Corrupt("body file shorter than its header"))?;
        let body = BodyHeader::decode(&head)?;
        if body.key != hash.to_be_bytes()
            || body.generation != meta.generation
            || body.body_len != meta.body_len
        {
            return Err(StoreError::Corrupt("body does not belong to its meta"));
        }
        let blocks = format::blocks(body.body_len);
        let file_len = file.metadata().map_err(io("stat body"))?.len();
        if file_len != (BODY_HEADER_LEN + blocks * 4) as u64 + body.body_len {
            return Err(StoreError::Corrupt("body file has the wrong length"));
        }
        let mut table = vec![0u8; blocks * 4];
        file.read_exact_at(&mut table, BODY_HEADER_LEN as u64 + body.body_len)
            .map_err(io("read block table"))?;
        let crcs = format::decode_table(&table, blocks, meta.table_crc)?;
        Ok(BodyReader {
            file: Arc::new(file),
            len: body.body_len,
            crcs,
        })
    }

    /// Remove `hash`'s object (meta first: it is the commit).
    pub fn remove(&self, hash: u128) -> bool {
        let (meta, body) = self.paths(hash);
        let had = fs::remove_file(meta).is_ok();
        let _ = fs::remove_file(body);
        had
    }

    /// Whether every file `hash`'s object has was last written before this
    /// store opened: left by an earlier process, not being written now.
    pub fn before_open(&self, hash: u128) -> bool {
        let (meta, body) = self.paths(hash);
        [meta, body].iter().all(|path| match fs::metadata(path) {
            Ok(m) => m.modified().is_ok_and(|at| at < self.opened),
            Err(e) => e.kind() == io::ErrorKind::NotFound,
        })
    }

    /// Whether `hash`'s meta file is still the one `found` read: not
    /// replaced by a newer commit, nor removed, since.
    pub fn is_current(&self, hash: u128, found: &Recovered) -> bool {
        let same = |a: &fs::Metadata, b: &fs::Metadata| a.dev() == b.dev() && a.ino() == b.ino();
        match (fs::metadata(self.paths(hash).0), found.meta.metadata()) {
            (Ok(now), Ok(then)) => same(&now, &then),
            _ => false,
        }
    }

    /// Walk the directory, handing `found` every complete object with its
    /// catalog record (tags read from the fields named in `tag_fields`)
    /// and every unusable one, until done or `stopped`. Leftovers of the
    /// two-level layout and files not named by a hash are removed here.
    pub fn walk(&self, tag_fields: &[String], stopped: &AtomicBool, mut found: impl FnMut(Walked)) {
        let shards = fs::read_dir(&self.dir).into_iter().flatten().flatten();
        for shard in shards.filter(|e| e.file_name().len() == 2) {
            for file in fs::read_dir(shard.path()).into_iter().flatten().flatten() {
                if stopped.load(Ordering::Relaxed) {
                    return;
                }
                let path = file.path();
                if file.file_type().is_ok_and(|t| t.is_dir()) {
                    // The two-level layout stores used before: its objects
                    // are dropped, as after a format change.
                    let _ = fs::remove_dir_all(&path);
                    continue;
                }
                let Some(hash) = path
                    .file_stem()
                    .and_then(|s| s.to_str())
                    .and_then(|s| u128::from_str_radix(s, 16).ok())
                else {
                    let _ = fs::remove_file(&path);
                    continue;
                };
                match path.extension().and_then(|e| e.to_str()) {
                    Some("meta") => match self.check(hash, &path, tag_fields) {
                        Ok((object, record)) => found(Walked::Object(object, record)),
                        // Gone meanwhile, or the disk failing to read: not
                        // a reason to remove anything.
                        Err(StoreError::Io(..)) => {}
                        Err(error) => found(Walked::Unusable(hash, error)),
                    },
                    Some("body") if !path.with_extension("meta").exists() => found(
                        Walked::Unusable(hash, StoreError::Corrupt("body file without its meta")),
                    ),
                    _ => {}
                }
            }
        }
    }

    fn check(
        &self,
        hash: u128,
        path: &Path,
        tag_fields: &[String],
    ) -> Result<(Recovered, Record), StoreError> {
        let mut bytes = Vec::new();
        let mut file = File::open(path).map_err(io("read meta"))?;
        let written = file
            .metadata()
            .and_then(|m| m.modified())
            .map_err(io("stat meta"))?;
        file.read_to_end(&mut bytes).map_err(io("read meta"))?;
        let (meta, blobs) = MetaHeader::decode(&bytes)?;
        if meta.key != hash.to_be_bytes() {
            return Err(StoreError::Corrupt("meta file under the wrong name"));
        }
        let body = self.open_body(hash, &meta)?;
        let record = record_of(blobs.key, blobs.internal, blobs.header, tag_fields)?;
        let recovered = Recovered {
            hash,
            size: body.len + bytes.len() as u64,
            written,
            meta: file,
        };
        Ok((recovered, record))
    }

    /// When `hash`'s meta file was written, if it has one. Blocking.
    pub fn written(&self, hash: u128) -> Option<SystemTime> {
        fs::metadata(self.paths(hash).0)
            .and_then(|m| m.modified())
            .ok()
    }
}

/// The catalog record of a stored object, from its encoded key and meta
/// blobs (tags read from the fields named in `tag_fields`): what recovery
/// puts back, for an object in files or in the segment ring.
pub fn record_of(
    key: &[u8],
    internal: &[u8],
    header: &[u8],
    tag_fields: &[String],
) -> Result<Record, StoreError> {
    let key = decode_key(key)?;
    let stored = crate::head::decode(internal, header)
        .map_err(|_| StoreError::Corrupt("undecodable cache meta"))?;
    Ok(Record {
        key: key.compact,
        primary_key: key.primary_key,
        tags: tags_in(stored.headers(), tag_fields),
    })
}
