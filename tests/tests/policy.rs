//! Wasm cache policies through the real proxy, with guests compiled from
//! `examples-guests/`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use stavka_e2e::{client, Fetched, Origin, Stavka};

fn origin_routes() -> Router {
    Router::new()
        .route(
            "/static/app.css",
            get(|| async { ([("cache-control", "no-store")], "body{}") }),
        )
        .route(
            "/api/items",
            get(|| async { ([("cache-control", "max-age=60")], "[1,2]") }),
        )
        .route(
            "/page",
            get(|| async { ([("cache-control", "max-age=60")], "page") }),
        )
        .route(
            "/plain",
            get(|| async { ([("cache-control", "max-age=60")], "plain") }),
        )
        .route(
            "/private/doc",
            get(|headers: HeaderMap| async move {
                let auth = headers.contains_key("authorization");
                (
                    [("cache-control", "public, max-age=60")],
                    format!("secret doc (authorization forwarded: {auth})"),
                )
            }),
        )
}

async fn get_with(stavka: &Stavka, path: &str, headers: &[(&str, &str)]) -> Fetched {
    let mut req = client().get(stavka.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    Fetched::from(req.send().await.unwrap()).await
}

#[tokio::test]
async fn bypass_extra_variance_and_revalidate_on_hit_take_effect() {
    let origin = Origin::start(
        Router::new()
            .route(
                "/bypass",
                get(|| async { ([("cache-control", "max-age=60")], "b") }),
            )
            .route(
                "/device",
                get(|headers: HeaderMap| async move {
                    let device = headers
                        .get("x-device")
                        .map(|v| v.to_str().unwrap().to_owned());
                    (
                        [("cache-control", "max-age=60")],
                        device.unwrap_or_default(),
                    )
                }),
            )
            .route(
                "/revalidate",
                get(|| async { ([("cache-control", "max-age=60"), ("etag", "\"r\"")], "r") }),
            ),
    )
    .await;
    let stavka = Stavka::with_policy(&origin, "decisions", "").await;

    for _ in 0..2 {
        let r = stavka.get("/bypass").await;
        assert!(
            r.cache_status().contains("fwd=bypass"),
            "{}",
            r.cache_status()
        );
    }
    assert_eq!(
        origin.count("/bypass"),
        2,
        "bypassed requests are never cached"
    );

    assert_eq!(
        get_with(&stavka, "/device", &[("x-device", "phone")])
            .await
            .text(),
        "phone"
    );
    assert_eq!(
        get_with(&stavka, "/device", &[("x-device", "desk")])
            .await
            .text(),
        "desk"
    );
    let phone = get_with(&stavka, "/device", &[("x-device", "phone")]).await;
    assert_eq!(phone.text(), "phone");
    assert!(
        phone.cache_status().contains("hit"),
        "{}",
        phone.cache_status()
    );
    assert_eq!(origin.count("/device"), 2, "one entry per variance value");

    stavka.get("/revalidate").await;
    let again = stavka.get("/revalidate").await;
    assert_eq!(again.text(), "r");
    assert!(
        again.cache_status().contains("fwd=stale"),
        "on-hit revalidate: {}",
        again.cache_status()
    );
    assert_eq!(origin.count("/revalidate"), 2);
}

#[tokio::test]
async fn ttl_rules_override_ttls_and_normalise_the_cache_key() {
    let origin = Origin::start(origin_routes()).await;
    let stavka = Stavka::with_policy(&origin, "ttl-rules", "mode = \"per-request\"\n").await;

    // on-response `store`: stored for a day although the origin said no-store.
    let first = stavka.get("/static/app.css").await;
    assert_eq!(
        first.header("x-policy-ttl"),
        "86400",
        "on-response header edits apply"
    );
    let hit = stavka.get("/static/app.css").await;
    assert!(hit.cache_status().contains("hit"), "{}", hit.cache_status());
    assert_eq!(origin.count("/static/app.css"), 1);

    // ttl-rules declares (`Policy::HOOKS`) that it leaves hits alone: the
    // SDK exports `on-hit` anyway, and the host does not call it.
    // Both requests were decided: the first in the guest, the second (the
    // same path and query, all ttl-rules reads) from its kept decision.
    let calls = |hook: &str| format!("stavka_policy_calls_total{{hook=\"{hook}\",module=\"p\"}}");
    let memo = "stavka_policy_memo_hits_total{hook=\"on-request\",module=\"p\"}";
    assert_eq!(stavka.metric(&calls("on-request")).await, Some(1.0));
    assert_eq!(stavka.metric(memo).await, Some(1.0));
    assert_eq!(stavka.metric(&calls("on-hit")).await, Some(0.0));
    // What it implements, not what the SDK exports: no `on-hit`, and no
    // `init`, which ttl-rules does not implement (and a per-request module
    // would not be given).
    let listing = stavka.admin_json("/policies").await;
    assert_eq!(
        listing["modules"][0]["hooks"],
        serde_json::json!(["on-request", "on-response"])
    );

    // on-response `no-store`: never stored although the origin said max-age.
    stavka.get("/api/items").await;
    stavka.get("/api/items").await;
    assert_eq!(origin.count("/api/items"), 2);

    // on-request `lookup` with a custom key: tracking parameters and order don't matter.
    stavka.get("/page?b=2&a=1&utm_source=mail").await;
    let same = stavka.get("/page?a=1&b=2").await;
    assert!(
        same.cache_status().contains("hit"),
        "{}",
        same.cache_status()
    );
    assert_eq!(origin.count("/page"), 1);

    // The tag the policy set is a purge handle, and not sent downstream.
    assert_eq!(hit.header("stavka-tags"), "");
    let purged = stavka.purge(serde_json::json!({ "tag": "static" })).await;
    assert_eq!(purged["purged"], 1, "{purged}");
    let refetched = stavka.get("/static/app.css").await;
    assert!(
        refetched.cache_status().contains("miss"),
        "{}",
        refetched.cache_status()
    );
    assert_eq!(origin.count("/static/app.css"), 2);
}

fn signed(path: &str, secret: &str, expires: u64) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{path}?expires={expires}").as_bytes());
    format!(
        "{path}?expires={expires}&sig={}",
        hex::encode(mac.finalize().into_bytes())
    )
}

#[tokio::test]
async fn token_auth_answers_403_unless_signed_or_bearer() {
    let origin = Origin::start(origin_routes()).await;
    let stavka = Stavka::with_policy(&origin, "token-auth", "failure = \"closed\"\n").await;
    stavka.kv_set("p", "secret", "s3cret").await;
    stavka.kv_set("p", "tokens", "alpha, beta").await;

    let denied = stavka.get("/private/doc").await;
    assert_eq!(denied.status, 403);
    assert!(
        denied.cache_status().contains("detail=policy-response"),
        "{}",
        denied.cache_status()
    );
    assert_eq!(
        get_with(&stavka, "/private/doc", &[("authorization", "Bearer nope")])
            .await
            .status,
        403
    );
    assert_eq!(
        origin.count("/private/doc"),
        0,
        "denied requests never reach the origin"
    );

    let bearer = get_with(&stavka, "/private/doc", &[("authorization", "Bearer beta")]).await;
    assert_eq!(bearer.status, 200);
    assert_eq!(
        bearer.text(),
        "secret doc (authorization forwarded: false)",
        "origin edits apply"
    );

    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ok = stavka
        .get(&signed("/private/doc", "s3cret", now + 60))
        .await;
    assert_eq!(ok.status, 200);
    assert!(
        ok.cache_status().contains("hit"),
        "signed and bearer requests share the entry: {}",
        ok.cache_status()
    );
    assert_eq!(
        stavka
            .get(&signed("/private/doc", "s3cret", now - 1))
            .await
            .status,
        403,
        "expired"
    );
    assert_eq!(
        stavka
            .get(&signed("/private/doc", "wrong", now + 60))
            .await
            .status,
        403,
        "bad signature"
    );
    assert_eq!(stavka.get("/plain").await.status, 200, "other paths pass");
}

#[tokio::test]
async fn blocklist_stops_serving_cached_entries_when_the_kv_store_changes() {
    let origin = Origin::start(origin_routes()).await;
    let stavka = Stavka::with_policy(
        &origin,
        "blocklist",
        "mode = \"long-lived\"\n[init]\nstatus = 451\n",
    )
    .await;
    assert_eq!(stavka.get("/page").await.status, 200);
    assert!(stavka.get("/page").await.cache_status().contains("hit"));

    stavka.kv_set("p", "blocked", "/nothing\n/pa*\n").await;
    let blocked = stavka.get("/page").await;
    assert_eq!(
        blocked.status, 451,
        "a running long-lived module sees the KV change without a reload"
    );
    assert_eq!(
        origin.count("/page"),
        1,
        "on-hit answered without the origin"
    );
    let counted = stavka
        .metric(r#"stavka_policy_guest_counter_total{module="p",name="blocked_hits"}"#)
        .await;
    assert_eq!(counted, Some(1.0));

    stavka.kv_set("p", "blocked", "").await;
    let served = stavka.get("/page").await;
    assert_eq!(served.status, 200);
    assert_eq!(served.text(), "page");
}

#[tokio::test]
async fn client_budget_rejects_beyond_the_budget() {
    let origin = Origin::start(origin_routes()).await;
    let stavka = Stavka::with_policy(
        &origin,
        "client-budget",
        "mode = \"long-lived\"\ninstances = 1\n[init]\nrequests = 3\nwindow_seconds = 60\n",
    )
    .await;
    for _ in 0..3 {
        assert_eq!(stavka.get("/plain").await.status, 200);
    }
    let over = stavka.get("/plain").await;
    assert_eq!(over.status, 429);
    assert!(over
        .header("retry-after")
        .parse::<u64>()
        .is_ok_and(|s| (1..=60).contains(&s)));
}

#[tokio::test]
async fn per_request_instances_keep_no_state_and_long_lived_ones_do() {
    let origin = Origin::start(origin_routes()).await;
    let per_request = Stavka::with_policy(&origin, "counter", "mode = \"per-request\"\n").await;
    for _ in 0..3 {
        assert_eq!(per_request.get("/any").await.text(), "1");
    }
    let long_lived =
        Stavka::with_policy(&origin, "counter", "mode = \"long-lived\"\ninstances = 1\n").await;
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(long_lived.get("/any").await.text().parse::<u64>().unwrap());
    }
    assert!(
        seen.windows(2).all(|w| w[1] == w[0] + 1),
        "one kept instance counts on: {seen:?}"
    );
}

#[tokio::test]
async fn hot_swap_under_load_fails_no_request_and_takes_effect_within_a_second() {
    let origin = Origin::start(origin_routes()).await;
    let stavka = Arc::new(Stavka::with_policy(&origin, "blue", "").await);
    assert_eq!(stavka.get("/").await.text(), "blue");

    let stop = Arc::new(AtomicBool::new(false));
    let failures = Arc::new(AtomicUsize::new(0));
    let served = Arc::new(AtomicUsize::new(0));
    let swapped_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    let green_seen_at: Arc<std::sync::Mutex<Option<Instant>>> = Arc::default();
    // 100 workers in a loop keep ~100 requests in flight; bounded by `stop`.
    let workers: Vec<_> = (0..100)
        .map(|_| {
            let (stavka, stop, failures, served, green) = (
                stavka.clone(),
                stop.clone(),
                failures.clone(),
                served.clone(),
                green_seen_at.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    match client().get(stavka.url("/")).send().await {
                        Ok(resp) if resp.status() == 200 => {
                            let body = resp.text().await.unwrap_or_default();
                            match body.as_str() {
                                "blue" => {}
                                "green" => {
                                    green.lock().unwrap().get_or_insert_with(Instant::now);
                                }
                                _ => {
                                    failures.fetch_add(1, Ordering::Relaxed);
                                }
                            }
                            served.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            eprintln!("failed during the swap: {other:?}");
                            failures.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(500)).await;
    *swapped_at.lock().unwrap() = Some(Instant::now());
    stavka.install("p", "green", "");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    assert_eq!(
        failures.load(Ordering::Relaxed),
        0,
        "no request failed during the swap"
    );
    assert!(served.load(Ordering::Relaxed) > 200, "the load was real");
    let swapped = swapped_at.lock().unwrap().unwrap();
    let green = green_seen_at
        .lock()
        .unwrap()
        .expect("the new module served");
    assert!(
        green.duration_since(swapped) < Duration::from_secs(1),
        "took {:?}",
        green.duration_since(swapped)
    );
    assert_eq!(stavka.get("/").await.text(), "green");
}

#[tokio::test]
async fn a_corrupt_or_foreign_module_leaves_the_old_one_serving() {
    let origin = Origin::start(origin_routes()).await;
    let stavka = Stavka::with_policy(&origin, "blue", "").await;
    let load_errors = r#"stavka_policy_load_errors_total{module="p"}"#;

    // Half a module, as a copy in progress would leave it.
    let blue = stavka_e2e::guest("blue");
    stavka_e2e::install(&stavka.policy_dir, "p", &blue[..blue.len() / 2], "");
    wait_for_metric(&stavka, load_errors, 1.0).await;
    assert_eq!(stavka.get("/").await.text(), "blue");

    // A core module, not a component.
    stavka_e2e::install(&stavka.policy_dir, "p", b"\0asm\x01\0\0\0", "");
    wait_for_metric(&stavka, load_errors, 2.0).await;
    assert_eq!(stavka.get("/").await.text(), "blue");

    // A bad sidecar rejects the version too.
    stavka_e2e::install(
        &stavka.policy_dir,
        "p",
        &stavka_e2e::guest("green"),
        "mode = \"sometimes\"\n",
    );
    wait_for_metric(&stavka, load_errors, 3.0).await;
    assert_eq!(stavka.get("/").await.text(), "blue");
    let metrics = client()
        .get(stavka.admin_url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("stavka_policy_last_load_error{") && l.contains("p.toml")),
        "the last error is exported"
    );
    // The listing shows the serving version, its standing error and counters.
    let listing = stavka.admin_json("/policies").await;
    let module = &listing["modules"][0];
    assert_eq!(module["status"], "serving", "{listing}");
    assert!(
        module["last_error"].as_str().unwrap().contains("p.toml"),
        "{listing}"
    );
    let counters = &module["counters"];
    assert!(
        counters["calls"].as_u64().unwrap() + counters["memo_hits"].as_u64().unwrap() >= 3,
        "{listing}"
    );
    assert_eq!(module["counters"]["failures"]["trap"], 0, "{listing}");
}

async fn wait_for_metric(stavka: &Stavka, sample: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while stavka.metric(sample).await.unwrap_or(0.0) < at_least {
        assert!(
            Instant::now() < deadline,
            "{sample} never reached {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

#[tokio::test]
async fn a_looping_guest_is_stopped_at_its_deadline_and_the_failure_mode_answers() {
    let origin = Origin::start(origin_routes()).await;
    let open = Stavka::with_policy(
        &origin,
        "looping",
        "deadline = \"10ms\"\nfailure = \"open\"\n",
    )
    .await;
    let r = open.get("/plain").await;
    assert_eq!(r.status, 200, "fail-open: as if there were no policy");
    assert_eq!(r.text(), "plain");
    let deadline = r#"stavka_policy_failures_total{hook="on-request",kind="deadline",module="p"}"#;
    assert_eq!(open.metric(deadline).await, Some(1.0));

    let closed = Stavka::with_policy(
        &origin,
        "looping",
        "deadline = \"10ms\"\nfailure = \"closed\"\n",
    )
    .await;
    let r = closed.get("/plain").await;
    assert_eq!(r.status, 503, "fail-closed");
    assert!(r.text().contains("policy failed"), "{}", r.text());
    assert!(
        r.cache_status().contains("detail=policy-failed"),
        "{}",
        r.cache_status()
    );
    assert_eq!(closed.health().await, 200);
}

#[tokio::test]
async fn a_memory_hog_is_stopped_at_its_cap() {
    let origin = Origin::start(origin_routes()).await;
    let stavka = Stavka::with_policy(
        &origin,
        "memory-hog",
        "memory = \"8MiB\"\ndeadline = \"1s\"\n",
    )
    .await;
    for _ in 0..3 {
        assert_eq!(stavka.get("/plain").await.status, 200);
    }
    let memory = r#"stavka_policy_failures_total{hook="on-request",kind="memory",module="p"}"#;
    assert_eq!(stavka.metric(memory).await, Some(3.0));
}

#[tokio::test]
async fn a_trapping_guest_fails_open_and_the_host_stays_up() {
    let origin = Origin::start(origin_routes()).await;
    let stavka = Stavka::with_policy(&origin, "trap", "").await;
    for _ in 0..3 {
        assert_eq!(stavka.get("/plain").await.text(), "plain");
    }
    let traps = r#"stavka_policy_failures_total{hook="on-request",kind="trap",module="p"}"#;
    assert_eq!(stavka.metric(traps).await, Some(3.0));
    assert_eq!(stavka.health().await, 200);
}

#[tokio::test]
async fn a_module_that_exports_no_hook_changes_nothing() {
    let origin = Origin::start(origin_routes()).await;
    let stavka = Stavka::with_policy(&origin, "no-exports", "").await;
    assert_eq!(stavka.get("/plain").await.text(), "plain");
    assert!(stavka.get("/plain").await.cache_status().contains("hit"));
    let listing = stavka.admin_json("/policies").await;
    assert_eq!(listing["modules"][0]["name"], "p");
    assert_eq!(listing["modules"][0]["hooks"], serde_json::json!([]));
}

/// `stavka:policy` grows by compatible versions: a module built against
/// 0.1.0 (ttl-rules as of e2adfcb, kept in `tests/fixtures/`) loads in a
/// host that speaks 0.1.1, and its hooks run; it has no `slicing`, so the
/// host does not call one.
#[tokio::test]
async fn a_module_built_for_policy_0_1_0_keeps_loading() {
    let origin = Origin::start(Router::new().route(
        "/static/app.css",
        stavka_e2e::fixed(&[("cache-control", "no-store")], "css"),
    ))
    .await;
    let stavka = Stavka::start(&stavka_e2e::default_site(&origin, Some("old"))).await;
    let old = std::fs::read(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/fixtures/policy-0.1.0/ttl_rules.wasm"
    ))
    .unwrap();
    stavka_e2e::install(&stavka.policy_dir, "old", &old, "mode = \"long-lived\"\n");
    let mut first = None;
    for _ in 0..100 {
        let resp = stavka.get("/static/app.css").await;
        if resp.status == 200 {
            first = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let first = first.expect("the 0.1.0 module loaded and the site serves");
    assert_eq!(first.header("x-policy-ttl"), "86400", "on-response ran");
    assert!(stavka
        .get("/static/app.css")
        .await
        .cache_status()
        .contains("hit"));
    let policies = stavka.admin_json("/policies").await;
    let module = &policies["modules"][0];
    assert_eq!(module["status"], "serving", "{policies}");
    let hooks = module["hooks"].to_string();
    assert!(
        hooks.contains("on-request") && !hooks.contains("slicing"),
        "{hooks}"
    );
}
