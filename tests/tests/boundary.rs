//! The host side of the WIT boundary under attacker-chosen guest outcomes.
//!
//! The `hostile` test guest (`tests/guests/hostile/`) returns whatever its
//! key-value store describes; for each generated case the test sets the
//! outcomes of every hook through the admin API, then sends a miss and a
//! hit through the real binary and reads the raw bytes of each answer.
//! Guests may return any status, huge header lists, invalid header names
//! and values (CR/LF, NUL, non-ASCII), framing fields (`content-length`,
//! `transfer-encoding`), absurd TTLs and odd cache keys. Whatever they
//! return, stavka must stay up and every answer must be a well-formed
//! HTTP/1.1 response (RFC 9112 §2–§6, RFC 9110 §5.5, §6.4.1, §8.6, §15).
//! (Guest strings are UTF-8 by the canonical ABI, so non-UTF-8 text cannot
//! cross the boundary at all.)

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};
use stavka_e2e::{default_site, install, raw_exchange, test_guest, Origin, Stavka};

/// Percent-encode a token for the guest's token lists.
fn token(s: &[u8]) -> String {
    if s.is_empty() {
        return "%".into();
    }
    s.iter()
        .map(|&b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Header names a guest may set, framing and connection fields among them.
fn header_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[a-z][a-z0-9-]{0,12}",
        1 => Just("content-length".to_owned()),
        1 => Just("transfer-encoding".to_owned()),
        1 => Just("connection".to_owned()),
        1 => Just("cache-control".to_owned()),
        1 => Just("cache-status".to_owned()),
        1 => Just("vary".to_owned()),
        1 => Just("set-cookie".to_owned()),
        1 => Just("host".to_owned()),
        1 => Just("upgrade".to_owned()),
        1 => Just(String::new()),
        1 => Just("bad name".to_owned()),
        1 => Just("x\r\ninjected".to_owned()),
        1 => Just(":status".to_owned()),
        1 => "\\PC{1,6}",
    ]
}

fn header_value() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => "[ -~]{0,20}",
        1 => Just("chunked".to_owned()),
        1 => Just("0".to_owned()),
        1 => Just("99999999999999999999".to_owned()),
        1 => Just("-1".to_owned()),
        1 => Just("close".to_owned()),
        1 => Just("*".to_owned()),
        1 => Just("max-age=99999999999999999999".to_owned()),
        1 => Just("a\r\nx-injected: 1".to_owned()),
        1 => Just("a\nb".to_owned()),
        1 => Just("nul\0".to_owned()),
        1 => "\\PC{0,8}",
    ]
}

fn headers() -> impl Strategy<Value = Vec<(String, String)>> {
    prop_oneof![
        8 => proptest::collection::vec((header_name(), header_value()), 0..6),
        // A huge header list.
        1 => (500usize..3000).prop_map(|n| {
            (0..n).map(|i| (format!("x-h{i}"), "v".repeat(16))).collect()
        }),
    ]
}

/// `STATUS N NAME VALUE ... BODY` as the guest reads it, with statuses
/// that are interim (1xx), bodiless (204, 304) or not statuses at all.
fn synthetic() -> impl Strategy<Value = String> {
    (
        prop_oneof![
            Just(200u16),
            Just(204),
            Just(304),
            Just(100),
            Just(101),
            Just(0),
            Just(600),
            Just(999),
            any::<u16>(),
            100u16..600,
        ],
        headers(),
        "[ -~]{0,64}",
    )
        .prop_map(|(status, headers, body)| {
            let mut out = format!("{status} {}", headers.len());
            for (name, value) in &headers {
                out += &format!(" {} {}", token(name.as_bytes()), token(value.as_bytes()));
            }
            out + " " + &token(body.as_bytes())
        })
}

fn edits() -> impl Strategy<Value = String> {
    let edit = prop_oneof![
        (header_name(), header_value()).prop_map(|(n, v)| format!(
            "set {} {}",
            token(n.as_bytes()),
            token(v.as_bytes())
        )),
        header_name().prop_map(|n| format!("remove {}", token(n.as_bytes()))),
    ];
    prop_oneof![
        6 => proptest::collection::vec(edit, 0..5).prop_map(|e| e.join(" ")),
        1 => (500usize..2000).prop_map(|n| {
            (0..n).map(|i| format!("set x-e{i} v")).collect::<Vec<_>>().join(" ")
        }),
    ]
}

/// The outcomes of every hook for one case.
#[derive(Clone)]
struct Outcomes {
    request: String,
    origin_edits: String,
    response: String,
    response_edits: String,
    hit: String,
}

/// Each outcome as set, cut short: a huge header list would bury the rest.
impl std::fmt::Debug for Outcomes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let short = |s: &str| {
            let cut: String = s.chars().take(300).collect();
            if cut.len() < s.len() {
                format!("{cut}... ({} bytes)", s.len())
            } else {
                cut
            }
        };
        f.debug_struct("Outcomes")
            .field("request", &short(&self.request))
            .field("origin_edits", &short(&self.origin_edits))
            .field("response", &short(&self.response))
            .field("response_edits", &short(&self.response_edits))
            .field("hit", &short(&self.hit))
            .finish()
    }
}

fn outcomes() -> impl Strategy<Value = Outcomes> {
    let request = prop_oneof![
        1 => Just("bypass".to_owned()),
        3 => (
            prop_oneof![Just("-".to_owned()), "\\PC{0,24}".prop_map(|k| token(k.as_bytes()))],
            proptest::collection::vec("\\PC{0,8}", 0..3),
        )
            .prop_map(|(key, variance)| {
                let variance: Vec<String> = variance.iter().map(|v| token(v.as_bytes())).collect();
                format!("lookup {key} {}", variance.join(" "))
            }),
        2 => synthetic().prop_map(|s| format!("respond {s}")),
    ];
    let response = prop_oneof![
        Just("default".to_owned()),
        Just("no-store".to_owned()),
        (
            prop_oneof![Just(0u32), Just(u32::MAX), any::<u32>()],
            prop_oneof![Just(0u32), Just(u32::MAX), any::<u32>()],
            prop_oneof![Just(0u32), Just(u32::MAX), any::<u32>()],
            prop_oneof![
                4 => proptest::collection::vec("\\PC{0,10}", 0..4),
                1 => (500usize..2000).prop_map(|n| (0..n).map(|i| format!("t{i}")).collect()),
            ],
        )
            .prop_map(|(ttl, swr, sie, tags)| {
                let tags: Vec<String> = tags.iter().map(|t| token(t.as_bytes())).collect();
                format!("store {ttl} {swr} {sie} {}", tags.join(" "))
            }),
    ];
    let hit = prop_oneof![
        Just("serve".to_owned()),
        Just("revalidate".to_owned()),
        synthetic().prop_map(|s| format!("respond {s}")),
    ];
    (request, edits(), response, edits(), hit).prop_map(
        |(request, origin_edits, response, response_edits, hit)| Outcomes {
            request,
            origin_edits,
            response,
            response_edits,
            hit,
        },
    )
}

/// What is wrong with `raw` as a complete HTTP/1.1 response to a GET, if
/// anything.
fn malformed(raw: &str) -> Option<String> {
    let Some((head, body)) = raw.split_once("\r\n\r\n") else {
        return Some("no end of header section".into());
    };
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = match status_line.strip_prefix("HTTP/1.1 ") {
        Some(rest) if rest.len() >= 3 && rest.as_bytes()[..3].iter().all(u8::is_ascii_digit) => {
            rest[..3].parse().unwrap()
        }
        _ => return Some(format!("bad status line {status_line:?}")),
    };
    // RFC 9110 §15: status codes are 100-599; a final answer is not 1xx.
    if !(200..=599).contains(&status) {
        return Some(format!("final status {status}"));
    }
    let mut content_length = Vec::new();
    let mut chunked = false;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Some(format!("header line without a colon: {line:?}"));
        };
        // RFC 9110 §5.1: a field name is a token; §5.5: no CR, LF or NUL.
        let tchar = |c: char| c.is_ascii_alphanumeric() || "!#$%&'*+-.^_`|~".contains(c);
        if name.is_empty() || !name.chars().all(tchar) {
            return Some(format!("invalid field name {name:?}"));
        }
        if value.contains(['\r', '\n', '\0']) {
            return Some(format!("invalid field value in {line:?}"));
        }
        match name.to_ascii_lowercase().as_str() {
            "content-length" => content_length.push(value.trim().to_owned()),
            "transfer-encoding" => chunked = true,
            _ => {}
        }
    }
    content_length.dedup();
    // RFC 9112 §6.1, §6.2; RFC 9110 §8.6.
    if chunked && !content_length.is_empty() {
        return Some("both Transfer-Encoding and Content-Length".into());
    }
    if content_length.len() > 1 {
        return Some(format!("conflicting Content-Length {content_length:?}"));
    }
    if status == 204 && !content_length.is_empty() {
        return Some("Content-Length on a 204".into());
    }
    if matches!(status, 204 | 304) {
        return (!body.is_empty()).then(|| format!("a body on a {status}"));
    }
    if let Some(length) = content_length.first() {
        let Ok(length) = length.parse::<usize>() else {
            return Some(format!("invalid Content-Length {length:?}"));
        };
        if body.len() != length {
            return Some(format!(
                "Content-Length {length} but {} body bytes",
                body.len()
            ));
        }
    }
    if chunked && !body.ends_with("0\r\n\r\n") {
        return Some("chunked body without its last chunk".into());
    }
    None
}

async fn set(stavka: &Stavka, key: &str, value: &str) {
    stavka.kv_set("p", key, value).await;
}

/// One case: set the outcomes, then a miss and a hit of a fresh path.
async fn case(stavka: &Stavka, n: usize, o: &Outcomes) -> Result<(), TestCaseError> {
    set(stavka, "request", &o.request).await;
    set(stavka, "origin-edits", &o.origin_edits).await;
    set(stavka, "response", &o.response).await;
    set(stavka, "response-edits", &o.response_edits).await;
    set(stavka, "hit", &o.hit).await;
    let request = format!("GET /o/{n} HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n\r\n");
    for attempt in ["miss", "hit"] {
        let raw = raw_exchange(stavka.proxy, request.as_bytes(), Duration::from_secs(10)).await;
        if let Some(problem) = malformed(&raw) {
            let head = raw.get(..raw.len().min(600)).unwrap_or(&raw);
            return Err(TestCaseError::fail(format!(
                "{attempt}: {problem}\n{head:?}"
            )));
        }
        prop_assert_eq!(stavka.health().await, 200, "stavka answers its probe");
    }
    Ok(())
}

fn origin_routes() -> Router {
    Router::new().route(
        "/o/{n}",
        get(|| async { ([("cache-control", "max-age=60")], "from the origin") }),
    )
}

/// An origin and stavka in front of it, decided by the hostile guest.
async fn start() -> (Origin, Stavka) {
    let origin = Origin::start(origin_routes()).await;
    let stavka = Stavka::start(&default_site(&origin, Some("p"))).await;
    install(&stavka.policy_dir, "p", &test_guest("hostile"), "");
    wait_loaded(&stavka).await;
    (origin, stavka)
}

#[test]
fn any_guest_outcome_gives_a_well_formed_response() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let (_origin, stavka) = runtime.block_on(start());
    let mut runner = TestRunner::new(Config {
        cases: 256,
        failure_persistence: None,
        ..Config::default()
    });
    let n = AtomicUsize::new(0);
    let result = runner.run(&outcomes(), |o| {
        let n = n.fetch_add(1, Ordering::Relaxed);
        runtime.block_on(case(&stavka, n, &o))
    });
    if let Err(e) = result {
        panic!("{e}");
    }
}

/// The outcomes this test first found producing malformed responses, kept
/// as fixed cases: a synthetic 1xx sent as the final response (RFC 9110
/// §15.2) or 600-999 (§15); a synthetic 204 with `Content-Length` (§8.6);
/// response edits setting `Content-Length` (above the body's length, or not
/// a number) or `Transfer-Encoding`, so that the framing the client reads
/// is not the body sent (RFC 9112 §6). A `Content-Length` below the
/// body's is well formed but cut the body short: the body must arrive whole.
#[test]
fn framing_and_status_outcomes_stay_well_formed() {
    let plain = |request: &str, response_edits: &str, hit: &str| Outcomes {
        request: request.into(),
        origin_edits: String::new(),
        response: "default".into(),
        response_edits: response_edits.into(),
        hit: hit.into(),
    };
    let cases = [
        plain("respond 101 0 %", "", "serve"),
        plain("respond 999 0 %", "", "serve"),
        plain("respond 204 0 %", "", "serve"),
        plain("lookup -", "", "respond 100 0 body"),
        plain("bypass", "set content-length 99", "serve"),
        plain("bypass", "set content-length x", "serve"),
        plain("bypass", "set transfer-encoding chunked", "serve"),
    ];
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let failures: Vec<String> = runtime.block_on(async {
        let (_origin, stavka) = start().await;
        let mut failures = Vec::new();
        for (n, outcomes) in cases.iter().enumerate() {
            if let Err(e) = case(&stavka, n, outcomes).await {
                failures.push(format!("{outcomes:?}: {e}"));
            }
        }
        set(&stavka, "response-edits", "set content-length 3").await;
        let request = "GET /o/short HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n\r\n";
        let raw = raw_exchange(stavka.proxy, request.as_bytes(), Duration::from_secs(10)).await;
        if !raw.ends_with("\r\n\r\nfrom the origin") {
            failures.push(format!("a Content-Length edit cut the body: {raw:?}"));
        }
        failures
    });
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// Until module `p` serves: its first load is counted in the metrics.
async fn wait_loaded(stavka: &Stavka) {
    for _ in 0..300 {
        let loaded = stavka
            .metric(r#"stavka_policy_loads_total{module="p",result="loaded"}"#)
            .await;
        if loaded.unwrap_or(0.0) >= 1.0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("module p did not load within 30 s");
}
