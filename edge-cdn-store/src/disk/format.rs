//! The on-disk format: two files per object, named by the key's hash.
//!
//! `<hash>.body` is `BodyHeader`, then the body, then one CRC32 per
//! [`BLOCK`] bytes of body. `<hash>.meta` is `MetaHeader`, then three blobs:
//! pingora's two serialized meta blobs (internal, then response header) and
//! the encoded cache key (`super::encode_key`). Both headers carry the key
//! and a *generation*; an object exists when both files exist and agree.
//! The meta file is written last, so it is the commit: a crash before it
//! leaves an orphan body that recovery deletes. A 304 rewrites only the
//! (small) meta file.
//!
//! Every integer is little-endian. Every header ends with a CRC32 of the
//! bytes before it (and, for the meta file, of the blobs after it), so a
//! truncated or bit-flipped file is detected, never served.

use crate::error::StoreError;

/// Body bytes covered by one checksum: a corrupt block is caught before any
/// of its bytes are sent.
pub const BLOCK: usize = 64 * 1024;
/// Identifies a stavka store file.
const MAGIC: [u8; 4] = *b"ECDS";
/// Bumped on any incompatible change; older files are then misses.
pub const VERSION: u16 = 2;
const KIND_BODY: u8 = 1;
const KIND_META: u8 = 2;

/// Size of the fixed part of a body file.
pub const BODY_HEADER_LEN: usize = 4 + 2 + 1 + 1 + 16 + 8 + 8 + 4;
/// Size of the fixed part of a meta file.
pub const META_HEADER_LEN: usize = 4 + 2 + 1 + 1 + 16 + 8 + 8 + 4 + 4 + 4 + 4 + 4;

/// Number of checksummed blocks in a body of `len` bytes.
pub fn blocks(len: u64) -> usize {
    (len as usize).div_ceil(BLOCK)
}

/// The fixed header of a body file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BodyHeader {
    /// The cache key hash.
    pub key: [u8; 16],
    /// Which write produced it.
    pub generation: u64,
    /// Body bytes that follow.
    pub body_len: u64,
}

impl BodyHeader {
    /// Encode, with the trailing header checksum.
    pub fn encode(&self) -> [u8; BODY_HEADER_LEN] {
        let mut out = [0u8; BODY_HEADER_LEN];
        let mut w = Writer::new(&mut out[..], KIND_BODY);
        w.put(&self.key);
        w.put(&self.generation.to_le_bytes());
        w.put(&self.body_len.to_le_bytes());
        let crc = crc32fast::hash(&out[..BODY_HEADER_LEN - 4]);
        out[BODY_HEADER_LEN - 4..].copy_from_slice(&crc.to_le_bytes());
        out
    }

    /// Decode and check a body header.
    pub fn decode(bytes: &[u8]) -> Result<BodyHeader, StoreError> {
        let mut r = Reader::new(bytes, BODY_HEADER_LEN, KIND_BODY)?;
        let header = BodyHeader {
            key: r.array(),
            generation: r.u64(),
            body_len: r.u64(),
        };
        r.check_crc(&[])?;
        Ok(header)
    }
}

/// The fixed header of a meta file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaHeader {
    /// The cache key hash.
    pub key: [u8; 16],
    /// The generation of the body file this meta belongs to.
    pub generation: u64,
    /// Length of the body file's body, to check it against.
    pub body_len: u64,
    /// CRC32 of the body file's block-checksum table.
    pub table_crc: u32,
    /// Length of pingora's internal meta blob.
    pub internal_len: u32,
    /// Length of pingora's header meta blob.
    pub header_len: u32,
    /// Length of the encoded cache key (what the eviction manager needs
    /// back after a restart).
    pub key_len: u32,
}

impl MetaHeader {
    /// Encode, with a checksum over the header and the three blobs.
    pub fn encode(&self, internal: &[u8], header: &[u8], key: &[u8]) -> Vec<u8> {
        let mut out = vec![0u8; META_HEADER_LEN];
        let mut w = Writer::new(&mut out[..], KIND_META);
        w.put(&self.key);
        w.put(&self.generation.to_le_bytes());
        w.put(&self.body_len.to_le_bytes());
        w.put(&self.table_crc.to_le_bytes());
        w.put(&self.internal_len.to_le_bytes());
        w.put(&self.header_len.to_le_bytes());
        w.put(&self.key_len.to_le_bytes());
        let mut crc = crc32fast::Hasher::new();
        crc.update(&out[..META_HEADER_LEN - 4]);
        crc.update(internal);
        crc.update(header);
        crc.update(key);
        out[META_HEADER_LEN - 4..].copy_from_slice(&crc.finalize().to_le_bytes());
        out.extend_from_slice(internal);
        out.extend_from_slice(header);
        out.extend_from_slice(key);
        out
    }

    /// Decode a whole meta file: the header and the three blobs, checked.
    pub fn decode(file: &[u8]) -> Result<(MetaHeader, MetaBlobs<'_>), StoreError> {
        let mut r = Reader::new(file, META_HEADER_LEN, KIND_META)?;
        let header = MetaHeader {
            key: r.array(),
            generation: r.u64(),
            body_len: r.u64(),
            table_crc: r.u32(),
            internal_len: r.u32(),
            header_len: r.u32(),
            key_len: r.u32(),
        };
        let blobs = &file[META_HEADER_LEN..];
        let internal_len = header.internal_len as usize;
        let header_len = header.header_len as usize;
        if blobs.len() != internal_len + header_len + header.key_len as usize {
            return Err(StoreError::Corrupt(
                "meta file length does not match its header",
            ));
        }
        r.check_crc(blobs)?;
        let (internal, rest) = blobs.split_at(internal_len);
        let (header_blob, key) = rest.split_at(header_len);
        Ok((
            header,
            MetaBlobs {
                internal,
                header: header_blob,
                key,
            },
        ))
    }
}

/// The variable parts of a meta file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MetaBlobs<'a> {
    /// pingora's internal meta.
    pub internal: &'a [u8],
    /// The response header in either stored form (`crate::head`): a head,
    /// or pingora's blob as earlier versions wrote it.
    pub header: &'a [u8],
    /// The encoded cache key.
    pub key: &'a [u8],
}

/// Encode a block-checksum table.
pub fn encode_table(crcs: &[u32]) -> Vec<u8> {
    crcs.iter().flat_map(|c| c.to_le_bytes()).collect()
}

/// Decode a block-checksum table of `n` entries and check it against the
/// meta file's record of it.
pub fn decode_table(bytes: &[u8], n: usize, expected_crc: u32) -> Result<Vec<u32>, StoreError> {
    if bytes.len() != n * 4 {
        return Err(StoreError::Corrupt("block table has the wrong length"));
    }
    if crc32fast::hash(bytes) != expected_crc {
        return Err(StoreError::Corrupt("block table checksum mismatch"));
    }
    Ok(bytes
        .chunks_exact(4)
        .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect())
}

struct Writer<'a>(&'a mut [u8], usize);

impl<'a> Writer<'a> {
    /// Start a header of `kind`: magic, version, kind and a reserved byte,
    /// what [`Reader::new`] checks.
    fn new(out: &'a mut [u8], kind: u8) -> Writer<'a> {
        let mut w = Writer(out, 0);
        w.put(&MAGIC);
        w.put(&VERSION.to_le_bytes());
        w.put(&[kind, 0]);
        w
    }

    fn put(&mut self, bytes: &[u8]) {
        self.0[self.1..self.1 + bytes.len()].copy_from_slice(bytes);
        self.1 += bytes.len();
    }
}

struct Reader<'a> {
    bytes: &'a [u8],
    len: usize,
    at: usize,
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8], len: usize, kind: u8) -> Result<Reader<'a>, StoreError> {
        if bytes.len() < len {
            return Err(StoreError::Corrupt("file shorter than its header"));
        }
        if bytes[..4] != MAGIC {
            return Err(StoreError::Corrupt("not a store file"));
        }
        if u16::from_le_bytes([bytes[4], bytes[5]]) != VERSION {
            return Err(StoreError::Corrupt("unknown format version"));
        }
        if bytes[6] != kind {
            return Err(StoreError::Corrupt("wrong kind of store file"));
        }
        Ok(Reader { bytes, len, at: 8 })
    }

    fn take<const N: usize>(&mut self) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.bytes[self.at..self.at + N]);
        self.at += N;
        out
    }

    fn array(&mut self) -> [u8; 16] {
        self.take::<16>()
    }

    fn u64(&mut self) -> u64 {
        u64::from_le_bytes(self.take::<8>())
    }

    fn u32(&mut self) -> u32 {
        u32::from_le_bytes(self.take::<4>())
    }

    /// The stored checksum covers the header before it and then `more`.
    fn check_crc(&mut self, more: &[u8]) -> Result<(), StoreError> {
        let stored = self.u32();
        debug_assert_eq!(self.at, self.len);
        let mut crc = crc32fast::Hasher::new();
        crc.update(&self.bytes[..self.len - 4]);
        crc.update(more);
        if crc.finalize() != stored {
            return Err(StoreError::Corrupt("header checksum mismatch"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod props;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_round_trip_and_reject_any_flipped_bit() {
        let body = BodyHeader {
            key: [7; 16],
            generation: 42,
            body_len: 123_456,
        };
        let bytes = body.encode();
        assert_eq!(BodyHeader::decode(&bytes).unwrap(), body);
        for i in 0..bytes.len() {
            let mut flipped = bytes;
            flipped[i] ^= 0x10;
            assert!(BodyHeader::decode(&flipped).is_err(), "byte {i}");
        }
        let meta = MetaHeader {
            key: [9; 16],
            generation: 42,
            body_len: 10,
            table_crc: 5,
            internal_len: 3,
            header_len: 2,
            key_len: 1,
        };
        let file = meta.encode(b"abc", b"de", b"k");
        let (decoded, blobs) = MetaHeader::decode(&file).unwrap();
        assert_eq!(decoded, meta);
        assert_eq!(
            (blobs.internal, blobs.header, blobs.key),
            (&b"abc"[..], &b"de"[..], &b"k"[..])
        );
        for i in 0..file.len() {
            let mut flipped = file.clone();
            flipped[i] ^= 0x01;
            assert!(MetaHeader::decode(&flipped).is_err(), "byte {i}");
        }
        assert!(
            MetaHeader::decode(&file[..file.len() - 1]).is_err(),
            "truncated"
        );
    }

    #[test]
    fn tables() {
        let crcs = [1, 2, 3];
        let bytes = encode_table(&crcs);
        assert_eq!(
            decode_table(&bytes, 3, crc32fast::hash(&bytes)).unwrap(),
            crcs
        );
        assert!(decode_table(&bytes, 3, 0).is_err());
        assert_eq!(blocks(0), 0);
        assert_eq!(blocks(BLOCK as u64), 1);
        assert_eq!(blocks(BLOCK as u64 + 1), 2);
    }
}
