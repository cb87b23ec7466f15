//! Large objects as slices: range requests into a cold 1 GiB object, and
//! what they cost the origin. stavka's `[slice]` (`bench/configs/slice.toml`)
//! against nginx's slice module (the `/slice/` location in
//! `bench/configs/nginx.conf`), both with 1 MiB blocks; Varnish has no
//! equivalent and does not take part. Every body byte is checked against
//! the origin's generator.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures_util::future::try_join_all;
use reqwest::header::RANGE;

use crate::origin::{self, Origin, Traffic, BIG_SIZE};
use crate::server::Running;

/// Both contenders' block size: stavka's `block_size`, nginx's `slice`.
pub const BLOCK: u64 = 1 << 20;
/// stavka's `read_ahead`: blocks fetched past a range's last block.
pub const READ_AHEAD: u64 = 4;
/// Every range a client asks for is this long.
pub const RANGE_LEN: u64 = 1 << 20;
/// Ranges a player reads, one after another or seeking.
pub const PLAYER_RANGES: usize = 20;
/// Clients collapsing on one cold range.
pub const COLLAPSING: usize = 20;
/// The longest a proxy may go on reading from the origin after its
/// clients are done.
const QUIET_LIMIT: Duration = Duration::from_secs(30);

/// What reading some ranges cost, the origin's side and the clients'.
#[derive(Debug, Clone, Default)]
pub struct Cost {
    /// Requests that reached the origin.
    pub origin_requests: usize,
    /// Body bytes the origin sent.
    pub origin_bytes: u64,
    /// Body bytes the clients received.
    pub delivered: u64,
    /// What issue 13 allows the origin: the bytes requested, plus one
    /// block and the read-ahead for each separate run of ranges.
    pub goal: u64,
    /// Each response's time to first body byte, sorted.
    pub first_bytes: Vec<Duration>,
    /// Responses the proxy called hits.
    pub hits: usize,
    /// Responses that said whether they were hits.
    pub told: usize,
    /// Misses that asked the origin for nothing themselves: their blocks
    /// were all stored or on their way for another request (stavka's
    /// `Cache-Status` says `collapsed`), such as a read-ahead still
    /// arriving.
    pub collapsed: usize,
    /// Responses after the first, in request order, that were not
    /// forwarded: hits and collapsed ones. For the sequential player this
    /// is issue 13's goal (≥ 90% of the ranges after the first).
    pub served_after_first: usize,
    /// When the last client was done, from the first request.
    pub last_done: Duration,
    /// The first client's first body byte after the origin's first body
    /// byte (zero if it came first: nothing was asked of the origin).
    pub after_origin: Duration,
}

impl Cost {
    /// Time to first byte at quantile `q` (nearest rank).
    pub fn first_byte(&self, q: f64) -> Duration {
        crate::report::quantile(&self.first_bytes, q)
    }
}

/// One contender's run of the four measurements.
#[derive(Debug, Clone)]
pub struct Slices {
    /// One cold range at a random offset.
    pub cold: Cost,
    /// [`PLAYER_RANGES`] consecutive ranges from the start.
    pub player: Cost,
    /// [`PLAYER_RANGES`] ranges at random offsets.
    pub seeking: Cost,
    /// [`COLLAPSING`] clients on one cold range.
    pub collapse: Cost,
    /// One block's transfer time in the same round: a client reading one
    /// [`BLOCK`] straight from the origin, from the origin's first body
    /// byte to the client's last.
    pub block_transfer: Duration,
}

/// A deterministic stream of offsets: the same `seed` gives every
/// contender in a round the same ranges.
struct Offsets(u64);

impl Offsets {
    /// A range start anywhere a whole [`RANGE_LEN`] fits.
    fn next(&mut self) -> u64 {
        self.0 += 1;
        origin::mix(self.0) % (BIG_SIZE - RANGE_LEN + 1)
    }
}

/// The four measurements on `server`, each on a cold object of its own;
/// offsets drawn from `seed`.
pub async fn run(origin: &Origin, server: &Running, seed: u64) -> Result<Slices> {
    let mut offsets = Offsets(seed << 32);
    let client = &crate::client(COLLAPSING);

    let block_transfer = block_transfer(origin, client).await?;

    let start = offsets.next();
    let cold = measure(origin, server, "cold", |url| async move {
        sequence(client, &url, &[start]).await
    })
    .await?;

    let starts: &Vec<u64> = &(0..PLAYER_RANGES as u64).map(|i| i * RANGE_LEN).collect();
    let player = measure(origin, server, "player", |url| async move {
        sequence(client, &url, starts).await
    })
    .await?;

    let starts: &Vec<u64> = &(0..PLAYER_RANGES).map(|_| offsets.next()).collect();
    let seeking = measure(origin, server, "seeking", |url| async move {
        sequence(client, &url, starts).await
    })
    .await?;

    let start = offsets.next();
    let collapse = measure(origin, server, "collapse", |url| async move {
        let began = Instant::now();
        try_join_all((0..COLLAPSING).map(|_| fetch_range(client, &url, start, began))).await
    })
    .await?;

    Ok(Slices {
        cold,
        player,
        seeking,
        collapse,
        block_transfer,
    })
}

/// How long one block takes from the origin to a client over loopback:
/// [`BLOCK`] bytes of a fresh object read straight from the origin (every
/// byte checked, as the proxies' clients check theirs), from the origin's
/// first body byte to the client's last.
async fn block_transfer(origin: &Origin, client: &reqwest::Client) -> Result<Duration> {
    let path = format!("/slice/{}", crate::fresh("block"));
    let url = format!("http://{}{path}", origin.addr);
    let got = fetch_range(client, &url, 0, Instant::now()).await?;
    origin.quiet(QUIET_LIMIT).await?;
    let sent = origin.take_traffic(&path).first_byte;
    let sent = sent.context("the origin sent no body for one block")?;
    Ok(got.done_at.saturating_duration_since(sent))
}

/// Run `read` against a fresh object named after `tag`, wait for the
/// proxy to stop fetching, and add up what the origin sent.
async fn measure<F, Fut>(origin: &Origin, server: &Running, tag: &str, read: F) -> Result<Cost>
where
    F: FnOnce(String) -> Fut,
    Fut: std::future::Future<Output = Result<Vec<Got>>>,
{
    let path = format!("/slice/{}", crate::fresh(tag));
    let got = read(server.url(&path))
        .await
        .with_context(|| format!("{} {tag}", server.contender.as_str()))?;
    origin.quiet(QUIET_LIMIT).await?;
    let traffic = origin.take_traffic(&path);
    let cost = add_up(&got, &traffic);
    if cost.origin_bytes > cost.goal {
        eprintln!(
            "{} {tag}: the origin sent {} bytes, over the goal of {}; it was asked for {:?}",
            server.contender.as_str(),
            cost.origin_bytes,
            cost.goal,
            traffic.ranges
        );
    }
    Ok(cost)
}

/// The goal and the clients' figures of `got`, with the origin's `traffic`.
fn add_up(got: &[Got], traffic: &Traffic) -> Cost {
    let mut first_bytes: Vec<Duration> = got.iter().map(|g| g.first_byte).collect();
    first_bytes.sort();
    let (requested, runs) = union(got.iter().map(|g| (g.start, g.start + g.len)));
    Cost {
        origin_requests: traffic.requests,
        origin_bytes: traffic.bytes,
        delivered: got.iter().map(|g| g.len).sum(),
        goal: requested + runs * (BLOCK + READ_AHEAD * BLOCK),
        first_bytes,
        hits: got.iter().filter(|g| g.hit == Some(true)).count(),
        told: got.iter().filter(|g| g.hit.is_some()).count(),
        collapsed: got.iter().filter(|g| g.collapsed).count(),
        served_after_first: got
            .iter()
            .skip(1)
            .filter(|g| g.hit == Some(true) || g.collapsed)
            .count(),
        last_done: got.iter().map(|g| g.done).max().unwrap_or_default(),
        after_origin: match (
            got.iter().map(|g| g.first_byte_at).min(),
            traffic.first_byte,
        ) {
            (Some(client), Some(origin)) => client.saturating_duration_since(origin),
            _ => Duration::ZERO,
        },
    }
}

/// The bytes the ranges `start..end` cover together, and in how many
/// separate runs: a player reading on is one run (one block of slack and
/// one read-ahead in the goal), each seek starts another, and clients
/// asking for the same range share one.
fn union(ranges: impl Iterator<Item = (u64, u64)>) -> (u64, u64) {
    let mut ranges: Vec<(u64, u64)> = ranges.collect();
    ranges.sort_unstable();
    let (mut bytes, mut runs, mut reach) = (0, 0, None);
    for (start, end) in ranges {
        match reach {
            Some(r) if start <= r => {
                bytes += end.saturating_sub(r);
                reach = Some(end.max(r));
            }
            _ => {
                bytes += end - start;
                runs += 1;
                reach = Some(end);
            }
        }
    }
    (bytes, runs)
}

/// One range as a client got it.
struct Got {
    start: u64,
    len: u64,
    /// From the request to the first body byte.
    first_byte: Duration,
    /// From `began` to the last body byte.
    done: Duration,
    /// When the first body byte arrived.
    first_byte_at: Instant,
    /// When the last body byte arrived.
    done_at: Instant,
    /// Whether the proxy said it was a hit (`None`: it did not say).
    hit: Option<bool>,
    /// Whether the proxy said it waited for another request's fetch.
    collapsed: bool,
}

/// The ranges starting at `starts`, one after another on one connection.
async fn sequence(client: &reqwest::Client, url: &str, starts: &[u64]) -> Result<Vec<Got>> {
    let began = Instant::now();
    let mut got = Vec::with_capacity(starts.len());
    for &start in starts {
        got.push(fetch_range(client, url, start, began).await?);
    }
    Ok(got)
}

/// GET [`RANGE_LEN`] bytes from `start`, checking the status, the
/// `Content-Range` and every byte against the generator.
async fn fetch_range(
    client: &reqwest::Client,
    url: &str,
    start: u64,
    began: Instant,
) -> Result<Got> {
    let last = start + RANGE_LEN - 1;
    let asked = Instant::now();
    let mut resp = client
        .get(url)
        .header(RANGE, format!("bytes={start}-{last}"))
        .send()
        .await?;
    let what = format!("{url} bytes={start}-{last}");
    ensure!(resp.status() == 206, "{what}: status {}", resp.status());
    let content_range = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)
        .and_then(|v| v.to_str().ok());
    let expected = format!("bytes {start}-{last}/{BIG_SIZE}");
    ensure!(
        content_range == Some(expected.as_str()),
        "{what}: Content-Range {content_range:?}, expected {expected}"
    );
    let hit = said_hit(resp.headers());
    let collapsed = said_collapsed(resp.headers());
    let mut first_byte_at = None;
    let mut at = start;
    let mut expected = Vec::new();
    let mut corrupt = 0u64;
    let mut first_corrupt = None;
    while let Some(chunk) = resp.chunk().await? {
        first_byte_at.get_or_insert_with(Instant::now);
        ensure!(
            at + chunk.len() as u64 <= last + 1,
            "{what}: more than {RANGE_LEN} body bytes"
        );
        expected.resize(chunk.len(), 0);
        origin::fill(at, &mut expected);
        if chunk[..] != expected[..] {
            for (i, (got, want)) in chunk.iter().zip(&expected).enumerate() {
                if got != want {
                    corrupt += 1;
                    first_corrupt.get_or_insert(at + i as u64);
                }
            }
        }
        at += chunk.len() as u64;
    }
    ensure!(
        corrupt == 0,
        "{what}: {corrupt} CORRUPT BYTES, the first at object offset {}",
        first_corrupt.unwrap_or_default()
    );
    ensure!(
        at == last + 1,
        "{what}: {} body bytes, expected {RANGE_LEN}",
        at - start
    );
    let done_at = Instant::now();
    let first_byte_at = first_byte_at.context("empty body")?;
    Ok(Got {
        start,
        len: RANGE_LEN,
        first_byte: first_byte_at - asked,
        done: done_at - began,
        first_byte_at,
        done_at,
        hit,
        collapsed,
    })
}

/// Whether the proxy called the response a hit: stavka's `Cache-Status`
/// has a `hit` parameter only when every block was stored; nginx's
/// `X-Cache-Status` (`$upstream_cache_status`) describes the first slice
/// of the range.
pub fn said_hit(headers: &reqwest::header::HeaderMap) -> Option<bool> {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(status) = text("cache-status") {
        return Some(status.split(';').skip(1).any(|p| p.trim() == "hit"));
    }
    text("x-cache-status").map(|s| s == "HIT")
}

/// Whether stavka's `Cache-Status` says the response waited for another
/// request's fetch (nginx does not say).
pub fn said_collapsed(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| s.split(';').skip(1).any(|p| p.trim() == "collapsed"))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The constants the report and the goal use are the ones the servers
    /// run with.
    #[test]
    fn configs_match_the_constants() {
        let configs = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs");
        let stavka = std::fs::read_to_string(configs.join("slice.toml")).unwrap();
        assert!(stavka.contains("block_size = \"1MiB\"") && BLOCK == 1 << 20);
        assert!(stavka.contains(&format!("read_ahead = {READ_AHEAD}\n")));
        let nginx = std::fs::read_to_string(configs.join("nginx.conf")).unwrap();
        assert!(nginx.contains("slice 1m;"));
    }

    #[test]
    fn hits_as_each_server_says_them() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "cache-status",
            "stavka; hit; detail=slice-1/1-hit".parse().unwrap(),
        );
        assert_eq!(said_hit(&headers), Some(true));
        headers.insert(
            "cache-status",
            "stavka; fwd=uri-miss; stored; detail=slice-0/2-hit"
                .parse()
                .unwrap(),
        );
        assert_eq!(said_hit(&headers), Some(false));
        assert!(!said_collapsed(&headers));
        headers.insert(
            "cache-status",
            "stavka; fwd=miss; collapsed; detail=slice-0/1-hit-1-in-flight"
                .parse()
                .unwrap(),
        );
        assert!(said_collapsed(&headers));
        assert_eq!(said_hit(&headers), Some(false));
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert("x-cache-status", "HIT".parse().unwrap());
        assert_eq!(said_hit(&headers), Some(true));
        assert_eq!(said_hit(&reqwest::header::HeaderMap::new()), None);
    }

    #[test]
    fn runs_of_ranges() {
        let mib = |n: u64| n << 20;
        let player = (0..20).map(|i| (mib(i), mib(i + 1)));
        assert_eq!(union(player), (mib(20), 1));
        assert_eq!(union([(5, 10), (5, 10), (5, 10)].into_iter()), (5, 1));
        assert_eq!(union([(0, 10), (20, 30), (25, 40)].into_iter()), (30, 2));
    }

    #[test]
    fn offsets_leave_room_for_a_whole_range() {
        let mut offsets = Offsets(7 << 32);
        assert!((0..1000).all(|_| offsets.next() + RANGE_LEN <= BIG_SIZE));
    }
}
