//! Predictive caching (issue 18): policies prefetch what comes next
//! through the normal cache path, bounded per site, counted per module;
//! and 103 Early Hints (RFC 8297) from a policy or from a page's last
//! preload links.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use stavka_e2e::{client, default_site, eventually, raw_get, Origin, Stavka};
use tokio::net::TcpStream;

/// A cacheable answer with `extra` headers.
fn page(
    extra: &'static [(&'static str, &'static str)],
    body: &'static str,
) -> axum::routing::MethodRouter {
    let mut headers: Vec<(&'static str, &'static str)> = vec![("cache-control", "max-age=60")];
    headers.extend_from_slice(extra);
    stavka_e2e::fixed(Box::leak(headers.into_boxed_slice()), body)
}

/// The site with module `p` (the `prefetcher` test guest) and
/// `[site.prefetch]` set to `prefetch` (TOML lines).
async fn stavka(origin: &Origin, prefetch: &str, sidecar: &str) -> Stavka {
    Stavka::start_with_modules(
        &format!(
            "{}[site.prefetch]\n{prefetch}",
            default_site(origin, Some("p"))
        ),
        &[("p", "prefetcher", sidecar)],
    )
    .await
}

async fn prefetched(stavka: &Stavka, outcome: &str) -> f64 {
    stavka
        .metric(&format!(
            "stavka_prefetch_total{{module=\"p\",outcome=\"{outcome}\"}}"
        ))
        .await
        .unwrap_or(0.0)
}

async fn until(limit: Duration, mut check: impl AsyncFnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + limit;
    while std::time::Instant::now() < deadline {
        if check().await {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    false
}

#[tokio::test]
async fn prefetched_objects_reach_the_origin_once_and_are_hits_that_say_so() {
    let origin = Origin::start(
        Router::new()
            .route("/page", page(&[("x-prefetch", "/a.css, /b.js")], "page"))
            .route("/other-page", page(&[("x-prefetch", "/b.js")], "page"))
            .route("/a.css", page(&[], "a"))
            .route("/b.js", page(&[], "b")),
    )
    .await;
    let stavka = stavka(&origin, "", "").await;
    let first = stavka.get("/page").await;
    assert_eq!(first.header("x-prefetch-result"), "ok, ok");
    assert!(
        eventually(Duration::from_secs(10), || origin.count("/a.css") == 1
            && origin.count("/b.js") == 1)
        .await,
        "both prefetches reached the origin"
    );
    assert!(
        until(Duration::from_secs(10), async || prefetched(
            &stavka, "fetched"
        )
        .await
            == 2.0)
        .await
    );
    for _ in 0..2 {
        let hit = stavka.get("/a.css").await;
        assert_eq!(hit.text(), "a");
        // RFC 9211 §2.8: the hit says it was prefetched.
        assert!(
            hit.cache_status().contains("; hit")
                && hit.cache_status().contains("detail=prefetched"),
            "{}",
            hit.cache_status()
        );
        assert_eq!(
            hit.header("x-stavka-prefetched"),
            "",
            "the mark stays inside"
        );
    }
    assert_eq!(origin.count("/a.css"), 1);
    // A target a prefetch stored and still fresh is not queued again.
    assert_eq!(
        stavka.get("/other-page").await.header("x-prefetch-result"),
        "cached"
    );
    assert_eq!(prefetched(&stavka, "queued").await, 2.0);
    assert_eq!(prefetched(&stavka, "used").await, 1.0, "used counts once");
    let module = stavka.admin_json("/policies").await["modules"][0].clone();
    assert_eq!(module["counters"]["prefetch"]["fetched"], 2, "{module}");
    let stats = stavka.admin_json("/stats").await;
    assert_eq!(
        stats["totals"]["prefetch"]["by_outcome"]["used"], 1,
        "{stats}"
    );
    assert_eq!(
        stats["totals"]["prefetch"]["tracked"], 1,
        "/b.js is not used yet"
    );
}

#[tokio::test]
async fn a_prefetch_and_a_real_request_for_one_object_make_one_origin_request() {
    let origin = Origin::start(
        Router::new()
            .route("/trigger", page(&[("x-prefetch", "/slow")], "t"))
            .route(
                "/slow",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    ([("cache-control", "max-age=60")], "slow")
                }),
            ),
    )
    .await;
    let stavka = stavka(&origin, "", "").await;
    assert_eq!(
        stavka.get("/trigger").await.header("x-prefetch-result"),
        "ok"
    );
    // The prefetch is on its way to the origin: a client asking now waits
    // for it (request collapsing) instead of asking again.
    assert!(eventually(Duration::from_secs(5), || origin.count("/slow") == 1).await);
    let real = stavka.get("/slow").await;
    assert_eq!(real.text(), "slow");
    assert_eq!(origin.count("/slow"), 1, "{}", real.cache_status());
}

#[tokio::test]
async fn a_burst_of_10k_prefetches_is_bounded_and_real_requests_are_still_answered() {
    let origin = Origin::start(
        Router::new()
            .route("/burst-page", page(&[("x-prefetch-burst", "10000")], "b"))
            .route(
                "/burst/{n}",
                get(|| async {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    ([("cache-control", "max-age=60")], "x")
                }),
            )
            .route("/real/{n}", page(&[], "real")),
    )
    .await;
    let stavka = stavka(
        &origin,
        "queue = 64\nconcurrency = 2\nrate = 100000\n",
        "deadline = \"500ms\"\n",
    )
    .await;
    let burst = stavka.get("/burst-page").await;
    let result = burst.header("x-prefetch-result").to_owned();
    let counts: Vec<usize> = result
        .split(' ')
        .map(|kv| kv.split_once('=').unwrap().1.parse().unwrap())
        .collect();
    let (queued, refused) = (counts[0], counts[1]);
    assert_eq!(queued + refused, 10_000, "{result}");
    // The queue holds 64; two slots may have taken a few out meanwhile.
    assert!(queued <= 64 + 16, "{result}");
    assert!(prefetched(&stavka, "queue-full").await >= 9_000.0);
    // While they drain, at most two run at once and real requests are
    // answered.
    for n in 0..20 {
        let stats = stavka.admin_json("/stats").await;
        let running = stats["totals"]["prefetch"]["running"].as_u64().unwrap();
        assert!(running <= 2, "{stats}");
        assert_eq!(stavka.get(&format!("/real/{n}")).await.text(), "real");
    }
    assert!(
        eventually(Duration::from_secs(30), || origin.count_prefix("/burst/")
            == queued)
        .await,
        "each queued prefetch reached the origin once: {} of {queued}",
        origin.count_prefix("/burst/")
    );
}

#[tokio::test]
async fn uncacheable_and_failing_prefetches_do_no_harm() {
    let origin = Origin::start(
        Router::new()
            .route(
                "/page",
                page(
                    &[("x-prefetch", "/nostore, /fail, https://elsewhere/x")],
                    "p",
                ),
            )
            .route(
                "/nostore",
                stavka_e2e::fixed(&[("cache-control", "no-store")], "n"),
            )
            .route(
                "/fail",
                get(|| async { (axum::http::StatusCode::INTERNAL_SERVER_ERROR, "boom") }),
            ),
    )
    .await;
    let stavka = stavka(&origin, "", "").await;
    assert_eq!(
        stavka.get("/page").await.header("x-prefetch-result"),
        "ok, ok, invalid-target"
    );
    assert!(
        until(Duration::from_secs(10), async || {
            prefetched(&stavka, "not-stored").await == 1.0
                && prefetched(&stavka, "failed").await == 1.0
        })
        .await
    );
    assert_eq!(prefetched(&stavka, "invalid-target").await, 1.0);
    // Nothing was stored for them: a client gets the origin's answers.
    assert_eq!(stavka.get("/nostore").await.text(), "n");
    assert_eq!(origin.count("/nostore"), 2);
    assert_eq!(stavka.get("/fail").await.status, 500);
}

#[tokio::test]
async fn a_prefetch_chain_stops_at_max_depth() {
    let origin = Origin::start(
        Router::new()
            .route("/chain/0", page(&[("x-prefetch", "/chain/1")], "0"))
            .route("/chain/1", page(&[("x-prefetch", "/chain/2")], "1"))
            .route("/chain/2", page(&[("x-prefetch", "/chain/3")], "2")),
    )
    .await;
    let stavka = stavka(&origin, "max_depth = 1\n", "").await;
    stavka.get("/chain/0").await;
    assert!(
        until(Duration::from_secs(10), async || prefetched(
            &stavka, "too-deep"
        )
        .await
            == 1.0)
        .await
    );
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(origin.count("/chain/1"), 1);
    assert_eq!(
        origin.count("/chain/2"),
        0,
        "a prefetch's own prefetch is too deep"
    );
}

#[tokio::test]
async fn a_looping_prefetching_policy_is_stopped_and_the_request_answered() {
    let origin = Origin::start(Router::new().route(
        "/loop",
        page(
            &[("x-prefetch", "/x"), ("x-prefetch-then-loop", "1")],
            "still served",
        ),
    ))
    .await;
    let stavka = stavka(&origin, "", "failure = \"open\"\ndeadline = \"5ms\"\n").await;
    let resp = stavka.get("/loop").await;
    assert_eq!((resp.status, resp.text().as_str()), (200, "still served"));
    let deadline = stavka
        .metric("stavka_policy_failures_total{hook=\"on-response\",kind=\"deadline\",module=\"p\"}")
        .await;
    assert_eq!(deadline, Some(1.0));
}

#[tokio::test]
async fn on_body_and_on_hit_prefetch_what_comes_next() {
    let origin = Origin::start(
        Router::new()
            .route(
                "/list",
                page(&[("x-want-body", "4096")], "/l1\n/l2\nnot a path\n"),
            )
            .route("/l1", page(&[], "1"))
            .route("/l2", page(&[], "2"))
            .route("/seg/{n}", page(&[], "segment")),
    )
    .await;
    let stavka = stavka(&origin, "", "").await;
    assert_eq!(stavka.get("/list").await.text(), "/l1\n/l2\nnot a path\n");
    assert!(
        eventually(Duration::from_secs(10), || origin.count("/l1") == 1
            && origin.count("/l2") == 1)
        .await,
        "on-body prefetched what the body listed"
    );
    // A hit on segment 7 prefetches segment 8.
    stavka.get("/seg/7").await;
    assert!(stavka.get("/seg/7").await.cache_status().contains("; hit"));
    assert!(eventually(Duration::from_secs(10), || origin.count("/seg/8") == 1).await);
}

#[tokio::test]
async fn the_prefetch_mark_from_a_client_or_an_origin_is_not_trusted() {
    let origin =
        Origin::start(Router::new().route("/x", page(&[("x-stavka-prefetched", "1")], "x"))).await;
    let stavka = stavka(&origin, "", "").await;
    let resp = client()
        .get(stavka.url("/x"))
        .header("x-stavka-prefetch", "00000000000000000000000000000000 0")
        .send()
        .await
        .unwrap();
    assert!(resp.headers().get("x-stavka-prefetched").is_none());
    assert!(
        origin
            .last_headers("/x")
            .unwrap()
            .get("x-stavka-prefetch")
            .is_none(),
        "the header is never passed on"
    );
    let hit = stavka.get("/x").await;
    assert!(
        hit.cache_status().contains("; hit"),
        "{}",
        hit.cache_status()
    );
    assert!(
        !hit.cache_status().contains("prefetched"),
        "{}",
        hit.cache_status()
    );
    assert_eq!(prefetched(&stavka, "fetched").await, 0.0);
}

#[tokio::test]
async fn rfc8297_early_hints_come_from_the_policy_and_from_a_pages_last_preload_links() {
    let origin = Origin::start(
        Router::new()
            .route(
                "/learnt",
                page(
                    &[("link", "</s.css>; rel=preload; as=style, </next>; rel=next")],
                    "page",
                ),
            )
            .route("/asked", page(&[], "asked")),
    )
    .await;
    let stavka = Stavka::start_with_modules(
        &format!("{}early_hints = true\n", default_site(&origin, Some("p"))),
        &[("p", "prefetcher", "")],
    )
    .await;
    // The policy's own hint, before the origin is asked.
    let answer = raw_get(
        stavka.proxy,
        "/asked",
        "1.1",
        "x-test-hint: </h.js>; rel=preload; as=script\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 103"), "{answer}");
    let (hints, rest) = answer.split_once("\r\n\r\n").unwrap();
    assert!(
        hints
            .to_lowercase()
            .contains("link: </h.js>; rel=preload; as=script"),
        "{hints}"
    );
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
    // A page's preload links are learnt from its response, and sent when
    // the origin is asked for it again (here after a purge).
    let first = raw_get(stavka.proxy, "/learnt", "1.1", "").await;
    assert!(
        first.starts_with("HTTP/1.1 200"),
        "nothing learnt yet: {first}"
    );
    stavka
        .purge(serde_json::json!({ "url": "test.example/learnt" }))
        .await;
    let again = raw_get(stavka.proxy, "/learnt", "1.1", "").await;
    let (hints, rest) = again.split_once("\r\n\r\n").unwrap();
    assert!(hints.starts_with("HTTP/1.1 103"), "{again}");
    assert!(
        hints
            .to_lowercase()
            .contains("link: </s.css>; rel=preload; as=style"),
        "{hints}"
    );
    assert!(!hints.contains("</next>"), "only preload links: {hints}");
    assert!(rest.starts_with("HTTP/1.1 200"), "{rest}");
    assert_eq!(origin.count("/learnt"), 2);
    // A hit asks no origin: no hints. RFC 9110 §15.2: none to HTTP/1.0.
    assert!(raw_get(stavka.proxy, "/learnt", "1.1", "")
        .await
        .starts_with("HTTP/1.1 200"));
    stavka
        .purge(serde_json::json!({ "url": "test.example/learnt" }))
        .await;
    let old = raw_get(stavka.proxy, "/learnt", "1.0", "").await;
    assert!(old.starts_with("HTTP/1.1 200"), "{old}");
}

#[tokio::test]
async fn rfc8297_early_hints_reach_http2_clients() {
    let origin = Origin::start(Router::new().route("/h2", page(&[], "over h2"))).await;
    let stavka = Stavka::start_listening(
        "h2c = true\n",
        &default_site(&origin, Some("p")),
        &[("p", "prefetcher", "")],
    )
    .await;
    let tcp = TcpStream::connect(stavka.proxy).await.unwrap();
    let (mut send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let request = http::Request::get("http://test.example/h2")
        .header("x-test-hint", "</h2.css>; rel=preload; as=style")
        .body(())
        .unwrap();
    let (mut response, _) = send.send_request(request, true).unwrap();
    let interim = std::future::poll_fn(|cx| response.poll_informational(cx))
        .await
        .expect("a 103 before the response")
        .unwrap();
    assert_eq!(interim.status(), 103);
    assert_eq!(
        interim.headers()["link"].to_str().unwrap(),
        "</h2.css>; rel=preload; as=style"
    );
    let final_response = response.await.unwrap();
    assert_eq!(final_response.status(), 200);
}

/// A module's own budget (`prefetch_rate` in its sidecar) holds over every
/// site it serves, beside each site's `[site.prefetch]` budget: one
/// prefetch a second for the module, where each site alone allows fifty.
#[tokio::test]
async fn a_modules_own_prefetch_budget_holds_across_its_sites() {
    let origin = Origin::start(
        Router::new()
            .route("/page", page(&[("x-prefetch", "/o/1, /o/2, /o/3")], "p"))
            .route("/o/{n}", page(&[], "o")),
    )
    .await;
    let site = |name: &str, default: bool| {
        format!(
            "[[site]]\nname = \"{name}\"\nhosts = [\"{name}.example\"]\ndefault = {default}\npolicy = \"p\"\norigin = {{ address = \"{}\" }}\n[site.prefetch]\n\n",
            origin.addr
        )
    };
    let stavka = Stavka::start_with_modules(
        &format!("{}{}", site("a", true), site("b", false)),
        &[("p", "prefetcher", "prefetch_rate = 1\n")],
    )
    .await;
    let results = |resp: &stavka_e2e::Fetched| {
        let result = resp.header("x-prefetch-result").to_owned();
        let ok = result.split(", ").filter(|r| *r == "ok").count();
        let over = result.split(", ").filter(|r| *r == "over-budget").count();
        (ok, over, result)
    };
    let (ok, over, a) = results(&stavka.get_host("a.example", "/page").await);
    assert_eq!((ok, over), (1, 2), "{a}");
    // Another site, its own lane and buckets full: the module's budget is
    // spent (at most one more token may have come back meanwhile).
    let (ok, over, b) = results(&stavka.get_host("b.example", "/page").await);
    assert!(ok <= 1 && over >= 2, "{b}");
}
