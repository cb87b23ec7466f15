//! Decisions kept for reuse: a hook call that read only fields of its
//! request (and response) and used nothing else is a pure function of
//! what it read, so a later call whose request agrees on every one of
//! those fields gets the same outcome without entering the guest.
//!
//! A guest's first read does not depend on anything, and each later read
//! depends only on the values read before it, so the fields one call read
//! (its *shape*) and their values identify the execution: two calls that
//! agree on a shape's values ran alike. A lookup tries each shape the hook
//! has been seen to read (a handful) against the request.
//!
//! One memo belongs to one loaded module version, so a new version starts
//! empty. It is bounded: a shard that fills is emptied.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher};
use std::sync::{Arc, Mutex};

use foldhash::quality::RandomState;

use arc_swap::ArcSwap;
use http::HeaderMap;

use super::request::RequestView;
use super::trace::{Field, Reads};

/// Shapes kept per hook; a call with another is not kept.
const MAX_SHAPES: usize = 16;
/// Shards, so calls on different cores rarely share a lock.
const SHARDS: usize = 8;
/// Outcomes kept per shard: 4,096 per hook in all.
const PER_SHARD: usize = 512;

/// The kept outcomes of one hook of one module version.
pub struct Memo<T> {
    shapes: ArcSwap<Vec<Arc<[Field]>>>,
    shards: [Mutex<Shard<T>>; SHARDS],
    /// Seeded per memo: requests choose the values hashed, so their
    /// hashes must not be predictable.
    hasher: RandomState,
}

/// One shard's outcomes, by the hash of their shape, arguments and values.
type Shard<T> = HashMap<u64, Vec<Kept<T>>, BuildHasherDefault<Prehashed>>;

/// The hasher of a map whose keys are already seeded hashes: the key is
/// its own hash, instead of being hashed again.
#[derive(Default)]
struct Prehashed(u64);

impl Hasher for Prehashed {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// One kept outcome: the shape it was read with, the hook's own arguments
/// (a response status, an entry), and each field's value.
struct Kept<T> {
    shape: usize,
    args: Box<str>,
    values: Box<[Option<Box<str>>]>,
    outcome: T,
}

impl<T: Clone> Default for Memo<T> {
    fn default() -> Self {
        Memo {
            shapes: ArcSwap::default(),
            shards: std::array::from_fn(|_| Mutex::default()),
            hasher: RandomState::default(),
        }
    }
}

impl<T: Clone> Memo<T> {
    /// The outcome kept for a call with `args` on `request`/`response`.
    pub fn get(
        &self,
        args: &str,
        request: Option<RequestView<'_>>,
        response: Option<&HeaderMap>,
    ) -> Option<T> {
        let shapes = self.shapes.load();
        // The values are read twice (to hash, then to compare on a hash
        // hit) rather than collected: a lookup allocates nothing.
        let value = |f: &Field| f.value_ref(request, response);
        for (index, shape) in shapes.iter().enumerate() {
            let hash = self.hash(index, args, shape.iter().map(value));
            let shard = self.shard(hash);
            let found = shard.get(&hash).and_then(|kept| {
                kept.iter().find(|k| {
                    k.shape == index
                        && &*k.args == args
                        && k.values.len() == shape.len()
                        && k.values
                            .iter()
                            .zip(shape.iter())
                            .all(|(kept, f)| kept.as_deref() == value(f).as_deref())
                })
            });
            if let Some(found) = found {
                return Some(found.outcome.clone());
            }
        }
        None
    }

    /// Keep `outcome` of a pure call with `args` that read `reads`.
    pub fn put(&self, args: &str, reads: Reads, outcome: &T) {
        let mut fields: Vec<Field> = Vec::with_capacity(reads.len());
        let mut values: Vec<Option<Box<str>>> = Vec::with_capacity(reads.len());
        for (field, value) in reads {
            // A field read twice is one input.
            if !fields.contains(&field) {
                fields.push(field);
                values.push(value.map(String::into_boxed_str));
            }
        }
        let Some(shape) = self.shape_index(&fields) else {
            return;
        };
        let hash = self.hash(shape, args, values.iter().map(Option::as_deref));
        let mut shard = self.shard(hash);
        if shard.len() >= PER_SHARD {
            shard.clear();
        }
        let kept = shard.entry(hash).or_default();
        if !kept
            .iter()
            .any(|k| k.shape == shape && &*k.args == args && k.values[..] == values[..])
        {
            kept.push(Kept {
                shape,
                args: args.into(),
                values: values.into_boxed_slice(),
                outcome: outcome.clone(),
            });
        }
    }

    /// Outcomes kept, for listings and tests.
    pub fn kept(&self) -> usize {
        self.shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .values()
                    .map(Vec::len)
                    .sum::<usize>()
            })
            .sum()
    }

    /// The index of `fields` among the shapes, added if there is room.
    fn shape_index(&self, fields: &[Field]) -> Option<usize> {
        let mut found = None;
        self.shapes.rcu(|shapes| {
            if let Some(i) = shapes.iter().position(|s| &s[..] == fields) {
                found = Some(i);
                return Arc::clone(shapes);
            }
            if shapes.len() >= MAX_SHAPES {
                found = None;
                return Arc::clone(shapes);
            }
            found = Some(shapes.len());
            let mut more = Vec::clone(shapes);
            more.push(fields.into());
            Arc::new(more)
        });
        found
    }

    /// The hash of a shape's values; `V` is any string type (they all hash
    /// as `str`, so a kept value and a looked-up one agree).
    fn hash<V: AsRef<str>>(
        &self,
        shape: usize,
        args: &str,
        values: impl Iterator<Item = Option<V>>,
    ) -> u64 {
        let mut h = self.hasher.build_hasher();
        shape.hash(&mut h);
        args.hash(&mut h);
        for v in values {
            v.as_ref().map(AsRef::as_ref).hash(&mut h);
        }
        h.finish()
    }

    /// The shard of `hash`, chosen by its middle bits: the map inside
    /// takes its buckets from the low bits and its tags from the top ones.
    fn shard(&self, hash: u64) -> std::sync::MutexGuard<'_, Shard<T>> {
        self.shards[(hash >> 32) as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::super::request::Request;
    use super::*;

    fn request(path: &str, cookie: Option<&str>) -> Request {
        let mut headers = HeaderMap::new();
        if let Some(c) = cookie {
            headers.insert("cookie", c.parse().unwrap());
        }
        Request {
            method: "GET".into(),
            path: path.into(),
            client_addr: Some([192, 0, 2, 1].into()),
            headers,
            ..Request::default()
        }
    }

    fn reads(req: &Request, fields: &[Field]) -> Reads {
        fields
            .iter()
            .map(|f| (f.clone(), f.value(Some(req.view()), None)))
            .collect()
    }

    #[test]
    fn a_decision_is_reused_only_for_requests_that_agree_on_what_it_read() {
        let memo = Memo::<String>::default();
        let a = request("/a", Some("x=1"));
        memo.put("", reads(&a, &[Field::Path]), &"for /a".to_owned());
        // Another client, another cookie: the call did not read them.
        let other = Request {
            client_addr: Some([198, 51, 100, 9].into()),
            ..request("/a", Some("x=2"))
        };
        assert_eq!(
            memo.get("", Some(other.view()), None).as_deref(),
            Some("for /a")
        );
        assert_eq!(memo.get("", Some(request("/b", None).view()), None), None);
        // The hook's own arguments are part of the input.
        assert_eq!(memo.get("304", Some(a.view()), None), None);
    }

    #[test]
    fn each_shape_is_its_own_input() {
        let memo = Memo::<String>::default();
        let cookie = Field::header(false, "Cookie").unwrap();
        let a = request("/account", Some("s=1"));
        memo.put(
            "",
            reads(&a, &[Field::Path, cookie.clone()]),
            &"s=1".to_owned(),
        );
        let b = request("/static/x", None);
        memo.put("", reads(&b, &[Field::Path]), &"static".to_owned());
        assert_eq!(memo.get("", Some(a.view()), None).as_deref(), Some("s=1"));
        assert_eq!(
            memo.get("", Some(request("/account", Some("s=2")).view()), None),
            None,
            "the cookie was read for /account"
        );
        assert_eq!(
            memo.get("", Some(request("/static/x", Some("s=2")).view()), None)
                .as_deref(),
            Some("static")
        );
        // A missing header is a value too.
        assert_eq!(
            memo.get("", Some(request("/account", None).view()), None),
            None
        );
    }

    #[test]
    fn a_field_read_twice_is_one_input_and_the_memo_is_bounded() {
        let memo = Memo::<usize>::default();
        let a = request("/a", None);
        memo.put("", reads(&a, &[Field::Path, Field::Path]), &1);
        assert_eq!(memo.get("", Some(a.view()), None), Some(1));
        for i in 0..20_000 {
            let r = request(&format!("/{i}"), None);
            memo.put("", reads(&r, &[Field::Path]), &i);
        }
        assert!(memo.kept() <= SHARDS * PER_SHARD, "{}", memo.kept());
        for i in 0..(MAX_SHAPES + 4) {
            let name = format!("x-{i}");
            memo.put("", reads(&a, &[Field::header(false, &name).unwrap()]), &i);
        }
        assert_eq!(memo.shapes.load().len(), MAX_SHAPES);
    }
}
