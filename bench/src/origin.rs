//! The one origin every contender sits in front of: fixed-size cacheable
//! objects and the same uncacheable, a slow 50 MiB object and a slow small
//! object, with a record per path of how many requests arrived and when
//! the first byte left; for the soak, short-lived tagged objects from an origin that fails 1% of
//! the time; for slices, a generated 1 GiB object that honours byte
//! ranges and counts the body bytes it sends; and, for the video viewers,
//! HLS streams (a media playlist and its segments) behind 50 ms of origin
//! latency, counted the same way; and, for the cluster scenario, small
//! objects behind 20 ms of origin latency, counted the same way.
//!
//! It runs inside the driver process, so its `Instant`s and the client's are
//! on one clock: a client's first byte minus the origin's first byte is what
//! the proxy added.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use bytes::Bytes;

/// Every cacheable response says this: an hour fresh in shared caches, no
/// validators, no stale windows, so all three servers store it the same way.
const CACHE_CONTROL: &str = "public, max-age=3600";

/// The largest `/obj/{size}` body.
const MAX_OBJECT: usize = 1 << 20;

/// The slow object: 50 MiB sent in 256 KiB chunks every 10 ms (about
/// 25 MiB/s, two seconds in all) after 20 ms of origin think time.
pub const SLOW_SIZE: usize = 50 << 20;
const SLOW_CHUNK: usize = 256 << 10;
const SLOW_INTERVAL: Duration = Duration::from_millis(10);
const THINK_TIME: Duration = Duration::from_millis(20);

/// What reached the origin for one path.
#[derive(Debug, Clone, Copy, Default)]
pub struct PathRecord {
    /// Requests received.
    pub requests: usize,
    /// When the first response to it started leaving (slow routes only).
    pub first_byte: Option<Instant>,
}

#[derive(Default)]
struct Records(Mutex<HashMap<String, PathRecord>>);

impl Records {
    fn with(&self, path: &str, f: impl FnOnce(&mut PathRecord)) {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(path.to_owned()).or_default());
    }
}

/// `/flaky/` objects are fresh this long, so the soak's keys expire and
/// are fetched again while it runs.
const FLAKY_CACHE_CONTROL: &str = "public, max-age=30";
/// One `/flaky/` request in this many fails.
pub const FLAKY_FAILS_ONE_IN: u64 = 100;
/// The status of a failed `/flaky/` request.
pub const FLAKY_FAILURE: StatusCode = StatusCode::INTERNAL_SERVER_ERROR;

/// The ranged object: 1 GiB, so no cache takes it whole by accident and a
/// range miss that fetched all of it would stand out.
pub const BIG_SIZE: u64 = 1 << 30;
/// Its body leaves in chunks this large, each generated as it is sent.
const BIG_CHUNK: u64 = 64 << 10;
/// Its validators: strong and unchanging, so every block of it is one
/// version and nginx's slice module and stavka both accept the parts.
const BIG_ETAG: &str = "\"big-1\"";
const BIG_LAST_MODIFIED: &str = "Wed, 01 Jan 2025 00:00:00 GMT";

/// Byte `i` of the ranged object: a splitmix64 word per 8 bytes, so a
/// block served at the wrong offset differs in almost every byte, and
/// generating or checking a byte costs next to nothing.
pub fn fill(offset: u64, buf: &mut [u8]) {
    let mut at = offset;
    let mut rest = buf;
    while !rest.is_empty() {
        let word = mix(at / 8).to_le_bytes();
        let skip = (at % 8) as usize;
        let n = (8 - skip).min(rest.len());
        rest[..n].copy_from_slice(&word[skip..skip + n]);
        rest = &mut rest[n..];
        at += n as u64;
    }
}

/// The splitmix64 finaliser: a cheap bijection whose output bytes all
/// depend on every input bit.
pub fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Segments in every HLS stream's playlist.
pub const HLS_SEGMENTS: usize = 16;
/// One segment's size: 4 s of video at 2 Mbit/s.
pub const HLS_SEGMENT_BYTES: usize = 1_000_000;
/// What every HLS request waits before its answer: the origin's distance
/// from the edge.
pub const HLS_LATENCY: Duration = Duration::from_millis(50);
/// Each segment's duration, as the playlist gives it.
const HLS_SEGMENT_SECONDS: u32 = 4;

/// The name of segment `i` (from 1) of a stream.
pub fn hls_segment(i: usize) -> String {
    format!("seg_{i:05}.ts")
}

/// An HLS media playlist of [`HLS_SEGMENTS`] segments, video on demand
/// (RFC 8216 §4.3: a finished playlist, `#EXT-X-ENDLIST`).
fn hls_playlist() -> String {
    let mut text = format!(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:{HLS_SEGMENT_SECONDS}\n#EXT-X-MEDIA-SEQUENCE:1\n#EXT-X-PLAYLIST-TYPE:VOD\n"
    );
    for i in 1..=HLS_SEGMENTS {
        text.push_str(&format!(
            "#EXTINF:{HLS_SEGMENT_SECONDS}.0,\n{}\n",
            hls_segment(i)
        ));
    }
    text.push_str("#EXT-X-ENDLIST\n");
    text
}

/// What the origin got and sent for one counted path (a ranged object's
/// or an HLS stream's).
#[derive(Debug, Clone, Default)]
pub struct Traffic {
    /// Requests received.
    pub requests: usize,
    /// Body bytes handed to the connection.
    pub bytes: u64,
    /// Each request's `Range` ("-" without one), in arrival order: what
    /// to show when a proxy fetched more than it should.
    pub ranges: Vec<String>,
    /// When the first body byte of any response to it left (its first
    /// chunk was handed to the connection), on the driver's clock.
    pub first_byte: Option<Instant>,
}

/// Traffic per counted path, and the ranged bodies still being sent.
#[derive(Default)]
struct Ranged {
    paths: Mutex<HashMap<String, Traffic>>,
    in_flight: AtomicUsize,
}

impl Ranged {
    fn with(&self, path: &str, f: impl FnOnce(&mut Traffic)) {
        let mut map = self.paths.lock().unwrap_or_else(|e| e.into_inner());
        f(map.entry(path.to_owned()).or_default());
    }
}

/// One ranged body being sent: counted in `in_flight` until it ends or its
/// connection drops it.
struct Sending(Arc<Ranged>);

impl Sending {
    fn new(ranged: &Arc<Ranged>) -> Sending {
        ranged.in_flight.fetch_add(1, Ordering::SeqCst);
        Sending(ranged.clone())
    }
}

impl Drop for Sending {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

#[derive(Clone)]
struct Shared {
    records: Arc<Records>,
    payload: Bytes,
    flaky: Arc<AtomicU64>,
    ranged: Arc<Ranged>,
}

/// A running origin on an ephemeral loopback port.
pub struct Origin {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    records: Arc<Records>,
    ranged: Arc<Ranged>,
}

impl Origin {
    /// Bind and serve until the process exits, on a thread and runtime of
    /// its own: sharing the clients' runtime, a long response's run of
    /// writes that never block kept the clients' sockets from being polled
    /// until it ended, and a client measured the origin's pace instead of
    /// the server's (docs/benchmarks.md, "Looking for the cold first byte").
    pub async fn start() -> anyhow::Result<Origin> {
        let records = Arc::new(Records::default());
        let ranged = Arc::new(Ranged::default());
        let shared = Shared {
            records: records.clone(),
            payload: Bytes::from(vec![b'x'; SLOW_SIZE.max(MAX_OBJECT)]),
            flaky: Arc::default(),
            ranged: ranged.clone(),
        };
        let counting = records.clone();
        let app = Router::new()
            .route("/obj/{size}/{*name}", get(object))
            .route("/pass/{size}/{*name}", get(uncacheable))
            .route("/slow/{*name}", get(slow))
            .route("/delay/{ms}/{*name}", get(delayed))
            .route("/flaky/{size}/{tag}/{*name}", get(flaky))
            .route("/slice/{*name}", get(big))
            .route("/hls/{stream}/{file}", get(hls))
            .route("/cluster/{size}/{*name}", get(distant))
            .with_state(shared)
            .layer(middleware::from_fn(move |req: Request, next: Next| {
                counting.with(req.uri().path(), |r| r.requests += 1);
                next.run(req)
            }));
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let addr = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        std::thread::Builder::new()
            .name("bench-origin".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let served = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => axum::serve(listener, app).await,
                        Err(e) => Err(e),
                    };
                    if let Err(e) = served {
                        eprintln!("origin stopped: {e}");
                    }
                });
            })?;
        Ok(Origin {
            addr,
            records,
            ranged,
        })
    }

    /// What reached `path` so far.
    pub fn record(&self, path: &str) -> PathRecord {
        let map = self.records.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(path).copied().unwrap_or_default()
    }

    /// What the ranged object at `path` cost so far, forgetting it, so a
    /// second look starts from zero. Call [`Origin::quiet`] first: a
    /// proxy may still be reading ahead after its client is done.
    pub fn take_traffic(&self, path: &str) -> Traffic {
        let mut map = self.ranged.paths.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(path).unwrap_or_default()
    }

    /// What every path starting with `prefix` cost so far, forgetting
    /// them, sorted by path.
    pub fn take_traffic_under(&self, prefix: &str) -> Vec<(String, Traffic)> {
        let mut map = self.ranged.paths.lock().unwrap_or_else(|e| e.into_inner());
        let paths: Vec<String> = map
            .keys()
            .filter(|p| p.starts_with(prefix))
            .cloned()
            .collect();
        let mut taken: Vec<(String, Traffic)> = paths
            .into_iter()
            .filter_map(|p| map.remove(&p).map(|t| (p, t)))
            .collect();
        taken.sort_by(|a, b| a.0.cmp(&b.0));
        taken
    }

    /// Requests that reached paths starting with `prefix` so far.
    pub fn requests_under(&self, prefix: &str) -> usize {
        let map = self.ranged.paths.lock().unwrap_or_else(|e| e.into_inner());
        map.iter()
            .filter(|(p, _)| p.starts_with(prefix))
            .map(|(_, t)| t.requests)
            .sum()
    }

    /// Wait until no ranged body has been in flight for 100 ms; fail after
    /// `limit`, naming how many are still open (a proxy that stopped
    /// reading an origin response without closing it).
    pub async fn quiet(&self, limit: Duration) -> anyhow::Result<()> {
        let deadline = Instant::now() + limit;
        let mut idle_since = None;
        loop {
            let open = self.ranged.in_flight.load(Ordering::SeqCst);
            let now = Instant::now();
            if open > 0 {
                idle_since = None;
                anyhow::ensure!(
                    now < deadline,
                    "{open} ranged origin responses still being sent after {limit:?}"
                );
            } else if now.duration_since(*idle_since.get_or_insert(now))
                >= Duration::from_millis(100)
            {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

fn cacheable(body: Body) -> Response {
    ([(header::CACHE_CONTROL, CACHE_CONTROL)], body).into_response()
}

/// `/obj/{size}/{name}`: `size` bytes, at once.
async fn object(State(s): State<Shared>, Path((size, _)): Path<(usize, String)>) -> Response {
    fixed(&s, size, CACHE_CONTROL)
}

/// `/pass/{size}/{name}`: `size` bytes, at once, that no cache may store
/// (`no-store`, RFC 9111 §5.2.2.5): what a miss costs a proxy without its
/// store.
async fn uncacheable(State(s): State<Shared>, Path((size, _)): Path<(usize, String)>) -> Response {
    fixed(&s, size, "no-store")
}

/// `size` bytes of the payload with `cache_control`, or a 400 above 1 MiB.
fn fixed(s: &Shared, size: usize, cache_control: &'static str) -> Response {
    if size > MAX_OBJECT {
        return (StatusCode::BAD_REQUEST, "size above 1 MiB").into_response();
    }
    let body = Body::from(s.payload.slice(..size));
    ([(header::CACHE_CONTROL, cache_control)], body).into_response()
}

/// `/delay/{ms}/{name}`: 1 KiB after `ms` milliseconds, for collapsing.
async fn delayed(State(s): State<Shared>, Path((ms, _)): Path<(u64, String)>) -> Response {
    tokio::time::sleep(Duration::from_millis(ms.min(10_000))).await;
    cacheable(Body::from(s.payload.slice(..1024)))
}

/// `/flaky/{size}/{tag}/{name}`: `size` bytes fresh for 30 s, tagged `tag`
/// (`Surrogate-Key`) for purges; every [`FLAKY_FAILS_ONE_IN`]th request
/// is a [`FLAKY_FAILURE`] that must not be stored.
async fn flaky(
    State(s): State<Shared>,
    Path((size, tag, _)): Path<(usize, String, String)>,
) -> Response {
    if s.flaky.fetch_add(1, Ordering::Relaxed) % FLAKY_FAILS_ONE_IN == FLAKY_FAILS_ONE_IN - 1 {
        return (
            FLAKY_FAILURE,
            [(header::CACHE_CONTROL, "no-store")],
            "origin failure",
        )
            .into_response();
    }
    if size > MAX_OBJECT {
        return (StatusCode::BAD_REQUEST, "size above 1 MiB").into_response();
    }
    (
        [
            (header::CACHE_CONTROL, FLAKY_CACHE_CONTROL),
            (
                header::HeaderName::from_static("surrogate-key"),
                tag.as_str(),
            ),
        ],
        Body::from(s.payload.slice(..size)),
    )
        .into_response()
}

/// `/slow/{name}`: [`SLOW_SIZE`] bytes, paced.
async fn slow(State(s): State<Shared>, req: Request) -> Response {
    tokio::time::sleep(THINK_TIME).await;
    s.records.with(req.uri().path(), |r| {
        r.first_byte = r.first_byte.or(Some(Instant::now()))
    });
    let chunks = futures_util::stream::unfold(0usize, move |sent| {
        let payload = s.payload.clone();
        async move {
            if sent >= SLOW_SIZE {
                return None;
            }
            if sent > 0 {
                tokio::time::sleep(SLOW_INTERVAL).await;
            }
            let end = (sent + SLOW_CHUNK).min(SLOW_SIZE);
            Some((Ok::<_, std::io::Error>(payload.slice(sent..end)), end))
        }
    });
    let mut resp = cacheable(Body::from_stream(chunks));
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, SLOW_SIZE.into());
    resp
}

/// `/slice/{name}`: the [`BIG_SIZE`] object, the part a single byte range
/// asks for (206) or all of it (200), generated chunk by chunk as it
/// leaves and counted.
async fn big(State(s): State<Shared>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    let range = req
        .headers()
        .get(header::RANGE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned();
    s.ranged.with(&path, |t| {
        t.requests += 1;
        t.ranges.push(range);
    });
    let validators = [
        (header::CACHE_CONTROL, CACHE_CONTROL),
        (header::ETAG, BIG_ETAG),
        (header::LAST_MODIFIED, BIG_LAST_MODIFIED),
        (header::ACCEPT_RANGES, "bytes"),
    ];
    let (status, start, end) = match requested(req.headers()) {
        Requested::Whole => (StatusCode::OK, 0, BIG_SIZE),
        Requested::Part(start, end) => (StatusCode::PARTIAL_CONTENT, start, end),
        Requested::Unsatisfiable => {
            let unsatisfied = format!("bytes */{BIG_SIZE}");
            return (
                StatusCode::RANGE_NOT_SATISFIABLE,
                validators,
                [(header::CONTENT_RANGE, unsatisfied)],
            )
                .into_response();
        }
    };
    let sending = Sending::new(&s.ranged);
    let ranged = s.ranged.clone();
    let chunks = futures_util::stream::unfold((start, sending), move |(at, sending)| {
        let ranged = ranged.clone();
        let path = path.clone();
        async move {
            if at >= end {
                return None;
            }
            if at > start {
                // Send each chunk as it is made, as an origin streaming a
                // body does: pending once, hyper writes what it holds
                // (else it gathers several chunks, ~0.3 ms of generating,
                // before its first write). And give the core to a client
                // woken meanwhile: an origin elsewhere would not take its
                // CPU.
                tokio::task::yield_now().await;
                std::thread::yield_now();
            }
            let next = (at + BIG_CHUNK).min(end);
            let mut chunk = vec![0; (next - at) as usize];
            fill(at, &mut chunk);
            ranged.with(&path, |t| {
                t.bytes += next - at;
                t.first_byte.get_or_insert_with(Instant::now);
            });
            Some((Ok::<_, std::io::Error>(Bytes::from(chunk)), (next, sending)))
        }
    });
    let mut resp = (status, validators, Body::from_stream(chunks)).into_response();
    let headers = resp.headers_mut();
    headers.insert(header::CONTENT_LENGTH, (end - start).into());
    if status == StatusCode::PARTIAL_CONTENT {
        let content_range = format!("bytes {start}-{}/{BIG_SIZE}", end - 1);
        headers.insert(
            header::CONTENT_RANGE,
            content_range.parse().expect("digits are a header value"),
        );
    }
    resp
}

/// `/hls/{stream}/{file}`: after [`HLS_LATENCY`], the stream's media
/// playlist (`playlist.m3u8`) or one of its segments (`seg_00001.ts` to
/// [`HLS_SEGMENTS`]), cacheable; 404 for any other name (a segment past
/// the end). Requests and body bytes are counted per path.
async fn hls(State(s): State<Shared>, req: Request) -> Response {
    let path = req.uri().path().to_owned();
    tokio::time::sleep(HLS_LATENCY).await;
    let file = path.rsplit('/').next().unwrap_or_default();
    let (status, content_type, body) = if file == "playlist.m3u8" {
        (
            StatusCode::OK,
            "application/vnd.apple.mpegurl",
            Bytes::from(hls_playlist()),
        )
    } else if (1..=HLS_SEGMENTS).any(|i| hls_segment(i) == file) {
        (
            StatusCode::OK,
            "video/mp2t",
            s.payload.slice(..HLS_SEGMENT_BYTES),
        )
    } else {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            Bytes::from_static(b"no such segment"),
        )
    };
    let sent = body.len() as u64;
    s.ranged.with(&path, |t| {
        t.requests += 1;
        t.bytes += sent;
        t.first_byte.get_or_insert_with(Instant::now);
    });
    let cache_control = if status == StatusCode::OK {
        CACHE_CONTROL
    } else {
        "no-store"
    };
    (
        status,
        [
            (header::CACHE_CONTROL, cache_control),
            (header::CONTENT_TYPE, content_type),
        ],
        body,
    )
        .into_response()
}

/// What every `/cluster/` request waits before its answer: an origin some
/// way from the nodes, so a request that reaches it stands out.
pub const DISTANT_LATENCY: Duration = Duration::from_millis(20);

/// `/cluster/{size}/{name}`: `size` bytes after [`DISTANT_LATENCY`],
/// cacheable, its requests and body bytes counted per path (the cluster
/// scenario).
async fn distant(
    State(s): State<Shared>,
    Path((size, _)): Path<(usize, String)>,
    uri: axum::http::Uri,
) -> Response {
    if size > MAX_OBJECT {
        return (StatusCode::BAD_REQUEST, "size above 1 MiB").into_response();
    }
    let path = uri.path();
    tokio::time::sleep(DISTANT_LATENCY).await;
    s.ranged.with(path, |t| {
        t.requests += 1;
        t.bytes += size as u64;
        t.first_byte.get_or_insert_with(Instant::now);
    });
    cacheable(Body::from(s.payload.slice(..size)))
}

/// What a request asks of the ranged object.
#[derive(Debug, PartialEq, Eq)]
enum Requested {
    /// All of it: no `Range`, one this origin ignores (several ranges,
    /// another unit, bad syntax), or an `If-Range` that does not match.
    Whole,
    /// Bytes `start..end` (end exclusive).
    Part(u64, u64),
    /// A range that starts past the end: 416.
    Unsatisfiable,
}

/// Read `Range` (`bytes=S-E`, `bytes=S-`, `bytes=-N`) and `If-Range` as
/// RFC 9110 §14 has a server that supports single ranges do.
fn requested(headers: &HeaderMap) -> Requested {
    let Some(range) = headers.get(header::RANGE).and_then(|v| v.to_str().ok()) else {
        return Requested::Whole;
    };
    if let Some(if_range) = headers.get(header::IF_RANGE) {
        if if_range != BIG_ETAG && if_range != BIG_LAST_MODIFIED {
            return Requested::Whole;
        }
    }
    let Some((first, last)) = range
        .trim()
        .strip_prefix("bytes=")
        .and_then(|spec| spec.split_once('-'))
    else {
        return Requested::Whole;
    };
    let number = |s: &str| {
        let s = s.trim();
        (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .then(|| s.parse::<u64>().ok())
            .flatten()
    };
    match (first.trim().is_empty(), number(first), number(last)) {
        (true, _, Some(0)) => Requested::Unsatisfiable,
        (true, _, Some(n)) => Requested::Part(BIG_SIZE - n.min(BIG_SIZE), BIG_SIZE),
        (false, Some(start), _) if start >= BIG_SIZE => Requested::Unsatisfiable,
        (false, Some(start), None) if last.trim().is_empty() => Requested::Part(start, BIG_SIZE),
        (false, Some(start), Some(end)) if end >= start => {
            Requested::Part(start, end.min(BIG_SIZE - 1) + 1)
        }
        _ => Requested::Whole,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(range: &str, if_range: Option<&str>) -> Requested {
        let mut headers = HeaderMap::new();
        headers.insert(header::RANGE, range.parse().unwrap());
        if let Some(v) = if_range {
            headers.insert(header::IF_RANGE, v.parse().unwrap());
        }
        requested(&headers)
    }

    #[test]
    fn single_ranges_in_every_form() {
        assert_eq!(ask("bytes=0-99", None), Requested::Part(0, 100));
        assert_eq!(ask("bytes=100-", None), Requested::Part(100, BIG_SIZE));
        assert_eq!(
            ask("bytes=-10", None),
            Requested::Part(BIG_SIZE - 10, BIG_SIZE)
        );
        assert_eq!(ask("bytes=-0", None), Requested::Unsatisfiable);
        assert_eq!(
            ask(&format!("bytes={BIG_SIZE}-"), None),
            Requested::Unsatisfiable
        );
        assert_eq!(
            ask(&format!("bytes=5-{}", BIG_SIZE * 2), None),
            Requested::Part(5, BIG_SIZE)
        );
        assert_eq!(ask("bytes=9-3", None), Requested::Whole);
        assert_eq!(ask("bytes=0-1,5-6", None), Requested::Whole);
        assert_eq!(ask("items=0-1", None), Requested::Whole);
        assert_eq!(ask("bytes=0-1", Some(BIG_ETAG)), Requested::Part(0, 2));
        assert_eq!(ask("bytes=0-1", Some("\"other\"")), Requested::Whole);
    }

    #[test]
    fn generated_bytes_do_not_depend_on_where_a_chunk_starts() {
        let mut whole = vec![0; 100];
        fill(1_000, &mut whole);
        for split in 0..100 {
            let mut parts = vec![0; 100];
            let (a, b) = parts.split_at_mut(split);
            fill(1_000, a);
            fill(1_000 + split as u64, b);
            assert_eq!(parts, whole, "split at {split}");
        }
        let mut other = vec![0; 100];
        fill(1_000 + (1 << 20), &mut other);
        assert!(whole.iter().zip(&other).filter(|(a, b)| a == b).count() < 10);
    }
}
