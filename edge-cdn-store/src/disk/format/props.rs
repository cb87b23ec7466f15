//! Property tests for the on-disk format's decoders: a store file is input
//! from the disk, which may hold anything (a torn write, a bit flip, another
//! program's file), so every decoder must answer with an error for bytes it
//! did not write, never panic, and must never accept a damaged file as a
//! different object.

use pingora_cache::key::CacheKey;
use proptest::prelude::*;

use super::*;
use crate::disk::{decode_key, encode_key};

/// Enough cases to reach every header field with flips and cuts, few enough
/// that the suite stays in the seconds on a slow machine.
fn config() -> ProptestConfig {
    ProptestConfig {
        cases: 1000,
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

fn body_header() -> impl Strategy<Value = BodyHeader> {
    (any::<[u8; 16]>(), any::<u64>(), any::<u64>()).prop_map(|(key, generation, body_len)| {
        BodyHeader {
            key,
            generation,
            body_len,
        }
    })
}

/// A meta header with the three blobs it describes.
fn meta_file() -> impl Strategy<Value = (MetaHeader, Vec<u8>, Vec<u8>, Vec<u8>)> {
    let blob = || proptest::collection::vec(any::<u8>(), 0..64);
    (
        any::<[u8; 16]>(),
        any::<u64>(),
        any::<u64>(),
        any::<u32>(),
        blob(),
        blob(),
        blob(),
    )
        .prop_map(
            |(key, generation, body_len, table_crc, internal, header, k)| {
                let meta = MetaHeader {
                    key,
                    generation,
                    body_len,
                    table_crc,
                    internal_len: internal.len() as u32,
                    header_len: header.len() as u32,
                    key_len: k.len() as u32,
                };
                (meta, internal, header, k)
            },
        )
}

/// A damaged copy of a valid file: one way a disk or a crash changes it.
#[derive(Debug, Clone)]
enum Damage {
    /// Flip these bits of the byte at this position (modulo the length).
    Flip(usize, u8),
    /// Keep only this many bytes (modulo the length).
    Truncate(usize),
    /// Append these bytes.
    Extend(Vec<u8>),
    /// Overwrite from this position (modulo the length) with these bytes.
    Overwrite(usize, Vec<u8>),
}

fn damage() -> impl Strategy<Value = Damage> {
    prop_oneof![
        (any::<usize>(), 1..=u8::MAX).prop_map(|(at, bits)| Damage::Flip(at, bits)),
        any::<usize>().prop_map(Damage::Truncate),
        proptest::collection::vec(any::<u8>(), 1..32).prop_map(Damage::Extend),
        (
            any::<usize>(),
            proptest::collection::vec(any::<u8>(), 1..16)
        )
            .prop_map(|(at, bytes)| Damage::Overwrite(at, bytes)),
    ]
}

impl Damage {
    /// Apply to `file`; `false` when the result happens to equal the input
    /// (an overwrite with the same bytes), which is then not damaged.
    fn apply(&self, file: &mut Vec<u8>) -> bool {
        let before = file.clone();
        match self {
            Damage::Flip(at, bits) => {
                let at = at % file.len();
                file[at] ^= bits;
            }
            Damage::Truncate(len) => file.truncate(len % file.len()),
            Damage::Extend(bytes) => file.extend_from_slice(bytes),
            Damage::Overwrite(at, bytes) => {
                let at = at % file.len();
                let end = (at + bytes.len()).min(file.len());
                file[at..end].copy_from_slice(&bytes[..end - at]);
            }
        }
        *file != before
    }
}

proptest! {
    #![proptest_config(config())]

    /// Any bytes at all: every decoder answers, none panics.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..256),
        n in 0usize..80,
        crc in any::<u32>(),
    ) {
        let _ = BodyHeader::decode(&bytes);
        let _ = MetaHeader::decode(&bytes);
        let _ = decode_table(&bytes, n, crc);
        let _ = decode_key(&bytes);
    }

    /// Bytes that pass the magic, version and kind checks, so the length
    /// and checksum logic behind them is what the input reaches.
    #[test]
    fn plausible_headers_never_panic(
        kind in prop_oneof![Just(KIND_BODY), Just(KIND_META), any::<u8>()],
        rest in proptest::collection::vec(any::<u8>(), 0..200),
    ) {
        let mut bytes = MAGIC.to_vec();
        bytes.extend_from_slice(&VERSION.to_le_bytes());
        bytes.extend_from_slice(&[kind, 0]);
        bytes.extend_from_slice(&rest);
        prop_assert!(BodyHeader::decode(&bytes).is_err() || bytes.len() >= BODY_HEADER_LEN);
        let _ = MetaHeader::decode(&bytes);
    }

    /// A valid body header decodes to itself; damaged, it is an error.
    #[test]
    fn body_header_damage_is_detected(header in body_header(), damage in damage()) {
        let bytes = header.encode();
        prop_assert_eq!(BodyHeader::decode(&bytes).unwrap(), header);
        let mut damaged = bytes.to_vec();
        if damage.apply(&mut damaged) {
            match BodyHeader::decode(&damaged) {
                // Bytes after the header are the body's, not the header's.
                Ok(decoded) => prop_assert!(
                    damaged.len() > BODY_HEADER_LEN
                        && damaged[..BODY_HEADER_LEN] == bytes[..]
                        && decoded == header,
                    "a damaged header decoded as {:?}", decoded
                ),
                Err(StoreError::Corrupt(_)) => {}
                Err(e) => prop_assert!(false, "not a corruption error: {}", e),
            }
        }
    }

    /// A valid meta file decodes to exactly what was encoded; damaged
    /// anywhere (header, blobs, length), it is an error.
    #[test]
    fn meta_file_damage_is_detected(
        (meta, internal, header, key) in meta_file(),
        damage in damage(),
    ) {
        let file = meta.encode(&internal, &header, &key);
        let (decoded, blobs) = MetaHeader::decode(&file).unwrap();
        prop_assert_eq!(decoded, meta);
        prop_assert_eq!(
            (blobs.internal, blobs.header, blobs.key),
            (&internal[..], &header[..], &key[..])
        );
        let mut damaged = file.clone();
        if damage.apply(&mut damaged) {
            prop_assert!(
                matches!(MetaHeader::decode(&damaged), Err(StoreError::Corrupt(_))),
                "damaged meta file ({:?}) was accepted", damage
            );
        }
    }

    /// A block table decodes to itself and rejects any other bytes.
    #[test]
    fn table_damage_is_detected(
        crcs in proptest::collection::vec(any::<u32>(), 1..40),
        damage in damage(),
    ) {
        let bytes = encode_table(&crcs);
        let crc = crc32fast::hash(&bytes);
        prop_assert_eq!(decode_table(&bytes, crcs.len(), crc).unwrap(), crcs.clone());
        let mut damaged = bytes.clone();
        if damage.apply(&mut damaged) {
            prop_assert!(decode_table(&damaged, crcs.len(), crc).is_err());
        }
    }

    /// A cache key round-trips through the meta file's encoding, with or
    /// without variance, whatever bytes its primary key and tag hold; a
    /// damaged encoding decodes to an error or to some key, never a panic
    /// (the meta file's checksum is what rejects a damaged key).
    #[test]
    fn cache_key_round_trips(
        primary in proptest::collection::vec(any::<u8>(), 0..64),
        tag in ".{0,16}",
        variance in proptest::option::of(any::<[u8; 16]>()),
        damage in damage(),
    ) {
        let mut key = CacheKey::new(primary.clone(), tag.clone());
        if let Some(v) = variance {
            key.set_variance_key(v);
        }
        let bytes = encode_key(&key);
        let stored = decode_key(&bytes).unwrap();
        prop_assert_eq!(&stored.compact, &key.to_compact());
        prop_assert_eq!(&stored.primary_key[..], &primary[..]);
        let mut damaged = bytes.clone();
        damage.apply(&mut damaged);
        let _ = decode_key(&damaged);
    }
}
