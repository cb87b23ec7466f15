//! What each stored object is: its primary key and its surrogate tags, so an
//! operator can find and purge objects by URL (every Vary variant), by key
//! prefix and by tag — which the hash-named files alone cannot answer.
//!
//! Three sharded maps, each behind its own locks:
//! - objects, by combined hash: the primary hash, variance and tags;
//! - primaries, by primary hash: the primary key bytes, user tag and the
//!   objects (variants) stored under it;
//! - tags, by tag: the objects carrying it.
//!
//! A mutation takes locks only in that order (object shard, then primary
//! shard, then tag shard) and a query holds one shard at a time, so there
//! is no deadlock and no global lock; a prefix scan walks one primary shard
//! at a time. The catalog is rebuilt from the meta files at start-up, like
//! the index.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use pingora_cache::key::{CacheHashKey, CompactCacheKey, HashBinary};

use crate::sharded::Sharded;

const SHARDS: usize = 16;
/// Tags kept per object; more are ignored (a response header cannot
/// sensibly carry more, and the catalog must stay bounded).
pub const MAX_TAGS: usize = 128;
/// Longest tag kept, in bytes; longer ones are ignored.
pub const MAX_TAG_LEN: usize = 256;

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

struct Object {
    primary: HashBinary,
    variance: Option<HashBinary>,
    tags: Box<[Arc<str>]>,
}

struct Primary {
    key: Box<[u8]>,
    user_tag: Box<str>,
    objects: Vec<HashBinary>,
}

/// The shard slot of an object or primary hash: its last byte, the low
/// bits of the `u128` the other maps shard on.
fn slot(hash: &HashBinary) -> usize {
    hash[15] as usize
}

fn tag_slot(tag: &str) -> usize {
    tag.bytes()
        .fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(b as usize))
}

/// The secondary index of stored objects.
pub struct Catalog {
    objects: Sharded<HashMap<HashBinary, Object>>,
    primaries: Sharded<HashMap<HashBinary, Primary>>,
    tags: Sharded<HashMap<Arc<str>, HashSet<HashBinary>>>,
}

impl Default for Catalog {
    fn default() -> Self {
        Catalog {
            objects: Sharded::new(SHARDS),
            primaries: Sharded::new(SHARDS),
            tags: Sharded::new(SHARDS),
        }
    }
}

impl Catalog {
    /// Record a committed object, replacing what was recorded for its hash.
    pub fn insert(&self, record: Record) {
        let hash = record.key.combined_bin();
        let mut objects = self.objects.lock(slot(&hash));
        if let Some(old) = objects.remove(&hash) {
            self.unlink(&hash, &old);
        }
        let primary = record.key.primary;
        self.primaries
            .lock(slot(&primary))
            .entry(primary)
            .or_insert_with(|| Primary {
                key: record.primary_key,
                user_tag: record.key.user_tag.clone(),
                objects: Vec::with_capacity(1),
            })
            .objects
            .push(hash);
        let tags = self.link_tags(&hash, &record.tags);
        objects.insert(
            hash,
            Object {
                primary,
                variance: record.key.variance.map(|v| *v),
                tags,
            },
        );
    }

    /// Forget `hash`'s object.
    pub fn remove(&self, hash: &HashBinary) {
        let mut objects = self.objects.lock(slot(hash));
        if let Some(old) = objects.remove(hash) {
            self.unlink(hash, &old);
        }
    }

    /// Replace `hash`'s tags (its response headers were rewritten).
    pub fn retag(&self, hash: &HashBinary, tags: Vec<Box<str>>) {
        let mut objects = self.objects.lock(slot(hash));
        if let Some(object) = objects.get_mut(hash) {
            self.unlink_tags(hash, &object.tags);
            object.tags = self.link_tags(hash, &tags);
        }
    }

    /// Add `hash` to each tag's set, sharing one allocation per tag name.
    /// Called with its object shard locked.
    fn link_tags(&self, hash: &HashBinary, tags: &[Box<str>]) -> Box<[Arc<str>]> {
        tags.iter()
            .map(|tag| {
                let mut shard = self.tags.lock(tag_slot(tag));
                let shared = match shard.get_key_value(&**tag) {
                    Some((shared, _)) => shared.clone(),
                    None => Arc::from(&**tag),
                };
                shard.entry(shared.clone()).or_default().insert(*hash);
                shared
            })
            .collect()
    }

    /// Remove `hash` from each tag's set, dropping sets left empty. Called
    /// with its object shard locked.
    fn unlink_tags(&self, hash: &HashBinary, tags: &[Arc<str>]) {
        for tag in tags {
            let mut shard = self.tags.lock(tag_slot(tag));
            if let Some(set) = shard.get_mut(&**tag) {
                set.remove(hash);
                if set.is_empty() {
                    shard.remove(&**tag);
                }
            }
        }
    }

    /// Drop `object`'s references from the primary and tag maps. Called
    /// with its object shard locked.
    fn unlink(&self, hash: &HashBinary, object: &Object) {
        let mut primaries = self.primaries.lock(slot(&object.primary));
        if let Some(primary) = primaries.get_mut(&object.primary) {
            primary.objects.retain(|h| h != hash);
            if primary.objects.is_empty() {
                primaries.remove(&object.primary);
            }
        }
        drop(primaries);
        self.unlink_tags(hash, &object.tags);
    }

    /// What is recorded for `hash`.
    pub fn get(&self, hash: &HashBinary) -> Option<Listed> {
        let (primary, variance, tags) = {
            let objects = self.objects.lock(slot(hash));
            let object = objects.get(hash)?;
            (object.primary, object.variance, object.tags.to_vec())
        };
        let primaries = self.primaries.lock(slot(&primary));
        let p = primaries.get(&primary)?;
        Some(Listed {
            key: CompactCacheKey {
                primary,
                variance: variance.map(Box::new),
                user_tag: p.user_tag.clone(),
            },
            primary_key: p.key.clone(),
            tags,
        })
    }

    /// The objects `selector` picks, as they are recorded now.
    pub fn select(&self, selector: Selector<'_>) -> Vec<Listed> {
        let hashes: Vec<HashBinary> = match selector {
            Selector::Primary(primary) => self
                .primaries
                .lock(slot(primary))
                .get(primary)
                .map(|p| p.objects.clone())
                .unwrap_or_default(),
            Selector::Prefix(prefix) => self
                .primaries
                .each()
                .flat_map(|shard| {
                    shard
                        .values()
                        .filter(|p| p.key.starts_with(prefix))
                        .flat_map(|p| p.objects.iter().copied())
                        .collect::<Vec<_>>()
                })
                .collect(),
            Selector::Tag(tag) => self
                .tags
                .lock(tag_slot(tag))
                .get(tag)
                .map(|set| set.iter().copied().collect())
                .unwrap_or_default(),
        };
        hashes.iter().filter_map(|h| self.get(h)).collect()
    }

    /// Objects recorded, and distinct tags.
    pub fn totals(&self) -> (usize, usize) {
        fn count<K, V>(shards: &Sharded<HashMap<K, V>>) -> usize {
            shards.each().map(|s| s.len()).sum()
        }
        (count(&self.objects), count(&self.tags))
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

    #[test]
    fn selects_variants_prefixes_and_tags() {
        let catalog = Catalog::default();
        catalog.insert(record("h/a", None, &["t1"]));
        catalog.insert(record("h/a", Some(1), &["t1", "t2"]));
        catalog.insert(record("h/a", Some(2), &[]));
        catalog.insert(record("h/b/c", None, &["t2"]));
        catalog.insert(record("g/a", None, &["t1"]));

        let primary = CacheKey::new("h/a", "site").primary_bin();
        assert_eq!(catalog.select(Selector::Primary(&primary)).len(), 3);
        assert_eq!(
            primaries(&catalog.select(Selector::Prefix(b"h/"))),
            ["h/a", "h/a", "h/a", "h/b/c"]
        );
        assert_eq!(
            primaries(&catalog.select(Selector::Tag("t1"))),
            ["g/a", "h/a", "h/a"]
        );
        assert_eq!(catalog.totals(), (5, 2));

        // Removing a variant leaves its siblings; removing the last drops
        // the primary and any tag nobody carries any more.
        let variant = record("h/a", Some(1), &[]).key.combined_bin();
        catalog.remove(&variant);
        assert_eq!(catalog.select(Selector::Primary(&primary)).len(), 2);
        assert_eq!(primaries(&catalog.select(Selector::Tag("t2"))), ["h/b/c"]);
        catalog.remove(&record("h/b/c", None, &[]).key.combined_bin());
        assert_eq!(catalog.totals(), (3, 1));
    }

    #[test]
    fn reinsert_and_retag_replace_tags() {
        let catalog = Catalog::default();
        let r = record("h/a", None, &["old"]);
        let hash = r.key.combined_bin();
        catalog.insert(r);
        catalog.insert(record("h/a", None, &["new"]));
        assert!(catalog.select(Selector::Tag("old")).is_empty());
        assert_eq!(catalog.select(Selector::Tag("new")).len(), 1);
        catalog.retag(&hash, vec!["newer".into()]);
        assert!(catalog.select(Selector::Tag("new")).is_empty());
        let listed = catalog.get(&hash).unwrap();
        assert_eq!(listed.tags, [Arc::from("newer")]);
        assert_eq!(listed.key.user_tag.as_ref(), "site");
        assert_eq!(catalog.totals(), (1, 1));
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
