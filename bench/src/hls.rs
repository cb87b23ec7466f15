//! Video viewers: HLS streams watched at playback pace, and what
//! prefetching the next segments (the hls-prefetch policy, issue 18) does
//! for them. The origin serves [`STREAMS`] video-on-demand streams of
//! [`HLS_SEGMENTS`] segments of 1 MB (4 s at 2 Mbit/s) behind 50 ms of
//! latency; [`VIEWERS`] viewers start [`STAGGER`] apart, round-robin over
//! the streams, each reading its stream's playlist and then every segment
//! in order, one per [`PACE`] (time scaled down [`TIME_SCALE`] times:
//! 4 s of video every 400 ms), to the end, except that the viewers of
//! the last stream all stop after [`ABANDONED_AFTER`] segments, so
//! prefetched segments no one watches show up. Several streams, so that
//! some viewers
//! are the first to watch theirs and find nothing cached; with one, every
//! viewer but one would follow another and find every segment cached
//! without any prefetching.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures_util::future::try_join_all;

use crate::origin::{hls_segment, Origin, HLS_SEGMENTS, HLS_SEGMENT_BYTES};
use crate::server::Running;
use crate::slice::{said_collapsed, said_hit};

/// Viewers in a run.
pub const VIEWERS: usize = 20;
/// Streams they watch, round-robin: viewers `i`, `i + STREAMS`, … watch
/// stream `i`, so each stream has a first viewer and followers
/// `STREAMS × STAGGER` apart.
pub const STREAMS: usize = 4;
/// The segments each viewer of the last stream watches before leaving.
pub const ABANDONED_AFTER: usize = 12;
/// Between one viewer's start and the next's.
pub const STAGGER: Duration = Duration::from_millis(250);
/// Between a viewer's segment requests: one segment's playing time,
/// scaled down.
pub const PACE: Duration = Duration::from_millis(400);
/// A segment plays 4 s; a viewer asks for one every [`PACE`].
pub const TIME_SCALE: u32 = 10;
/// hls-prefetch's `segments` (`bench/configs/hls-prefetch.toml`):
/// segments prefetched ahead of the one requested.
pub const AHEAD: usize = 3;
/// Hits on a stored segment, one after another on one connection, for
/// the reference time to first byte of a local hit.
pub const LOCAL_HITS: usize = 50;
/// How far the viewers' median time to first byte may be from a local
/// hit's and still count as one. A miss costs at least the origin's
/// 50 ms; a hit while 20 viewers stream costs about a millisecond more
/// than one alone.
pub const HIT_TOLERANCE: Duration = Duration::from_millis(2);
/// The longest the proxy may go on asking the origin after the viewers
/// are done (prefetches still queued).
const QUIET_LIMIT: Duration = Duration::from_secs(10);
/// The origin counts as quiet after this long without a request.
const QUIET_FOR: Duration = Duration::from_millis(300);

/// One contender's run.
#[derive(Debug, Clone, Default)]
pub struct Viewing {
    /// Segment requests after each viewer's first segment.
    pub after_first: usize,
    /// Of those, hits as the proxy says them.
    pub hits: usize,
    /// Of those, misses that waited for a fetch already on its way (a
    /// prefetch or another viewer's request), as stavka's `Cache-Status`
    /// says.
    pub collapsed: usize,
    /// Of the hits, those on a prefetched object (`detail=prefetched`).
    pub prefetched: usize,
    /// Time to first body byte of those requests, sorted.
    pub first_bytes: Vec<Duration>,
    /// Time to first body byte of each viewer's first segment, sorted.
    pub first_segment: Vec<Duration>,
    /// Time to first body byte of [`LOCAL_HITS`] hits on a stored
    /// segment, sorted.
    pub local_hits: Vec<Duration>,
    /// Requests that reached the origin.
    pub origin_requests: usize,
    /// Body bytes the origin sent.
    pub origin_bytes: u64,
    /// Origin requests for paths no viewer asked for (prefetches of
    /// segments past the end, or never watched).
    pub unrequested: usize,
    /// Body bytes the origin sent for them: prefetched, never watched.
    pub wasted_bytes: u64,
    /// CPU time (user and system) the server used while the viewers
    /// watched, until the origin was quiet.
    pub server_cpu: Duration,
    /// `stavka_prefetch_total` by outcome (empty without a policy).
    pub prefetch: BTreeMap<String, u64>,
}

impl Viewing {
    /// Hits among the segment requests after each viewer's first.
    pub fn hit_ratio(&self) -> f64 {
        self.hits as f64 / self.after_first.max(1) as f64
    }

    /// Wasted bytes as a share of the origin's bytes.
    pub fn wasted_share(&self) -> f64 {
        self.wasted_bytes as f64 / self.origin_bytes.max(1) as f64
    }
}

/// Whether the viewers' median time to first byte, `p50`, is a local
/// hit's, `local`, within [`HIT_TOLERANCE`] (each the median over rounds,
/// as every figure of the bench).
pub fn at_a_local_hit(p50: Duration, local: Duration) -> bool {
    p50 <= local + HIT_TOLERANCE
}

/// One segment as a viewer got it.
struct Got {
    first_byte: Duration,
    hit: bool,
    collapsed: bool,
    prefetched: bool,
}

/// The viewers on `server`, on streams no earlier run used.
pub async fn run(origin: &Origin, server: &Running) -> Result<Viewing> {
    let prefix = format!("/hls/{}-", crate::fresh("v"));
    let began = Instant::now();
    let cpu_before = server.cpu_time()?;
    let viewers = try_join_all((0..VIEWERS).map(|v| {
        let stream = format!("{prefix}{}/", v % STREAMS);
        let url = server.url(&stream);
        async move {
            tokio::time::sleep(STAGGER * v as u32).await;
            watch(&url, watched(v % STREAMS))
                .await
                .with_context(|| format!("viewer {v} of {url}"))
        }
    }))
    .await
    .with_context(|| server.contender.as_str())?;
    quiet(origin, &prefix).await?;
    let server_cpu = server.cpu_time()?.saturating_sub(cpu_before);
    let local_hits = local_hits(&server.url(&format!("{prefix}0/{}", hls_segment(1)))).await?;
    let prefetch = match server.admin {
        Some(admin) => prefetch_counts(admin).await?,
        None => BTreeMap::new(),
    };
    eprintln!(
        "  {}: viewers done in {:.1} s",
        server.contender.as_str(),
        began.elapsed().as_secs_f64()
    );

    let prefix = prefix.as_str();
    let requested: BTreeSet<String> = (0..STREAMS)
        .flat_map(|s| {
            std::iter::once("playlist.m3u8".to_owned())
                .chain((1..=watched(s)).map(hls_segment))
                .map(move |file| format!("{prefix}{s}/{file}"))
        })
        .collect();
    let traffic = origin.take_traffic_under(prefix);
    let unwatched = || traffic.iter().filter(|(p, _)| !requested.contains(p));

    let mut viewing = Viewing {
        origin_requests: traffic.iter().map(|(_, t)| t.requests).sum(),
        origin_bytes: traffic.iter().map(|(_, t)| t.bytes).sum(),
        unrequested: unwatched().map(|(_, t)| t.requests).sum(),
        wasted_bytes: unwatched().map(|(_, t)| t.bytes).sum(),
        local_hits,
        server_cpu,
        prefetch,
        ..Viewing::default()
    };
    for segments in &viewers {
        let (first, rest) = segments.split_first().context("a viewer got no segment")?;
        viewing.first_segment.push(first.first_byte);
        for got in rest {
            viewing.after_first += 1;
            viewing.hits += usize::from(got.hit);
            viewing.collapsed += usize::from(got.collapsed);
            viewing.prefetched += usize::from(got.hit && got.prefetched);
            viewing.first_bytes.push(got.first_byte);
        }
    }
    viewing.first_bytes.sort();
    viewing.first_segment.sort();
    Ok(viewing)
}

/// How many segments the viewers of stream `s` watch.
fn watched(s: usize) -> usize {
    if s == STREAMS - 1 {
        ABANDONED_AFTER
    } else {
        HLS_SEGMENTS
    }
}

/// One viewer of the stream at `url`: its playlist, then the first
/// `watched` segments it lists in order, one every [`PACE`] (or at once
/// after a late one, as a player with an empty buffer does).
async fn watch(url: &str, watched: usize) -> Result<Vec<Got>> {
    let client = crate::client(1);
    let playlist = client
        .get(format!("{url}playlist.m3u8"))
        .send()
        .await?
        .error_for_status()?
        .text()
        .await?;
    let segments: Vec<&str> = playlist
        .lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    ensure!(
        playlist.starts_with("#EXTM3U") && segments.len() == HLS_SEGMENTS,
        "not the playlist: {playlist:?}"
    );
    let mut pace = tokio::time::interval(PACE);
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut got = Vec::with_capacity(segments.len());
    for segment in &segments[..watched] {
        pace.tick().await;
        got.push(fetch(&client, &format!("{url}{segment}")).await?);
    }
    Ok(got)
}

/// GET one segment, checking its length; when its first body byte came
/// and what the proxy said of it.
async fn fetch(client: &reqwest::Client, url: &str) -> Result<Got> {
    let asked = Instant::now();
    let mut resp = client.get(url).send().await?.error_for_status()?;
    let headers = resp.headers();
    let hit = said_hit(headers) == Some(true);
    let collapsed = said_collapsed(headers);
    let prefetched = said_prefetched(headers);
    let mut first_byte = None;
    let mut len = 0;
    while let Some(chunk) = resp.chunk().await? {
        first_byte.get_or_insert_with(|| asked.elapsed());
        len += chunk.len();
    }
    ensure!(
        len == HLS_SEGMENT_BYTES,
        "{url}: {len} bytes, expected {HLS_SEGMENT_BYTES}"
    );
    Ok(Got {
        first_byte: first_byte.context("empty body")?,
        hit,
        collapsed,
        prefetched,
    })
}

/// Whether stavka's `Cache-Status` says the hit was on a prefetched
/// object.
fn said_prefetched(headers: &reqwest::header::HeaderMap) -> bool {
    headers
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|s| {
            s.split(';')
                .skip(1)
                .any(|p| p.trim() == "detail=prefetched")
        })
}

/// Wait until no request under `prefix` reached the origin for
/// [`QUIET_FOR`]: the proxy's queued prefetches are done.
async fn quiet(origin: &Origin, prefix: &str) -> Result<()> {
    let deadline = Instant::now() + QUIET_LIMIT;
    let mut seen = origin.requests_under(prefix);
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = origin.requests_under(prefix);
        if now != seen {
            (seen, since) = (now, Instant::now());
        } else if since.elapsed() >= QUIET_FOR {
            return Ok(());
        }
        ensure!(
            Instant::now() < deadline,
            "the origin still gets requests {QUIET_LIMIT:?} after the viewers are done"
        );
    }
}

/// Time to first byte of [`LOCAL_HITS`] hits on the stored segment at
/// `url`, one after another on one connection, sorted.
async fn local_hits(url: &str) -> Result<Vec<Duration>> {
    let client = crate::client(1);
    let mut times = Vec::with_capacity(LOCAL_HITS);
    for _ in 0..LOCAL_HITS {
        let got = fetch(&client, url).await?;
        ensure!(got.hit, "{url}: not a hit after the viewers watched it");
        times.push(got.first_byte);
    }
    times.sort();
    Ok(times)
}

/// `stavka_prefetch_total{module="p"}` by outcome, from `/metrics`.
async fn prefetch_counts(admin: std::net::SocketAddr) -> Result<BTreeMap<String, u64>> {
    let text = crate::admin_metrics(&crate::client(1), admin).await?;
    Ok(parse_prefetch_counts(&text))
}

fn parse_prefetch_counts(metrics: &str) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in metrics.lines() {
        let Some(rest) = line.strip_prefix("stavka_prefetch_total{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        let label = |name: &str| {
            labels
                .split(',')
                .find_map(|l| l.strip_prefix(name)?.strip_prefix("=\"")?.strip_suffix('"'))
        };
        if let (Some("p"), Some(outcome), Ok(n)) = (
            label("module"),
            label("outcome"),
            value.trim().parse::<f64>(),
        ) {
            *counts.entry(outcome.to_owned()).or_default() += n as u64;
        }
    }
    counts
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The constants the report uses are the ones the servers run with.
    #[test]
    fn configs_match_the_constants() {
        let configs = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("configs");
        let sidecar = std::fs::read_to_string(configs.join("hls-prefetch.toml")).unwrap();
        assert!(sidecar.contains(&format!("\nsegments = {AHEAD}\n")));
        assert_eq!(PACE * TIME_SCALE, Duration::from_secs(4));
    }

    #[test]
    fn prefetch_counts_of_the_module_by_outcome() {
        let text = "# HELP stavka_prefetch_total What…\n\
            stavka_prefetch_total{module=\"p\",outcome=\"queued\"} 12\n\
            stavka_prefetch_total{module=\"p\",outcome=\"used\"} 9\n\
            stavka_prefetch_total{module=\"other\",outcome=\"used\"} 4\n\
            stavka_requests_total{outcome=\"used\"} 7\n";
        let counts = parse_prefetch_counts(text);
        assert_eq!(counts.len(), 2);
        assert_eq!(counts["queued"], 12);
        assert_eq!(counts["used"], 9);
    }

    #[test]
    fn prefetched_hits_as_stavka_says_them() {
        let mut headers = reqwest::header::HeaderMap::new();
        headers.insert(
            "cache-status",
            "stavka; hit; detail=prefetched".parse().unwrap(),
        );
        assert!(said_prefetched(&headers));
        assert_eq!(said_hit(&headers), Some(true));
        headers.insert("cache-status", "stavka; hit".parse().unwrap());
        assert!(!said_prefetched(&headers));
    }
}
