//! Test guest: every outcome comes from the module's key-value store, so a
//! test can make the host handle any outcome a guest could return.
//!
//! Each value is a list of space-separated, percent-encoded tokens:
//! - `request`: `bypass`, `lookup KEY|- VARIANCE...`, or
//!   `respond STATUS N NAME VALUE ... BODY` (N name/value pairs);
//! - `origin-edits`, `response-edits`: `set NAME VALUE` and `remove NAME`;
//! - `response`: `default`, `no-store`, or `store TTL SWR SIE TAG...`;
//! - `hit`: `serve`, `revalidate`, or `respond ...` as for `request`.
//!
//! A missing key is the default outcome; a malformed value is too.
use stavka_policy::{
    export_policy, kv, Entry, HeaderEdits, HitDecision, Lookup, Policy, Request, RequestDecision,
    RequestOutcome, Response, ResponseDecision, ResponseOutcome, Store, Synthetic,
};

struct Hostile;

/// Percent-decode a token; a lone `%` is the empty string.
fn decode(token: &str) -> Vec<u8> {
    if token == "%" {
        return Vec::new();
    }
    let bytes = token.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        match (
            bytes[i],
            bytes.get(i + 1).copied(),
            bytes.get(i + 2).copied(),
        ) {
            (b'%', Some(h), Some(l)) if hex(h).is_some() && hex(l).is_some() => {
                out.push((hex(h).unwrap() * 16 + hex(l).unwrap()) as u8);
                i += 3;
            }
            (b, _, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    out
}

/// The decoded tokens of `key`, if set.
fn tokens(key: &str) -> Option<Vec<Vec<u8>>> {
    kv(key).map(|v| v.split(' ').filter(|t| !t.is_empty()).map(decode).collect())
}

fn text(token: &[u8]) -> String {
    String::from_utf8_lossy(token).into_owned()
}

fn number<T: std::str::FromStr>(token: Option<&Vec<u8>>) -> Option<T> {
    text(token?).parse().ok()
}

/// `STATUS N NAME VALUE ... BODY`.
fn synthetic(rest: &[Vec<u8>]) -> Option<Synthetic> {
    let status = number(rest.first())?;
    let n: usize = number(rest.get(1))?;
    let headers = rest.get(2..2 + 2 * n)?;
    Some(Synthetic {
        status,
        headers: headers
            .chunks(2)
            .map(|p| (text(&p[0]), text(&p[1])))
            .collect(),
        body: rest.get(2 + 2 * n).cloned().unwrap_or_default(),
    })
}

fn edits(key: &str) -> HeaderEdits {
    let mut edits = HeaderEdits::none();
    let tokens = tokens(key).unwrap_or_default();
    let mut it = tokens.iter();
    while let Some(verb) = it.next() {
        match verb.as_slice() {
            b"set" => {
                if let (Some(name), Some(value)) = (it.next(), it.next()) {
                    edits.set.push((text(name), text(value)));
                }
            }
            b"remove" => {
                if let Some(name) = it.next() {
                    edits.remove.push(text(name));
                }
            }
            _ => {}
        }
    }
    edits
}

impl Policy for Hostile {
    fn on_request(_req: &Request) -> RequestOutcome {
        let tokens = tokens("request").unwrap_or_default();
        let decision = match tokens.first().map(Vec::as_slice) {
            Some(b"bypass") => RequestDecision::Bypass,
            Some(b"respond") => synthetic(&tokens[1..])
                .map(RequestDecision::Respond)
                .unwrap_or(RequestDecision::Bypass),
            Some(b"lookup") => RequestDecision::Lookup(Lookup {
                cache_key: tokens
                    .get(1)
                    .filter(|k| k.as_slice() != b"-")
                    .map(|k| text(k)),
                variance: tokens.iter().skip(2).map(|v| text(v)).collect(),
            }),
            _ => RequestDecision::Lookup(Lookup {
                cache_key: None,
                variance: Vec::new(),
            }),
        };
        RequestOutcome {
            decision,
            origin_request: edits("origin-edits"),
        }
    }

    fn on_response(_req: &Request, _resp: &Response) -> ResponseOutcome {
        let tokens = tokens("response").unwrap_or_default();
        let decision = match tokens.first().map(Vec::as_slice) {
            Some(b"no-store") => ResponseDecision::NoStore,
            Some(b"store") => ResponseDecision::Store(Store {
                ttl_seconds: number(tokens.get(1)).unwrap_or(0),
                stale_while_revalidate_seconds: number(tokens.get(2)).unwrap_or(0),
                stale_if_error_seconds: number(tokens.get(3)).unwrap_or(0),
                tags: tokens.iter().skip(4).map(|t| text(t)).collect(),
            }),
            _ => ResponseDecision::Default,
        };
        ResponseOutcome {
            decision,
            headers: edits("response-edits"),
        }
    }

    fn on_hit(_req: &Request, _entry: &Entry) -> HitDecision {
        let tokens = tokens("hit").unwrap_or_default();
        match tokens.first().map(Vec::as_slice) {
            Some(b"revalidate") => HitDecision::Revalidate,
            Some(b"respond") => synthetic(&tokens[1..])
                .map(HitDecision::Respond)
                .unwrap_or(HitDecision::Serve),
            _ => HitDecision::Serve,
        }
    }
}

export_policy!(Hostile);
