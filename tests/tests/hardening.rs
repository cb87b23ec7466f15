//! Defects found by attacking the real binary (the hardening issue): each
//! test failed before its fix.

use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use stavka_e2e::{client, raw_exchange, Fetched, Origin, Stavka};

async fn get_host(stavka: &Stavka, host: &str, path: &str) -> Fetched {
    Fetched::from(
        client()
            .get(stavka.url(path))
            .header("host", host)
            .send()
            .await
            .unwrap(),
    )
    .await
}

/// An origin that reflects Host into a cacheable redirect, as login pages do.
fn reflect_host() -> Router {
    Router::new().route(
        "/login",
        get(|headers: HeaderMap| async move {
            let host = headers
                .get("host")
                .map_or("-", |h| h.to_str().unwrap())
                .to_owned();
            (
                [
                    ("cache-control", "max-age=60".to_owned()),
                    ("location", format!("http://{host}/login/form")),
                ],
                format!("host={host}"),
            )
        }),
    )
}

/// RFC 9112 §3.2 / RFC 9110 §7.2: the cache key and what the origin sees agree,
/// so a port a client adds cannot poison the entry clean clients get.
#[tokio::test]
async fn rfc9112_3_2_a_port_in_host_cannot_poison_the_shared_entry() {
    let origin = Origin::start(reflect_host()).await;
    let stavka = Stavka::in_front_of(&origin, "").await;

    let poisoned = get_host(&stavka, "Test.Example:1337", "/login").await;
    assert_eq!(poisoned.status, 200);
    assert_eq!(
        poisoned.text(),
        "host=test.example",
        "the origin sees the host the entry is keyed on"
    );
    let clean = get_host(&stavka, "test.example", "/login").await;
    assert!(clean.cache_status().contains("hit"), "{}", clean.cache_status());
    assert_eq!(clean.header("location"), "http://test.example/login/form");
    assert_eq!(origin.count("/login"), 1);
}

/// RFC 9112 §3.2: a server MUST answer 400 to an HTTP/1.1 request without
/// Host, with an empty Host or with an invalid one — never route it to the
/// default site and cache it under an empty host.
#[tokio::test]
async fn rfc9112_3_2_missing_empty_or_invalid_host_is_400() {
    let origin = Origin::start(reflect_host()).await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    let limit = Duration::from_secs(5);
    let requests: [&[u8]; 6] = [
        b"GET /login HTTP/1.1\r\n\r\n",
        b"GET /login HTTP/1.1\r\nHost:\r\n\r\n",
        b"GET /login HTTP/1.1\r\nHost: exa mple.com\r\n\r\n",
        b"GET /login HTTP/1.1\r\nHost: ex\xc3\xa4mple.com\r\n\r\n",
        b"GET /login HTTP/1.1\r\nHost: example.com/evil\r\n\r\n",
        b"GET /login HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n",
    ];
    for request in requests {
        let answer = raw_exchange(stavka.proxy, request, limit).await;
        assert!(
            answer.starts_with("HTTP/1.1 400"),
            "{:?} was answered {answer:?}",
            String::from_utf8_lossy(request)
        );
    }
    assert_eq!(origin.count("/login"), 0, "nothing reached the origin");

    // HTTP/1.0 does not require Host: the default site answers it, but
    // through no shared entry, so it can neither shape one nor be served one.
    for _ in 0..2 {
        let old = raw_exchange(stavka.proxy, b"GET /login HTTP/1.0\r\n\r\n", limit).await;
        assert!(old.contains(" 200 "), "{old}");
        assert!(old.contains("host=-"), "{old}");
        assert!(!old.to_ascii_lowercase().contains("hit"), "{old}");
    }
    assert_eq!(origin.count("/login"), 2);
}
