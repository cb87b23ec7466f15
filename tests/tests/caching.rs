//! HTTP caching through the real proxy, by the RFCs: 9111 (caching),
//! 5861 (stale-*), 9211 (Cache-Status), 9213 (CDN-Cache-Control).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use stavka_e2e::{client, eventually, fixed, Fetched, Origin, Stavka};

#[tokio::test]
async fn rfc9111_fresh_hit_serves_without_origin_and_reports_cache_status() {
    let origin = Origin::start(
        Router::new().route("/a", fixed(&[("cache-control", "max-age=60")], "alpha")),
    )
    .await;
    let stavka = Stavka::in_front_of(&origin, "").await;

    let first = stavka.get("/a").await;
    assert_eq!(first.status, 200);
    assert_eq!(first.text(), "alpha");
    assert!(
        first
            .cache_status()
            .starts_with("stavka; fwd=uri-miss; fwd-status=200"),
        "{}",
        first.cache_status()
    );
    assert!(
        first.cache_status().contains("; stored"),
        "{}",
        first.cache_status()
    );

    let second = stavka.get("/a").await;
    assert_eq!(second.text(), "alpha");
    assert!(
        second.cache_status().starts_with("stavka; hit; ttl="),
        "{}",
        second.cache_status()
    );
    assert_eq!(origin.count("/a"), 1, "the hit must not reach the origin");
}

#[tokio::test]
async fn rfc9111_age_counts_origin_age_and_time_in_cache() {
    let origin = Origin::start(Router::new().route(
        "/aged",
        fixed(
            &[("cache-control", "max-age=100"), ("age", "10")],
            "old already",
        ),
    ))
    .await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    stavka.get("/aged").await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let hit = stavka.get("/aged").await;
    let age: u64 = hit.header("age").parse().expect("Age on a hit");
    assert!((11..=13).contains(&age), "age {age}");
    let ttl: i64 = hit
        .cache_status()
        .split("ttl=")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .and_then(|t| t.trim().parse().ok())
        .unwrap();
    assert!(
        (87..=89).contains(&ttl),
        "remaining freshness must discount the age: {ttl}"
    );
}

#[tokio::test]
async fn rfc9111_s_maxage_overrides_max_age_for_shared_cache() {
    let origin = Origin::start(Router::new().route(
        "/s",
        fixed(&[("cache-control", "max-age=0, s-maxage=60")], "shared"),
    ))
    .await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    stavka.get("/s").await;
    let hit = stavka.get("/s").await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    assert_eq!(origin.count("/s"), 1);
}

#[tokio::test]
async fn rfc9111_no_store_and_private_are_never_stored() {
    let origin = Origin::start(
        Router::new()
            .route(
                "/no-store",
                fixed(&[("cache-control", "no-store, max-age=60")], "x"),
            )
            .route(
                "/private",
                fixed(&[("cache-control", "private, max-age=60")], "y"),
            )
            .route("/nothing", fixed(&[], "z")),
    )
    .await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    for path in ["/no-store", "/private", "/nothing"] {
        for _ in 0..3 {
            let r = stavka.get(path).await;
            assert_eq!(r.status, 200);
            assert!(
                !r.cache_status().contains("stored"),
                "{path}: {}",
                r.cache_status()
            );
            assert!(
                !r.cache_status().contains("hit"),
                "{path}: {}",
                r.cache_status()
            );
        }
        assert_eq!(
            origin.count(path),
            3,
            "{path} must reach the origin every time"
        );
    }
}

#[tokio::test]
async fn rfc9111_vary_keeps_separate_variants() {
    let origin = Origin::start(Router::new().route(
        "/v",
        get(|headers: HeaderMap| async move {
            let ae = headers
                .get("accept-encoding")
                .map(|v| v.to_str().unwrap().to_owned())
                .unwrap_or_default();
            (
                [("cache-control", "max-age=60"), ("vary", "Accept-Encoding")],
                format!("for {ae}"),
            )
        }),
    ))
    .await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    let fetch = |ae: &'static str| {
        let url = stavka.url("/v");
        async move {
            Fetched::from(
                client()
                    .get(url)
                    .header("accept-encoding", ae)
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    assert_eq!(fetch("gzip").await.text(), "for gzip");
    let br = fetch("br").await;
    assert_eq!(br.text(), "for br");
    assert!(
        br.cache_status().contains("fwd=vary-miss"),
        "{}",
        br.cache_status()
    );
    let gzip_hit = fetch("gzip").await;
    assert_eq!(gzip_hit.text(), "for gzip");
    assert!(
        gzip_hit.cache_status().contains("hit"),
        "{}",
        gzip_hit.cache_status()
    );
    let br_hit = fetch("br").await;
    assert_eq!(br_hit.text(), "for br");
    assert!(
        br_hit.cache_status().contains("hit"),
        "{}",
        br_hit.cache_status()
    );
    assert_eq!(origin.count("/v"), 2);
}

#[tokio::test]
async fn rfc9111_304_revalidation_refreshes_the_stored_entry() {
    let version = Arc::new(AtomicUsize::new(0));
    let v = version.clone();
    let origin = Origin::start(Router::new().route(
        "/e",
        get(move |headers: HeaderMap| {
            let n = v.fetch_add(1, Ordering::SeqCst);
            async move {
                if headers.get("if-none-match").is_some_and(|t| t == "\"v1\"") {
                    (
                        StatusCode::NOT_MODIFIED,
                        [
                            ("etag", "\"v1\""),
                            ("cache-control", "max-age=60"),
                            ("x-revalidated", "yes"),
                        ],
                    )
                        .into_response()
                } else {
                    assert_eq!(n, 0, "only the first request should be a full fetch");
                    (
                        [("etag", "\"v1\""), ("cache-control", "max-age=1")],
                        "the body",
                    )
                        .into_response()
                }
            }
        }),
    ))
    .await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    assert_eq!(stavka.get("/e").await.text(), "the body");
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let revalidated = stavka.get("/e").await;
    assert_eq!(revalidated.status, 200);
    assert_eq!(revalidated.text(), "the body");
    assert!(
        revalidated
            .cache_status()
            .contains("fwd=stale; fwd-status=304"),
        "{}",
        revalidated.cache_status()
    );
    assert_eq!(
        revalidated.header("x-revalidated"),
        "yes",
        "304 headers are merged"
    );
    assert_eq!(
        origin
            .last_headers("/e")
            .unwrap()
            .get("if-none-match")
            .unwrap(),
        "\"v1\"",
        "the proxy revalidates with the stored validator"
    );

    // The 304 refreshed the entry: fresh for 60 s now, with the merged header.
    let hit = stavka.get("/e").await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    assert_eq!(hit.header("x-revalidated"), "yes");
    assert_eq!(origin.count("/e"), 2);
}

#[tokio::test]
async fn rfc5861_stale_while_revalidate_serves_stale_and_refreshes_once_in_background() {
    let version = Arc::new(AtomicUsize::new(0));
    let v = version.clone();
    let origin = Origin::start(Router::new().route(
        "/swr",
        get(move || {
            let n = v.fetch_add(1, Ordering::SeqCst) + 1;
            async move {
                // The first answer goes stale after a second; the refresh
                // stays fresh while the test looks for it (on a loaded
                // machine a second can pass before it does, and a stale
                // refresh would be refreshed again).
                let cache_control = if n > 1 {
                    // The refresh is slow: a client waiting on it would notice.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    "max-age=60, stale-while-revalidate=60"
                } else {
                    "max-age=1, stale-while-revalidate=60"
                };
                ([("cache-control", cache_control)], format!("version {n}"))
            }
        }),
    ))
    .await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    assert_eq!(stavka.get("/swr").await.text(), "version 1");
    tokio::time::sleep(Duration::from_millis(2100)).await;

    // Several stale requests at once: all get the stale body, one refresh goes out.
    let stale = futures_util::future::join_all((0..5).map(|_| stavka.get("/swr"))).await;
    for r in &stale {
        assert_eq!(r.text(), "version 1");
        assert!(r.cache_status().contains("hit"), "{}", r.cache_status());
        assert!(
            r.cache_status().contains("detail=stale-while-revalidate"),
            "{}",
            r.cache_status()
        );
    }
    assert!(eventually(Duration::from_secs(5), || origin.count("/swr") == 2).await);
    let mut refreshed = None;
    for _ in 0..100 {
        let r = stavka.get("/swr").await;
        if r.text() == "version 2" {
            refreshed = Some(r);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let refreshed = refreshed.is_some_and(|r| r.cache_status().contains("hit"));
    assert!(refreshed, "the background refresh must replace the entry");
    assert_eq!(origin.count("/swr"), 2, "exactly one background refresh");
}

#[tokio::test]
async fn rfc5861_stale_if_error_serves_stale_when_the_origin_is_down() {
    let origin = Origin::start(
        Router::new()
            .route(
                "/sie",
                fixed(
                    &[("cache-control", "max-age=1, stale-if-error=60")],
                    "still here",
                ),
            )
            .route(
                "/plain",
                fixed(&[("cache-control", "max-age=1")], "gone soon"),
            ),
    )
    .await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    stavka.get("/sie").await;
    stavka.get("/plain").await;
    origin.stop().await;
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let stale = stavka.get("/sie").await;
    assert_eq!(stale.status, 200);
    assert_eq!(stale.text(), "still here");
    assert!(
        stale.cache_status().contains("fwd=stale"),
        "{}",
        stale.cache_status()
    );
    assert!(
        stale.cache_status().contains("detail=stale-if-error"),
        "{}",
        stale.cache_status()
    );

    let failed = stavka.get("/plain").await;
    assert_eq!(failed.status, 502);
    assert!(failed.text().contains("refused"), "{}", failed.text());
    assert!(
        failed.cache_status().contains("fwd-status=502"),
        "{}",
        failed.cache_status()
    );
}

#[tokio::test]
async fn collapsing_100_cold_requests_make_one_origin_request() {
    const BODY_LEN: usize = 256 * 1024;
    let origin = Origin::start(Router::new().route(
        "/cold",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(300)).await;
            ([("cache-control", "max-age=60")], vec![b'c'; BODY_LEN])
        }),
    ))
    .await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    let all = futures_util::future::join_all((0..100).map(|_| stavka.get("/cold"))).await;
    for r in &all {
        assert_eq!(r.status, 200);
        assert_eq!(r.body.len(), BODY_LEN);
        assert!(r.body.iter().all(|b| *b == b'c'));
    }
    assert_eq!(
        origin.count("/cold"),
        1,
        "concurrent misses collapse into one origin request"
    );
    let collapsed = stavka
        .metric("stavka_collapsed_requests_total")
        .await
        .unwrap();
    assert!(collapsed >= 1.0, "waiters are counted: {collapsed}");
}

#[tokio::test]
async fn rfc9111_4_4_unsafe_methods_invalidate_uri_and_location() {
    let origin = Origin::start(
        Router::new()
            .route(
                "/item",
                fixed(&[("cache-control", "max-age=60")], "item").post(|| async { "updated" }),
            )
            .route("/other", fixed(&[("cache-control", "max-age=60")], "other"))
            .route(
                "/create",
                axum::routing::post(|| async {
                    (StatusCode::CREATED, [("location", "/other")], "created")
                }),
            )
            .route(
                "/failing",
                fixed(&[("cache-control", "max-age=60")], "kept")
                    .delete(|| async { (StatusCode::INTERNAL_SERVER_ERROR, "no") }),
            ),
    )
    .await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    for path in ["/item", "/other", "/failing"] {
        stavka.get(path).await;
        assert!(stavka.get(path).await.cache_status().contains("hit"));
    }

    let post = Fetched::from(client().post(stavka.url("/item")).send().await.unwrap()).await;
    assert_eq!(post.text(), "updated");
    assert!(
        !stavka.get("/item").await.cache_status().contains("hit"),
        "POST invalidates its URI"
    );
    assert_eq!(origin.count("/item"), 3);

    let created = Fetched::from(client().post(stavka.url("/create")).send().await.unwrap()).await;
    assert_eq!(created.status, 201);
    assert!(
        !stavka.get("/other").await.cache_status().contains("hit"),
        "Location is invalidated"
    );

    let failed = Fetched::from(
        client()
            .delete(stavka.url("/failing"))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(failed.status, 500);
    assert!(
        stavka.get("/failing").await.cache_status().contains("hit"),
        "a failed DELETE invalidates nothing"
    );
}

#[tokio::test]
async fn rfc9213_cdn_cache_control_takes_precedence_and_is_forwarded() {
    let origin = Origin::start(
        Router::new()
            .route(
                "/cdn-yes",
                fixed(
                    &[
                        ("cache-control", "no-store"),
                        ("cdn-cache-control", "max-age=60"),
                    ],
                    "cdn",
                ),
            )
            .route(
                "/cdn-no",
                fixed(
                    &[
                        ("cache-control", "max-age=60"),
                        ("cdn-cache-control", "no-store"),
                    ],
                    "browser",
                ),
            ),
    )
    .await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    let first = stavka.get("/cdn-yes").await;
    assert_eq!(
        first.header("cdn-cache-control"),
        "max-age=60",
        "forwarded downstream, for CDNs further down (RFC 9213 §2.1)"
    );
    assert_eq!(
        first.header("cache-control"),
        "no-store",
        "Cache-Control still reaches the client"
    );
    let second = stavka.get("/cdn-yes").await;
    assert!(
        second.cache_status().contains("hit"),
        "{}",
        second.cache_status()
    );
    assert_eq!(second.header("cdn-cache-control"), "max-age=60");
    assert_eq!(origin.count("/cdn-yes"), 1);

    stavka.get("/cdn-no").await;
    stavka.get("/cdn-no").await;
    assert_eq!(
        origin.count("/cdn-no"),
        2,
        "CDN-Cache-Control: no-store wins over max-age"
    );
}

#[tokio::test]
async fn rfc9111_3_5_authorization_requires_explicit_permission() {
    let origin = Origin::start(
        Router::new()
            .route("/auth", fixed(&[("cache-control", "max-age=60")], "secret"))
            .route(
                "/auth-public",
                fixed(&[("cache-control", "public, max-age=60")], "shared"),
            ),
    )
    .await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    let authed = |path: &str| {
        let url = stavka.url(path);
        async move {
            Fetched::from(
                client()
                    .get(url)
                    .header("authorization", "Bearer t")
                    .send()
                    .await
                    .unwrap(),
            )
            .await
        }
    };
    authed("/auth").await;
    authed("/auth").await;
    assert_eq!(origin.count("/auth"), 2);
    authed("/auth-public").await;
    assert!(authed("/auth-public").await.cache_status().contains("hit"));
    assert_eq!(origin.count("/auth-public"), 1);
}

#[tokio::test]
async fn objects_over_max_object_size_are_proxied_not_stored() {
    let origin = Origin::start(Router::new().route(
        "/big",
        get(|| async { ([("cache-control", "max-age=60")], vec![b'b'; 200_000]) }),
    ))
    .await;
    let stavka = Stavka::in_front_of(&origin, "[store]\nmax_object_size = \"100KiB\"\n").await;
    for _ in 0..2 {
        let r = stavka.get("/big").await;
        assert_eq!(r.body.len(), 200_000);
        assert!(!r.cache_status().contains("hit"));
    }
    assert_eq!(origin.count("/big"), 2);
}

#[tokio::test]
async fn cache_size_is_bounded_by_eviction() {
    let origin = Origin::start(Router::new().route(
        "/obj/{n}",
        get(|| async { ([("cache-control", "max-age=600")], vec![b'o'; 100 * 1024]) }),
    ))
    .await;
    let stavka = Stavka::in_front_of(
        &origin,
        "[store]\ndisk_bytes = \"1MiB\"\nmax_object_size = \"512KiB\"\n",
    )
    .await;
    for n in 0..30 {
        assert_eq!(
            stavka.get(&format!("/obj/{n}")).await.body.len(),
            100 * 1024
        );
    }
    let bytes = stavka.metric("stavka_cache_bytes").await.unwrap();
    let evicted = stavka.metric("stavka_cache_evictions_total").await.unwrap();
    assert!(bytes <= (1024 * 1024) as f64, "cache holds {bytes} bytes");
    assert!(evicted >= 19.0, "evicted {evicted}");
    // The store's CLOCK walks objects in hash order, so which objects stay
    // is only roughly least-recently-used; what it guarantees is the bound.
    let objects = stavka.metric("stavka_cache_objects").await.unwrap();
    assert!(
        (1.0..=10.0).contains(&objects),
        "{objects} objects of 100 KiB in 1 MiB"
    );
}

#[tokio::test]
async fn a_restart_after_sigkill_keeps_the_cache() {
    let origin = Origin::start(
        Router::new()
            .route("/keep", fixed(&[("cache-control", "max-age=600")], "kept"))
            .route(
                "/big",
                get(|| async { ([("cache-control", "max-age=600")], vec![b'k'; 3_000_000]) }),
            ),
    )
    .await;
    let mut stavka = Stavka::in_front_of(&origin, "").await;
    stavka.get("/keep").await;
    stavka.get("/big").await;
    stavka.restart().await;
    let kept = stavka.get("/keep").await;
    assert_eq!(kept.text(), "kept");
    assert!(
        kept.cache_status().contains("hit"),
        "{}",
        kept.cache_status()
    );
    let big = stavka.get("/big").await;
    assert_eq!(big.body.len(), 3_000_000);
    assert!(big.cache_status().contains("hit"), "{}", big.cache_status());
    assert_eq!((origin.count("/keep"), origin.count("/big")), (1, 1));
    assert_eq!(
        stavka.metric("stavka_cache_objects").await,
        Some(2.0),
        "recovered objects are tracked"
    );
}

/// A clean stop saves the store's index and the next start takes it back:
/// every object is a hit from the first request, with no walk of the files.
#[tokio::test]
async fn a_clean_restart_serves_every_object_at_once() {
    let origin = Origin::start(Router::new().route(
        "/o/{n}",
        get(|| async { ([("cache-control", "max-age=600")], "kept") }),
    ))
    .await;
    let mut stavka = Stavka::in_front_of(&origin, "").await;
    for n in 0..20 {
        stavka.get(&format!("/o/{n}")).await;
    }
    stavka.restart_cleanly().await;
    assert_eq!(
        stavka.degraded().await,
        Vec::<String>::new(),
        "nothing to recover"
    );
    for n in 0..20 {
        let kept = stavka.get(&format!("/o/{n}")).await;
        assert!(
            kept.cache_status().contains("hit"),
            "{n}: {}",
            kept.cache_status()
        );
    }
    assert_eq!(origin.count_prefix("/o/"), 20);
    assert_eq!(stavka.metric("stavka_cache_objects").await, Some(20.0));
}

#[tokio::test]
async fn fifty_collapsed_clients_of_a_large_cold_object_stream_before_the_origin_finishes() {
    use futures_util::StreamExt;
    const CHUNKS: usize = 40;
    const CHUNK: usize = 64 * 1024;
    const LENGTH: &str = "2621440"; // CHUNKS * CHUNK
    let finished: Arc<std::sync::Mutex<Option<std::time::Instant>>> = Arc::default();
    let done = finished.clone();
    let origin = Origin::start(Router::new().route(
        "/large",
        get(move || {
            let done = done.clone();
            async move {
                let body = futures_util::stream::unfold(0usize, move |sent| {
                    let done = done.clone();
                    async move {
                        if sent == CHUNKS {
                            return None;
                        }
                        // ~2.4 s in all: a slow origin, as the test is about.
                        tokio::time::sleep(Duration::from_millis(60)).await;
                        if sent + 1 == CHUNKS {
                            // The last bytes leave the origin now.
                            *done.lock().unwrap() = Some(std::time::Instant::now());
                        }
                        Some((Ok::<_, std::io::Error>(vec![b'L'; CHUNK]), sent + 1))
                    }
                });
                (
                    [("cache-control", "max-age=600"), ("content-length", LENGTH)],
                    axum::body::Body::from_stream(body),
                )
            }
        }),
    ))
    .await;
    let stavka = Arc::new(Stavka::in_front_of(&origin, "").await);
    let clients = (0..50).map(|_| {
        let url = stavka.url("/large");
        tokio::spawn(async move {
            let resp = client().get(url).send().await.unwrap();
            let mut stream = resp.bytes_stream();
            let mut first = None;
            let mut len = 0;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.unwrap();
                if !chunk.is_empty() {
                    first.get_or_insert_with(std::time::Instant::now);
                }
                len += chunk.len();
            }
            (first.unwrap(), len)
        })
    });
    let results = futures_util::future::join_all(clients).await;
    let origin_done = finished.lock().unwrap().expect("the origin finished");
    for r in results {
        let (first_byte, len) = r.unwrap();
        assert_eq!(len, CHUNKS * CHUNK);
        assert!(
            first_byte < origin_done,
            "every client starts receiving before the origin finishes"
        );
    }
    assert_eq!(
        origin.count("/large"),
        1,
        "one origin request for 50 clients"
    );
}
