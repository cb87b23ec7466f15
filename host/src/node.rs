//! This process's identity among the nodes of a deployment: what the
//! purge bus signs its messages with and what the `CDN-Loop` entry it
//! adds to forwarded requests names (RFC 8586), so a request that comes
//! back to this node is recognised as a loop.

use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use http::{HeaderName, HeaderValue};
use pingora_http::RequestHeader;

static ID: OnceLock<String> = OnceLock::new();

/// The `CDN-Loop` field (RFC 8586 §2).
pub static CDN_LOOP: HeaderName = HeaderName::from_static("cdn-loop");

/// The cdn-id of stavka's entries; the node is a parameter of it.
const CDN_ID: &str = "stavka";

/// Name this node `configured` (`[shared] node_id`), or, without one, by
/// host name, process id and start time. The first call wins; later ones
/// return the name already set. A character a quoted string cannot carry
/// (only a host name could hold one: a configured `node_id` is checked)
/// becomes `-`.
pub fn init(configured: Option<&str>) -> &'static str {
    ID.get_or_init(|| {
        configured
            .map_or_else(unique, str::to_owned)
            .chars()
            .map(|c| if is_quotable(c) { c } else { '-' })
            .collect()
    })
}

/// Whether `c` may stand in a node name: visible ASCII that a quoted
/// string (RFC 9110 §5.6.4) carries without escaping.
pub fn is_quotable(c: char) -> bool {
    c.is_ascii_graphic() && c != '"' && c != '\\'
}

/// This node's name (set by [`init`] at start, else a unique one).
pub fn id() -> &'static str {
    init(None)
}

/// Host name, process id and start time: unique per process.
fn unique() -> String {
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "stavka".to_owned());
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_nanos();
    format!("{host}-{}-{:x}", std::process::id(), nanos & 0xffff_ffff)
}

/// Whether `req` has already passed through node `id`: a `CDN-Loop` entry
/// `stavka; node=<id>` (the node quoted or not).
pub fn looped(req: &RequestHeader, id: &str) -> bool {
    req.headers
        .get_all(&CDN_LOOP)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|info| {
            let mut parts = info.split(';').map(str::trim);
            parts
                .next()
                .is_some_and(|cdn| cdn.eq_ignore_ascii_case(CDN_ID))
                && parts.any(|param| {
                    param.split_once('=').is_some_and(|(name, value)| {
                        name.trim().eq_ignore_ascii_case("node")
                            && value.trim().trim_matches('"') == id
                    })
                })
        })
}

/// Add this node's entry to `req`'s `CDN-Loop`, after those already
/// there (RFC 8586 §2: intermediaries append, and never remove). The entry
/// is made once: every forwarded request carries it.
pub fn mark(req: &mut RequestHeader) -> pingora_error::Result<()> {
    static OWN: OnceLock<HeaderValue> = OnceLock::new();
    append(req, OWN.get_or_init(|| entry(id())))
}

/// The entry naming node `id`: `stavka; node="<id>"`. [`init`] makes
/// every node name quotable, so the fallback (the bare cdn-id) is never
/// taken for this node's own entry.
fn entry(id: &str) -> HeaderValue {
    let value = format!("{CDN_ID}; node=\"{id}\"");
    HeaderValue::from_str(&value).unwrap_or_else(|_| HeaderValue::from_static(CDN_ID))
}

/// Append `entry` to `req`'s `CDN-Loop`.
fn append(req: &mut RequestHeader, entry: &HeaderValue) -> pingora_error::Result<()> {
    let value = match req.headers.get(&CDN_LOOP).map(HeaderValue::as_bytes) {
        Some(before) if !before.trim_ascii().is_empty() => {
            let joined = [before, b", ", entry.as_bytes()].concat();
            HeaderValue::from_bytes(&joined).map_err(|e| {
                pingora_error::Error::because(
                    pingora_error::ErrorType::InvalidHTTPHeader,
                    "CDN-Loop",
                    e,
                )
            })?
        }
        _ => entry.clone(),
    };
    req.insert_header(CDN_LOOP.clone(), value)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_of_this_node_is_a_loop_and_others_are_not_rfc8586() {
        let mut req = RequestHeader::build("GET", b"/", None).unwrap();
        assert!(!looped(&req, "edge-1"));
        req.insert_header("cdn-loop", "foo123.foocdn.example, barcdn; abc=123")
            .unwrap();
        append(&mut req, &entry("edge-1")).unwrap();
        assert_eq!(
            req.headers["cdn-loop"],
            "foo123.foocdn.example, barcdn; abc=123, stavka; node=\"edge-1\""
        );
        assert!(looped(&req, "edge-1"));
        assert!(!looped(&req, "shield-1"), "another node of ours");
        let mut other = RequestHeader::build("GET", b"/", None).unwrap();
        other
            .insert_header("cdn-loop", "Stavka ; NODE=shield-1")
            .unwrap();
        assert!(looped(&other, "shield-1"), "unquoted, any case");
        other
            .insert_header("cdn-loop", "othercdn; node=shield-1")
            .unwrap();
        assert!(!looped(&other, "shield-1"), "another CDN's parameter");
    }
}
