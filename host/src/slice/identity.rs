//! What a sliced object is: the version its blocks belong to.
//!
//! A block is used only with the identity it was fetched under, so a
//! response is never stitched from two versions of an object: an origin
//! that changes its validator or length makes every block of the old
//! identity unusable at once.

use std::ops::RangeInclusive;

use http::header;
use pingora_http::ResponseHeader;

use super::range::Span;

/// The field, in a slice record's and each block's stored header, that
/// holds the identity's [`Identity::token`]. Never sent downstream.
pub const FIELD: &str = "stavka-slice";

/// What tells two versions of an object apart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Validator {
    /// A strong entity tag (RFC 9110 §8.8.3).
    Etag(String),
    /// `Last-Modified`, when there is no strong entity tag.
    LastModified(String),
}

/// One version of a sliced object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// Its validator.
    pub validator: Validator,
    /// Its complete length in bytes.
    pub length: u64,
    /// The size of its blocks (the last may be shorter).
    pub block: u64,
}

impl Identity {
    /// The identity `resp` (the origin's answer for the object, or a
    /// stored record) gives it, `length` bytes long in blocks of `block`.
    /// `None` for an empty object, or one without a strong `ETag` or a
    /// `Last-Modified`: blocks of two
    /// versions could not be told apart, so such an object is not sliced.
    pub fn of(resp: &ResponseHeader, length: u64, block: u64) -> Option<Identity> {
        let field = |name| {
            resp.headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let validator = match field(header::ETAG) {
            Some(etag) if !etag.starts_with("W/") => Validator::Etag(etag.to_owned()),
            _ => Validator::LastModified(field(header::LAST_MODIFIED)?.to_owned()),
        };
        (block > 0 && length > 0).then_some(Identity {
            validator,
            length,
            block,
        })
    }

    /// The identity a stored record's header names in [`FIELD`].
    pub fn recorded(resp: &ResponseHeader) -> Option<Identity> {
        let token = resp.headers.get(FIELD)?.to_str().ok()?;
        let (length, rest) = token.split_once('/')?;
        let (block, validator) = rest.split_once('/')?;
        let validator = match validator.split_at_checked(1)? {
            ("e", etag) => Validator::Etag(etag.to_owned()),
            ("m", date) => Validator::LastModified(date.to_owned()),
            _ => return None,
        };
        Some(Identity {
            validator,
            length: length.parse().ok()?,
            block: block.parse().ok().filter(|&b| b > 0)?,
        })
    }

    /// The token naming this identity, recorded in [`FIELD`]: two
    /// identities are the same exactly when their tokens are.
    pub fn token(&self) -> String {
        let (kind, value) = match &self.validator {
            Validator::Etag(etag) => ('e', etag),
            Validator::LastModified(date) => ('m', date),
        };
        format!("{}/{}/{kind}{value}", self.length, self.block)
    }

    /// How many blocks it has.
    pub fn blocks(&self) -> u64 {
        self.length.div_ceil(self.block)
    }

    /// The bytes of block `index`.
    pub fn block_span(&self, index: u64) -> Span {
        let start = index * self.block;
        Span {
            start,
            end: (start + self.block).min(self.length) - 1,
        }
    }

    /// The blocks holding `span`.
    pub fn covering(&self, span: Span) -> RangeInclusive<u64> {
        span.start / self.block..=span.end / self.block
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resp(fields: &[(&str, &str)]) -> ResponseHeader {
        let mut r = ResponseHeader::build(200, None).unwrap();
        for (n, v) in fields {
            r.append_header(n.to_string(), *v).unwrap();
        }
        r
    }

    #[test]
    fn strong_etag_else_last_modified_else_none() {
        let lm = "Sun, 06 Nov 1994 08:49:37 GMT";
        let strong = Identity::of(&resp(&[("etag", "\"a\""), ("last-modified", lm)]), 10, 4);
        assert_eq!(strong.unwrap().validator, Validator::Etag("\"a\"".into()));
        let weak = Identity::of(&resp(&[("etag", "W/\"a\""), ("last-modified", lm)]), 10, 4);
        assert_eq!(weak.unwrap().validator, Validator::LastModified(lm.into()));
        assert!(Identity::of(&resp(&[("etag", "W/\"a\"")]), 10, 4).is_none());
        assert!(Identity::of(&resp(&[]), 10, 4).is_none());
    }

    #[test]
    fn the_token_round_trips_and_tells_versions_apart() {
        let id = Identity::of(&resp(&[("etag", "\"x/y\"")]), 10_000, 4096).unwrap();
        let recorded = resp(&[(FIELD, &id.token())]);
        assert_eq!(Identity::recorded(&recorded), Some(id.clone()));
        let longer = Identity {
            length: 10_001,
            ..id.clone()
        };
        assert_ne!(longer.token(), id.token());
    }

    #[test]
    fn blocks_cover_spans_and_the_last_is_short() {
        let id = Identity {
            validator: Validator::Etag("\"a\"".into()),
            length: 10,
            block: 4,
        };
        assert_eq!(id.blocks(), 3);
        assert_eq!(id.block_span(2), Span { start: 8, end: 9 });
        assert_eq!(id.covering(Span { start: 3, end: 4 }), 0..=1);
        assert_eq!(id.covering(Span { start: 9, end: 9 }), 2..=2);
    }
}
