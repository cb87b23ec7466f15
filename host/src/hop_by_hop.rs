//! Connection-specific fields (RFC 9110 §7.6.1): a proxy removes the
//! `Connection` field and every field it names before forwarding, and a cache
//! before storing (RFC 9111 §3.1), so they never reach a client of a later hit.

use http::header::{self, HeaderName};
use pingora_http::{RequestHeader, ResponseHeader};

/// Fields that only ever describe one connection, removed whether or not
/// `Connection` names them, `Connection` itself last.
static ALWAYS: [HeaderName; 5] = [
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::UPGRADE,
    header::CONNECTION,
];

/// Fields that frame the message or describe the connection: the proxy
/// writes them, so neither a policy's header edits nor its synthetic
/// responses may (a guest's `Content-Length` would make the client read a
/// body other than the one sent, RFC 9112 §6).
pub fn is_proxy_managed(name: &str) -> bool {
    const MANAGED: [&str; 8] = [
        "connection",
        "content-length",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    MANAGED.iter().any(|m| m.eq_ignore_ascii_case(name.trim()))
}

/// Remove `Connection`, the fields it names and the other connection-specific
/// fields from `resp`. Framing (`Content-Length`, `Transfer-Encoding`) is
/// pingora's to manage and is never removed here, whatever `Connection` says;
/// nor is anything from a `101 Switching Protocols`, whose `Upgrade` is the
/// point.
pub fn strip(resp: &mut ResponseHeader) {
    if resp.status == http::StatusCode::SWITCHING_PROTOCOLS {
        return;
    }
    for name in present(&resp.headers) {
        resp.remove_header(&name);
    }
}

/// Remove the connection-specific fields of a client's request before a
/// request of the proxy's own (a slice fetch) is built from it, and its
/// framing: such a request has no body.
pub fn strip_request(req: &mut RequestHeader) {
    for name in present(&req.headers) {
        req.remove_header(&name);
    }
    req.remove_header(&header::CONTENT_LENGTH);
    req.remove_header(&header::TRANSFER_ENCODING);
}

/// The connection-specific fields `headers` holds: those `Connection`
/// names, except the message's framing, and those that always are. Only
/// fields present are returned, so a response without any costs no
/// removals (each is two map lookups in pingora's header).
fn present(headers: &http::HeaderMap) -> Vec<HeaderName> {
    let named = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .filter(|name| {
            name != header::CONTENT_LENGTH
                && name != header::TRANSFER_ENCODING
                && headers.contains_key(name)
        });
    let always = ALWAYS
        .iter()
        .filter(|name| headers.contains_key(*name))
        .cloned();
    named.chain(always).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc9110_7_6_1_named_and_connection_specific_fields_go() {
        let mut resp = ResponseHeader::build(200, None).unwrap();
        for (name, value) in [
            ("connection", "X-Secret, close"),
            ("connection", "transfer-encoding"),
            ("x-secret", "token"),
            ("keep-alive", "timeout=5"),
            ("x-kept", "yes"),
            ("content-length", "3"),
        ] {
            resp.append_header(name, value).unwrap();
        }
        strip(&mut resp);
        let names: Vec<&str> = resp.headers.keys().map(|n| n.as_str()).collect();
        assert_eq!(names, ["x-kept", "content-length"]);
    }
}
