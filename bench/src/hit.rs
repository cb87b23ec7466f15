//! Cache-hit throughput and latency: one object, stored by two requests,
//! then keep-alive load from wrk. The origin's counter proves every request
//! under load was a hit.

use std::time::Duration;

use anyhow::{ensure, Result};

use crate::origin::Origin;
use crate::server::{Running, ServerCost};
use crate::wrk::{self, Load};

/// One measured hit load, with what it cost the server.
#[derive(Debug, Clone, Copy)]
pub struct Hits {
    /// What wrk saw.
    pub load: Load,
    /// The server's CPU time meanwhile.
    pub cost: ServerCost,
}

impl Hits {
    /// Server CPU time per request.
    pub fn cpu_each(&self) -> Duration {
        self.cost.each(self.load.requests)
    }
}

/// wrk runs this long first, unmeasured, so connections, caches and
/// instance pools are warm.
pub const WARMUP: Duration = Duration::from_secs(1);

/// Hit load on a `size`-byte object, stored under the fresh name `name`.
pub async fn run(
    origin: &Origin,
    server: &Running,
    name: &str,
    size: usize,
    connections: usize,
    duration: Duration,
) -> Result<Hits> {
    let path = format!("/obj/{size}/{name}");
    let url = server.url(&path);
    warm(&url, size, connections).await?;
    let (load, cost) = server
        .measure(wrk::run(&url, connections, duration))
        .await?;
    let fetched = origin.record(&path).requests;
    ensure!(
        fetched == 1,
        "{}: {path} reached the origin {fetched} times; hits were not hits",
        server.contender.as_str()
    );
    Ok(Hits { load, cost })
}

/// Store the `size`-byte object at `url`, then load it unmeasured for
/// [`WARMUP`], so connections, caches and instance pools are warm.
pub async fn warm(url: &str, size: usize, connections: usize) -> Result<()> {
    crate::store(url, size).await?;
    wrk::run(url, connections, WARMUP).await?;
    Ok(())
}
