//! Several stavka nodes on loopback (issue 16): three edges in front of the
//! bench origin's `/cluster/` objects (20 ms of origin latency), and the
//! same request mix through four [`Setup`]s, each started afresh: the
//! edges alone, the edges sharing a tier on a `redis-server` the bench
//! starts, the edges behind two shields, and both. Clients spread
//! [`REQUESTS`] requests over the edges, [`CONCURRENCY`] at a time, for
//! [`OBJECTS`] objects of 4–16 KiB whose popularity is Zipf with exponent
//! [`ZIPF_EXPONENT`]. Measured per setup: what reached the origin, which
//! tier answered (each response's `Cache-Status` chain, and the edges'
//! store metrics, which alone tell a shared hit from a local one), client
//! latency per answering tier under that load, and, unloaded, one request
//! at a time, the latency of a local hit, a shared-tier hit, a shield hit
//! and a miss.

use std::net::SocketAddr;
use std::path::Path;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, ensure, Context, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::process::{Child, Command};

use crate::origin::{mix, Origin};
use crate::report::quantile;
use crate::server::{Running, Tools};

mod chart;
mod report;

pub use report::{chart, markdown};

/// Distinct objects in the mix.
pub const OBJECTS: usize = 10_000;
/// Zipf exponent of their popularity: the object of rank `k` is asked
/// for in proportion to `1 / k^s`.
pub const ZIPF_EXPONENT: f64 = 1.0;
/// Requests per setup, the same mix for every setup.
pub const REQUESTS: usize = 30_000;
/// Requests in flight at once, over all edges.
pub const CONCURRENCY: usize = 24;
/// Object sizes: from 4 KiB to 16 KiB, fixed per object.
const MIN_SIZE: usize = 4 << 10;
const MAX_SIZE: usize = 16 << 10;
/// Edges and shields.
pub const EDGES: usize = 3;
pub const SHIELDS: usize = 2;
/// Objects of the unloaded probe: filled through one edge, then read
/// twice through another.
pub const PROBES: usize = 200;
const PROBE_SIZE: usize = 8 << 10;

/// How the edges are arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Setup {
    /// Three edges, each with its own memory and disk, each asking the
    /// origin.
    Independent,
    /// The edges share a tier on Redis (`[shared]`, write-through).
    Shared,
    /// The edges' misses go to two shields (Ketama on the cache key).
    Shielded,
    /// Both: the shared tier, then the shields.
    SharedAndShielded,
}

impl Setup {
    /// Every setup, in the order they run.
    pub const ALL: [Setup; 4] = [
        Setup::Independent,
        Setup::Shared,
        Setup::Shielded,
        Setup::SharedAndShielded,
    ];

    /// Its name in tables and the chart.
    pub fn as_str(self) -> &'static str {
        match self {
            Setup::Independent => "3 independent edges",
            Setup::Shared => "3 edges + shared tier (Redis)",
            Setup::Shielded => "3 edges + 2 shields",
            Setup::SharedAndShielded => "3 edges + shared tier + 2 shields",
        }
    }

    fn shared(self) -> bool {
        matches!(self, Setup::Shared | Setup::SharedAndShielded)
    }

    fn shielded(self) -> bool {
        matches!(self, Setup::Shielded | Setup::SharedAndShielded)
    }
}

/// Which tier answered a response, as its `Cache-Status` chain says
/// (RFC 9211 §2: upstream caches' members first, this edge's last).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Class {
    /// The edge's member says `hit`: its memory or disk, or (with a shared
    /// tier) Redis, which `Cache-Status` does not tell apart.
    EdgeHit,
    /// The edge forwarded it and the shield's member says `hit`.
    ShieldHit,
    /// Some node waited for a fetch another request had started
    /// (`collapsed`).
    Collapsed,
    /// Fetched from the origin.
    Origin,
}

impl Class {
    /// Every class, in table order.
    pub const ALL: [Class; 4] = [
        Class::EdgeHit,
        Class::ShieldHit,
        Class::Collapsed,
        Class::Origin,
    ];

    /// Its name in tables.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::EdgeHit => "edge hit",
            Class::ShieldHit => "shield hit",
            Class::Collapsed => "collapsed",
            Class::Origin => "from the origin",
        }
    }

    /// Classify a `Cache-Status` value.
    pub fn of(cache_status: &str) -> Class {
        let members: Vec<Vec<&str>> = cache_status
            .split(',')
            .map(|m| m.split(';').skip(1).map(str::trim).collect())
            .collect();
        let says = |member: Option<&Vec<&str>>, what: &str| {
            member.is_some_and(|params| params.contains(&what))
        };
        let edge = members.last();
        if says(edge, "hit") {
            Class::EdgeHit
        } else if members.len() > 1 && says(members.first(), "hit") {
            Class::ShieldHit
        } else if members.iter().any(|m| m.contains(&"collapsed")) {
            Class::Collapsed
        } else {
            Class::Origin
        }
    }
}

/// Latencies, sorted.
#[derive(Debug, Clone, Default)]
pub struct Latencies(pub Vec<Duration>);

impl Latencies {
    fn new(mut all: Vec<Duration>) -> Latencies {
        all.sort();
        Latencies(all)
    }

    /// The time at quantile `q`.
    pub fn at(&self, q: f64) -> Duration {
        quantile(&self.0, q)
    }
}

/// The unloaded probe: [`PROBES`] objects, one request at a time.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// Filling them through the first edge: misses all the way to the
    /// origin.
    pub miss: Latencies,
    /// Reading them through the second edge: a shared-tier hit with a
    /// shared tier, else a shield hit behind shields, else a miss.
    pub second_edge: Latencies,
    /// What answered those reads.
    pub second_edge_class: String,
    /// Reading them again through the second edge: local hits.
    pub local: Latencies,
}

/// One setup's run.
#[derive(Debug, Clone)]
pub struct Outcome {
    /// Which.
    pub setup: Setup,
    /// Client requests (all answered 200 with the right length, or the
    /// run fails).
    pub requests: usize,
    /// Distinct objects the mix asks for: the fewest origin requests
    /// that can serve it.
    pub distinct: usize,
    /// Requests and body bytes that reached the origin.
    pub origin_requests: usize,
    pub origin_bytes: u64,
    /// Client latency under load, per class.
    pub classes: Vec<(Class, Latencies)>,
    /// Edge hits that came from the shared tier on Redis, as the edges'
    /// stores count them (`Cache-Status` says `hit` for both).
    pub shared_hits: u64,
    /// Seconds the mix took.
    pub seconds: f64,
    /// Unloaded latencies.
    pub probe: Probe,
}

impl Outcome {
    /// Responses of `class`.
    pub fn count(&self, class: Class) -> usize {
        self.classes
            .iter()
            .find(|(c, _)| *c == class)
            .map_or(0, |(_, l)| l.0.len())
    }

    /// `class`'s latencies.
    pub fn latencies(&self, class: Class) -> Latencies {
        self.classes
            .iter()
            .find(|(c, _)| *c == class)
            .map(|(_, l)| l.clone())
            .unwrap_or_default()
    }
}

/// One request of the mix: which edge, which object (its popularity rank,
/// from 0).
type Request = (usize, usize);

/// The mix for `seed`: [`REQUESTS`] requests, each for an object drawn by
/// Zipf popularity, sent to an edge drawn uniformly.
fn mix_of(seed: u64) -> Vec<Request> {
    let weights: Vec<f64> = (1..=OBJECTS)
        .map(|k| 1.0 / (k as f64).powf(ZIPF_EXPONENT))
        .collect();
    let total: f64 = weights.iter().sum();
    let mut cumulative = Vec::with_capacity(OBJECTS);
    let mut sum = 0.0;
    for w in weights {
        sum += w / total;
        cumulative.push(sum);
    }
    (0..REQUESTS as u64)
        .map(|i| {
            let word = mix(seed.wrapping_mul(0x1_0000_0001).wrapping_add(i));
            let uniform = (word >> 11) as f64 / (1u64 << 53) as f64;
            let rank = cumulative
                .partition_point(|c| *c < uniform)
                .min(OBJECTS - 1);
            (((word & 0xff) as usize) % EDGES, rank)
        })
        .collect()
}

/// Object `rank`'s size: fixed per rank, so every setup fetches the same
/// bytes.
fn size_of(rank: usize) -> usize {
    MIN_SIZE + (mix(rank as u64) % (MAX_SIZE - MIN_SIZE + 1) as u64) as usize
}

/// A `redis-server` on a free loopback port, no persistence, pinned to
/// the servers' CPUs; killed when dropped.
struct Redis {
    port: u16,
    _child: Child,
}

impl Redis {
    async fn start(cpus: &str, dir: &Path) -> Result<Redis> {
        std::fs::create_dir_all(dir)?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let child = Command::new("taskset")
            .args(["-c", cpus, "redis-server", "--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir)
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("starting redis-server (./x bench installs Debian's)")?;
        let redis = Redis {
            port,
            _child: child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while !redis.answers().await {
            ensure!(
                Instant::now() < deadline,
                "redis-server on port {port} did not answer PING; see {}",
                dir.join("redis.log").display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(redis)
    }

    /// Whether it answers `PING` (RESP inline command).
    async fn answers(&self) -> bool {
        let Ok(mut stream) = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await else {
            return false;
        };
        let mut answer = [0; 7];
        stream.write_all(b"PING\r\n").await.is_ok()
            && stream.read_exact(&mut answer).await.is_ok()
            && &answer == b"+PONG\r\n"
    }
}

/// The nodes of one setup.
struct Topology {
    edges: Vec<Running>,
    shields: Vec<Running>,
    _redis: Option<Redis>,
}

impl Topology {
    async fn start(tools: &Tools, origin: SocketAddr, setup: Setup) -> Result<Topology> {
        let redis = match setup.shared() {
            true => Some(Redis::start(&tools.cpus, &tools.work.join("redis")).await?),
            false => None,
        };
        let mut shields = Vec::new();
        if setup.shielded() {
            for s in 0..SHIELDS {
                shields.push(tools.start_node(&format!("shield-{s}"), origin, "").await?);
            }
        }
        let mut edges = Vec::new();
        for e in 0..EDGES {
            let mut extra = String::new();
            if !shields.is_empty() {
                let members: Vec<String> =
                    shields.iter().map(|s| format!("\"{}\"", s.addr)).collect();
                extra += &format!("\n[site.shield]\naddresses = [{}]\n", members.join(", "));
            }
            if let Some(redis) = &redis {
                extra += &format!(
                    "\n[shared]\nredis = \"redis://127.0.0.1:{}\"\nnode_id = \"edge-{e}\"\n",
                    redis.port
                );
            }
            edges.push(
                tools
                    .start_node(&format!("edge-{e}"), origin, &extra)
                    .await?,
            );
        }
        Ok(Topology {
            edges,
            shields,
            _redis: redis,
        })
    }

    async fn stop(self) -> Result<()> {
        for node in self.edges.into_iter().chain(self.shields) {
            node.stop().await?;
        }
        Ok(())
    }
}

/// One sample of `node`'s `/metrics`, 0 if absent.
async fn metric(client: &reqwest::Client, node: &Running, sample: &str) -> Result<f64> {
    let admin = node.admin.context("a stavka node has an admin listener")?;
    let text = crate::admin_metrics(client, admin).await?;
    Ok(text
        .lines()
        .find_map(|l| {
            l.strip_prefix(sample)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0))
}

/// Hits from the shared tier so far, summed over `edges`.
async fn shared_hits(client: &reqwest::Client, edges: &[Running]) -> Result<u64> {
    let mut hits = 0;
    for edge in edges {
        let sample = "edge_store_lookups_total{result=\"hit\",tier=\"shared\"}";
        hits += metric(client, edge, sample).await? as u64;
    }
    Ok(hits)
}

/// GET `path` from `node`, check the body's length, and say how long it
/// took and what answered.
async fn get(
    client: &reqwest::Client,
    node: &Running,
    path: &str,
    size: usize,
) -> Result<(Duration, String)> {
    let started = Instant::now();
    let resp = client
        .get(node.url(path))
        .send()
        .await
        .and_then(|r| r.error_for_status())
        .with_context(|| format!("GET {path}"))?;
    let cache_status = resp
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let body = resp.bytes().await.with_context(|| format!("GET {path}"))?;
    let took = started.elapsed();
    ensure!(
        body.len() == size,
        "{path}: {} bytes, expected {size}",
        body.len()
    );
    Ok((took, cache_status))
}

/// Every setup on the mix for `seed`, one after another.
pub async fn run(tools: &Tools, origin: &Origin, seed: u64) -> Result<Vec<Outcome>> {
    let mix = Arc::new(mix_of(seed));
    let mut outcomes = Vec::new();
    for setup in Setup::ALL {
        eprintln!("  cluster: {}", setup.as_str());
        let nodes = Topology::start(tools, origin.addr, setup).await?;
        let outcome = measure(origin, &nodes, setup, &mix)
            .await
            .with_context(|| setup.as_str());
        nodes.stop().await?;
        outcomes.push(outcome?);
    }
    Ok(outcomes)
}

async fn measure(
    origin: &Origin,
    nodes: &Topology,
    setup: Setup,
    mix: &Arc<Vec<Request>>,
) -> Result<Outcome> {
    let tag = crate::fresh("c");
    let path = |size: usize, name: String| format!("/cluster/{size}/{tag}-{name}");
    let client = crate::client(CONCURRENCY);
    let before = shared_hits(&client, &nodes.edges).await?;
    let next = AtomicUsize::new(0);
    let got = Mutex::new(Vec::with_capacity(REQUESTS));
    let began = Instant::now();
    let workers = (0..CONCURRENCY).map(|_| async {
        loop {
            let i = next.fetch_add(1, Ordering::Relaxed);
            let Some(&(edge, rank)) = mix.get(i) else {
                return Ok::<_, anyhow::Error>(());
            };
            let size = size_of(rank);
            let (took, cache_status) = get(
                &client,
                &nodes.edges[edge],
                &path(size, rank.to_string()),
                size,
            )
            .await?;
            got.lock()
                .unwrap_or_else(|e| e.into_inner())
                .push((Class::of(&cache_status), took));
        }
    });
    futures_util::future::try_join_all(workers).await?;
    let seconds = began.elapsed().as_secs_f64();
    let after = shared_hits(&client, &nodes.edges).await?;
    let got = got.into_inner().unwrap_or_else(|e| e.into_inner());
    let classes = Class::ALL
        .iter()
        .map(|&class| {
            let of: Vec<Duration> = got
                .iter()
                .filter(|(c, _)| *c == class)
                .map(|(_, d)| *d)
                .collect();
            (class, Latencies::new(of))
        })
        .collect();
    let traffic = origin.take_traffic_under("/cluster/");
    let (origin_requests, origin_bytes) = traffic
        .iter()
        .fold((0, 0), |(r, b), (_, t)| (r + t.requests, b + t.bytes));
    let probe = probe(&client, nodes, setup, &|name| path(PROBE_SIZE, name)).await?;
    origin.take_traffic_under("/cluster/");
    eprintln!("    {REQUESTS} requests in {seconds:.1} s, {origin_requests} reached the origin");
    Ok(Outcome {
        setup,
        distinct: mix
            .iter()
            .map(|(_, rank)| rank)
            .collect::<std::collections::BTreeSet<_>>()
            .len(),
        requests: got.len(),
        origin_requests,
        origin_bytes,
        classes,
        shared_hits: after - before,
        seconds,
        probe,
    })
}

/// The unloaded probe: [`PROBES`] objects filled through edge 0, then,
/// once the shared tier has them, read through edge 1 twice, one request
/// at a time.
async fn probe(
    client: &reqwest::Client,
    nodes: &Topology,
    setup: Setup,
    path: &dyn Fn(String) -> String,
) -> Result<Probe> {
    let (first, second) = (&nodes.edges[0], &nodes.edges[1]);
    let puts = "edge_store_events_total{event=\"shared-put\"}";
    let puts_before = metric(client, first, puts).await?;
    let mut miss = Vec::new();
    for i in 0..PROBES {
        miss.push(
            get(client, first, &path(format!("probe-{i}")), PROBE_SIZE)
                .await?
                .0,
        );
    }
    if setup.shared() {
        let deadline = Instant::now() + Duration::from_secs(10);
        while metric(client, first, puts).await? < puts_before + PROBES as f64 {
            if Instant::now() > deadline {
                bail!("edge 0 did not write the probe objects to Redis within 10 s");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let shared_before = shared_hits(client, std::slice::from_ref(second)).await?;
    let mut second_edge = Vec::new();
    let mut classes = Vec::new();
    for i in 0..PROBES {
        let (took, cache_status) =
            get(client, second, &path(format!("probe-{i}")), PROBE_SIZE).await?;
        second_edge.push(took);
        classes.push(Class::of(&cache_status));
    }
    let shared = shared_hits(client, std::slice::from_ref(second)).await? - shared_before;
    // A shared hit is stored on the edge behind the response: give it a
    // moment before reading the local copies.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut local = Vec::new();
    for i in 0..PROBES {
        let (took, cache_status) =
            get(client, second, &path(format!("probe-{i}")), PROBE_SIZE).await?;
        ensure!(
            Class::of(&cache_status) == Class::EdgeHit,
            "a second read on one edge was not a hit: {cache_status}"
        );
        local.push(took);
    }
    let shield_hits = classes.iter().filter(|c| **c == Class::ShieldHit).count();
    let edge_hits = classes.iter().filter(|c| **c == Class::EdgeHit).count();
    let second_edge_class = format!(
        "{shared} shared hits, {} local hits, {shield_hits} shield hits, {} misses",
        edge_hits as u64 - shared.min(edge_hits as u64),
        PROBES - edge_hits - shield_hits
    );
    Ok(Probe {
        miss: Latencies::new(miss),
        second_edge: Latencies::new(second_edge),
        second_edge_class,
        local: Latencies::new(local),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// RFC 9211 §2: the upstream cache's member comes first, this edge's
    /// last; the edge's says whether it was a hit.
    #[test]
    fn classes_follow_the_cache_status_chain_rfc9211() {
        let cases = [
            ("stavka; hit; ttl=3590", Class::EdgeHit),
            ("stavka; fwd=uri-miss; fwd-status=200; ttl=3600; stored", Class::Origin),
            ("stavka; fwd=uri-miss; fwd-status=200; ttl=3600; collapsed", Class::Collapsed),
            ("stavka; hit; ttl=3590, stavka; fwd=uri-miss; fwd-status=200; ttl=3590; stored", Class::ShieldHit),
            ("stavka; fwd=uri-miss; fwd-status=200; ttl=3600; stored, stavka; hit; ttl=3000", Class::EdgeHit),
            ("stavka; fwd=uri-miss; fwd-status=200; collapsed, stavka; fwd=uri-miss; fwd-status=200; stored", Class::Collapsed),
            ("stavka; fwd=uri-miss; fwd-status=200; stored, stavka; fwd=uri-miss; fwd-status=200; stored", Class::Origin),
            ("", Class::Origin),
        ];
        for (cache_status, class) in cases {
            assert_eq!(Class::of(cache_status), class, "{cache_status}");
        }
    }

    #[test]
    fn the_mix_is_zipf_over_the_objects_and_uniform_over_the_edges() {
        let mix = mix_of(1);
        assert_eq!(mix, mix_of(1), "a seed gives one mix");
        assert_ne!(mix, mix_of(2));
        let count = |rank: usize| mix.iter().filter(|(_, r)| *r == rank).count() as f64;
        // With exponent 1, rank 1 (the second) is asked half as often as
        // rank 0; both well above noise at this size.
        let ratio = count(0) / count(1);
        assert!((1.6..2.4).contains(&ratio), "{ratio}");
        assert!(mix.iter().all(|(e, r)| *e < EDGES && *r < OBJECTS));
        for edge in 0..EDGES {
            let share = mix.iter().filter(|(e, _)| *e == edge).count() as f64 / REQUESTS as f64;
            assert!(
                (share - 1.0 / EDGES as f64).abs() < 0.02,
                "edge {edge}: {share}"
            );
        }
        assert!((0..OBJECTS).all(|r| (MIN_SIZE..=MAX_SIZE).contains(&size_of(r))));
    }
}
