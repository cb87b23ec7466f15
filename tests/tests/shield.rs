//! Origin pools and shield tiers with real processes on loopback: edges
//! whose misses go to a pool of shields (each object has one home shield,
//! chosen by consistent hashing on its cache key), shields that collapse
//! the edges' requests into one origin request, failover when a shield or
//! an origin member dies, and the client's address passed from edges to
//! shields without being believed from anyone else.

use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use stavka_e2e::{client, eventually, free_addr, Load, Origin, Stavka};

/// The host every node is asked for.
const HOST: &str = "test.example";

/// Every test here ends within this.
const LIMIT: Duration = Duration::from_secs(180);

async fn bounded(test: impl Future<Output = ()>) {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("the test finished in time");
}

/// An origin whose every path answers `max-age=600` (stale-if-error for a
/// minute) after a short pause, so concurrent misses overlap, with its
/// path as the body and the client address it was told (`-` for none);
/// `/health` answers 200 for probes.
async fn origin() -> Origin {
    Origin::start(
        Router::new()
            .route("/health", get(|| async { "ok" }))
            .fallback(get(|uri: http::Uri, headers: HeaderMap| async move {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let told = headers
                    .get("stavka-client-ip")
                    .map_or("-", |v| v.to_str().unwrap_or("?"))
                    .to_owned();
                let max_age = if uri.path().starts_with("/short/") {
                    1
                } else {
                    600
                };
                (
                    [(
                        "cache-control",
                        format!("max-age={max_age}, stale-if-error=60"),
                    )],
                    format!("{} client={told}", uri.path()),
                )
            })),
    )
    .await
}

/// A site named `test` for [`HOST`] with `origin` (a TOML table) and the
/// extra site lines `more`.
fn site(origin: &str, more: &str) -> String {
    format!("[[site]]\nname = \"test\"\nhosts = [\"{HOST}\"]\ndefault = true\norigin = {origin}\n{more}\n")
}

/// A shield called `name` in front of `origin`, believing the client
/// address header from 127.0.0.1 (where the edges connect from), with a
/// combined access log on its standard output.
async fn shield(origin: &Origin, name: &str) -> Stavka {
    Stavka::start(&format!(
        "[cache]\nname = \"{name}\"\n\n[log]\naccess_format = \"combined\"\n\n[tier]\ntrusted_edges = [\"127.0.0.1/32\"]\n\n{}",
        site(&format!("{{ address = \"{}\" }}", origin.addr), "")
    ))
    .await
}

/// An edge called `name` whose misses go to `shields`, each taken out
/// by one refused connection.
async fn edge(origin: &Origin, name: &str, shields: &[SocketAddr]) -> Stavka {
    let members: Vec<String> = shields.iter().map(|s| format!("\"{s}\"")).collect();
    Stavka::start(&format!(
        "[cache]\nname = \"{name}\"\n\n{}",
        site(
            &format!("{{ address = \"{}\" }}", origin.addr),
            &format!(
                "[site.shield]\naddresses = [{}]\npassive = {{ failures = 1, down_for = \"30s\" }}\n",
                members.join(", ")
            ),
        )
    ))
    .await
}

/// GET `path` with [`HOST`] from `node`.
fn request(node: &Stavka, path: &str) -> reqwest::RequestBuilder {
    client().get(node.url(path)).header("host", HOST)
}

/// The names of the caches in a `Cache-Status` value, in order.
fn caches(cache_status: &str) -> Vec<&str> {
    cache_status
        .split(',')
        .filter_map(|member| member.split(';').next())
        .map(str::trim)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_cold_misses_over_three_edges_reach_the_origin_once_per_object_and_cache_status_chains_rfc9211(
) {
    bounded(async {
        let origin = origin().await;
        let (a, b) = (
            shield(&origin, "shield-a").await,
            shield(&origin, "shield-b").await,
        );
        let shields = [a.proxy, b.proxy];
        let edges = [
            edge(&origin, "edge-1", &shields).await,
            edge(&origin, "edge-2", &shields).await,
            edge(&origin, "edge-3", &shields).await,
        ];
        let objects: Vec<String> = (0..12).map(|i| format!("/obj/{i}")).collect();
        // Three requests per object on every edge, all at once.
        let mut requests = Vec::new();
        for path in &objects {
            for e in &edges {
                for _ in 0..3 {
                    requests.push(request(e, path).send());
                }
            }
        }
        let answers = futures_util::future::join_all(requests).await;
        for answer in answers {
            let answer = answer.expect("an answer");
            assert_eq!(answer.status(), 200);
        }
        for path in &objects {
            assert_eq!(origin.count(path), 1, "{path} reached the origin once");
        }
        // Each object has one home: the shields' misses add up to the objects.
        let misses = |s: &Stavka| {
            let s = s.admin_url("/metrics");
            async move {
                let text = client().get(s).send().await.unwrap().text().await.unwrap();
                text.lines()
                    .filter(|l| l.starts_with("stavka_origin_requests_total"))
                    .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
                    .sum::<f64>()
            }
        };
        let (to_origin_a, to_origin_b) = (misses(&a).await, misses(&b).await);
        assert_eq!(to_origin_a + to_origin_b, objects.len() as f64);
        assert!(
            to_origin_a > 0.0 && to_origin_b > 0.0,
            "both shields are homes"
        );

        // RFC 9211 §2: the shield's entry first, the edge's appended.
        let fresh = request(&edges[0], "/chain").send().await.unwrap();
        let status = fresh.headers()["cache-status"].to_str().unwrap().to_owned();
        let names = caches(&status);
        assert_eq!(names.len(), 2, "{status}");
        assert!(names[0].starts_with("shield-"), "{status}");
        assert_eq!(names[1], "edge-1", "{status}");
        assert!(
            status.contains("edge-1; fwd=uri-miss; fwd-status=200"),
            "{status}"
        );
        let other = request(&edges[1], "/chain").send().await.unwrap();
        let status = other.headers()["cache-status"].to_str().unwrap().to_owned();
        assert!(
            status.starts_with(&format!("{}; hit", names[0])),
            "the home shield's hit comes first: {status}"
        );
        assert!(status.contains(", edge-2; fwd=uri-miss"), "{status}");
        assert_eq!(origin.count("/chain"), 1);
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn killing_a_shield_mid_run_fails_its_objects_over_to_the_next_with_no_client_error() {
    bounded(async {
        let origin = origin().await;
        let a = shield(&origin, "shield-a").await;
        let b = shield(&origin, "shield-b").await;
        let shields = [a.proxy, b.proxy];
        let edges = [
            edge(&origin, "edge-1", &shields).await,
            edge(&origin, "edge-2", &shields).await,
            edge(&origin, "edge-3", &shields).await,
        ];
        // Clients loop over cold objects (a new path each time, so every
        // request needs a shield) on every edge.
        let mut requests = Vec::new();
        for e in &edges {
            for i in 0..4 {
                requests.push(request(e, &format!("/warm/{i}")));
            }
        }
        let load = Load::start(requests, |status, _| status == 200);
        let cold = spawn_cold_clients(&edges);
        assert!(eventually(Duration::from_secs(20), || load.served() > 50).await);
        drop(a); // SIGKILL: no chance to drain.
        let served_at_kill = load.served();
        assert!(
            eventually(Duration::from_secs(20), || load.served()
                > served_at_kill + 200)
            .await,
            "requests go on after the kill"
        );
        let (served, failed) = load.stop().await;
        let (cold_served, cold_failed) = cold.stop().await;
        assert_eq!(failed, 0, "no client error ({served} served)");
        assert_eq!(
            cold_failed, 0,
            "no client error on cold objects ({cold_served} served)"
        );
        assert!(cold_served > 0);
        // The dead shield is taken out of an edge's pool by the next
        // request whose home it is that connects afresh (a failure on a
        // reused keep-alive connection does not count: an idle connection
        // closed by a healthy server fails the same way).
        let dead = shields[0].to_string();
        let mut shown = serde_json::Value::Null;
        for i in 0..200 {
            let got = edges[0].get_host(HOST, &format!("/after/{i}")).await;
            assert_eq!(got.status, 200, "{}", got.text());
            let ready = edges[0].admin_json("/readyz").await;
            let down = ready["pools"][0]["shield"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["resolved"] == dead.as_str() && m["down_ms"].is_number());
            if down {
                shown = ready;
                break;
            }
        }
        assert!(
            shown["degraded"].to_string().contains(&dead),
            "the dead shield is shown down: {shown}"
        );
        drop(b);
    })
    .await;
}

/// Cold clients: each request asks for a path no one asked before.
struct Cold {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<(usize, usize)>>,
}

fn spawn_cold_clients(edges: &[Stavka]) -> Cold {
    use std::sync::atomic::Ordering;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let tasks = edges
        .iter()
        .enumerate()
        .map(|(n, e)| {
            let (url, stop) = (e.url(""), stop.clone());
            tokio::spawn(async move {
                let (mut served, mut failed) = (0, 0);
                let mut i = 0;
                while !stop.load(Ordering::SeqCst) {
                    i += 1;
                    let sent = client()
                        .get(format!("{url}/cold/{n}/{i}"))
                        .header("host", HOST)
                        .send()
                        .await;
                    let answer = match sent {
                        Ok(r) => {
                            let status = r.status().as_u16();
                            r.text().await.map(|body| (status, body))
                        }
                        Err(e) => Err(e),
                    };
                    match answer {
                        Ok((200, _)) => served += 1,
                        other => {
                            eprintln!("cold request failed: {other:?}");
                            failed += 1;
                        }
                    }
                }
                (served, failed)
            })
        })
        .collect();
    Cold { stop, tasks }
}

impl Cold {
    async fn stop(self) -> (usize, usize) {
        self.stop.store(true, std::sync::atomic::Ordering::SeqCst);
        let mut total = (0, 0);
        for task in self.tasks {
            let (s, f) = task.await.unwrap();
            total = (total.0 + s, total.1 + f);
        }
        total
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pool_with_a_dead_member_serves_every_request_and_shows_it_down() {
    bounded(async {
        let origin = origin().await;
        let dead = free_addr();
        // The live member by name, resolved again every 200 ms.
        let live = format!("localhost:{}", origin.addr.port());
        let pool = format!(
            "{{ addresses = [\"{dead}\", {{ address = \"{live}\", weight = 2 }}], dns_ttl = \"200ms\", health = {{ path = \"/health\", interval = \"100ms\", healthy = 1, unhealthy = 1 }} }}"
        );
        let node = Stavka::start(&site(&pool, "")).await;
        let mut served = 0;
        for i in 0..30 {
            let got = node.get_host(HOST, &format!("/p/{i}")).await;
            assert_eq!(got.status, 200, "{}", got.text());
            served += 1;
        }
        assert_eq!(served, 30);
        let mut ready = serde_json::Value::Null;
        let mut seen = false;
        for _ in 0..100 {
            ready = node.admin_json("/readyz").await;
            let members = ready["pools"][0]["origin"].as_array().cloned().unwrap_or_default();
            let is = |addr: &str, healthy: bool| {
                members
                    .iter()
                    .any(|m| m["resolved"] == addr && m["healthy"] == healthy)
            };
            if is(&dead.to_string(), false) && is(&origin.addr.to_string(), true) {
                seen = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(seen, "the dead member is down, the live one up: {ready}");
        assert_eq!(ready["ready"], true, "a member down degrades, {ready}");
        let degraded = ready["degraded"].to_string();
        assert!(degraded.contains(&dead.to_string()), "{degraded}");
        // The named member was resolved at start and again since.
        let again = eventually_metric(
            &node,
            "stavka_pool_resolutions_total{pool=\"origin\",result=\"ok\",site=\"test\"}",
            3.0,
        )
        .await;
        assert!(again, "the names were resolved again");
        assert!(origin.count("/health") > 0, "the HTTP probe reached the origin");
    })
    .await;
}

/// Whether `sample` reaches at least `want` within 10 s.
async fn eventually_metric(node: &Stavka, sample: &str, want: f64) -> bool {
    for _ in 0..200 {
        if node.metric(sample).await.is_some_and(|v| v >= want) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

/// A client connecting from `from` (another loopback address).
fn client_from(from: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(from)
        .pool_max_idle_per_host(0)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_client_address_header_is_believed_only_from_trusted_edges() {
    bounded(async {
        let origin = origin().await;
        let s = shield(&origin, "shield-a").await;
        let e = edge(&origin, "edge-1", &[s.proxy]).await;
        let stranger: IpAddr = "127.0.0.2".parse().unwrap();
        let from_stranger = client_from(stranger);
        // The stranger claims another address for itself.
        let claiming = async |url: String| {
            from_stranger
                .get(url)
                .header("host", HOST)
                .header("stavka-client-ip", "203.0.113.9")
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap()
        };
        // Through an edge: the edge replaces the claim with the address
        // the client connects from, and the shield believes the edge.
        assert_eq!(claiming(e.url("/who/1")).await, "/who/1 client=127.0.0.2");
        // Straight to the shield from an address it does not trust: the
        // claim is removed, never passed on.
        assert_eq!(claiming(s.url("/who/2")).await, "/who/2 client=-");
        // The shield's access log names the client the edge vouched for,
        // not the edge (127.0.0.1), as nginx's realip does.
        let logged = |path: &str| {
            s.stdout_lines()
                .into_iter()
                .find(|l| l.contains(&format!("GET {path} ")))
        };
        assert!(
            eventually(Duration::from_secs(5), || logged("/who/1").is_some()).await,
            "the shield logged /who/1"
        );
        let line = logged("/who/1").unwrap();
        assert!(line.starts_with("127.0.0.2 "), "{line}");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_serves_stale_when_every_shield_fails_rfc5861() {
    bounded(async {
        let origin = origin().await;
        let s = shield(&origin, "shield-a").await;
        let e = edge(&origin, "edge-1", &[s.proxy]).await;
        let first = e.get_host(HOST, "/short/x").await;
        assert_eq!(first.status, 200);
        tokio::time::sleep(Duration::from_millis(2100)).await;
        drop(s);
        let stale = e.get_host(HOST, "/short/x").await;
        assert_eq!(stale.status, 200, "{}", stale.text());
        assert_eq!(stale.text(), first.text());
        assert!(
            stale.cache_status().contains("edge-1; fwd=stale")
                && stale.cache_status().contains("detail=stale-if-error"),
            "{}",
            stale.cache_status()
        );
    })
    .await;
}

#[test]
fn check_config_names_a_bad_pool_field_and_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stavka.toml");
    std::fs::write(
        &path,
        site(
            "{ addresses = [\"o:80\", { address = \"p:80\", weight = 0 }] }",
            "[site.shield]\naddresses = [\"nohost\"]\n",
        ),
    )
    .unwrap();
    let (code, stderr) = stavka_e2e::check_config(&path);
    assert_ne!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains("site[0].origin.addresses[1].weight"),
        "{stderr}"
    );
    assert!(stderr.contains("site[0].shield.addresses[0]"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_configuration_reload_swaps_the_origin_pool() {
    bounded(async {
        let (old, new) = (origin().await, origin().await);
        let node = Stavka::start(&site(&format!("{{ addresses = [\"{}\"] }}", old.addr), "")).await;
        assert_eq!(node.get_host(HOST, "/r/1").await.status, 200);
        let reloaded = node
            .reload_with(|c| c.replace(&old.addr.to_string(), &new.addr.to_string()))
            .await;
        assert_eq!(reloaded.status(), 200);
        assert_eq!(node.get_host(HOST, "/r/2").await.status, 200);
        assert_eq!((old.count("/r/1"), old.count("/r/2")), (1, 0));
        assert_eq!(new.count("/r/2"), 1, "the new pool answers");
        let ready = node.admin_json("/readyz").await;
        assert_eq!(
            ready["pools"][0]["origin"][0]["resolved"],
            new.addr.to_string().as_str(),
            "{ready}"
        );
    })
    .await;
}
