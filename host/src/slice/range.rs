//! Byte ranges (RFC 9110 §14): what a client's `Range` asks for, what it
//! comes to against a known length, and an origin's `Content-Range`.

/// One range a client asked for, before the length is known
/// (RFC 9110 §14.1.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Spec {
    /// `first-last` or `first-`.
    From {
        /// The first byte.
        first: u64,
        /// The last byte, inclusive; to the end when absent.
        last: Option<u64>,
    },
    /// `-n`: the last `n` bytes.
    Suffix(u64),
}

/// What a request's `Range` field asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requested {
    /// The whole representation: no `Range`, one this server ignores (not
    /// `bytes`, invalid — RFC 9110 §14.2), or more than one range, which
    /// stavka answers with the whole representation as §14.2 allows
    /// rather than with `multipart/byteranges`.
    Whole,
    /// One byte range.
    One(Spec),
}

/// Bytes `start..=end` of a representation; never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    /// The first byte.
    pub start: u64,
    /// The last byte, inclusive.
    pub end: u64,
}

impl Span {
    /// All of a representation of `length` bytes; `None` when it is empty.
    pub fn whole(length: u64) -> Option<Span> {
        length.checked_sub(1).map(|end| Span { start: 0, end })
    }

    /// How many bytes it holds.
    pub fn size(self) -> u64 {
        self.end - self.start + 1
    }
}

/// Parse a `Range` field value.
pub fn requested(value: &[u8]) -> Requested {
    let Ok(text) = std::str::from_utf8(value) else {
        return Requested::Whole;
    };
    let Some((unit, set)) = text.split_once('=') else {
        return Requested::Whole;
    };
    if !unit.trim().eq_ignore_ascii_case("bytes") {
        return Requested::Whole;
    }
    let mut specs = set.split(',').map(str::trim).filter(|s| !s.is_empty());
    let (Some(one), None) = (specs.next(), specs.next()) else {
        return Requested::Whole;
    };
    spec(one).map_or(Requested::Whole, Requested::One)
}

fn spec(text: &str) -> Option<Spec> {
    let (first, last) = text.split_once('-')?;
    if first.is_empty() {
        return digits(last).map(Spec::Suffix);
    }
    let first = digits(first)?;
    let last = match last {
        "" => None,
        last => Some(digits(last)?).filter(|&l| l >= first),
    };
    if last.is_none() && !text.ends_with('-') {
        return None;
    }
    Some(Spec::From { first, last })
}

/// 1*DIGIT, within u64.
fn digits(text: &str) -> Option<u64> {
    if text.is_empty() || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

impl Spec {
    /// The bytes this range selects of a representation of `len` bytes, or
    /// `None` when it is unsatisfiable (RFC 9110 §14.1.1: a first byte at
    /// or past the end, a zero-length suffix, an empty representation).
    pub fn resolve(self, len: u64) -> Option<Span> {
        let last = len.checked_sub(1)?;
        match self {
            Spec::From { first, last: end } if first <= last => Some(Span {
                start: first,
                end: end.map_or(last, |e| e.min(last)),
            }),
            Spec::From { .. } | Spec::Suffix(0) => None,
            Spec::Suffix(n) => Some(Span {
                start: len.saturating_sub(n),
                end: last,
            }),
        }
    }
}

/// An origin's `Content-Range: bytes first-last/complete`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ContentRange {
    /// The bytes the response carries.
    pub span: Span,
    /// The complete length, when the origin said (`*` otherwise).
    pub complete: Option<u64>,
}

/// Parse a `Content-Range` field value (RFC 9110 §14.4); `None` for
/// anything but a satisfied byte range whose last byte is inside the
/// complete length.
pub fn content_range(value: &[u8]) -> Option<ContentRange> {
    let text = std::str::from_utf8(value).ok()?.trim();
    let (unit, rest) = text.split_once(' ')?;
    if !unit.eq_ignore_ascii_case("bytes") {
        return None;
    }
    let (range, complete) = rest.trim().split_once('/')?;
    let (first, last) = range.split_once('-')?;
    let span = Span {
        start: digits(first)?,
        end: digits(last)?,
    };
    let complete = match complete {
        "*" => None,
        n => Some(digits(n)?),
    };
    if span.end < span.start || complete.is_some_and(|c| span.end >= c) {
        return None;
    }
    Some(ContentRange { span, complete })
}

/// The field value for bytes `span` of `complete`.
pub fn content_range_value(span: Span, complete: u64) -> String {
    format!("bytes {}-{}/{complete}", span.start, span.end)
}

/// The field value of a 416's `Content-Range` (RFC 9110 §15.5.17).
pub fn unsatisfied_value(complete: u64) -> String {
    format!("bytes */{complete}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn one(first: u64, last: Option<u64>) -> Requested {
        Requested::One(Spec::From { first, last })
    }

    #[test]
    fn rfc9110_14_1_2_range_forms() {
        assert_eq!(requested(b"bytes=0-499"), one(0, Some(499)));
        assert_eq!(requested(b"bytes=500-"), one(500, None));
        assert_eq!(requested(b"bytes=-500"), Requested::One(Spec::Suffix(500)));
        assert_eq!(requested(b"Bytes = 5-5"), one(5, Some(5)));
        for ignored in [
            &b"items=0-1"[..],
            b"bytes=5-4",
            b"bytes=a-",
            b"bytes=-",
            b"bytes=1",
            b"bytes=0-1,5-6",
            b"bytes=",
            b"bytes=+1-2",
            b"bytes=99999999999999999999-",
            b"\xff",
        ] {
            assert_eq!(requested(ignored), Requested::Whole, "{ignored:?}");
        }
    }

    #[test]
    fn rfc9110_14_1_1_resolution() {
        let span = |start, end| Some(Span { start, end });
        let from = |first, last| Spec::From { first, last };
        assert_eq!(from(0, Some(499)).resolve(1000), span(0, 499));
        assert_eq!(from(900, Some(5000)).resolve(1000), span(900, 999));
        assert_eq!(from(999, None).resolve(1000), span(999, 999));
        assert_eq!(from(1000, None).resolve(1000), None);
        assert_eq!(Spec::Suffix(1).resolve(1000), span(999, 999));
        assert_eq!(Spec::Suffix(5000).resolve(1000), span(0, 999));
        assert_eq!(Spec::Suffix(0).resolve(1000), None);
        assert_eq!(from(0, None).resolve(0), None);
    }

    #[test]
    fn rfc9110_14_4_content_range() {
        assert_eq!(
            content_range(b"bytes 0-9/100"),
            Some(ContentRange {
                span: Span { start: 0, end: 9 },
                complete: Some(100)
            })
        );
        assert_eq!(
            content_range(b"bytes 5-9/*").map(|c| c.complete),
            Some(None)
        );
        for bad in [
            &b"bytes 9-5/100"[..],
            b"bytes 0-100/100",
            b"bytes */100",
            b"items 0-1/2",
            b"bytes 0-1",
        ] {
            assert_eq!(content_range(bad), None, "{bad:?}");
        }
    }

    proptest! {
        /// Whatever a client sends, a resolved span lies inside the
        /// representation and is not empty.
        #[test]
        fn resolved_spans_are_inside(value in "bytes=[0-9]{0,4}-[0-9]{0,4}", len in 0u64..20_000) {
            if let Requested::One(spec) = requested(value.as_bytes()) {
                if let Some(span) = spec.resolve(len) {
                    prop_assert!(span.start <= span.end);
                    prop_assert!(span.end < len);
                }
            }
        }
    }
}
