//! The low-cardinality vocabulary of what happened to a request, shared by
//! metrics labels, the access log and `/stats`: one enum each, so renaming a
//! value changes every consumer at once.

/// What the cache did for a request, as a `cache_status` metric label and
/// the access log's `outcome`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A fresh entry served.
    Hit,
    /// A stale entry served (while revalidating, or because the origin failed).
    Stale,
    /// Nothing usable was stored; the origin answered.
    Miss,
    /// The stored entry was stale and was refetched.
    Expired,
    /// The stored entry was stale and the origin confirmed it with a 304.
    Revalidated,
    /// The request waited for another request's fetch of the same object.
    Collapsed,
    /// The cache was not used for this request.
    Bypass,
    /// The origin failed or answered a server error.
    Error,
    /// Answered by this proxy without a cache lookup or the origin.
    Local,
    /// No site serves the request's host.
    UnknownHost,
}

impl Outcome {
    /// Every outcome, in the order metrics handles are indexed by.
    pub const ALL: [Outcome; 10] = [
        Outcome::Hit,
        Outcome::Stale,
        Outcome::Miss,
        Outcome::Expired,
        Outcome::Revalidated,
        Outcome::Collapsed,
        Outcome::Bypass,
        Outcome::Error,
        Outcome::Local,
        Outcome::UnknownHost,
    ];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Hit => "hit",
            Outcome::Stale => "stale",
            Outcome::Miss => "miss",
            Outcome::Expired => "expired",
            Outcome::Revalidated => "revalidated",
            Outcome::Collapsed => "collapsed",
            Outcome::Bypass => "bypass",
            Outcome::Error => "error",
            Outcome::Local => "local",
            Outcome::UnknownHost => "unknown-host",
        }
    }

    /// The outcome whose label is `label`, for reading metrics back.
    pub fn from_label(label: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == label)
    }

    /// This outcome's position in [`Outcome::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// Answered from the cache without the origin's body: the hit ratio's
    /// numerator.
    pub fn served_from_cache(self) -> bool {
        matches!(self, Outcome::Hit | Outcome::Stale | Outcome::Collapsed)
    }

    /// Looked in the cache: the hit ratio's denominator.
    pub fn looked_up(self) -> bool {
        self.served_from_cache()
            || matches!(
                self,
                Outcome::Miss | Outcome::Expired | Outcome::Revalidated
            )
    }
}

/// Where the bytes of a response came from, as the `source` metric label.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The cache.
    Cache,
    /// The origin, through this proxy.
    Origin,
    /// Generated here: errors and synthetic answers.
    Local,
}

impl Source {
    /// Every source, in the order metrics handles are indexed by.
    pub const ALL: [Source; 3] = [Source::Cache, Source::Origin, Source::Local];

    /// Its position in [`Source::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Cache => "cache",
            Source::Origin => "origin",
            Source::Local => "local",
        }
    }

    /// The source whose label is `label`, for reading metrics back.
    pub fn from_label(label: &str) -> Option<Source> {
        Source::ALL.into_iter().find(|s| s.as_str() == label)
    }
}

/// What a cache lookup found, as the `result` label of
/// `stavka_cache_lookups_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lookup {
    /// A fresh entry.
    Hit,
    /// A stale entry (served stale, revalidated or refetched).
    Stale,
    /// Nothing usable.
    Miss,
}

impl Lookup {
    /// Every result, in the order metrics handles are indexed by.
    pub const ALL: [Lookup; 3] = [Lookup::Hit, Lookup::Stale, Lookup::Miss];

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Lookup::Hit => "hit",
            Lookup::Stale => "stale",
            Lookup::Miss => "miss",
        }
    }
}

/// What happened to one block of a sliced object, as the `result` label
/// of `stavka_slice_blocks_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Block {
    /// Served from the store.
    Hit,
    /// Missing, fetched from the origin for the request that needed it.
    Fetched,
    /// Fetched past the end of a range, for the next request.
    ReadAhead,
    /// A read-ahead block read by a request for the first time; the
    /// read-ahead blocks never read are `ReadAhead` less these.
    ReadAheadRead,
    /// Fetched, but not stored (the store refused, or the object may not
    /// be stored).
    Unstored,
}

impl Block {
    /// Every result, in the order metric handles are indexed by.
    pub const ALL: [Block; 5] = [
        Block::Hit,
        Block::Fetched,
        Block::ReadAhead,
        Block::ReadAheadRead,
        Block::Unstored,
    ];

    /// Its position in [`Block::ALL`], which metric handles are indexed by.
    pub fn index(self) -> usize {
        self as usize
    }

    /// The label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Block::Hit => "hit",
            Block::Fetched => "fetched",
            Block::ReadAhead => "read-ahead",
            Block::ReadAheadRead => "read-ahead-read",
            Block::Unstored => "unstored",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn all_is_indexed_by_discriminant_and_labels_round_trip() {
        for (i, o) in Outcome::ALL.into_iter().enumerate() {
            assert_eq!(o.index(), i);
            assert_eq!(Outcome::from_label(o.as_str()), Some(o));
        }
        for (i, s) in Source::ALL.into_iter().enumerate() {
            assert_eq!(s as usize, i);
            assert_eq!(Source::from_label(s.as_str()), Some(s));
        }
        for (i, l) in Lookup::ALL.into_iter().enumerate() {
            assert_eq!(l as usize, i);
        }
        for (i, b) in Block::ALL.into_iter().enumerate() {
            assert_eq!(b.index(), i);
        }
    }
}
