//! Assembling and running the pingora server from a configuration.

use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::sync::Arc;

use anyhow::Context;
use arc_swap::ArcSwap;
use pingora_core::server::configuration::{Opt, ServerConf};
use pingora_core::server::{RunArgs, Server};
use pingora_core::services::background::background_service;
use pingora_proxy::http_proxy_service_with_name;

use crate::admin::{AdminService, AdminState};
use crate::cache::purge_bus::{self, PurgeBus};
use crate::cache::store::CacheStore;
use crate::config::{Config, ConfigErrors};
use crate::limits::Limits;
use crate::metrics::Metrics;
use crate::policy::{preflight, PolicyMetrics, PolicyRegistry, Watcher};
use crate::prefetch::Prefetcher;
use crate::proxy::{ProxyParts, StavkaProxy};
use crate::reload::{ConfigReloader, Published};
use crate::shutdown::{exit_when_drained, InFlight, Signals};
use crate::sites::SiteRouter;
use crate::tls;
use pingora_core::apps::HttpServerOptions;
use pingora_core::protocols::http::v2::server::{default_h2_options, ResetBudget};

/// Start serving `config` and block until a signal ends the process:
/// SIGTERM drains in-flight requests (see [`crate::shutdown`]), SIGINT
/// stops at once.
///
/// With `upgrade`, take the listening sockets over from a running stavka
/// (which hands them over on SIGQUIT, through `server.upgrade_sock`)
/// instead of binding them.
pub fn run(config: Config, path: Option<std::path::PathBuf>, upgrade: bool) -> anyhow::Result<()> {
    let node = crate::node::init(config.shared.as_ref().and_then(|s| s.node_id.as_deref()));
    tracing::info!(node, "node");
    let metrics = Arc::new(Metrics::new());
    let router = Arc::new(ArcSwap::from_pointee(SiteRouter::build(
        &config.sites,
        config.slice.enabled,
        &config.origin,
        &metrics,
    )?));
    let store = CacheStore::open(
        &config.cache,
        &config.store,
        config.shared.as_ref(),
        metrics.registry(),
    )?;
    // The cluster-wide purge bus, on the shared tier's Redis. Neither
    // waits for Redis: a node starts while it is down and catches up.
    let purge_bus = match &config.shared {
        Some(shared) if shared.purge => Some(PurgeBus::start(shared, store, metrics.registry())?),
        _ => None,
    };
    if let Some(shared) = &config.shared {
        warn_if_unreachable(shared);
    }
    let certificates = load_certificates(&config, &metrics)?;
    let cert_watcher = certificates
        .clone()
        .map(tls::CertWatcher::start)
        .transpose()?;

    // Policies load before the listeners open: the first request already
    // runs the site's module. The watcher then keeps them current.
    let policy_metrics = Arc::new(PolicyMetrics::new(
        metrics.registry(),
        metrics.events.clone(),
    ));
    let named = config.sites.iter().filter_map(|s| s.policy.clone());
    let policies =
        Arc::new(PolicyRegistry::new(&config.policy, policy_metrics)?.named_by_sites(named));
    let watcher = Watcher::start(policies.clone(), config.policy.debounce)?;
    for finding in preflight::unserved(&policies, &config.sites) {
        tracing::error!(dir = %config.policy.dir.display(), "{finding}");
    }

    // Bind the admin listener now and probe the proxy's, so a taken port is a
    // clear start-up error naming the field instead of a failure inside pingora.
    // Bind the admin listener now and probe the proxy's, so a taken port is a
    // clear start-up error naming the field instead of a failure inside pingora.
    // An upgrade receives the proxy's sockets from the running process; the
    // admin socket is shared with it (SO_REUSEPORT) until it exits.
    let admin_listener = bind_shared(config.listen.admin)
        .with_context(|| format!("listen.admin: cannot listen on {}", config.listen.admin))?;
    if !upgrade {
        let listeners = [
            ("proxy", Some(config.listen.proxy)),
            ("tls", config.listen.tls),
        ];
        for (field, addr) in listeners {
            if let Some(addr) = addr {
                drop(
                    TcpListener::bind(addr)
                        .with_context(|| format!("listen.{field}: cannot listen on {addr}"))?,
                );
            }
        }
    }

    let in_flight = Arc::new(InFlight::default());
    let conf = ServerConf {
        threads: config.server.threads,
        // pingora sleeps this long after closing the listeners; the drain
        // thread exits as soon as the last request finishes, so this is the cap.
        grace_period_seconds: Some(config.server.shutdown_timeout.as_secs().max(1)),
        graceful_shutdown_timeout_seconds: Some(1),
        upgrade_sock: config.server.upgrade_sock.display().to_string(),
        ..ServerConf::default()
    };
    let opt = Opt {
        upgrade,
        ..Opt::default()
    };
    let mut server = Server::new_with_opt_and_conf(opt, conf);
    server.bootstrap();

    let limits = Limits::new(&config.limits, metrics.registry());
    let prefetcher = Arc::new(Prefetcher::new(
        prefetch_socket(),
        policies.metrics().prefetch().clone(),
    ));
    let proxy = StavkaProxy::new(
        &config,
        ProxyParts {
            router: router.clone(),
            store,
            metrics: metrics.clone(),
            in_flight: in_flight.clone(),
            policies: policies.clone(),
            limits: limits.clone(),
            prefetcher: prefetcher.clone(),
        },
    )?;
    let mut proxy_service =
        http_proxy_service_with_name(&server.configuration, proxy, "stavka proxy");
    proxy_service.add_tcp(&config.listen.proxy.to_string());
    // Prefetches come back in here (see `prefetch`): only this user may
    // connect, and only this process's token makes a request a prefetch.
    let socket = prefetcher.socket().display().to_string();
    proxy_service.add_uds(&socket, Some(std::fs::Permissions::from_mode(0o600)));
    if let (Some(addr), Some(certificates)) = (config.listen.tls, &certificates) {
        let settings = tls::listener_settings(certificates.clone(), config.tls.http2)?;
        proxy_service.add_tls_with_settings(&addr.to_string(), None, settings);
    }
    proxy_service.set_connection_gate(limits.clone());
    let app = proxy_service
        .app_logic_mut()
        .expect("a new service has its app");
    let mut options = HttpServerOptions::default();
    options.h2c = config.listen.h2c;
    options.header_read_timeout = Some(config.limits.header_timeout);
    options.keepalive_timeout = Some(config.limits.idle_timeout);
    options.h2_idle_timeout = Some(config.limits.idle_timeout);
    options.h2_reset_budget = Some(ResetBudget {
        burst: config.limits.h2_max_resets,
        per_second: f64::from(config.limits.h2_max_resets) / 10.0,
    });
    app.server_options = Some(options);
    let mut h2 = default_h2_options();
    h2.max_concurrent_streams(config.limits.h2_max_streams);
    app.h2_options = Some(h2);

    let published = Published {
        router: router.clone(),
        certificates: certificates.clone(),
        policies: policies.clone(),
        limits: limits.clone(),
    };
    let reloader = Arc::new(ConfigReloader::new(
        path,
        config.clone(),
        published,
        cert_watcher,
        metrics.clone(),
    ));
    let admin = AdminService::new(
        admin_listener,
        AdminState {
            metrics,
            store,
            sites: router,
            proxy_addr: config.listen.proxy,
            in_flight: in_flight.clone(),
            policies,
            config: reloader,
            reloader: watcher.reloader(),
            token: config.admin.token(),
            metrics_public: config.admin.metrics_public,
            sampler: Default::default(),
            certificates,
            limits,
            purge_bus,
            prefetcher: prefetcher.clone(),
        },
    );
    server.add_service(proxy_service);
    server.add_service(background_service("admin", admin));

    tracing::info!(
        proxy = %config.listen.proxy,
        tls = ?config.listen.tls,
        admin = %config.listen.admin,
        sites = config.sites.len(),
        store = %config.store.dir.display(),
        disk_bytes = %config.store.disk_bytes,
        "stavka listening"
    );
    let on_exit: Arc<dyn Fn() + Send + Sync> = Arc::new(move || {
        store.save_index();
        let _ = std::fs::remove_file(prefetcher.socket());
    });
    exit_when_drained(
        server.watch_execution_phase(),
        in_flight.clone(),
        config.server.shutdown_timeout,
        on_exit.clone(),
    );
    let _watching = watcher;
    server.run(RunArgs {
        shutdown_signal: Box::new(Signals {
            in_flight,
            grace_period: config.server.grace_period,
        }),
    });
    // A fast shutdown (SIGINT) returns here; a graceful one exits from the
    // drain thread, which does the same.
    on_exit();
    Ok(())
}

/// Say at start when the shared tier's Redis does not answer: the node
/// starts anyway (lookups fail open to the origin and the breaker opens;
/// the purge bus catches up once it connects).
fn warn_if_unreachable(shared: &crate::config::Shared) {
    let servers = shared.servers();
    let url = match &servers {
        edge_cdn_store::RedisServers::Standalone(url) => url.clone(),
        edge_cdn_store::RedisServers::Cluster(nodes) => nodes.first().cloned().unwrap_or_default(),
    };
    let timeout = shared.timeout * 4;
    let answered = purge_bus::runtime().block_on(async {
        let client = redis::Client::open(url.as_str()).map_err(|e| e.to_string())?;
        let ping = async {
            let mut conn = client.get_multiplexed_async_connection().await?;
            redis::cmd("PING").query_async::<String>(&mut conn).await
        };
        match tokio::time::timeout(timeout, ping).await {
            Ok(Ok(_)) => Ok(()),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err("timed out".to_owned()),
        }
    });
    match answered {
        Ok(()) => tracing::info!(servers = %shared.servers_for_log(), "shared tier: Redis answers"),
        Err(error) => tracing::warn!(
            servers = %shared.servers_for_log(),
            %error,
            "shared tier: Redis does not answer; starting without it (requests go to the origin until it does)"
        ),
    }
}

/// The TLS listener's certificates (`None` without one); a certificate that
/// does not load is an error naming its field, as `check-config` reports.
pub fn load_certificates(
    config: &Config,
    metrics: &Metrics,
) -> Result<Option<std::sync::Arc<tls::Certificates>>, ConfigErrors> {
    tls::Certificates::load(config, metrics.registry(), metrics.events.clone())
}

/// A listening socket on `addr` that another process may share
/// (`SO_REUSEPORT`): during a binary upgrade the old and the new process
/// both serve the admin API until the old one exits.
fn bind_shared(addr: std::net::SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, None)?;
    socket.set_reuse_address(true)?;
    socket.set_reuse_port(true)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    Ok(socket.into())
}

/// The Unix socket prefetches are sent to: one per process, in the
/// temporary directory (a store directory could make the path longer than
/// a socket address allows). Removed at exit; one left by a killed process
/// is replaced by the next process given the same id.
fn prefetch_socket() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("stavka-prefetch-{}.sock", std::process::id()))
}
