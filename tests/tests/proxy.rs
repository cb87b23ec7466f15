//! Routing, configuration, faults, observability and shutdown of the real binary.

use std::process::Command;
use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use stavka_e2e::{client, stavka_bin, Origin, Stavka};

fn site(name: &str, hosts: &str, origin: &Origin, extra: &str) -> String {
    format!(
        "[[site]]\nname = \"{name}\"\nhosts = {hosts}\norigin = {{ address = \"{}\"{extra} }}\n",
        origin.addr
    )
}

fn echo_host() -> Router {
    Router::new().route(
        "/who",
        get(|headers: HeaderMap| async move {
            format!("host={}", headers.get("host").unwrap().to_str().unwrap())
        }),
    )
}

#[tokio::test]
async fn sites_route_by_exact_and_wildcard_host_and_unknown_host_is_421() {
    let a = Origin::start(echo_host()).await;
    let b = Origin::start(echo_host()).await;
    let stavka = Stavka::start(&format!(
        "{}{}",
        site("a", r#"["a.example"]"#, &a, ""),
        site(
            "b",
            r#"["*.b.example"]"#,
            &b,
            r#", host_header = "origin.b.internal""#
        ),
    ))
    .await;

    assert_eq!(
        stavka.get_host("A.Example:8080", "/who").await.text(),
        "host=a.example",
        "the origin sees the host the entry is keyed on"
    );
    assert_eq!(a.count("/who"), 1);
    let via_b = stavka.get_host("img.b.example", "/who").await;
    assert_eq!(
        via_b.text(),
        "host=origin.b.internal",
        "the configured Host header is sent"
    );
    assert_eq!(b.count("/who"), 1);

    let unknown = stavka.get_host("nope.example", "/who").await;
    assert_eq!(unknown.status, 421);
    assert!(
        unknown
            .text()
            .contains("no site is configured for host \"nope.example\""),
        "{}",
        unknown.text()
    );
    assert_eq!(unknown.cache_status(), "stavka; detail=unknown-host");
    let unknown_metric = stavka
        .metric_reaching(
            r#"stavka_requests_total{cache_status="unknown-host",site="-"}"#,
            1.0,
        )
        .await;
    assert_eq!(unknown_metric, Some(1.0));
}

#[tokio::test]
async fn cache_name_is_configurable_for_chained_caches() {
    let origin = Origin::start(Router::new().route(
        "/chained",
        get(|| async {
            (
                [
                    ("cache-control", "max-age=60"),
                    ("cache-status", "origin-cache; hit"),
                ],
                "x",
            )
        }),
    ))
    .await;
    let stavka = Stavka::in_front_of(&origin, "[cache]\nname = \"edge-fra\"\n").await;
    let r = stavka.get("/chained").await;
    assert!(
        r.cache_status()
            .starts_with("origin-cache; hit, edge-fra; fwd=uri-miss"),
        "our member follows the upstream cache's: {}",
        r.cache_status()
    );
}

#[tokio::test]
async fn origin_timeout_is_504_with_a_clear_body() {
    let origin = Origin::start(Router::new().route(
        "/hang",
        get(|| async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            "late"
        }),
    ))
    .await;
    let stavka = Stavka::in_front_of(&origin, "[origin]\nread_timeout = \"300ms\"\n").await;
    let r = stavka.get("/hang").await;
    assert_eq!(r.status, 504);
    assert!(r.text().contains("did not answer in time"), "{}", r.text());
    assert!(
        r.cache_status().contains("fwd-status=504"),
        "{}",
        r.cache_status()
    );
    assert!(
        r.cache_status().contains("detail=origin-timeout"),
        "{}",
        r.cache_status()
    );
    let errors = stavka
        .metric(r#"stavka_origin_errors_total{kind="origin-timeout",site="test"}"#)
        .await;
    assert_eq!(errors, Some(1.0));
}

#[tokio::test]
async fn admin_serves_health_readiness_and_metrics() {
    let origin = Origin::start(Router::new().route(
        "/m",
        get(|| async { ([("cache-control", "max-age=60")], "m") }),
    ))
    .await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    stavka.get("/m").await;
    stavka.get("/m").await;

    assert_eq!(stavka.health().await, 200);
    let ready = client()
        .get(stavka.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let ready = ready.text().await.unwrap();
    assert!(ready.contains(r#""proxy_listener":"ok""#), "{ready}");

    let hits = stavka
        .metric(r#"stavka_requests_total{cache_status="hit",site="test"}"#)
        .await;
    let misses = stavka
        .metric(r#"stavka_requests_total{cache_status="miss",site="test"}"#)
        .await;
    assert_eq!((hits, misses), (Some(1.0), Some(1.0)));
    assert_eq!(
        stavka
            .metric(r#"stavka_origin_requests_total{site="test"}"#)
            .await,
        Some(1.0)
    );
    assert_eq!(stavka.metric("stavka_cache_inserts_total").await, Some(1.0));
    assert_eq!(
        stavka
            .metric(r#"stavka_cache_lookups_total{result="hit"}"#)
            .await,
        Some(1.0)
    );
    assert_eq!(
        stavka
            .metric(r#"stavka_served_bytes_total{site="test",source="cache"}"#)
            .await,
        Some(1.0)
    );
    assert_eq!(stavka.metric("stavka_cache_objects").await, Some(1.0));
    assert!(
        stavka
            .metric(r#"stavka_origin_response_seconds_count{site="test"}"#)
            .await
            == Some(1.0)
    );
}

#[tokio::test]
async fn sigterm_drains_in_flight_requests() {
    let origin = Origin::start(Router::new().route(
        "/slow",
        get(|| async {
            tokio::time::sleep(Duration::from_millis(1500)).await;
            "finished"
        }),
    ))
    .await;
    let mut stavka = Stavka::in_front_of(&origin, "[server]\nshutdown_timeout = \"10s\"\n").await;
    let url = stavka.url("/slow");
    let in_flight = tokio::spawn(async move {
        client()
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    stavka.terminate();
    assert_eq!(
        in_flight.await.unwrap(),
        "finished",
        "the request in flight completes"
    );
    let status = stavka
        .wait_exit(Duration::from_secs(20))
        .await
        .expect("stavka exits after draining");
    assert!(status.success(), "{status}");
}

#[test]
fn bad_config_names_every_field_and_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        r#"
[store]
disk_bytes = "1MiB"
max_object_size = "2MiB"

[[site]]
name = "x"
hosts = ["*.*.bad"]
origin = { address = "no-port" }
"#,
    )
    .unwrap();
    for args in [
        vec!["check-config".as_ref(), path.as_os_str()],
        vec!["--config".as_ref(), path.as_os_str()],
    ] {
        let out = Command::new(stavka_bin()).args(&args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        for field in [
            "store.max_object_size:",
            "site[0].hosts[0]:",
            "site[0].origin.address:",
        ] {
            assert!(stderr.contains(field), "{field} missing from:\n{stderr}");
        }
    }

    std::fs::write(&path, "[cache]\nlock_timeout = 5\n").unwrap();
    let (code, stderr) = stavka_e2e::check_config(&path);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("cache.lock_timeout:"), "{stderr}");

    std::fs::write(&path, "").unwrap();
    let (code, _) = stavka_e2e::check_config(&path);
    assert_eq!(code, Some(0), "an empty file is all defaults");
}

#[tokio::test]
async fn admin_api_needs_the_bearer_token_and_probes_stay_open() {
    let origin = Origin::start(Router::new()).await;
    let stavka = Stavka::in_front_of(
        &origin,
        "[admin]\ntoken = \"correct-horse-battery\"\nmetrics_public = false\n",
    )
    .await;
    let call = |token: Option<&str>, path: &str| {
        let mut req = client().get(stavka.admin_url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap() }
    };
    let missing = call(None, "/policies").await;
    assert_eq!(missing.status(), 401);
    assert_eq!(missing.headers()["www-authenticate"], "Bearer");
    assert_eq!(
        call(Some("wrong-horse-battery!"), "/policies")
            .await
            .status(),
        403
    );
    assert_eq!(
        call(Some("correct-horse-battery"), "/policies")
            .await
            .status(),
        200
    );
    assert_eq!(
        call(None, "/metrics").await.status(),
        401,
        "metrics_public = false"
    );
    assert_eq!(
        call(Some("correct-horse-battery"), "/metrics")
            .await
            .status(),
        200
    );
    let purge = |token: Option<&str>| {
        let mut req = client()
            .post(stavka.admin_url("/purge"))
            .json(&serde_json::json!({ "tag": "x" }));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        async move { req.send().await.unwrap().status() }
    };
    assert_eq!(purge(None).await, 401);
    assert_eq!(purge(Some("wrong-horse-battery!")).await, 403);
    assert_eq!(purge(Some("correct-horse-battery")).await, 200);
    assert_eq!(call(None, "/healthz").await.status(), 200);
    assert_eq!(call(None, "/readyz").await.status(), 200);
}

#[test]
fn an_admin_listener_off_loopback_without_a_token_refuses_to_start() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("open.toml");
    std::fs::write(
        &path,
        "[listen]\nadmin = \"0.0.0.0:0\"\n[admin]\ntoken_env = \"STAVKA_TEST_NO_SUCH_VAR\"\n",
    )
    .unwrap();
    // In the temporary directory: the default store directory is relative.
    let out = Command::new(stavka_bin())
        .arg("--config")
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("admin.token: required"), "{stderr}");
}
