//! The floor of any cache built on pingora, as a contender of `stavka-bench`:
//! pingora's proxy with pingora-cache and the in-memory storage pingora ships
//! (`MemCache`), and nothing else: no eviction manager, no cache lock, no
//! cacheability predictor, no purge catalog, no disk, no hooks but the
//! upstream and freshness from the origin's `Cache-Control` (RFC 9111
//! §4.2.1). One thread and jemalloc, as stavka runs in the benchmark. What
//! stavka adds to a request is the difference from this in the same run.
//!
//! `pingora-floor <listen address> <origin address>`

use std::net::SocketAddr;

use anyhow::Context as _;
use async_trait::async_trait;
use once_cell::sync::Lazy;
use pingora_cache::cache_control::CacheControl;
use pingora_cache::filters::resp_cacheable;
use pingora_cache::{CacheKey, CacheMetaDefaults, MemCache, RespCacheable};
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::Server;
use pingora_core::upstreams::peer::HttpPeer;
use pingora_http::ResponseHeader;
use pingora_proxy::{ProxyHttp, Session};

#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Bodies and headers, for the process's life: the memory scenario's
/// 100,000 objects of 1 KiB fit many times in the bench machine's memory.
static STORE: Lazy<MemCache> = Lazy::new(MemCache::new);

/// Without `Cache-Control` freshness, nothing is stored (every origin route
/// of the benchmark that should be cached says how long).
static DEFAULTS: CacheMetaDefaults = CacheMetaDefaults::new(|_| None, 0, 0);

/// Forwards to one origin and caches what it allows.
struct Floor {
    origin: SocketAddr,
}

#[async_trait]
impl ProxyHttp for Floor {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_core::Result<Box<HttpPeer>> {
        Ok(Box::new(HttpPeer::new(self.origin, false, String::new())))
    }

    fn request_cache_filter(
        &self,
        session: &mut Session,
        _ctx: &mut (),
    ) -> pingora_core::Result<()> {
        session.cache.enable(&*STORE, None, None, None, None);
        Ok(())
    }

    fn cache_key_callback(
        &self,
        session: &Session,
        _ctx: &mut (),
    ) -> pingora_core::Result<CacheKey> {
        Ok(CacheKey::new(session.req_header().uri.to_string(), ""))
    }

    fn response_cache_filter(
        &self,
        _session: &Session,
        resp: &ResponseHeader,
        _ctx: &mut (),
    ) -> pingora_core::Result<RespCacheable> {
        let cache_control = CacheControl::from_resp_headers(resp);
        Ok(resp_cacheable(
            cache_control.as_ref(),
            resp.clone(),
            false,
            &DEFAULTS,
        ))
    }
}

fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let mut address = |what: &str| -> anyhow::Result<SocketAddr> {
        let arg = args
            .next()
            .with_context(|| format!("usage: pingora-floor <listen> <origin>; no {what}"))?;
        arg.parse()
            .with_context(|| format!("{what} address {arg:?}"))
    };
    let listen = address("listen")?;
    let origin = address("origin")?;
    let conf = ServerConf {
        threads: 1,
        // Stopped between rounds: as stavka in the benchmark, not pingora's
        // minute of draining.
        grace_period_seconds: Some(1),
        graceful_shutdown_timeout_seconds: Some(1),
        ..ServerConf::default()
    };
    let mut server = Server::new_with_opt_and_conf(Opt::default(), conf);
    server.bootstrap();
    let mut proxy = pingora_proxy::http_proxy_service(&server.configuration, Floor { origin });
    proxy.add_tcp(&listen.to_string());
    server.add_service(proxy);
    server.run_forever()
}
