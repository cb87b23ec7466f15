//! The shared tier on a real Redis. Each test starts its own `redis-server`
//! (three, for the cluster test) on free loopback ports in a temporary
//! directory, without persistence, and kills it when the test ends
//! (`RedisServer`'s `Drop`). Every test is bounded by [`LIMIT`].
//!
//! Run with `cargo test -p edge-cdn-store --features redis --test redis`
//! (`./x test` does, after installing Debian's `redis-server`).

#![cfg(feature = "redis")]

mod common;

use std::future::Future;
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use async_trait::async_trait;
use bytes::Bytes;
use bytesize::ByteSize;
use common::{body, config, get, key, put, put_with, read_all};
use edge_cdn_store::{
    BreakerState, NoopObserver, PrometheusObserver, RedisConfig, RedisServers, RedisTier,
    SharedBody, SharedError, SharedMeta, SharedTier, StoreConfig, StoreObserver, TieredStore,
};
use pingora_cache::key::CacheHashKey;
use pingora_cache::storage::{PurgeTarget, PurgeType, Storage};
use pingora_cache::trace::Span;
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;
use redis::AsyncCommands;

/// The most any test here may take.
const LIMIT: Duration = Duration::from_secs(90);

/// Run a test body within [`LIMIT`].
async fn bounded(test: impl Future<Output = ()>) {
    tokio::time::timeout(LIMIT, test)
        .await
        .expect("the test finished within its time limit");
}

/// A loopback port nobody listens on; for a cluster node, its bus port
/// (port + 10000) is free too.
fn free_port(cluster: bool) -> u16 {
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        if !cluster || (port < 55_000 && TcpListener::bind(("127.0.0.1", port + 10_000)).is_ok()) {
            return port;
        }
    }
}

/// A `redis-server` of this test's own, killed on drop.
struct RedisServer {
    child: Option<Child>,
    port: u16,
    dir: tempfile::TempDir,
    cluster: bool,
}

impl RedisServer {
    /// A standalone server.
    fn start() -> RedisServer {
        RedisServer::start_as(false)
    }

    /// A server with cluster mode on (not yet part of a cluster).
    fn start_as(cluster: bool) -> RedisServer {
        let mut server = RedisServer {
            child: None,
            port: free_port(cluster),
            dir: tempfile::tempdir().unwrap(),
            cluster,
        };
        server.spawn();
        server
    }

    fn spawn(&mut self) {
        let dir = self.dir.path();
        let mut command = Command::new("redis-server");
        command
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--protected-mode", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if self.cluster {
            command.args([
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "2000",
            ]);
        }
        let child = command
            .spawn()
            .expect("redis-server runs (./x test installs Debian's redis-server)");
        self.child = Some(child);
        self.wait_ready();
    }

    fn wait_ready(&self) {
        let client = redis::Client::open(self.url()).unwrap();
        let started = Instant::now();
        loop {
            let pong = client
                .get_connection_with_timeout(Duration::from_millis(200))
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c));
            if pong.is_ok() {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(10),
                "redis-server on port {} did not start: {}",
                self.port,
                std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// SIGKILL, as a crash would.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Start again on the same port (empty: nothing is persisted).
    fn restart(&mut self) {
        self.kill();
        self.spawn();
    }

    /// A connection for looking at what the tier wrote.
    async fn inspect(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A tier configuration on `servers` with test-sized timeouts.
fn redis_config(servers: RedisServers) -> RedisConfig {
    RedisConfig {
        servers,
        timeout: Duration::from_millis(500),
        ..RedisConfig::default()
    }
}

/// A store on `dir` with `tier` behind it, reporting to `observer`.
fn store_on(
    dir: &Path,
    tier: Arc<dyn SharedTier>,
    observer: Arc<dyn StoreObserver>,
) -> &'static TieredStore {
    let config = StoreConfig {
        // Debug builds on a shared two-core machine: generous, but a
        // timeout still (the breaker test uses a tight one).
        shared_timeout: Duration::from_secs(1),
        shared_max_object: ByteSize::mib(16),
        ..config(dir)
    };
    Box::leak(Box::new(
        TieredStore::open_with_shared(config, observer, tier).unwrap(),
    ))
}

/// A store with its own tier on `servers`, as another server would have.
fn node(dir: &Path, servers: RedisServers) -> &'static TieredStore {
    let tier = RedisTier::new(&redis_config(servers), Arc::new(NoopObserver)).unwrap();
    store_on(dir, Arc::new(tier), Arc::new(NoopObserver))
}

fn hash(name: &str) -> u128 {
    u128::from_be_bytes(key(name).combined_bin())
}

fn meta_key(name: &str) -> String {
    format!("stavka:{{{:032x}}}:m", hash(name))
}

/// Every key of `name`'s object: its meta and its chunks.
async fn keys_of(redis: &mut redis::aio::MultiplexedConnection, name: &str) -> Vec<String> {
    let pattern = format!("stavka:{{{:032x}}}:*", hash(name));
    let mut keys: Vec<String> = redis.keys(pattern).await.unwrap();
    keys.sort();
    keys
}

/// Wait until `name`'s meta is in Redis (the background write is done).
async fn until_shared(redis: &mut redis::aio::MultiplexedConnection, name: &str) {
    let started = Instant::now();
    while !redis.exists::<_, bool>(meta_key(name)).await.unwrap() {
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "{name} never reached redis"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A response meta with a few header fields, fresh for `fresh`, usable
/// stale on error for `stale_if_error` seconds.
fn rich_meta(tag: &str, fresh: Duration, stale_if_error: u32) -> CacheMeta {
    let mut header = ResponseHeader::build(203, None).unwrap();
    header.insert_header("x-tag", tag).unwrap();
    header.insert_header("content-type", "text/plain").unwrap();
    header.append_header("x-Multi", "one").unwrap();
    header.append_header("x-Multi", "two").unwrap();
    let now = SystemTime::now();
    CacheMeta::new(now + fresh, now, 0, stale_if_error, header)
}

/// The wire form of a response header, to compare two exactly.
fn wire(meta: &CacheMeta) -> (u16, Vec<u8>) {
    let mut out = Vec::new();
    meta.response_header().header_to_h1_wire(&mut out);
    (meta.response_header().status.as_u16(), out)
}

/// Look `name` up in `store`: `Some` on a hit, and how long the lookup took.
async fn timed_lookup(store: &'static TieredStore, name: &str) -> (bool, Duration) {
    let span = Span::inactive().handle();
    let started = Instant::now();
    let found = store.lookup(&key(name), &span).await.unwrap();
    (found.is_some(), started.elapsed())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_object_put_by_one_store_is_a_shared_hit_in_another() {
    bounded(async {
        let server = RedisServer::start();
        let mut redis = server.inspect().await;
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = node(a_dir.path(), RedisServers::Standalone(server.url()));
        let b = node(b_dir.path(), RedisServers::Standalone(server.url()));

        let meta = rich_meta("/page", Duration::from_secs(600), 0);
        let data = body(10_000, 1);
        put_with(a, &key("/page"), &meta, &data).await;
        until_shared(&mut redis, "/page").await;

        let (found, got) = get(b, "/page").await.expect("a shared hit");
        assert_eq!(got, data, "byte-exact");
        assert_eq!(wire(&found), wire(&meta), "status and header fields exact");
        assert_eq!(found.fresh_until(), meta.fresh_until());
        assert_eq!(b.health().disk_objects, 1, "kept locally");
        assert_eq!(get(b, "/page").await.unwrap().1, data, "now a local hit");
        assert!(get(b, "/absent").await.is_none(), "a miss is a miss");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_streams_in_chunks_byte_exact() {
    bounded(async {
        let server = RedisServer::start();
        let mut redis = server.inspect().await;
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = node(a_dir.path(), RedisServers::Standalone(server.url()));
        let b = node(b_dir.path(), RedisServers::Standalone(server.url()));

        let data = body(8 * 1024 * 1024, 7);
        let started = Instant::now();
        put(a, "/video", &data).await;
        until_shared(&mut redis, "/video").await;
        let written = started.elapsed();
        assert_eq!(
            keys_of(&mut redis, "/video").await.len(),
            32 + 1,
            "32 chunks of 256 KiB and the meta"
        );

        let span = Span::inactive().handle();
        let started = Instant::now();
        let (_, mut hit) = b.lookup(&key("/video"), &span).await.unwrap().unwrap();
        let first_answer = started.elapsed();
        let first = hit.read_body().await.unwrap().unwrap();
        let first_byte = started.elapsed();
        let mut all = first.to_vec();
        all.extend_from_slice(&read_all(&mut hit).await.unwrap());
        let whole = started.elapsed();
        assert!(all == data, "8 MiB byte-exact");
        eprintln!(
            "8 MiB: shared by A in {written:?}; B's lookup answered in {first_answer:?}, \
             first bytes ({} B) at {first_byte:?}, whole body at {whole:?}",
            first.len()
        );
        assert_eq!(b.health().disk_objects, 1, "stored locally as it streamed");
        assert!(get(b, "/video").await.unwrap().1 == data);
    })
    .await;
}

/// A body that gives some chunks and then fails, as a writer killed
/// midway would stop.
struct Dies {
    chunks: u32,
}

#[async_trait]
impl SharedBody for Dies {
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, SharedError> {
        if self.chunks == 0 {
            return Err(SharedError::Source("the writer died".into()));
        }
        self.chunks -= 1;
        Ok(Some(body(256 * 1024, 1)))
    }
}

fn shared_meta(name: &str, body_len: u64) -> SharedMeta {
    let (internal, header) = common::meta(name).serialize().unwrap();
    SharedMeta {
        internal: internal.into(),
        header: header.into(),
        body_len,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chunks_written_without_their_meta_are_a_miss() {
    bounded(async {
        let server = RedisServer::start();
        let mut redis = server.inspect().await;
        let tier = RedisTier::new(
            &redis_config(RedisServers::Standalone(server.url())),
            Arc::new(NoopObserver),
        )
        .unwrap();
        let put = tier
            .put(
                hash("/torn"),
                shared_meta("/torn", 4 * 256 * 1024),
                Duration::from_secs(60),
                Box::new(Dies { chunks: 3 }),
            )
            .await;
        assert!(put.is_err(), "the writer died");
        let keys = keys_of(&mut redis, "/torn").await;
        assert_eq!(keys.len(), 3, "three chunks written, no meta: {keys:?}");
        assert!(!keys.contains(&meta_key("/torn")));
        assert!(tier.get(hash("/torn")).await.unwrap().is_none());

        let dir = tempfile::tempdir().unwrap();
        let b = store_on(dir.path(), Arc::new(tier), Arc::new(NoopObserver));
        assert!(get(b, "/torn").await.is_none(), "a miss");
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_chunk_is_a_miss_or_an_error_never_a_short_body() {
    bounded(async {
        let server = RedisServer::start();
        let mut redis = server.inspect().await;
        let servers = RedisServers::Standalone(server.url());
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = node(a_dir.path(), servers.clone());
        let data = body(1024 * 1024, 2);
        put(a, "/gap", &data).await;
        until_shared(&mut redis, "/gap").await;
        let keys = keys_of(&mut redis, "/gap").await;
        assert_eq!(keys.len(), 4 + 1);

        // Before the lookup: every chunk is checked, so it is a miss.
        let chunk2 = keys.iter().find(|k| k.ends_with(":2")).unwrap().clone();
        let saved: Vec<u8> = redis.get(&chunk2).await.unwrap();
        let _: () = redis.del(&chunk2).await.unwrap();
        let b = node(b_dir.path(), servers.clone());
        assert!(get(b, "/gap").await.is_none(), "a miss, not a short body");
        assert_eq!(b.health().disk_objects, 0);

        // During the stream: an error at the gap, not a clean end.
        let _: () = redis.set(&chunk2, saved).await.unwrap();
        let tier = RedisTier::new(&redis_config(servers), Arc::new(NoopObserver)).unwrap();
        let mut hit = tier.get(hash("/gap")).await.unwrap().expect("whole again");
        assert_eq!(hit.meta.body_len, data.len() as u64);
        let first = hit.body.next_chunk().await.unwrap().unwrap();
        assert_eq!(first.len(), 256 * 1024);
        // Let the read-ahead of chunk 1 land, then remove chunk 2.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let _: () = redis.del(&chunk2).await.unwrap();
        let second = hit.body.next_chunk().await.unwrap().unwrap();
        assert_eq!(second.len(), 256 * 1024);
        let gap = hit.body.next_chunk().await;
        assert!(
            matches!(gap, Err(SharedError::Incomplete(_))),
            "the missing chunk is an error: {gap:?}"
        );
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_key_expires_at_the_stale_horizon() {
    bounded(async {
        let server = RedisServer::start();
        let mut redis = server.inspect().await;
        let dir = tempfile::tempdir().unwrap();
        let a = node(dir.path(), RedisServers::Standalone(server.url()));
        // Fresh for 60 s, then stale-if-error for 300 s more: 360 s.
        let meta = rich_meta("/ttl", Duration::from_secs(60), 300);
        put_with(a, &key("/ttl"), &meta, &body(600 * 1024, 4)).await;
        until_shared(&mut redis, "/ttl").await;

        let keys = keys_of(&mut redis, "/ttl").await;
        assert_eq!(keys.len(), 3 + 1);
        let meta_ttl: i64 = redis.pttl(meta_key("/ttl")).await.unwrap();
        assert!(
            (350_000..=360_000).contains(&meta_ttl),
            "the meta lives to the stale horizon: {meta_ttl} ms"
        );
        for chunk in keys.iter().filter(|k| **k != meta_key("/ttl")) {
            let ttl: i64 = redis.pttl(chunk).await.unwrap();
            assert!(
                ttl >= meta_ttl && ttl <= 362_000,
                "{chunk} outlives the meta, barely: {ttl} ms vs {meta_ttl} ms"
            );
        }

        // Rewritten: the new version's keys, and the old chunks expiring soon.
        let old = keys;
        put_with(a, &key("/ttl"), &meta, &body(600 * 1024, 5)).await;
        let started = Instant::now();
        loop {
            let keys = keys_of(&mut redis, "/ttl").await;
            if keys.len() == 7 {
                let ttl: i64 = redis.pttl(&old[0]).await.unwrap();
                if (0..=30_000).contains(&ttl) {
                    break;
                }
            }
            assert!(started.elapsed() < Duration::from_secs(20), "{keys:?}");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for chunk in old.iter().filter(|k| **k != meta_key("/ttl")) {
            let ttl: i64 = redis.pttl(chunk).await.unwrap();
            assert!(
                (0..=30_000).contains(&ttl),
                "a replaced chunk lives 30 s at most: {ttl}"
            );
        }
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_purge_deletes_from_redis_and_an_eviction_does_not() {
    bounded(async {
        let server = RedisServer::start();
        let mut redis = server.inspect().await;
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = node(a_dir.path(), RedisServers::Standalone(server.url()));
        let b = node(b_dir.path(), RedisServers::Standalone(server.url()));
        put(a, "/purged", &body(700 * 1024, 1)).await;
        put(a, "/evicted", &body(700 * 1024, 2)).await;
        until_shared(&mut redis, "/purged").await;
        until_shared(&mut redis, "/evicted").await;

        let span = Span::inactive().handle();
        let purged = key("/purged").to_compact();
        a.purge(PurgeTarget::Active(&purged), PurgeType::Invalidation, &span)
            .await
            .unwrap();
        let evicted = key("/evicted").to_compact();
        a.purge(PurgeTarget::Active(&evicted), PurgeType::Eviction, &span)
            .await
            .unwrap();

        assert_eq!(
            keys_of(&mut redis, "/purged").await,
            Vec::<String>::new(),
            "meta and chunks deleted"
        );
        assert_eq!(keys_of(&mut redis, "/evicted").await.len(), 3 + 1);
        assert!(get(b, "/purged").await.is_none());
        assert!(get(b, "/evicted").await.is_some());
    })
    .await;
}

/// The value of the metric `name` in `registry` (summed over its labels).
fn metric(registry: &prometheus::Registry, name: &str) -> f64 {
    registry
        .gather()
        .iter()
        .filter(|family| family.get_name() == name)
        .flat_map(|family| family.get_metric())
        .map(|m| m.get_gauge().get_value() + m.get_counter().get_value())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_redis_fails_open_and_the_breaker_recovers_when_it_returns() {
    bounded(async {
        let mut server = RedisServer::start();
        let mut redis = server.inspect().await;
        let servers = RedisServers::Standalone(server.url());
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = node(a_dir.path(), servers.clone());

        // B reports to a registry, as the host's /metrics would.
        let registry = prometheus::Registry::new();
        let observer: Arc<dyn StoreObserver> =
            Arc::new(PrometheusObserver::new(&registry).unwrap());
        let cooldown = Duration::from_millis(500);
        let tier = Arc::new(
            RedisTier::new(
                &RedisConfig {
                    timeout: Duration::from_millis(200),
                    breaker_failures: 3,
                    breaker_cooldown: cooldown,
                    ..redis_config(servers)
                },
                observer.clone(),
            )
            .unwrap(),
        );
        let shared_timeout = Duration::from_millis(300);
        let b: &'static TieredStore = Box::leak(Box::new(
            TieredStore::open_with_shared(
                StoreConfig {
                    shared_timeout,
                    ..config(b_dir.path())
                },
                observer,
                tier.clone(),
            )
            .unwrap(),
        ));
        put(a, "/before", &body(5000, 1)).await;
        until_shared(&mut redis, "/before").await;
        assert!(get(b, "/before").await.is_some(), "a shared hit");
        assert_eq!(metric(&registry, "edge_store_shared_breaker_state"), 0.0);

        server.kill();
        let mut slowest = Duration::ZERO;
        for i in 0..8 {
            let (hit, took) = timed_lookup(b, &format!("/down/{i}")).await;
            assert!(!hit, "a dead redis is a miss");
            slowest = slowest.max(took);
        }
        assert!(
            slowest < shared_timeout + Duration::from_millis(200),
            "no lookup waits past the timeout: {slowest:?}"
        );
        assert_eq!(tier.breaker_state(), BreakerState::Open);
        assert_eq!(metric(&registry, "edge_store_shared_breaker_state"), 1.0);
        assert!(metric(&registry, "edge_store_shared_errors_total") >= 3.0);
        let degraded = b.health().shared_degraded.expect("health says why");
        assert!(degraded.contains("circuit breaker open"), "{degraded}");
        let (_, open_took) = timed_lookup(b, "/down/open").await;
        assert!(
            open_took < Duration::from_millis(100),
            "an open breaker answers at once: {open_took:?}"
        );

        server.restart();
        let started = Instant::now();
        let mut probes = 0;
        while tier.breaker_state() != BreakerState::Closed {
            assert!(
                started.elapsed() < Duration::from_secs(20),
                "the breaker closes once redis is back"
            );
            tokio::time::sleep(cooldown / 2).await;
            timed_lookup(b, &format!("/probe/{probes}")).await;
            probes += 1;
        }
        eprintln!(
            "breaker closed {:?} after the restart, {probes} lookups",
            started.elapsed()
        );
        assert_eq!(metric(&registry, "edge_store_shared_breaker_state"), 0.0);
        assert_eq!(b.health().shared_degraded, None);

        // The restarted redis is empty. A's connection learns of the
        // restart by failing, so its first write may be lost: write until
        // it is shared.
        let data = body(300 * 1024, 3);
        let mut redis = server.inspect().await;
        let started = Instant::now();
        loop {
            put(a, "/after", &data).await;
            tokio::time::sleep(Duration::from_millis(100)).await;
            if redis.exists::<_, bool>(meta_key("/after")).await.unwrap() {
                break;
            }
            assert!(started.elapsed() < Duration::from_secs(20));
        }
        assert_eq!(get(b, "/after").await.expect("shared hits resume").1, data);
    })
    .await;
}

/// Run `redis-cli` with `args`; its standard output.
fn redis_cli(args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli runs (it comes with Debian's redis-server)");
    assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_three_node_cluster_serves_shared_hits() {
    bounded(async {
        let nodes: Vec<RedisServer> = (0..3).map(|_| RedisServer::start_as(true)).collect();
        let addrs: Vec<String> = nodes
            .iter()
            .map(|n| format!("127.0.0.1:{}", n.port))
            .collect();
        let mut create = vec!["--cluster", "create"];
        create.extend(addrs.iter().map(String::as_str));
        create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
        redis_cli(&create);
        let started = Instant::now();
        for node in &nodes {
            let port = node.port.to_string();
            while !redis_cli(&["-p", &port, "cluster", "info"]).contains("cluster_state:ok") {
                assert!(
                    started.elapsed() < Duration::from_secs(30),
                    "the cluster forms"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }

        let servers = RedisServers::Cluster(nodes.iter().map(RedisServer::url).collect());
        let (a_dir, b_dir) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let a = node(a_dir.path(), servers.clone());
        let b = node(b_dir.path(), servers);
        let objects: Vec<(String, Bytes)> = (0..12)
            .map(|i| (format!("/cluster/{i}"), body(100 * 1024 * (i + 1), i as u8)))
            .collect();
        for (name, data) in &objects {
            put(a, name, data).await;
        }

        // Wait for every object on whichever node holds its slot.
        let mut conns = Vec::new();
        for node in &nodes {
            conns.push(node.inspect().await);
        }
        let started = Instant::now();
        for (name, _) in &objects {
            loop {
                let mut found = false;
                for conn in &mut conns {
                    // KEYS is local to a node (EXISTS would be MOVED).
                    let keys: Vec<String> = conn.keys(meta_key(name)).await.unwrap();
                    found |= !keys.is_empty();
                }
                if found {
                    break;
                }
                assert!(started.elapsed() < Duration::from_secs(30), "{name} shared");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        }
        // One object's keys live on one node; the objects on several.
        let mut holding = 0;
        for conn in &mut conns {
            let keys: Vec<String> = conn.keys("stavka:*").await.unwrap();
            holding += usize::from(!keys.is_empty());
            for (name, data) in &objects {
                let mine = keys_of(conn, name).await;
                assert!(
                    mine.is_empty() || mine.len() == 1 + data.len().div_ceil(256 * 1024),
                    "{name}: all of its keys or none on each node: {mine:?}"
                );
            }
        }
        assert!(holding >= 2, "objects spread over the nodes");

        for (name, data) in &objects {
            let (_, got) = get(b, name).await.expect("a shared hit from the cluster");
            assert!(got == *data, "{name} byte-exact");
        }
        assert_eq!(b.health().disk_objects, objects.len());
    })
    .await;
}
