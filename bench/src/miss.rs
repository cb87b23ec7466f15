//! Misses: time to first byte of a large slow object, and collapsing of
//! concurrent cold requests for one key.

use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use futures_util::future::try_join_all;

use crate::origin::{Origin, SLOW_SIZE};
use crate::server::Running;

/// Time to first byte through the proxy, against the origin's.
#[derive(Debug, Clone, Copy)]
pub struct FirstByte {
    /// When the origin sent its first byte, after the clients started.
    pub origin: Duration,
    /// How long after that the median client got its first byte.
    pub added_p50: Duration,
    /// ...and the slowest client.
    pub added_max: Duration,
    /// When the last client had the whole body.
    pub last_done: Duration,
    /// Requests that reached the origin.
    pub origin_requests: usize,
}

/// One client's view of a request.
struct Timing {
    first_byte: Instant,
    done: Instant,
}

/// `clients` concurrent requests for `path`, each read to the end and
/// checked for `size` bytes.
async fn fetch_all(url: &str, clients: usize, size: usize) -> Result<Vec<Timing>> {
    let client = crate::client(clients);
    try_join_all((0..clients).map(|_| {
        let client = client.clone();
        async move {
            let mut resp = client.get(url).send().await?.error_for_status()?;
            let mut first_byte = None;
            let mut received = 0;
            while let Some(chunk) = resp.chunk().await? {
                first_byte.get_or_insert_with(Instant::now);
                received += chunk.len();
            }
            ensure!(received == size, "{url}: {received} bytes, expected {size}");
            Ok(Timing {
                first_byte: first_byte.context("empty body")?,
                done: Instant::now(),
            })
        }
    }))
    .await
}

/// `clients` concurrent cold requests for the 50 MiB slow object `name`.
pub async fn first_byte(
    origin: &Origin,
    server: &Running,
    name: &str,
    clients: usize,
) -> Result<FirstByte> {
    let path = format!("/slow/{name}");
    let start = Instant::now();
    let mut timings = fetch_all(&server.url(&path), clients, SLOW_SIZE).await?;
    let record = origin.record(&path);
    let origin_first = record.first_byte.context("the origin never answered")?;
    timings.sort_by_key(|t| t.first_byte);
    let added = |t: &Timing| t.first_byte.saturating_duration_since(origin_first);
    Ok(FirstByte {
        origin: origin_first - start,
        added_p50: added(&timings[timings.len() / 2]),
        added_max: added(&timings[timings.len() - 1]),
        last_done: timings.iter().map(|t| t.done).max().unwrap_or(start) - start,
        origin_requests: record.requests,
    })
}

/// Concurrent cold requests for one small object the origin takes
/// [`COLLAPSE_DELAY_MS`] to produce.
#[derive(Debug, Clone, Copy)]
pub struct Collapse {
    /// Requests that reached the origin.
    pub origin_requests: usize,
    /// When the last client had its response.
    pub last_done: Duration,
}

/// The origin's think time for the collapsing object.
pub const COLLAPSE_DELAY_MS: u64 = 200;

/// `clients` concurrent cold requests for the delayed object `name`.
pub async fn collapse(
    origin: &Origin,
    server: &Running,
    name: &str,
    clients: usize,
) -> Result<Collapse> {
    let path = format!("/delay/{COLLAPSE_DELAY_MS}/{name}");
    let start = Instant::now();
    let timings = fetch_all(&server.url(&path), clients, 1024).await?;
    Ok(Collapse {
        origin_requests: origin.record(&path).requests,
        last_done: timings.iter().map(|t| t.done).max().unwrap_or(start) - start,
    })
}
