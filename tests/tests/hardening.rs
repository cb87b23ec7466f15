//! Defects found by attacking the real binary (the hardening issue): each
//! test failed before its fix.

use std::time::{Duration, SystemTime};

use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use stavka_e2e::{client, fixed, raw_exchange, Origin, RawOrigin, Stavka};

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

    let poisoned = stavka.get_host("Test.Example:1337", "/login").await;
    assert_eq!(poisoned.status, 200);
    assert_eq!(
        poisoned.text(),
        "host=test.example",
        "the origin sees the host the entry is keyed on"
    );
    let clean = stavka.get_host("test.example", "/login").await;
    assert!(
        clean.cache_status().contains("hit"),
        "{}",
        clean.cache_status()
    );
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

fn response(head: &str, body: &str) -> Vec<u8> {
    format!("{head}\r\n\r\n{body}").into_bytes()
}

/// RFC 9111 §5.1 and §4.2.3: the origin's Age is passed on; once stored, the
/// response carries this cache's corrected age, on the miss and on hits.
#[tokio::test]
async fn rfc9111_5_1_the_origins_age_is_forwarded_and_corrected() {
    let stored = RawOrigin::start(
        vec![response(
            "HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nAge: 30\r\nContent-Length: 2",
            "ok",
        )],
        Duration::ZERO,
    )
    .await;
    let stavka = Stavka::start(&stored.site()).await;
    let miss = stavka.get("/aged").await;
    assert!(
        miss.cache_status().contains("stored"),
        "{}",
        miss.cache_status()
    );
    let age: u64 = miss.header("age").parse().expect("an Age on the miss");
    assert!((30..60).contains(&age), "age {age}");
    let hit = stavka.get("/aged").await;
    assert!(hit.cache_status().contains("hit"));
    let age: u64 = hit.header("age").parse().expect("an Age on the hit");
    assert!((30..60).contains(&age), "age {age}");

    let passed = RawOrigin::start(
        vec![response(
            "HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nAge: 30\r\nContent-Length: 2",
            "ok",
        )],
        Duration::ZERO,
    )
    .await;
    let stavka = Stavka::start(&passed.site()).await;
    assert_eq!(stavka.get("/aged").await.header("age"), "30");
}

/// RFC 9110 §6.6.1: the origin's Date goes to the client on the miss and on
/// every hit (the Age says how old the copy is); a response that came
/// without one is dated when it arrived, and keeps that Date when stored.
#[tokio::test]
async fn rfc9110_6_6_1_the_origins_date_is_kept_on_misses_and_hits() {
    let sent = httpdate::fmt_http_date(SystemTime::now() - Duration::from_secs(20));
    let dated = RawOrigin::start(
        vec![response(
            &format!("HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nDate: {sent}\r\nContent-Length: 2"),
            "ok",
        )],
        Duration::ZERO,
    )
    .await;
    let stavka = Stavka::start(&dated.site()).await;
    let miss = stavka.get("/dated").await;
    assert_eq!(miss.header("date"), sent, "the miss");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let hit = stavka.get("/dated").await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    assert_eq!(hit.header("date"), sent, "the hit");
    let age: u64 = hit.header("age").parse().expect("an Age on the hit");
    assert!(age >= 20, "the Date's age counts: {age}");

    let undated = RawOrigin::start(
        vec![response(
            "HTTP/1.1 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 2",
            "ok",
        )],
        Duration::ZERO,
    )
    .await;
    let stavka = Stavka::start(&undated.site()).await;
    let miss = stavka.get("/undated").await;
    let received = miss.header("date");
    assert!(httpdate::parse_http_date(received).is_ok(), "{received:?}");
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let hit = stavka.get("/undated").await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    assert_eq!(hit.header("date"), received, "dated once, when it arrived");

    // stavka's own answers are dated now, not with a placeholder.
    let refused = raw_exchange(
        stavka.proxy,
        b"GET / HTTP/1.1\r\nHost: a b\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    let date = refused
        .lines()
        .find_map(|l| {
            l.strip_prefix("date: ")
                .or_else(|| l.strip_prefix("Date: "))
        })
        .unwrap_or_else(|| panic!("a Date on {refused:?}"));
    let date = httpdate::parse_http_date(date.trim()).unwrap();
    assert!(SystemTime::now().duration_since(date).unwrap() < Duration::from_secs(60));
}

/// RFC 9110 §7.6.1, RFC 9111 §3.1: fields the origin's Connection names are
/// for that connection only: never forwarded, never stored for later hits.
#[tokio::test]
async fn rfc9111_3_1_fields_named_in_connection_are_not_stored_or_forwarded() {
    let origin = RawOrigin::start(
        vec![response(
            "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nConnection: X-Session-Secret\r\nX-Session-Secret: origin-to-proxy\r\nKeep-Alive: timeout=5\r\nX-Kept: yes\r\nContent-Length: 2",
            "ok",
        )],
        Duration::ZERO,
    )
    .await;
    let stavka = Stavka::start(&origin.site()).await;
    for expect in ["stored", "hit"] {
        let r = stavka.get("/hop").await;
        assert!(r.cache_status().contains(expect), "{}", r.cache_status());
        assert_eq!(r.header("x-session-secret"), "");
        assert_eq!(r.header("keep-alive"), "");
        assert_eq!(r.header("x-kept"), "yes");
    }
    assert_eq!(origin.count(), 1);
}

/// RFC 9213 §2.1: CDN-Cache-Control goes on to caches further down, and one
/// that is not a valid dictionary of well-typed directives is ignored whole,
/// so Cache-Control decides.
#[tokio::test]
async fn rfc9213_cdn_cache_control_is_forwarded_and_an_invalid_one_is_ignored() {
    let valid = RawOrigin::start(
        vec![response(
            "HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nCDN-Cache-Control: max-age=60\r\nContent-Length: 2",
            "ok",
        )],
        Duration::ZERO,
    )
    .await;
    let stavka = Stavka::start(&valid.site()).await;
    let miss = stavka.get("/targeted").await;
    assert_eq!(miss.header("cdn-cache-control"), "max-age=60");
    let hit = stavka.get("/targeted").await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    assert_eq!(hit.header("cdn-cache-control"), "max-age=60");
    assert_eq!(valid.count(), 1);

    for invalid in [
        "max-age=\"60\"",
        "max-age=60, no-store=3",
        "max-age=60;;",
        "max-age=-1",
    ] {
        let origin = RawOrigin::start(
            vec![response(
                &format!("HTTP/1.1 200 OK\r\nCache-Control: no-store\r\nCDN-Cache-Control: {invalid}\r\nContent-Length: 2"),
                "ok",
            )],
            Duration::ZERO,
        )
        .await;
        let stavka = Stavka::start(&origin.site()).await;
        stavka.get("/targeted").await;
        let again = stavka.get("/targeted").await;
        assert!(
            !again.cache_status().contains("hit"),
            "{invalid}: {}",
            again.cache_status()
        );
        assert_eq!(origin.count(), 2, "{invalid}");
    }
}

/// RFC 9111 §3.3: a response cut short is not stored; the store counts the
/// abandoned write, and the next request goes to the origin again.
#[tokio::test]
async fn rfc9111_3_3_a_truncated_response_is_not_stored() {
    let origin = RawOrigin::start(
        vec![
            response(
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 100",
                "only half of it ",
            ),
            b"and then the origin goes away".to_vec(),
        ],
        Duration::from_millis(100),
    )
    .await;
    let stavka = Stavka::start(&origin.site()).await;
    for _ in 0..2 {
        let r = client().get(stavka.url("/cut")).send().await.unwrap();
        let said = r.headers()["cache-status"].to_str().unwrap().to_owned();
        assert!(
            said.contains("stored"),
            "the header went out before the cut: {said}"
        );
        assert!(r.bytes().await.is_err(), "the client sees the truncation");
    }
    assert_eq!(origin.count(), 2, "nothing was stored");
    let abandoned = stavka
        .metric_reaching("stavka_cache_stores_abandoned_total", 2.0)
        .await;
    assert_eq!(abandoned, Some(2.0));
    assert_eq!(stavka.metric("stavka_cache_inserts_total").await, Some(0.0));
}

/// RFC 9111 §4.2.4: with the site's `serve_stale_on_error`, a stale response
/// stands in for an unreachable origin even without `stale-if-error`, but
/// never where must-revalidate, proxy-revalidate or s-maxage forbids it.
#[tokio::test]
async fn rfc9111_4_2_4_serve_stale_on_error_is_a_site_bound() {
    let origin = Origin::start(
        Router::new()
            .route("/plain", fixed(&[("cache-control", "max-age=1")], "old"))
            .route(
                "/must",
                fixed(&[("cache-control", "max-age=1, must-revalidate")], "old"),
            )
            .route("/shared", fixed(&[("cache-control", "s-maxage=1")], "old"))
            .route(
                "/proxy",
                fixed(&[("cache-control", "max-age=1, proxy-revalidate")], "old"),
            ),
    )
    .await;
    let site = format!(
        "{}serve_stale_on_error = \"1h\"\n",
        stavka_e2e::default_site(&origin, None)
    );
    let stavka = Stavka::start(&site).await;
    for path in ["/plain", "/must", "/shared", "/proxy"] {
        assert_eq!(stavka.get(path).await.status, 200);
    }
    origin.stop().await;
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let stale = stavka.get("/plain").await;
    assert_eq!((stale.status, stale.text().as_str()), (200, "old"));
    assert!(
        stale.cache_status().contains("detail=stale-if-error"),
        "{}",
        stale.cache_status()
    );
    for forbidden in ["/must", "/shared", "/proxy"] {
        assert_eq!(stavka.get(forbidden).await.status, 502, "{forbidden}");
    }
}

/// RFC 9213: a site that is the last CDN hop may keep CDN-Cache-Control
/// from browsers; the cache still obeys it.
#[tokio::test]
async fn rfc9213_a_site_may_strip_cdn_cache_control() {
    let origin = Origin::start(Router::new().route(
        "/t",
        fixed(
            &[
                ("cache-control", "no-store"),
                ("cdn-cache-control", "max-age=60"),
            ],
            "t",
        ),
    ))
    .await;
    let site = format!(
        "{}strip_cdn_cache_control = true\n",
        stavka_e2e::default_site(&origin, None)
    );
    let stavka = Stavka::start(&site).await;
    for expect in ["stored", "hit"] {
        let r = stavka.get("/t").await;
        assert!(r.cache_status().contains(expect), "{}", r.cache_status());
        assert_eq!(r.header("cdn-cache-control"), "");
    }
    assert_eq!(origin.count("/t"), 1);
}

/// A site that names an access policy never runs without it: absent at
/// start, broken at start, or deleted while serving.
#[tokio::test]
async fn a_fail_closed_site_never_runs_without_its_named_policy() {
    let origin =
        Origin::start(Router::new().route("/private/doc", get(|| async { "secret" }))).await;
    let sidecar = "failure = \"closed\"\n";

    // Absent at start: 503 with detail=policy-missing, nothing reaches the origin.
    let stavka = Stavka::start(&stavka_e2e::default_site(&origin, Some("auth"))).await;
    let missing = stavka.get("/private/doc").await;
    assert_eq!(missing.status, 503);
    assert_eq!(missing.cache_status(), "stavka; detail=policy-missing");
    let ready = stavka.admin_json("/readyz").await;
    assert_eq!(
        ready["ready"], true,
        "one site's module must not unready the node"
    );
    let policies = ready["checks"]["policies"].as_str().unwrap();
    assert!(
        policies.contains("site[0].policy") && policies.contains("\"auth\""),
        "{policies}"
    );
    drop(stavka);

    // Broken at start: the same.
    let stavka = Stavka::start(&stavka_e2e::default_site(&origin, Some("auth"))).await;
    stavka_e2e::install(&stavka.policy_dir, "auth", b"not a component", sidecar);
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(stavka.get("/private/doc").await.status, 503);
    drop(stavka);

    // Deleted while serving: the last good version keeps enforcing.
    let stavka = Stavka::start_with_modules(
        &stavka_e2e::default_site(&origin, Some("auth")),
        &[("auth", "token-auth", sidecar)],
    )
    .await;
    assert_eq!(stavka.get("/private/doc").await.status, 403);
    std::fs::remove_file(stavka.policy_dir.join("auth.wasm")).unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for _ in 0..3 {
        assert_eq!(stavka.get("/private/doc").await.status, 403);
    }
    assert_eq!(origin.count("/private/doc"), 0);

    // An explicit choice to serve without it.
    let open = format!(
        "{}policy_missing = \"open\"\n",
        stavka_e2e::default_site(&origin, Some("tuning"))
    );
    let stavka = Stavka::start(&open).await;
    assert_eq!(stavka.get("/private/doc").await.status, 200);
}

/// `check-config` compiles the modules sites name: a fail-closed site's
/// absent or broken module is an error naming the field; a fail-open
/// site's is a warning.
#[test]
fn check_config_reports_a_named_but_absent_or_broken_module() {
    let dir = tempfile::tempdir().unwrap();
    let policies = dir.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(policies.join("broken.wasm"), b"not a component").unwrap();
    let config = |site_extra: &str| {
        let path = dir.path().join("stavka.toml");
        std::fs::write(
            &path,
            format!(
                "[policy]\ndir = \"{}\"\n\n[[site]]\nname = \"www\"\nhosts = [\"a.example\"]\norigin = {{ address = \"127.0.0.1:1\" }}\n{site_extra}",
                policies.display()
            ),
        )
        .unwrap();
        stavka_e2e::check_config(&path)
    };
    let (code, stderr) = config("policy = \"auth\"\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("error: site[0].policy: module \"auth\" is not in"),
        "{stderr}"
    );
    let (code, stderr) = config("policy = \"broken\"\n");
    assert_eq!(code, Some(2), "{stderr}");
    assert!(
        stderr.contains("module \"broken\" does not load"),
        "{stderr}"
    );
    let (code, stderr) = config("policy = \"auth\"\npolicy_missing = \"open\"\n");
    assert_eq!(code, Some(0), "{stderr}");
    assert!(stderr.contains("warning: site[0].policy"), "{stderr}");
}

/// Without a token the admin API answers only loopback Host names, so a web
/// page that rebinds its own name to 127.0.0.1 cannot purge or write KV.
#[tokio::test]
async fn admin_without_a_token_refuses_a_rebound_host() {
    let origin = Origin::start(Router::new()).await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    let put = |host: &'static str| {
        client()
            .put(stavka.admin_url("/policies/p/kv/k"))
            .header("host", host)
            .body("v")
            .send()
    };
    let rebound = put("attacker.example:9999").await.unwrap();
    assert_eq!(rebound.status(), 403);
    let body: serde_json::Value = rebound.json().await.unwrap();
    assert!(
        body["error"].as_str().unwrap().contains("loopback Host"),
        "{body}"
    );
    for host in ["localhost:9999", "127.0.0.1", "[::1]:1"] {
        assert!(put(host).await.unwrap().status().is_success(), "{host}");
    }
    // Probes stay open whatever the Host.
    let probe = client()
        .get(stavka.admin_url("/healthz"))
        .header("host", "attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(probe.status(), 200);
}

/// A configured token needs 16 characters that are not whitespace.
#[test]
fn an_admin_token_of_mostly_whitespace_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stavka.toml");
    std::fs::write(&path, "[admin]\ntoken = \"abc             \"\n").unwrap();
    let (code, stderr) = stavka_e2e::check_config(&path);
    assert_eq!(code, Some(2));
    assert!(
        stderr.contains("admin.token: must have at least 16"),
        "{stderr}"
    );
}

/// Cache-key parameter cloaking: ttl-rules drops `utm_*` from the key, so the
/// origin must not see them either, or a reflecting origin poisons the entry
/// every visitor shares.
#[tokio::test]
async fn a_parameter_the_key_ignores_never_reaches_the_origin() {
    let origin = Origin::start(Router::new().route(
        "/page",
        get(|uri: axum::http::Uri| async move {
            (
                [("cache-control", "max-age=60")],
                format!("query={}", uri.query().unwrap_or("")),
            )
        }),
    ))
    .await;
    let stavka = Stavka::with_policy(&origin, "ttl-rules", "mode = \"per-request\"\n").await;
    let first = stavka.get("/page?utm_source=%3Cscript%3E&b=2&a=1").await;
    assert_eq!(
        first.text(),
        "query=a=1&b=2",
        "the origin saw the key's target"
    );
    let clean = stavka.get("/page?a=1&b=2").await;
    assert!(
        clean.cache_status().contains("hit"),
        "{}",
        clean.cache_status()
    );
    assert_eq!(clean.text(), "query=a=1&b=2");
    assert_eq!(origin.count("/page"), 1);
}

/// RFC 9110 §15.2: interim responses (103 Early Hints) are forwarded to the
/// client ahead of the final one, and never stored.
#[tokio::test]
async fn rfc9110_15_2_early_hints_are_forwarded_and_not_stored() {
    let origin = RawOrigin::start(
        vec![
            b"HTTP/1.1 103 Early Hints\r\nLink: </app.css>; rel=preload\r\n\r\n".to_vec(),
            response(
                "HTTP/1.1 200 OK\r\nCache-Control: max-age=60\r\nContent-Length: 2",
                "ok",
            ),
        ],
        Duration::from_millis(50),
    )
    .await;
    let stavka = Stavka::start(&origin.site()).await;
    let request = b"GET /hinted HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n\r\n";
    let first = raw_exchange(stavka.proxy, request, Duration::from_secs(5)).await;
    assert!(first.starts_with("HTTP/1.1 103"), "{first}");
    assert!(
        first
            .to_ascii_lowercase()
            .contains("link: </app.css>; rel=preload"),
        "{first}"
    );
    assert!(first.contains("HTTP/1.1 200"), "{first}");
    let hit = raw_exchange(stavka.proxy, request, Duration::from_secs(5)).await;
    assert!(
        hit.starts_with("HTTP/1.1 200"),
        "the hint is not stored: {hit}"
    );
    assert!(hit.contains("hit"), "{hit}");
    assert_eq!(origin.count(), 1);
}

/// RFC 9112 §9.3.2: requests pipelined in one write are answered in order.
#[tokio::test]
async fn rfc9112_9_3_2_pipelined_requests_are_answered_in_order() {
    let origin = Origin::start(Router::new().route(
        "/p/{n}",
        get(
            |axum::extract::Path(n): axum::extract::Path<u32>| async move {
                ([("cache-control", "max-age=60")], format!("body-{n}"))
            },
        ),
    ))
    .await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    let mut pipelined = Vec::new();
    for n in 1..=3 {
        let close = if n == 3 { "Connection: close\r\n" } else { "" };
        pipelined.extend_from_slice(
            format!("GET /p/{n} HTTP/1.1\r\nHost: test.example\r\n{close}\r\n").as_bytes(),
        );
    }
    let answer = raw_exchange(stavka.proxy, &pipelined, Duration::from_secs(10)).await;
    let statuses = answer.matches("HTTP/1.1 200").count();
    assert_eq!(statuses, 3, "{answer}");
    let (one, two, three) = (
        answer.find("body-1").expect("first"),
        answer.find("body-2").expect("second"),
        answer.find("body-3").expect("third"),
    );
    assert!(one < two && two < three, "{answer}");
}

/// RFC 9110 §6.2 and RFC 9112 §2.3: a proxy sends its own HTTP version. An
/// origin that answers in HTTP/1.0 does not make an HTTP/1.1 client's
/// response (a miss, then a hit of what was stored) claim HTTP/1.0, which
/// would end a persistent connection the client could have kept.
#[tokio::test]
async fn rfc9110_6_2_an_http_1_0_origins_answer_goes_out_as_http_1_1() {
    let old = RawOrigin::start(
        vec![response(
            "HTTP/1.0 200 OK\r\nCache-Control: max-age=600\r\nContent-Length: 2",
            "ok",
        )],
        Duration::ZERO,
    )
    .await;
    let stavka = Stavka::start(&old.site()).await;
    for expected in ["stored", "hit"] {
        let answer = raw_exchange(
            stavka.proxy,
            b"GET /old HTTP/1.1\r\nHost: test.example\r\nConnection: close\r\n\r\n",
            Duration::from_secs(10),
        )
        .await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(expected), "{answer}");
    }
}
