//! The response header as the store keeps it: HTTP/1 text, a *head* (status
//! line, fields, empty line), not pingora's zstd-compressed header blob.
//!
//! pingora's `CacheMeta::serialize` compresses that same text with zstd on
//! every write, and `CacheMeta::deserialize` decompresses it on every read:
//! 4% of the CPU of a 1 KiB fill through the proxy, and the largest part of
//! decoding a hit read from disk. A response header is a few hundred bytes
//! that zstd, without a dictionary, barely shrinks; the store writes the
//! text as it is and parses it with `httparse`, the header's names and
//! values pointing into it.
//!
//! Readers take both forms. A head starts with `HTTP/` and a pingora blob
//! with zstd's magic number, so what earlier versions wrote (object files,
//! ring entries, shared-tier values) still reads. An earlier version
//! reading a head fails to decompress it: a rollback to one drops what this
//! version wrote to the disk (each such object is a miss, removed and
//! counted as corrupt), and an earlier node sharing the shared tier misses
//! on this one's values and overwrites them with its blobs, which read.

use bytes::Bytes;
use pingora_cache::CacheMeta;
use pingora_error::{Error, ErrorType, Result};
use pingora_http::ResponseHeader;

/// Header fields parsed without allocating slots; a head with more takes
/// one slot per line on the heap.
const FAST_FIELDS: usize = 64;

/// How every head begins, whatever the response's version.
const STATUS_LINE_START: &[u8] = b"HTTP/1.1 ";

/// The blobs to store for `meta`: pingora's internal blob and the head.
pub fn encode(meta: &CacheMeta) -> Result<(Vec<u8>, Vec<u8>)> {
    Ok((meta.serialize_internal()?, write(meta.response_header())))
}

/// `response` as a head: the text pingora's header blob compresses (its
/// status line always says `HTTP/1.1` and the canonical reason, which
/// decoding ignores), uncompressed.
pub fn write(response: &ResponseHeader) -> Vec<u8> {
    let mut head = Vec::with_capacity(256);
    head.extend_from_slice(STATUS_LINE_START);
    head.extend_from_slice(response.status.as_str().as_bytes());
    head.push(b' ');
    if let Some(reason) = response.status.canonical_reason() {
        head.extend_from_slice(reason.as_bytes());
    }
    head.extend_from_slice(b"\r\n");
    response.header_to_h1_wire(&mut head);
    head.extend_from_slice(b"\r\n");
    head
}

/// Whether `header` is a head rather than a pingora header blob.
pub fn is_head(header: &[u8]) -> bool {
    header.starts_with(b"HTTP/")
}

/// The meta of an `internal` blob and a `header` in either form.
pub fn decode(internal: &[u8], header: &[u8]) -> Result<CacheMeta> {
    if !is_head(header) {
        return CacheMeta::deserialize(internal, header);
    }
    meta(internal, &Bytes::copy_from_slice(header))
}

/// The meta of an `internal` blob and a `head`, whose buffer the header's
/// names and values share.
pub fn meta(internal: &[u8], head: &Bytes) -> Result<CacheMeta> {
    let response = parse(head).ok_or_else(|| {
        Error::explain(
            ErrorType::InternalError,
            "stored response header does not parse",
        )
    })?;
    CacheMeta::from_internal(internal, response)
}

/// The response header `head` holds, built as pingora's header decoding
/// builds it (the same leniency, the same normalised values); names and
/// values share `head`'s buffer. `None` if it does not parse.
///
/// Unlike pingora's decoding, which stops at 256 fields, any number of
/// fields reads: the host adds fields to an origin's header before it is
/// stored, and a header the store wrote but could not read would be a
/// corrupt entry, refetched and discarded on every request.
fn parse(head: &Bytes) -> Option<ResponseHeader> {
    let mut slots = [httparse::EMPTY_HEADER; FAST_FIELDS];
    match parse_with(head, &mut slots) {
        Err(httparse::Error::TooManyHeaders) => {
            // Every field ends a line: as many slots as lines are enough.
            let lines = head.iter().filter(|b| **b == b'\n').count();
            let mut slots = vec![httparse::EMPTY_HEADER; lines];
            parse_with(head, &mut slots).ok().flatten()
        }
        parsed => parsed.ok().flatten(),
    }
}

/// [`parse`] with `slots` for the fields: `Err` if `httparse` refuses the
/// head (too many fields among the reasons), `Ok(None)` if it is
/// incomplete or does not make a response header.
fn parse_with<'h>(
    head: &'h Bytes,
    slots: &mut [httparse::Header<'h>],
) -> Result<Option<ResponseHeader>, httparse::Error> {
    let mut parser = httparse::ParserConfig::default();
    // As pingora's header decoding: a header it accepted from an origin
    // must round-trip.
    parser.allow_spaces_after_header_name_in_responses(true);
    parser.allow_obsolete_multiline_headers_in_responses(true);
    let mut parsed = httparse::Response::new(slots);
    let httparse::Status::Complete(_) = parser.parse_response(&mut parsed, head)? else {
        return Ok(None);
    };
    let Some(status) = parsed.code else {
        return Ok(None);
    };
    let Ok(mut response) = ResponseHeader::build(status, Some(parsed.headers.len())) else {
        return Ok(None);
    };
    for field in parsed.headers.iter() {
        let value = pingora_http::header_value_from_raw(head.slice_ref(field.value));
        let name = head.slice_ref(field.name.as_bytes());
        if response.append_header(name, value).is_err() {
            return Ok(None);
        }
    }
    Ok(Some(response))
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;

    /// A meta of status `status` whose header has what origins send: names
    /// in mixed case, a name repeated, an empty value, bytes past ASCII,
    /// and `fields` more.
    fn meta_of(status: u16, fields: usize) -> CacheMeta {
        let mut header = ResponseHeader::build(status, None).unwrap();
        header.append_header("Content-Type", "text/plain").unwrap();
        header.append_header("x-Mixed-Case", "kept").unwrap();
        header.append_header("Set-Cookie", "a=1").unwrap();
        header.append_header("set-cookie", "b=2").unwrap();
        header.append_header("x-empty", "").unwrap();
        let opaque = http::HeaderValue::from_bytes(b"caf\xe9 \xff\tok").unwrap();
        header.append_header("x-opaque", opaque).unwrap();
        for i in 0..fields {
            header.append_header(format!("x-field-{i}"), i).unwrap();
        }
        let now = SystemTime::now();
        let mut meta = CacheMeta::new(now + Duration::from_secs(60), now, 5, 7, header);
        meta.set_variance([7u8; 16]);
        meta
    }

    fn meta(fields: usize) -> CacheMeta {
        meta_of(203, fields)
    }

    /// The decoded meta, compared through pingora's own serialization.
    fn same(a: &CacheMeta, b: &CacheMeta) {
        assert_eq!(a.serialize().unwrap(), b.serialize().unwrap());
        let wire = |m: &CacheMeta| {
            let mut out = Vec::new();
            m.response_header().header_to_h1_wire(&mut out);
            out
        };
        assert_eq!(wire(a), wire(b), "field names keep their case");
    }

    /// 300 fields: more than the fast path's slots, and more than the 256
    /// pingora's decoding stops at.
    #[test]
    fn a_head_decodes_to_the_meta_it_was_written_from() {
        for fields in [0, 3, FAST_FIELDS + 10, 300] {
            let original = meta(fields);
            let (internal, head) = encode(&original).unwrap();
            assert!(head.starts_with(b"HTTP/1.1 203 Non Authoritative Information\r\n"));
            same(&decode(&internal, &head).unwrap(), &original);
        }
    }

    #[test]
    fn statuses_without_a_standard_reason_and_revalidations_round_trip() {
        for status in [299, 599, 304, 103] {
            let original = meta_of(status, 0);
            let (internal, head) = encode(&original).unwrap();
            let decoded = decode(&internal, &head).unwrap();
            same(&decoded, &original);
            assert_eq!(decoded.response_header().status.as_u16(), status);
        }
    }

    #[test]
    fn pingora_header_blobs_written_before_still_decode() {
        let original = meta(3);
        let (internal, blob) = original.serialize().unwrap();
        assert!(!is_head(&blob));
        same(&decode(&internal, &blob).unwrap(), &original);
    }

    #[test]
    fn a_head_is_the_text_pingora_compresses() {
        let original = meta(3);
        let (internal, head) = encode(&original).unwrap();
        let (_, blob) = original.serialize().unwrap();
        let from_blob = CacheMeta::deserialize(&internal, &blob).unwrap();
        same(&decode(&internal, &head).unwrap(), &from_blob);
    }

    #[test]
    fn obsolete_line_folding_and_spaces_before_the_colon_are_taken_as_pingora_takes_them() {
        let head = Bytes::from_static(
            b"HTTP/1.1 200 OK\r\nx-folded: one\r\n two\r\nx-spaced : yes\r\n\r\n",
        );
        let response = parse(&head).unwrap();
        assert_eq!(response.headers["x-folded"], "one two");
        assert_eq!(response.headers["x-spaced"], "yes");
    }

    #[test]
    fn a_head_that_does_not_parse_is_an_error_not_a_panic() {
        let (internal, _) = encode(&meta(0)).unwrap();
        for bad in [
            &b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n"[..],
            b"HTTP/1.1 200 OK\r\nx-cut: off",
            b"HTTP/1.1 999999 What\r\n\r\n",
        ] {
            assert!(decode(&internal, bad).is_err(), "{bad:?}");
        }
    }
}
