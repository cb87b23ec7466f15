//! Several stavka nodes on one Redis (`[shared]`): an object filled through
//! one node is a shared hit on another without touching the origin, a purge
//! accepted by any node reaches every node's store, and a Redis that dies
//! mid-run costs nothing but origin requests until it is back.

use std::future::Future;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use stavka_e2e::{client, default_site, Origin, RedisServer, Stavka};

/// The host every node is asked for, so all share one cache key.
const HOST: &str = "test.example";

/// Every test here ends within this.
const LIMIT: Duration = Duration::from_secs(120);

async fn bounded(test: impl Future<Output = ()>) {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("the test finished in time");
}

/// An origin whose every path answers `max-age=600`, its path as the body,
/// and a surrogate key of `news` under `/news/`.
async fn origin() -> Origin {
    let answer = |path: String| {
        let mut resp = axum::response::IntoResponse::into_response(format!("body of {path}"));
        let headers = resp.headers_mut();
        headers.insert("cache-control", "max-age=600".parse().unwrap());
        if path.starts_with("/news/") {
            headers.insert("surrogate-key", "news".parse().unwrap());
        }
        resp
    };
    Origin::start(Router::new().fallback(get(move |uri: http::Uri| {
        let path = uri.path().to_owned();
        async move { answer(path) }
    })))
    .await
}

/// A node on `redis` in front of `origin`, with test-sized timeouts.
async fn node(origin: &Origin, redis: &RedisServer, name: &str) -> Stavka {
    Stavka::start(&format!(
        "[shared]\nredis = \"{}\"\nnode_id = \"{name}\"\ntimeout = \"200ms\"\nlookup_timeout = \"200ms\"\nbreaker_failures = 3\nbreaker_cooldown = \"1s\"\n\n{}",
        redis.url(),
        default_site(origin, None)
    ))
    .await
}

async fn fetch(node: &Stavka, path: &str) -> (u16, String, String) {
    let got = node.get_host(HOST, path).await;
    (got.status, got.cache_status().to_owned(), got.text())
}

/// Wait until `node` has written `n` objects to the shared tier (puts are
/// written behind the response).
/// Whether both nodes' purge buses are connected to Redis within 5 s.
async fn both_subscribed(a: &Stavka, b: &Stavka) -> bool {
    for _ in 0..100 {
        if a.metric("stavka_purge_bus_connected").await == Some(1.0)
            && b.metric("stavka_purge_bus_connected").await == Some(1.0)
        {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

async fn shared_puts(node: &Stavka, n: f64) {
    let puts = node
        .metric_reaching("edge_store_events_total{event=\"shared-put\"}", n)
        .await;
    assert_eq!(puts, Some(n), "shared puts");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fill_on_one_node_is_a_shared_hit_on_another_and_a_purge_reaches_every_node() {
    bounded(async {
        let redis = RedisServer::start();
        let origin = origin().await;
        let a = node(&origin, &redis, "a").await;
        let b = node(&origin, &redis, "b").await;
        let c = node(&origin, &redis, "c").await;
        let ready = a.admin_json("/readyz").await;
        assert_eq!(ready["checks"]["shared"], "ok", "{ready}");
        let stats = a.admin_json("/stats").await;
        assert_eq!(stats["store"]["shared"]["breaker"], "closed", "{stats}");

        // (a) Filled through A, then a shared hit on B and C.
        let (status, first, body) = fetch(&a, "/obj").await;
        assert_eq!((status, body.as_str()), (200, "body of /obj"));
        assert!(first.contains("miss"), "{first}");
        shared_puts(&a, 1.0).await;
        for other in [&b, &c] {
            let (status, cache_status, body) = fetch(other, "/obj").await;
            assert_eq!((status, body.as_str()), (200, "body of /obj"));
            println!("a shared hit answers Cache-Status: {cache_status}");
            assert!(cache_status.contains("hit"), "{cache_status}");
        }
        assert_eq!(origin.count("/obj"), 1, "B and C never asked the origin");
        let shared_hits = "edge_store_lookups_total{result=\"hit\",tier=\"shared\"}";
        assert_eq!(b.metric(shared_hits).await, Some(1.0));
        assert_eq!(c.metric(shared_hits).await, Some(1.0));
        // Now held locally by all three.
        for n in [&a, &b, &c] {
            assert!(fetch(n, "/obj").await.1.contains("hit"));
        }
        assert_eq!(origin.count("/obj"), 1);

        // (b) A hard purge through A: B and C miss, each asking the origin.
        let started = Instant::now();
        let report = a
            .purge(serde_json::json!({ "url": format!("http://{HOST}/obj") }))
            .await;
        assert_eq!(report["cluster"], "sent", "{report}");
        assert_eq!(report["purged"], 1, "{report}");
        // Each node's store has it until its purge lands: probe the
        // store's inspector (no request, so no refill) until it is gone.
        let mut pending = vec![&b, &c];
        while !pending.is_empty() {
            let mut still = Vec::new();
            for n in pending {
                let inspected = n.inspect(&format!("http://{HOST}/obj")).await;
                if !inspected["entries"].as_array().unwrap().is_empty() {
                    still.push(n);
                }
            }
            pending = still;
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "the purge reached every node within 5 s"
            );
            if !pending.is_empty() {
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        }
        let propagated = started.elapsed();
        // Asked together, so neither finds the other's refill in Redis.
        let (at_b, at_c) = tokio::join!(fetch(&b, "/obj"), fetch(&c, "/obj"));
        for (status, cache_status, _) in [at_b, at_c] {
            assert_eq!(status, 200);
            assert!(cache_status.contains("miss"), "{cache_status}");
        }
        assert_eq!(origin.count("/obj"), 3, "the origin saw B's and C's misses");
        println!(
            "purge propagation: API call to both B and C purged {:.1} ms; to both answering a miss {:.1} ms",
            propagated.as_secs_f64() * 1000.0,
            started.elapsed().as_secs_f64() * 1000.0
        );
        for n in [&b, &c] {
            assert_eq!(
                n.metric("stavka_purge_bus_total{event=\"applied\"}").await,
                Some(1.0)
            );
        }
        assert_eq!(
            a.metric("stavka_purge_bus_total{event=\"published\"}").await,
            Some(1.0)
        );
        assert_eq!(
            a.metric("stavka_purge_bus_total{event=\"applied\"}").await,
            Some(0.0),
            "A ignores its own purge"
        );

        // A tag purge (soft) through C reaches A and B too.
        for n in [&a, &b] {
            fetch(n, "/news/1").await;
        }
        assert_eq!(origin.count("/news/1"), 1, "B's was a shared hit");
        // B stores its copy of a shared hit in the background (and A its
        // fill as the body ends): wait until both stores hold it, or the
        // purge could land before the copy.
        let deadline = Instant::now() + Duration::from_secs(5);
        for n in [&a, &b] {
            while n.inspect(&format!("http://{HOST}/news/1")).await["entries"]
                .as_array()
                .unwrap()
                .is_empty()
            {
                assert!(Instant::now() < deadline, "the node stored /news/1");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        let report = c
            .purge(serde_json::json!({ "tag": "news", "soft": true }))
            .await;
        assert_eq!((report["cluster"].as_str(), report["matched"].as_u64()), (Some("sent"), Some(0)));
        // A had applied nothing from others yet; B had applied A's /obj.
        let metric = "stavka_purge_bus_objects_total";
        assert_eq!(a.metric_reaching(metric, 1.0).await, Some(1.0));
        assert_eq!(b.metric_reaching(metric, 2.0).await, Some(2.0));
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_dying_mid_run_fails_open_and_a_restarted_one_is_used_again() {
    bounded(async {
        let mut redis = RedisServer::start();
        let origin = origin().await;
        let a = node(&origin, &redis, "a").await;
        let b = node(&origin, &redis, "b").await;

        fetch(&a, "/before").await;
        shared_puts(&a, 1.0).await;
        assert!(fetch(&b, "/before").await.1.contains("hit"));
        assert_eq!(origin.count("/before"), 1);

        // Redis dies: every request still succeeds, new objects from the origin.
        redis.kill();
        let mut failed = 0;
        let mut served = 0;
        let down = Instant::now();
        for i in 0..40 {
            for n in [&a, &b] {
                let path = format!("/down/{i}");
                match client().get(n.url(&path)).header("host", HOST).send().await {
                    Ok(r) if r.status() == 200 => served += 1,
                    _ => failed += 1,
                }
            }
        }
        println!(
            "Redis down: {served} served, {failed} failed in {:.0} ms",
            down.elapsed().as_secs_f64() * 1000.0
        );
        assert_eq!(failed, 0);
        assert_eq!(
            origin.count_prefix("/down/"),
            80,
            "each node asked the origin"
        );
        let ready = b.admin_json("/readyz").await;
        assert_eq!(ready["ready"], true, "{ready}");
        assert_ne!(ready["checks"]["shared"], "ok", "{ready}");
        assert_eq!(
            b.metric("edge_store_shared_breaker_state").await,
            Some(1.0),
            "the breaker opened"
        );
        // A purge while Redis is down is applied locally and says so.
        let report = a
            .purge(serde_json::json!({ "url": format!("http://{HOST}/before") }))
            .await;
        assert!(
            report["cluster"].as_str().unwrap().starts_with("failed"),
            "{report}"
        );

        // Back on the same port (empty): shared hits resume once the
        // breaker's cooldown lets a probe through.
        redis.restart();
        let back = Instant::now();
        let mut i = 0;
        loop {
            let path = format!("/after/{i}");
            fetch(&a, &path).await;
            let put = a
                .metric("edge_store_events_total{event=\"shared-put\"}")
                .await
                .unwrap_or(0.0);
            if put >= 2.0 && fetch(&b, &path).await.1.contains("hit") {
                assert_eq!(origin.count(&path), 1, "B's was a shared hit");
                break;
            }
            assert!(
                back.elapsed() < Duration::from_secs(30),
                "shared hits resumed"
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
            i += 1;
        }
        println!(
            "Redis back: shared hits resumed after {:.0} ms",
            back.elapsed().as_secs_f64() * 1000.0
        );
        // The purge bus resubscribed too: a purge through B reaches A.
        let subscribed = both_subscribed(&a, &b).await;
        assert!(subscribed, "both nodes resubscribed");
        fetch(&a, "/late").await;
        b.purge(serde_json::json!({ "url": format!("http://{HOST}/late") }))
            .await;
        let applied = a
            .metric_reaching("stavka_purge_bus_total{event=\"applied\"}", 1.0)
            .await;
        assert_eq!(applied, Some(1.0));
    })
    .await;
}

#[test]
fn check_config_names_the_shared_fields_at_fault() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stavka.toml");
    std::fs::write(
        &path,
        "[shared]\nredis = \"nope://x\"\ncluster = [\"redis://127.0.0.1:1\"]\ntimeout = \"0s\"\nwrites = \"on-promotion\"\n",
    )
    .unwrap();
    let (code, stderr) = stavka_e2e::check_config(&path);
    assert_ne!(code, Some(0), "{stderr}");
    for field in ["shared.redis", "shared.cluster", "shared.timeout"] {
        assert!(stderr.contains(field), "{field} in {stderr}");
    }
    std::fs::write(&path, "[shared]\nwrites = \"sometimes\"\n").unwrap();
    let (code, stderr) = stavka_e2e::check_config(&path);
    assert_ne!(code, Some(0));
    assert!(stderr.contains("shared.writes"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_starts_without_its_redis_and_uses_it_once_it_is_up() {
    bounded(async {
        // The port is Redis's, but nothing listens on it yet.
        let mut redis = RedisServer::start();
        redis.kill();
        let origin = origin().await;
        let a = node(&origin, &redis, "a").await;
        let b = node(&origin, &redis, "b").await;
        let ready = a.admin_json("/readyz").await;
        assert_eq!(ready["ready"], true, "{ready}");
        assert_ne!(ready["checks"]["shared"], "ok", "{ready}");
        let (status, _, body) = fetch(&a, "/early").await;
        assert_eq!((status, body.as_str()), (200, "body of /early"));

        redis.restart();
        let subscribed = both_subscribed(&a, &b).await;
        assert!(subscribed, "both nodes subscribed once Redis was up");
        let ready = a.admin_json("/readyz").await;
        assert_eq!(ready["checks"]["shared"], "ok", "{ready}");
        // The tier's first write after Redis appears can be lost (its
        // connection learns by failing): fill until one is shared.
        let up = Instant::now();
        for i in 0.. {
            let path = format!("/late/{i}");
            fetch(&a, &path).await;
            let put = a
                .metric("edge_store_events_total{event=\"shared-put\"}")
                .await
                .unwrap_or(0.0);
            if put >= 1.0 && fetch(&b, &path).await.1.contains("hit") {
                assert_eq!(origin.count(&path), 1, "B's was a shared hit");
                break;
            }
            assert!(up.elapsed() < Duration::from_secs(30), "shared hits began");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        println!(
            "Redis up after start: shared hits began after {:.0} ms",
            up.elapsed().as_secs_f64() * 1000.0
        );
    })
    .await;
}
