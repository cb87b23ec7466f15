//! Connection-specific fields (RFC 9110 §7.6.1): a proxy removes the
//! `Connection` field and every field it names before forwarding, and a cache
//! before storing (RFC 9111 §3.1), so they never reach a client of a later hit.

use http::header;
use pingora_http::{RequestHeader, ResponseHeader};

/// Fields that only ever describe one connection, removed whether or not
/// `Connection` names them.
const ALWAYS: [&str; 4] = ["keep-alive", "proxy-connection", "te", "upgrade"];

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
    let named = named_by_connection(&resp.headers);
    each_connection_specific(&named, |name| {
        resp.remove_header(name);
    });
}

/// Remove the connection-specific fields of a client's request before a
/// request of the proxy's own (a slice fetch) is built from it, and its
/// framing: such a request has no body.
pub fn strip_request(req: &mut RequestHeader) {
    let named = named_by_connection(&req.headers);
    each_connection_specific(&named, |name| {
        req.remove_header(name);
    });
    req.remove_header(&header::CONTENT_LENGTH);
    req.remove_header(&header::TRANSFER_ENCODING);
}

/// The fields `Connection` names, lower-cased, except the message's framing.
fn named_by_connection(headers: &http::HeaderMap) -> Vec<String> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|name| name.trim().to_ascii_lowercase())
        .filter(|name| {
            !name.is_empty()
                && name != header::CONTENT_LENGTH.as_str()
                && name != header::TRANSFER_ENCODING.as_str()
        })
        .collect()
}

/// Call `each` with every connection-specific field name: the `named`
/// ones, those that always are, and `Connection` itself.
fn each_connection_specific(named: &[String], mut each: impl FnMut(&str)) {
    let always = ALWAYS.into_iter().chain([header::CONNECTION.as_str()]);
    named
        .iter()
        .map(String::as_str)
        .chain(always)
        .for_each(&mut each);
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
