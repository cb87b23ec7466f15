//! The one origin every contender sits in front of: fixed-size cacheable
//! objects, a slow 50 MiB object and a slow small object, with a record per
//! path of how many requests arrived and when the first byte left; and, for
//! the soak, short-lived tagged objects from an origin that fails 1% of
//! the time.
//!
//! It runs inside the driver process, so its `Instant`s and the client's are
//! on one clock: a client's first byte minus the origin's first byte is what
//! the proxy added.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
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

#[derive(Clone)]
struct Shared {
    records: Arc<Records>,
    payload: Bytes,
    flaky: Arc<AtomicU64>,
}

/// A running origin on an ephemeral loopback port.
pub struct Origin {
    /// Where it listens.
    pub addr: std::net::SocketAddr,
    records: Arc<Records>,
}

impl Origin {
    /// Bind and serve on the current runtime until the process exits.
    pub async fn start() -> anyhow::Result<Origin> {
        let records = Arc::new(Records::default());
        let shared = Shared {
            records: records.clone(),
            payload: Bytes::from(vec![b'x'; SLOW_SIZE.max(MAX_OBJECT)]),
            flaky: Arc::default(),
        };
        let counting = records.clone();
        let app = Router::new()
            .route("/obj/{size}/{*name}", get(object))
            .route("/slow/{*name}", get(slow))
            .route("/delay/{ms}/{*name}", get(delayed))
            .route("/flaky/{size}/{tag}/{*name}", get(flaky))
            .with_state(shared)
            .layer(middleware::from_fn(move |req: Request, next: Next| {
                counting.with(req.uri().path(), |r| r.requests += 1);
                next.run(req)
            }));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                eprintln!("origin stopped: {e}");
            }
        });
        Ok(Origin { addr, records })
    }

    /// What reached `path` so far.
    pub fn record(&self, path: &str) -> PathRecord {
        let map = self.records.0.lock().unwrap_or_else(|e| e.into_inner());
        map.get(path).copied().unwrap_or_default()
    }
}

fn cacheable(body: Body) -> Response {
    ([(header::CACHE_CONTROL, CACHE_CONTROL)], body).into_response()
}

/// `/obj/{size}/{name}`: `size` bytes, at once.
async fn object(State(s): State<Shared>, Path((size, _)): Path<(usize, String)>) -> Response {
    if size > MAX_OBJECT {
        return (StatusCode::BAD_REQUEST, "size above 1 MiB").into_response();
    }
    cacheable(Body::from(s.payload.slice(..size)))
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
