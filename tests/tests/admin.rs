//! The admin API against the real proxy: purges by URL, prefix and tag,
//! hard and soft; inspection; statistics; the OpenAPI description.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::json;
use stavka_e2e::{client, Origin, Stavka};

/// `max-age=60`, a body naming the path, and whatever `extra` headers.
fn cached(extra: &'static [(&'static str, &'static str)]) -> axum::routing::MethodRouter {
    get(move |uri: axum::http::Uri| async move {
        let mut resp = format!("body of {}", uri.path()).into_response();
        resp.headers_mut()
            .insert("cache-control", "max-age=60".parse().unwrap());
        for (k, v) in extra {
            resp.headers_mut().append(*k, v.parse().unwrap());
        }
        resp
    })
}

fn purged(answer: &serde_json::Value) -> (u64, u64) {
    (
        answer["matched"].as_u64().unwrap(),
        answer["purged"].as_u64().unwrap(),
    )
}

#[tokio::test]
async fn hard_purge_by_url_removes_every_vary_variant_and_the_next_request_misses() {
    let origin = Origin::start(Router::new().route(
        "/v",
        cached(&[("vary", "accept-language"), ("surrogate-key", "v")]),
    ))
    .await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    let get_lang = |lang: &'static str| {
        let url = stavka.url("/v");
        async move {
            let resp = client()
                .get(url)
                .header("accept-language", lang)
                .send()
                .await
                .unwrap();
            let status = resp.headers()["cache-status"].to_str().unwrap().to_owned();
            assert!(
                resp.headers().get("surrogate-key").is_none(),
                "tags are not sent downstream"
            );
            status
        }
    };
    get_lang("en").await;
    get_lang("fr").await;
    assert!(get_lang("en").await.contains("hit"));
    assert_eq!(origin.count("/v"), 2);

    let url = format!("http://{}/v", stavka.proxy);
    let inspected = stavka.inspect(&url).await;
    assert_eq!(
        inspected["entries"].as_array().unwrap().len(),
        2,
        "{inspected}"
    );

    let answer = stavka.purge(json!({ "url": url })).await;
    assert_eq!(purged(&answer), (2, 2), "{answer}");
    assert_eq!(answer["mode"], "hard");
    assert!(get_lang("en").await.contains("fwd=uri-miss"));
    assert!(get_lang("fr").await.contains("miss"));
    assert_eq!(
        origin.count("/v"),
        4,
        "both variants went back to the origin"
    );

    // Nothing left to purge is an answer, not an error.
    let other = stavka.purge(json!({ "url": stavka.url("/nothing") })).await;
    assert_eq!(purged(&other), (0, 0));
}

#[tokio::test]
async fn soft_purge_revalidates_next_and_stale_if_error_still_serves() {
    let failing = Arc::new(AtomicBool::new(false));
    let conditional = Arc::new(AtomicUsize::new(0));
    let (f, c) = (failing.clone(), conditional.clone());
    let origin = Origin::start(Router::new().route(
        "/doc",
        get(move |headers: HeaderMap| {
            let (f, c) = (f.clone(), c.clone());
            async move {
                if f.load(Ordering::SeqCst) {
                    return StatusCode::BAD_GATEWAY.into_response();
                }
                let cc = [
                    ("cache-control", "max-age=60, stale-if-error=60"),
                    ("etag", "\"v1\""),
                ];
                if headers.get("if-none-match").is_some() {
                    c.fetch_add(1, Ordering::SeqCst);
                    return (StatusCode::NOT_MODIFIED, cc).into_response();
                }
                (cc, "document").into_response()
            }
        }),
    ))
    .await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    stavka.get("/doc").await;
    assert!(stavka.get("/doc").await.cache_status().contains("hit"));

    // RFC 9111 §4.3: a soft-purged entry is stale, so it is validated.
    let answer = stavka
        .purge(json!({ "url": stavka.url("/doc"), "soft": true }))
        .await;
    assert_eq!(purged(&answer), (1, 1), "{answer}");
    assert_eq!(answer["mode"], "soft");
    let inspected = stavka.inspect(&stavka.url("/doc")).await;
    assert_ne!(inspected["entries"][0]["state"], "fresh", "{inspected}");
    let revalidated = stavka.get("/doc").await;
    assert_eq!(revalidated.text(), "document");
    assert!(
        revalidated.cache_status().contains("fwd=stale"),
        "{}",
        revalidated.cache_status()
    );
    assert_eq!(
        conditional.load(Ordering::SeqCst),
        1,
        "a conditional request"
    );
    assert!(stavka.get("/doc").await.cache_status().contains("hit"));

    // RFC 5861 §4: soft-purged and the origin failing, the stale copy serves.
    stavka
        .purge(json!({ "url": stavka.url("/doc"), "soft": true }))
        .await;
    failing.store(true, Ordering::SeqCst);
    let stale = stavka.get("/doc").await;
    assert_eq!(stale.status, 200, "{}", stale.cache_status());
    assert_eq!(stale.text(), "document");
}

#[tokio::test]
async fn prefix_purge_takes_exactly_the_urls_under_it() {
    let origin = Origin::start(
        Router::new()
            .route("/img/{name}", cached(&[]))
            .route("/imgx", cached(&[]))
            .route("/css/site.css", cached(&[])),
    )
    .await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    let paths = ["/img/a.png", "/img/b.png?w=10", "/imgx", "/css/site.css"];
    for p in paths {
        stavka.get(p).await;
    }
    let answer = stavka
        .purge(json!({ "prefix": format!("{}/img/", stavka.proxy) }))
        .await;
    assert_eq!(purged(&answer), (2, 2), "{answer}");
    for (p, hit) in [
        ("/img/a.png", false),
        ("/img/b.png?w=10", false),
        ("/imgx", true),
        ("/css/site.css", true),
    ] {
        let status = stavka.get(p).await.cache_status().to_owned();
        assert_eq!(status.contains("; hit"), hit, "{p}: {status}");
    }
    // A bare host is everything on it.
    let all = stavka
        .purge(json!({ "prefix": format!("https://{}", stavka.proxy) }))
        .await;
    assert_eq!(purged(&all), (4, 4), "{all}");
}

#[tokio::test]
async fn tag_purge_of_thousands_while_traffic_flows() {
    const OBJECTS: usize = 2000;
    let origin = Origin::start(
        Router::new()
            .route(
                "/t/{n}",
                get(|Path(n): Path<usize>| async move {
                    let tags = format!("all group-{}", n % 2);
                    (
                        [
                            ("cache-control", "max-age=600".to_owned()),
                            ("surrogate-key", tags),
                        ],
                        format!("object {n}"),
                    )
                }),
            )
            .route("/hot", cached(&[])),
    )
    .await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    futures_util::future::join_all((0..16).map(|worker| {
        let stavka = &stavka;
        async move {
            for n in (worker..OBJECTS).step_by(16) {
                assert_eq!(stavka.get(&format!("/t/{n}")).await.status, 200);
            }
        }
    }))
    .await;
    assert_eq!(origin.count_prefix("/t/"), OBJECTS);
    stavka.get("/hot").await;

    // Clients keep asking for a hot object while the purge runs.
    let stop = Arc::new(AtomicBool::new(false));
    let served = Arc::new(AtomicUsize::new(0));
    let traffic: Vec<_> = (0..4)
        .map(|_| {
            let (stop, served, url) = (stop.clone(), served.clone(), stavka.url("/hot"));
            tokio::spawn(async move {
                let client = client();
                let mut worst = Duration::ZERO;
                while !stop.load(Ordering::SeqCst) {
                    let started = Instant::now();
                    let resp = client.get(&url).send().await.unwrap();
                    assert_eq!(resp.status(), 200);
                    resp.bytes().await.unwrap();
                    worst = worst.max(started.elapsed());
                    served.fetch_add(1, Ordering::SeqCst);
                }
                worst
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    let before = served.load(Ordering::SeqCst);
    let answer = stavka.purge(json!({ "tag": "group-0" })).await;
    let during = served.load(Ordering::SeqCst) - before;
    stop.store(true, Ordering::SeqCst);
    let mut worst = Duration::ZERO;
    for t in traffic {
        worst = worst.max(t.await.unwrap());
    }
    assert_eq!(purged(&answer), (1000, 1000), "{answer}");
    assert!(
        during > 0,
        "requests were served while the purge ran: {answer}"
    );
    println!(
        "purged 1000 of {OBJECTS} tagged objects in {} ms; {during} hot requests meanwhile, slowest {worst:?}",
        answer["took_ms"]
    );

    assert!(stavka.get("/t/0").await.cache_status().contains("miss"));
    assert!(stavka.get("/t/1").await.cache_status().contains("hit"));
    assert_eq!(origin.count_prefix("/t/"), OBJECTS + 1);
    let rest = stavka.purge(json!({ "tag": "all" })).await;
    assert_eq!(purged(&rest), (1001, 1001), "{rest}");
}

#[tokio::test]
async fn inspect_shows_an_entry_as_stored() {
    let origin = Origin::start(Router::new().route(
        "/i",
        get(|| async {
            (
                [
                    (
                        "cache-control",
                        "max-age=100, stale-while-revalidate=30, stale-if-error=300",
                    ),
                    ("cache-tag", "red,blue"),
                    ("x-origin", "yes"),
                    ("age", "10"),
                ],
                "inspect me",
            )
        }),
    ))
    .await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    stavka.get("/i?q=1").await;
    let inspected = stavka.inspect(&format!("{}/i?q=1", stavka.proxy)).await;
    let entry = &inspected["entries"][0];
    assert_eq!(inspected["target"], "/i?q=1");
    assert_eq!(entry["status"], 200);
    assert_eq!(entry["state"], "fresh");
    assert!(entry["age_seconds"].as_u64().unwrap() >= 10, "{entry}");
    let ttl = entry["ttl_seconds"].as_u64().unwrap();
    assert!(
        (85..=90).contains(&ttl),
        "max-age 100 minus age 10: {entry}"
    );
    assert_eq!(entry["stale_while_revalidate_seconds"], 30);
    assert_eq!(entry["stale_if_error_seconds"], 300);
    assert_eq!(entry["tags"], json!(["red", "blue"]));
    assert_eq!(entry["tier"], "memory");
    assert!(entry["size_bytes"].as_u64().unwrap() > 10);
    let headers = entry["headers"].as_array().unwrap();
    assert!(headers.contains(&json!(["x-origin", "yes"])), "{entry}");

    let nothing = stavka.inspect(&stavka.url("/absent")).await;
    assert_eq!(nothing["entries"], json!([]));
    let bad = client()
        .post(stavka.admin_url("/purge"))
        .json(&json!({ "url": "/a", "tag": "b" }))
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
}

#[tokio::test]
async fn stats_report_totals_rates_and_tiers() {
    let origin = Origin::start(Router::new().route("/s", cached(&[]))).await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    for _ in 0..10 {
        assert_eq!(stavka.get("/s").await.status, 200);
    }
    // Let the sampler take a snapshot or two, for the series.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..10 {
        stavka.get("/s").await;
    }
    // A request is counted in pingora's logging phase, just after its
    // response reached the client: wait for the last one to land.
    let deadline = Instant::now() + Duration::from_secs(5);
    let stats = loop {
        let stats = stavka.admin_json("/stats").await;
        if stats["totals"]["requests"] == 20 || Instant::now() > deadline {
            break stats;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let totals = &stats["totals"];
    assert_eq!(totals["requests"], 20, "{stats}");
    assert_eq!(totals["by_cache_status"]["miss"], 1, "{stats}");
    assert_eq!(totals["by_cache_status"]["hit"], 19, "{stats}");
    assert_eq!(totals["hit_ratio"], 0.95, "{stats}");
    assert_eq!(totals["origin"]["requests"], 1, "{stats}");
    assert!(totals["origin"]["mean_latency_ms"].as_f64().unwrap() > 0.0);
    assert!(totals["bytes_served"]["cache"].as_u64().unwrap() >= 19 * 9);
    assert_eq!(stats["store"]["memory"]["objects"], 1, "{stats}");
    assert_eq!(stats["store"]["disk"]["objects"], 1, "{stats}");
    assert_eq!(stats["store"]["catalog"]["objects"], 1, "{stats}");
    // Which one depends on the kernel (edge-cdn-store's io_engine tests
    // check the choice); the field is always one of the two.
    let engine = stats["store"]["io_engine"].as_str().unwrap_or_default();
    assert!(["io_uring", "blocking_pool"].contains(&engine), "{stats}");
    let rate = &stats["rates"]["10s"];
    assert!(
        rate["requests_per_second"].as_f64().unwrap() > 0.0,
        "{stats}"
    );
    // Younger than the window: the rate covers everything since start.
    assert_eq!(rate["hit_ratio"], 0.95, "{stats}");
    assert!(!stats["series"].as_array().unwrap().is_empty(), "{stats}");
}

/// Every operation the checked-in OpenAPI description lists is served (with
/// the token where it says one is needed, refused without it), and the
/// listener serves the same description.
#[tokio::test]
async fn the_openapi_description_matches_what_is_served() {
    const TOKEN: &str = "openapi-test-token";
    let checked_in: serde_json::Value = serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../host/src/admin/openapi.json"
    )))
    .unwrap();
    let origin = Origin::start(Router::new()).await;
    let stavka = Stavka::in_front_of(
        &origin,
        &format!("[admin]\ntoken = \"{TOKEN}\"\nmetrics_public = false\n"),
    )
    .await;
    let served = client()
        .get(stavka.admin_url("/openapi.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(served.status(), 200);
    assert_eq!(
        served.json::<serde_json::Value>().await.unwrap(),
        checked_in
    );

    let open_by_default = checked_in["security"].as_array().unwrap().is_empty();
    let mut operations = 0;
    for (path, item) in checked_in["paths"].as_object().unwrap() {
        let concrete = path.replace("{module}", "p").replace("{key}", "k");
        for (method, op) in item.as_object().unwrap() {
            let method = match method.as_str() {
                "get" => reqwest::Method::GET,
                "post" => reqwest::Method::POST,
                "put" => reqwest::Method::PUT,
                "delete" => reqwest::Method::DELETE,
                _ => continue,
            };
            operations += 1;
            let url = format!(
                "{}{}",
                stavka.admin_url(&concrete),
                if concrete == "/inspect" {
                    "?url=x.test/"
                } else {
                    ""
                }
            );
            let request = |token: bool| {
                let mut req = client().request(method.clone(), &url);
                if concrete == "/purge" {
                    req = req.json(&json!({ "tag": "t" }));
                }
                if token {
                    req = req.bearer_auth(TOKEN);
                }
                req.send()
            };
            let with = request(true).await.unwrap();
            let status = with.status().as_u16();
            let body = with.text().await.unwrap();
            assert!(
                status != 405 && !(status == 404 && body.is_empty()),
                "{method} {path} is documented but not routed ({status})"
            );
            let needs_token = match op.get("security") {
                // `[]` is open; `[{}, ...]` makes the token optional.
                Some(s) => {
                    let s = s.as_array().unwrap();
                    !s.is_empty()
                        && s.iter()
                            .all(|r| r.as_object().is_some_and(|o| !o.is_empty()))
                }
                None => !open_by_default,
            };
            let without = request(false).await.unwrap().status().as_u16();
            if needs_token || concrete == "/metrics" {
                assert_eq!(without, 401, "{method} {path} without a token");
            } else {
                assert_ne!(without, 401, "{method} {path} is documented as open");
            }
        }
    }
    assert!(operations >= 14, "{operations} operations");
}

/// The checked-in OpenAPI description.
fn openapi() -> serde_json::Value {
    serde_json::from_str(include_str!(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../host/src/admin/openapi.json"
    )))
    .unwrap()
}

/// The schema `spec` documents for a `status` answer to `method` on the
/// path `template`, `$ref`s to `#/components/responses` followed; `None`
/// when that answer has no JSON body.
fn documented_schema(
    spec: &serde_json::Value,
    method: &str,
    template: &str,
    status: u16,
) -> Option<serde_json::Value> {
    let responses = &spec["paths"][template][method]["responses"];
    let mut response = &responses[status.to_string()];
    assert!(
        !response.is_null(),
        "{method} {template}: {status} is not documented"
    );
    if let Some(reference) = response["$ref"].as_str() {
        let name = reference.strip_prefix("#/components/responses/").unwrap();
        response = &spec["components"]["responses"][name];
    }
    let schema = &response["content"]["application/json"]["schema"];
    (!schema.is_null()).then(|| schema.clone())
}

/// Check one answer against the description: a JSON body must match the
/// schema documented for its status (`$ref`s resolved into
/// `components/schemas`), and a documented JSON schema must get a JSON body.
async fn check_answer(
    spec: &serde_json::Value,
    method: &str,
    template: &str,
    resp: reqwest::Response,
) -> (u16, serde_json::Value) {
    let status = resp.status().as_u16();
    let is_json = resp
        .headers()
        .get("content-type")
        .is_some_and(|v| v.to_str().unwrap().starts_with("application/json"));
    let text = resp.text().await.unwrap();
    let schema = documented_schema(spec, method, template, status);
    let Some(schema) = schema else {
        assert!(
            !is_json,
            "{method} {template} {status} answered JSON it does not document: {text}"
        );
        return (status, serde_json::Value::Null);
    };
    assert!(
        is_json,
        "{method} {template} {status} is documented as JSON: {text}"
    );
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": spec["components"],
        "allOf": [schema],
    });
    let validator = jsonschema::draft202012::new(&root).unwrap();
    let problems: Vec<String> = validator
        .iter_errors(&body)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        problems.is_empty(),
        "{method} {template} {status} does not match its schema:\n{}\n{body:#}",
        problems.join("\n")
    );
    (status, body)
}

/// Every documented operation is called, successfully and (where it can
/// fail) unsuccessfully, and every JSON answer — errors included — matches
/// the schema `openapi.json` documents for its status.
#[tokio::test]
async fn every_answer_matches_its_schema_in_the_openapi_description() {
    const TOKEN: &str = "schema-test-token";
    let spec = openapi();
    let origin = Origin::start(
        Router::new()
            .route("/c", cached(&[("surrogate-key", "t")]))
            .route("/s", cached(&[("etag", "\"s1\"")])),
    )
    .await;
    let stavka = Stavka::start_with_modules(
        &format!(
            "[admin]\ntoken = \"{TOKEN}\"\nmetrics_public = false\n[slice]\nenabled = true\n{}",
            stavka_e2e::default_site(&origin, None)
        ),
        // Loaded and listed, though no site asks it.
        &[("p", "counter", "mode = \"long-lived\"\n")],
    )
    .await;
    stavka_e2e::install(&stavka.policy_dir, "broken", b"not a component", "");
    assert_eq!(stavka.get("/c").await.status, 200);
    assert_eq!(stavka.get("/c").await.status, 200);
    // A sliced object: a range of something not stored whole.
    let ranged = client()
        .get(stavka.url("/s"))
        .header("range", "bytes=0-3")
        .send()
        .await
        .unwrap();
    assert_eq!(ranged.status(), 206);
    // A snapshot or two for the rates and the series.
    tokio::time::sleep(Duration::from_millis(2100)).await;

    let cached_url = stavka.url("/c");
    // (method, documented path, concrete path and query, JSON body, expected status)
    let calls: Vec<(&str, &str, String, Option<serde_json::Value>, u16)> = vec![
        ("get", "/healthz", "/healthz".into(), None, 200),
        ("get", "/readyz", "/readyz".into(), None, 200),
        ("get", "/metrics", "/metrics".into(), None, 200),
        ("get", "/openapi.json", "/openapi.json".into(), None, 200),
        ("get", "/dashboard", "/dashboard".into(), None, 200),
        ("get", "/stats", "/stats".into(), None, 200),
        (
            "post",
            "/policies/{module}/reload",
            "/policies/broken/reload".into(),
            None,
            200,
        ),
        (
            "post",
            "/policies/{module}/reload",
            "/policies/p/reload".into(),
            None,
            200,
        ),
        (
            "post",
            "/policies/{module}/reload",
            "/policies/no.such/reload".into(),
            None,
            400,
        ),
        ("get", "/policies", "/policies".into(), None, 200),
        (
            "put",
            "/policies/{module}/kv/{key}",
            "/policies/p/kv/k".into(),
            None,
            204,
        ),
        (
            "get",
            "/policies/{module}/kv/{key}",
            "/policies/p/kv/k".into(),
            None,
            200,
        ),
        (
            "get",
            "/policies/{module}/kv/{key}",
            "/policies/p/kv/absent".into(),
            None,
            404,
        ),
        (
            "get",
            "/policies/{module}/kv/{key}",
            "/policies/a.b/kv/k".into(),
            None,
            400,
        ),
        (
            "get",
            "/policies/{module}/kv",
            "/policies/p/kv".into(),
            None,
            200,
        ),
        (
            "get",
            "/policies/{module}/kv",
            "/policies/a.b/kv".into(),
            None,
            400,
        ),
        (
            "delete",
            "/policies/{module}/kv/{key}",
            "/policies/p/kv/k".into(),
            None,
            204,
        ),
        (
            "delete",
            "/policies/{module}/kv/{key}",
            "/policies/p/kv/k".into(),
            None,
            404,
        ),
        (
            "get",
            "/inspect",
            format!("/inspect?url={cached_url}"),
            None,
            200,
        ),
        (
            "get",
            "/inspect",
            format!("/inspect?url={}", stavka.url("/s")),
            None,
            200,
        ),
        ("get", "/top", "/top".into(), None, 200),
        ("get", "/top", "/top?n=nope".into(), None, 400),
        ("get", "/inspect", "/inspect?url=/no-host".into(), None, 400),
        ("get", "/inspect", "/inspect".into(), None, 400),
        (
            "post",
            "/purge",
            "/purge".into(),
            Some(json!({ "tag": "t" })),
            200,
        ),
        (
            "post",
            "/purge",
            "/purge".into(),
            Some(json!({ "url": "/a", "tag": "b" })),
            400,
        ),
        (
            "post",
            "/purge",
            "/purge".into(),
            Some(json!({ "tags": "t" })),
            422,
        ),
        ("post", "/purge", "/purge".into(), None, 415),
        ("get", "/events", "/events".into(), None, 200),
        ("post", "/config/reload", "/config/reload".into(), None, 200),
        ("get", "/events", "/events?after=-1".into(), None, 400),
    ];
    let mut called = std::collections::BTreeSet::new();
    for (method, template, path, body, expected) in calls {
        let mut req = client()
            .request(
                method.to_uppercase().parse().unwrap(),
                stavka.admin_url(&path),
            )
            .bearer_auth(TOKEN);
        if let Some(body) = &body {
            req = req.json(body);
        }
        let (status, answer) =
            check_answer(&spec, method, template, req.send().await.unwrap()).await;
        assert_eq!(status, expected, "{method} {path}: {answer}");
        called.insert((method, template));
        if template == "/policies" {
            let modules = &answer["modules"];
            assert_eq!(modules[0]["status"], "failed", "{answer}");
            assert_eq!(modules[1]["status"], "serving", "{answer}");
            assert_eq!(modules[1]["mode"], "long-lived", "{answer}");
            assert_eq!(modules[1]["failure"], "open", "{answer}");
        }
        if template == "/top" && status == 200 {
            let url = format!("{}/c", stavka.proxy.ip());
            assert_eq!(answer["requests"][0]["url"], url.as_str(), "{answer}");
            assert_eq!(answer["requests"][0]["count"], 2, "{answer}");
        }
        if template == "/events" && status == 200 {
            // Loads, the rejection, and the purge above, oldest first.
            let events: Vec<(String, String)> = answer["events"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["kind"].as_str().unwrap().into(),
                        e["subject"].as_str().unwrap().into(),
                    )
                })
                .collect();
            for expected in [
                ("policy-loaded", "p"),
                ("policy-rejected", "broken"),
                ("purge", "tag t"),
            ] {
                assert!(
                    events
                        .iter()
                        .any(|(k, s)| (k.as_str(), s.as_str()) == expected),
                    "{expected:?} in {answer}"
                );
            }
        }
        if template == "/stats" && status == 200 {
            // The site served /c twice and a range of /s: 200s and a 206.
            let site = &answer["sites"][0];
            assert_eq!(site["site"], "test", "{answer}");
            assert!(
                site["requests_per_second"].as_f64().unwrap() > 0.0,
                "{answer}"
            );
            assert!(
                site["status_per_second"]["2xx"].as_f64().unwrap() > 0.0,
                "{answer}"
            );
            assert_eq!(site["origin"]["health"], "healthy", "{answer}");
            assert!(
                site["latency"]["p50_ms"].as_f64().unwrap() > 0.0,
                "{answer}"
            );
        }
        if template == "/inspect" && status == 200 && path.ends_with("/c") {
            assert_eq!(answer["entries"].as_array().unwrap().len(), 1, "{answer}");
            assert!(answer.get("slice").is_none(), "{answer}");
        }
        if template == "/inspect" && status == 200 && path.ends_with("/s") {
            assert_eq!(answer["entries"].as_array().unwrap().len(), 0, "{answer}");
            assert_eq!(answer["slice"]["blocks"], json!([[0, 0]]), "{answer}");
            let record = &answer["slice"]["record"]["headers"];
            assert!(record.to_string().contains("stavka-slice"), "{answer}");
        }
    }

    // Refused without the token, and with a wrong one.
    for token in [None, Some("wrong-token-wrong-token")] {
        let mut req = client().get(stavka.admin_url("/stats"));
        if let Some(token) = token {
            req = req.bearer_auth(token);
        }
        let (status, answer) =
            check_answer(&spec, "get", "/stats", req.send().await.unwrap()).await;
        assert_eq!(status, if token.is_some() { 403 } else { 401 });
        assert!(answer["error"].is_string(), "{answer}");
    }

    let documented: std::collections::BTreeSet<(&str, &str)> = spec["paths"]
        .as_object()
        .unwrap()
        .iter()
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .filter(|m| ["get", "post", "put", "delete"].contains(&m.as_str()))
                .map(move |m| (m.as_str(), path.as_str()))
        })
        .collect();
    assert_eq!(called, documented, "every documented operation is called");
}
