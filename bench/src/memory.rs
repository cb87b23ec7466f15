//! Resident memory per cached object: fill `objects` distinct 1 KiB
//! objects through the proxy and compare the process tree's PSS before and
//! after. A sample read back afterwards must not reach the origin, so the
//! figure is for objects actually held.
//!
//! Then the same number of distinct 1 KiB responses the origin forbids
//! storing (at most [`PASS_REQUESTS`]): the rate a proxy forwards misses at
//! without its store, the ceiling of its fill rate.

use std::time::{Duration, Instant};

use anyhow::{ensure, Result};
use futures_util::{stream, StreamExt, TryStreamExt};

use crate::origin::Origin;
use crate::server::Running;

/// Body size of each object.
pub const OBJECT_SIZE: usize = 1024;
/// Requests in flight while filling.
const FILL_CONCURRENCY: usize = 32;
/// Objects read back to check they were stored.
const SAMPLE: usize = 200;
/// Most uncacheable requests sent after a fill.
pub const PASS_REQUESTS: usize = 50_000;

/// What a fill cost.
#[derive(Debug, Clone, Copy)]
pub struct Memory {
    /// PSS of the process tree with every object stored.
    pub pss: u64,
    /// PSS growth per object.
    pub bytes_per_object: f64,
    /// Misses per second while filling (origin on the client's CPU).
    pub fill_rps: f64,
    /// Uncacheable misses per second, forwarded and not stored.
    pub pass_rps: f64,
}

/// Fill `objects` objects named `{prefix}-{i}`.
pub async fn fill(
    origin: &Origin,
    server: &Running,
    prefix: &str,
    objects: usize,
) -> Result<Memory> {
    let path = |i: usize| format!("/obj/{OBJECT_SIZE}/{prefix}-{i}");
    let client = crate::client(FILL_CONCURRENCY);
    let get = |i: usize| {
        let (client, url) = (client.clone(), server.url(&path(i)));
        async move { crate::fetch(&client, &url, OBJECT_SIZE).await }
    };
    let before = server.pss_bytes()?;
    let fill_rps = rate(objects, get).await?;
    // Let write-behind work (disk writes, eviction bookkeeping) finish.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let step = (objects / SAMPLE).max(1);
    for i in (0..objects).step_by(step) {
        get(i).await?;
        let fetched = origin.record(&path(i)).requests;
        ensure!(
            fetched == 1,
            "{}: object {i} of {objects} was not kept (origin saw it {fetched} times)",
            server.contender.as_str()
        );
    }
    let pss = server.pss_bytes()?;
    let pass = |i: usize| {
        let client = client.clone();
        let url = server.url(&format!("/pass/{OBJECT_SIZE}/{prefix}-{i}"));
        async move { crate::fetch(&client, &url, OBJECT_SIZE).await }
    };
    let pass_rps = rate(objects.min(PASS_REQUESTS), pass).await?;
    Ok(Memory {
        pss,
        bytes_per_object: pss.saturating_sub(before) as f64 / objects as f64,
        fill_rps,
        pass_rps,
    })
}

/// Requests per second for `get(0)` to `get(count - 1)`, with
/// [`FILL_CONCURRENCY`] in flight.
async fn rate<F, G>(count: usize, get: G) -> Result<f64>
where
    G: Fn(usize) -> F,
    F: std::future::Future<Output = Result<()>>,
{
    let start = Instant::now();
    stream::iter(0..count)
        .map(get)
        .buffer_unordered(FILL_CONCURRENCY)
        .try_collect::<()>()
        .await?;
    Ok(count as f64 / start.elapsed().as_secs_f64())
}
