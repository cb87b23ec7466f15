//! One object as a segment region holds it: a 64-byte header, then the
//! meta blobs, the encoded key and the body, padded to 8 bytes.
//!
//! ```text
//! 0   magic      u32  LIVE, or DEAD once removed (a 4-byte overwrite)
//! 4   crc        u32  CRC32 of bytes 8.. of the header and the payload
//! 8   hash       u128 big-endian, the key hash the store names it by
//! 24  seq        u64  the region ring's append sequence: later is newer
//! 32  written    u64  nanoseconds since the Unix epoch
//! 40  internal   u32  lengths of the four payload parts, in order
//! 44  header     u32
//! 48  key        u32
//! 52  body       u32
//! 56  reserved   u64  zero
//! ```
//!
//! The checksum leaves out the magic, so a removed entry still reads as a
//! well-formed one that a scan steps over by its lengths.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::error::StoreError;

/// Header bytes.
pub const HEADER: usize = 64;
/// The magic of a stored entry.
const LIVE: u32 = u32::from_le_bytes(*b"SgE1");
/// The magic of a removed entry.
const DEAD: u32 = u32::from_le_bytes(*b"SgD1");

/// The bytes a removal writes over an entry's magic.
pub const DEAD_MAGIC: [u8; 4] = DEAD.to_le_bytes();

/// What an entry's header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Whether the entry is stored (not removed).
    pub live: bool,
    /// The key hash.
    pub hash: u128,
    /// Append sequence.
    pub seq: u64,
    /// When it was written.
    pub written: SystemTime,
    /// Lengths of the internal meta, the header meta, the key and the body.
    pub lens: [u32; 4],
    crc: u32,
}

/// The parts an entry is made of.
pub struct Parts<'a> {
    /// pingora's internal meta blob.
    pub internal: &'a [u8],
    /// The response header as a head (`crate::head`).
    pub header: &'a [u8],
    /// The encoded cache key (`disk::encode_key`).
    pub key: &'a [u8],
    /// The body, in the chunks it arrived in.
    pub body: &'a [Bytes],
}

impl Parts<'_> {
    fn lens(&self) -> Option<[u32; 4]> {
        let body: usize = self.body.iter().map(Bytes::len).sum();
        Some([
            u32::try_from(self.internal.len()).ok()?,
            u32::try_from(self.header.len()).ok()?,
            u32::try_from(self.key.len()).ok()?,
            u32::try_from(body).ok()?,
        ])
    }

    /// Bytes the entry takes in a region, padding included; `None` past
    /// 4 GiB.
    pub fn len(&self) -> Option<u64> {
        self.lens().map(|lens| padded(&lens))
    }
}

/// Bytes an entry of parts of these lengths takes in a region; `None`
/// past 4 GiB a part.
pub fn len_of(internal: usize, header: usize, key: usize, body: u64) -> Option<u64> {
    Some(padded(&[
        u32::try_from(internal).ok()?,
        u32::try_from(header).ok()?,
        u32::try_from(key).ok()?,
        u32::try_from(body).ok()?,
    ]))
}

/// An entry's length in a region: header, parts, padding to 8 bytes.
fn padded(lens: &[u32; 4]) -> u64 {
    let raw = HEADER as u64 + lens.iter().map(|&l| u64::from(l)).sum::<u64>();
    raw.div_ceil(8) * 8
}

impl Header {
    /// Bytes the entry takes in a region.
    pub fn len(&self) -> u64 {
        padded(&self.lens)
    }

    /// Read a header: `None` if these bytes are not one (never written, or
    /// torn). The payload is not checked here.
    pub fn decode(bytes: &[u8]) -> Option<Header> {
        let bytes: &[u8; HEADER] = bytes.get(..HEADER)?.try_into().ok()?;
        let u32_at = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4"));
        let u64_at = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8"));
        let live = match u32_at(0) {
            LIVE => true,
            DEAD => false,
            _ => return None,
        };
        if u64_at(56) != 0 {
            return None;
        }
        Some(Header {
            live,
            crc: u32_at(4),
            hash: u128::from_be_bytes(bytes[8..24].try_into().expect("16")),
            seq: u64_at(24),
            written: UNIX_EPOCH + Duration::from_nanos(u64_at(32)),
            lens: [u32_at(40), u32_at(44), u32_at(48), u32_at(52)],
        })
    }
}

/// Encode an entry for `hash` with sequence `seq`, written now.
///
/// # Panics
///
/// If the parts exceed 4 GiB, which the caller rules out with
/// [`Parts::len`].
pub fn encode(hash: u128, seq: u64, parts: &Parts<'_>) -> Vec<u8> {
    let lens = parts.lens().expect("entry parts checked by the caller");
    let len = padded(&lens) as usize;
    let mut out = Vec::with_capacity(len);
    out.extend_from_slice(&LIVE.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    out.extend_from_slice(&hash.to_be_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    let written = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    out.extend_from_slice(&written.to_le_bytes());
    for l in lens {
        out.extend_from_slice(&l.to_le_bytes());
    }
    out.extend_from_slice(&[0; 8]);
    out.extend_from_slice(parts.internal);
    out.extend_from_slice(parts.header);
    out.extend_from_slice(parts.key);
    for chunk in parts.body {
        out.extend_from_slice(chunk);
    }
    out.resize(len, 0);
    let crc = crc32fast::hash(&out[8..]);
    out[4..8].copy_from_slice(&crc.to_le_bytes());
    out
}

/// A whole entry, read and checked.
#[derive(Debug)]
pub struct Entry {
    /// pingora's internal meta blob.
    pub internal: Bytes,
    /// The response header in either stored form (`crate::head`): a head,
    /// or pingora's blob as earlier versions wrote it.
    pub meta_header: Bytes,
    /// The encoded cache key.
    pub key: Bytes,
    /// The body.
    pub body: Bytes,
}

/// Check `bytes`, read where the index said `hash`'s entry is: the whole
/// entry with its payload, or [`StoreError::Corrupt`] if it is not that
/// entry whole (torn, overwritten by a later lap of the ring, removed).
pub fn check(bytes: Bytes, hash: u128) -> Result<Entry, StoreError> {
    let header = Header::decode(&bytes).ok_or(StoreError::Corrupt("no segment entry there"))?;
    if !header.live || header.hash != hash {
        return Err(StoreError::Corrupt("another segment entry there"));
    }
    if header.len() != bytes.len() as u64 {
        return Err(StoreError::Corrupt("segment entry of another length"));
    }
    verify(&header, &bytes)?;
    let mut at = HEADER;
    let mut part = |len: u32| {
        let start = at;
        at += len as usize;
        bytes.slice(start..at)
    };
    let [internal, meta_header, key, body] = header.lens;
    Ok(Entry {
        internal: part(internal),
        meta_header: part(meta_header),
        key: part(key),
        body: part(body),
    })
}

/// Check an entry's checksum over `bytes` (the entry, `header.len()`
/// bytes).
fn verify(header: &Header, bytes: &[u8]) -> Result<(), StoreError> {
    match bytes.get(8..header.len() as usize) {
        Some(covered) if crc32fast::hash(covered) == header.crc => Ok(()),
        _ => Err(StoreError::Corrupt("segment entry checksum mismatch")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(body: &[Bytes]) -> Parts<'_> {
        Parts {
            internal: b"internal",
            header: b"header blob",
            key: b"key",
            body,
        }
    }

    #[test]
    fn an_entry_reads_back_whole() {
        let body = [Bytes::from_static(b"hello "), Bytes::from_static(b"world")];
        let bytes = Bytes::from(encode(7, 3, &parts(&body)));
        assert_eq!(bytes.len() as u64, parts(&body).len().unwrap());
        assert_eq!(bytes.len() % 8, 0);
        assert_eq!(Header::decode(&bytes).unwrap().seq, 3);
        let entry = check(bytes, 7).unwrap();
        assert_eq!(&entry.internal[..], b"internal");
        assert_eq!(&entry.meta_header[..], b"header blob");
        assert_eq!(&entry.key[..], b"key");
        assert_eq!(&entry.body[..], b"hello world");
    }

    #[test]
    fn any_flipped_byte_or_a_removal_is_refused() {
        let body = [Bytes::from_static(b"payload")];
        let good = encode(9, 1, &parts(&body));
        for at in 0..good.len() {
            let mut bad = good.clone();
            bad[at] ^= 0x40;
            // Padding is covered by the checksum too.
            assert!(check(Bytes::from(bad), 9).is_err(), "byte {at}");
        }
        assert!(check(Bytes::from(good.clone()), 8).is_err(), "another hash");
        let mut dead = good;
        dead[..4].copy_from_slice(&DEAD_MAGIC);
        let header = Header::decode(&dead).unwrap();
        assert!(!header.live);
        assert!(
            verify(&header, &dead).is_ok(),
            "a removed entry stays well formed"
        );
        assert!(check(Bytes::from(dead), 9).is_err());
    }
}
