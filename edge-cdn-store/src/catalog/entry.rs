//! How the catalog's records are laid out in its database: one value per
//! object, and the keys of the three indexes that point at it.
//!
//! - `objects`: combined hash → the object's [`Entry`].
//! - `primaries`: primary key bytes ‖ combined hash → nothing. Ordered by
//!   key bytes, so a prefix purge is one range scan.
//! - `variants`: primary hash ‖ combined hash → nothing: every Vary
//!   variant of a URL.
//! - `tags`: tag ‖ NUL ‖ combined hash → a copy of the object's entry, so
//!   a tag's selection reads nothing else (an object's tags are few; a
//!   tag's objects may be a hundred thousand). Tags never hold NUL (a
//!   header value cannot), and a key's length is checked against its
//!   tag's anyway, so one tag's scan never reaches another's entries.
//!
//! The value's integers are little-endian; every length is bounded by what
//! the store accepts (`MAX_TAGS`, `MAX_TAG_LEN`, a user tag under 64 KiB).

use pingora_cache::key::{CompactCacheKey, HashBinary};

use super::{Listed, Record};

/// Bytes of a combined or primary hash.
const HASH: usize = 16;

/// An object as the `objects` keyspace holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key the eviction manager and purges use.
    pub key: CompactCacheKey,
    /// The primary key bytes.
    pub primary_key: Box<[u8]>,
    /// Its surrogate tags, without duplicates.
    pub tags: Vec<Box<str>>,
}

impl From<Record> for Entry {
    /// The record, its tags' duplicates dropped.
    fn from(record: Record) -> Entry {
        Entry {
            key: record.key,
            primary_key: record.primary_key,
            tags: distinct(record.tags),
        }
    }
}

/// `tags` without their duplicates, in order: an object carries a tag
/// once, whatever its headers repeat.
pub fn distinct(tags: Vec<Box<str>>) -> Vec<Box<str>> {
    let mut out: Vec<Box<str>> = Vec::with_capacity(tags.len());
    for tag in tags {
        if !out.contains(&tag) {
            out.push(tag);
        }
    }
    out
}

impl Entry {
    /// Encode as the `objects` value.
    pub fn encode(&self) -> Vec<u8> {
        let tags: usize = self.tags.iter().map(|t| 2 + t.len()).sum();
        let mut out =
            Vec::with_capacity(40 + self.key.user_tag.len() + self.primary_key.len() + tags);
        out.extend_from_slice(&self.key.primary);
        match &self.key.variance {
            Some(v) => {
                out.push(1);
                out.extend_from_slice(v.as_ref());
            }
            None => out.push(0),
        }
        put_short(&mut out, self.key.user_tag.as_bytes());
        out.extend_from_slice(&(self.primary_key.len() as u32).to_le_bytes());
        out.extend_from_slice(&self.primary_key);
        out.extend_from_slice(&(self.tags.len() as u16).to_le_bytes());
        for tag in &self.tags {
            put_short(&mut out, tag.as_bytes());
        }
        out
    }

    /// Decode an `objects` value; `None` if it is not one.
    pub fn decode(bytes: &[u8]) -> Option<Entry> {
        let mut r = Reader(bytes);
        let primary = r.hash()?;
        let variance = match r.take(1)?[0] {
            0 => None,
            1 => Some(Box::new(r.hash()?)),
            _ => return None,
        };
        let user_tag = std::str::from_utf8(r.short()?).ok()?.into();
        let len = u32::from_le_bytes(r.take(4)?.try_into().ok()?) as usize;
        let primary_key = r.take(len)?.into();
        let count = u16::from_le_bytes(r.take(2)?.try_into().ok()?);
        let tags = (0..count)
            .map(|_| Some(std::str::from_utf8(r.short()?).ok()?.into()))
            .collect::<Option<Vec<Box<str>>>>()?;
        r.0.is_empty().then_some(Entry {
            key: CompactCacheKey {
                primary,
                variance,
                user_tag,
            },
            primary_key,
            tags,
        })
    }

    /// The `primaries` key.
    pub fn primary_entry(&self, hash: &HashBinary) -> Vec<u8> {
        [&self.primary_key[..], hash].concat()
    }

    /// The `variants` key.
    pub fn variant_entry(&self, hash: &HashBinary) -> Vec<u8> {
        [&self.key.primary[..], hash].concat()
    }

    /// As a selection returns it.
    pub fn listed(self) -> Listed {
        Listed {
            key: self.key,
            primary_key: self.primary_key,
            tags: self.tags.into_iter().map(Into::into).collect(),
        }
    }
}

/// The `tags` key of `hash` under `tag`.
pub fn tag_entry(tag: &str, hash: &HashBinary) -> Vec<u8> {
    [tag.as_bytes(), &[0], hash].concat()
}

/// The prefix every `tags` key of `tag` starts with.
pub fn tag_prefix(tag: &str) -> Vec<u8> {
    [tag.as_bytes(), &[0]].concat()
}

/// The combined hash an index key ends with, if `key` is `prefix_len`
/// bytes of prefix and then exactly one hash.
pub fn hash_after(key: &[u8], prefix_len: usize) -> Option<HashBinary> {
    (key.len() == prefix_len + HASH)
        .then(|| key[prefix_len..].try_into().ok())
        .flatten()
}

/// The combined hash a `primaries` key ends with, if its key bytes start
/// with `prefix`.
pub fn primary_match(key: &[u8], prefix: &[u8]) -> Option<HashBinary> {
    let split = key.len().checked_sub(HASH)?;
    if split < prefix.len() || !key.starts_with(prefix) {
        return None;
    }
    key[split..].try_into().ok()
}

fn put_short(out: &mut Vec<u8>, bytes: &[u8]) {
    let bytes = &bytes[..bytes.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(bytes.len() as u16).to_le_bytes());
    out.extend_from_slice(bytes);
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.0.len() < n {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }

    fn hash(&mut self) -> Option<HashBinary> {
        self.take(HASH)?.try_into().ok()
    }

    fn short(&mut self) -> Option<&'a [u8]> {
        let len = u16::from_le_bytes(self.take(2)?.try_into().ok()?) as usize;
        self.take(len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_reject_truncation() {
        let entry = Entry {
            key: CompactCacheKey {
                primary: [1; 16],
                variance: Some(Box::new([2; 16])),
                user_tag: "site".into(),
            },
            primary_key: b"site\0host\0/a"[..].into(),
            tags: vec!["red".into(), "blue".into()],
        };
        let bytes = entry.encode();
        assert_eq!(Entry::decode(&bytes), Some(entry.clone()));
        for len in 0..bytes.len() {
            assert_eq!(Entry::decode(&bytes[..len]), None, "{len} bytes");
        }
        assert_eq!(Entry::decode(&[bytes.clone(), vec![0]].concat()), None);
        let bare = Entry {
            key: CompactCacheKey {
                variance: None,
                ..entry.key
            },
            tags: Vec::new(),
            ..entry
        };
        assert_eq!(Entry::decode(&bare.encode()), Some(bare));
    }

    #[test]
    fn index_keys_match_only_their_own_prefix() {
        let hash = [7u8; 16];
        let key = [&b"h/a"[..], &hash].concat();
        assert_eq!(primary_match(&key, b"h/"), Some(hash));
        assert_eq!(primary_match(&key, b"h/a"), Some(hash));
        // The prefix runs into the hash: not a match.
        assert_eq!(primary_match(&key, b"h/a\x07"), None);
        let tagged = tag_entry("red", &hash);
        assert_eq!(hash_after(&tagged, tag_prefix("red").len()), Some(hash));
        assert_eq!(hash_after(&tagged, tag_prefix("re").len()), None);
    }
}
