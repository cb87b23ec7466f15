//! `stavka demo`: the proxy in front of a built-in origin whose paths each
//! show one caching behaviour, with the curl commands to watch them.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::config::{Config, Origin, Site};

/// Size of `/large` and of each chunk it is sent in.
const LARGE_BYTES: usize = 8 * 1024 * 1024;
const LARGE_CHUNK: usize = 64 * 1024;
/// The validator `/etag` answers with.
const ETAG: &str = "\"demo-v1\"";

/// The demo origin's request counter, shown in bodies so a hit is visible.
#[derive(Default)]
struct DemoOrigin {
    served: AtomicU64,
}

type Shared = Arc<DemoOrigin>;

fn counted(state: &Shared, what: &str) -> String {
    let n = state.served.fetch_add(1, Ordering::Relaxed) + 1;
    format!(
        "{what}\norigin response #{n}, generated at {}\n",
        httpdate::fmt_http_date(std::time::SystemTime::now())
    )
}

fn reply(cache_control: &str, body: String) -> Response {
    let mut resp = body.into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_str(cache_control).expect("static value"),
    );
    resp
}

/// The demo origin's routes.
fn origin_router() -> Router {
    Router::new()
        .route("/", get(index))
        .route(
            "/cacheable",
            get(|State(s): State<Shared>| async move {
                reply("public, max-age=60", counted(&s, "cacheable for 60 s"))
            }),
        )
        .route(
            "/private",
            get(|State(s): State<Shared>| async move {
                reply(
                    "private, max-age=60",
                    counted(&s, "private: never stored by a shared cache"),
                )
            }),
        )
        .route(
            "/no-store",
            get(|State(s): State<Shared>| async move {
                reply("no-store", counted(&s, "no-store: never stored"))
            }),
        )
        .route("/vary", get(vary))
        .route("/etag", get(etag))
        .route(
            "/stale",
            get(|State(s): State<Shared>| async move {
                reply(
                    "max-age=5, stale-while-revalidate=60, stale-if-error=600",
                    counted(
                        &s,
                        "fresh 5 s, then served stale while revalidating for 60 s",
                    ),
                )
            }),
        )
        .route(
            "/cdn",
            get(|State(s): State<Shared>| async move {
                let mut resp = reply("max-age=10", counted(&s, "browsers: 10 s; this CDN: 120 s"));
                resp.headers_mut()
                    .insert("cdn-cache-control", HeaderValue::from_static("max-age=120"));
                resp
            }),
        )
        .route(
            "/slow",
            get(|State(s): State<Shared>| async move {
                tokio::time::sleep(Duration::from_secs(2)).await;
                reply(
                    "max-age=30",
                    counted(&s, "took the origin 2 s; cached for 30 s"),
                )
            }),
        )
        .route("/large", get(large))
        .fallback(|req: Request| async move {
            if req.method() == axum::http::Method::GET || req.method() == axum::http::Method::HEAD {
                (StatusCode::NOT_FOUND, "no such demo path\n").into_response()
            } else {
                (StatusCode::NO_CONTENT, ()).into_response()
            }
        })
        .with_state(Shared::default())
}

async fn index() -> Response {
    reply(
        "max-age=60",
        "stavka demo origin: /cacheable /private /no-store /vary /etag /stale /cdn /slow /large\n"
            .to_owned(),
    )
}

async fn vary(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let ae = headers
        .get(header::ACCEPT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("(none)")
        .to_owned();
    let mut resp = reply(
        "max-age=60",
        counted(&s, &format!("a variant for Accept-Encoding: {ae}")),
    );
    resp.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Accept-Encoding"));
    resp
}

async fn etag(State(s): State<Shared>, headers: HeaderMap) -> Response {
    let matches = headers
        .get(header::IF_NONE_MATCH)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.split(',').any(|t| t.trim() == ETAG));
    let mut resp = if matches {
        s.served.fetch_add(1, Ordering::Relaxed);
        StatusCode::NOT_MODIFIED.into_response()
    } else {
        counted(
            &s,
            "fresh 5 s, then revalidated with If-None-Match (the origin answers 304)",
        )
        .into_response()
    };
    let h = resp.headers_mut();
    h.insert(header::ETAG, HeaderValue::from_static(ETAG));
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("max-age=5"));
    resp
}

async fn large() -> Response {
    let chunks = futures_util::stream::unfold(0usize, |sent| async move {
        if sent >= LARGE_BYTES {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
        let chunk = vec![b'x'; LARGE_CHUNK.min(LARGE_BYTES - sent)];
        Some((Ok::<_, std::io::Error>(chunk), sent + LARGE_CHUNK))
    });
    let mut resp = Response::new(Body::from_stream(chunks));
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    resp
}

/// Start the demo origin on an ephemeral loopback port, on its own thread
/// and runtime so it is independent of the proxy's.
fn start_origin() -> anyhow::Result<SocketAddr> {
    let listener =
        std::net::TcpListener::bind("127.0.0.1:0").context("demo origin: cannot bind loopback")?;
    listener.set_nonblocking(true)?;
    let addr = listener.local_addr()?;
    std::thread::Builder::new()
        .name("demo-origin".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .expect("demo origin runtime");
            rt.block_on(async move {
                let listener =
                    tokio::net::TcpListener::from_std(listener).expect("demo origin listener");
                if let Err(e) = axum::serve(listener, origin_router()).await {
                    tracing::error!(error = %e, "demo origin stopped");
                }
            });
        })?;
    Ok(addr)
}

/// The configuration the demo runs: one default site in front of the
/// built-in origin.
pub fn config(proxy: SocketAddr, admin: SocketAddr, origin: SocketAddr) -> Config {
    let mut config = Config::default();
    config.listen.proxy = proxy;
    config.listen.admin = admin;
    config.sites.push(Site {
        name: "demo".into(),
        hosts: vec!["localhost".into()],
        default: true,
        origin: Origin {
            address: origin.to_string(),
            tls: false,
            sni: None,
            host_header: None,
        },
    });
    config
}

/// The walkthrough printed at start.
fn walkthrough(proxy: SocketAddr, admin: SocketAddr) -> String {
    let p = format!("http://{proxy}");
    format!(
        "\nstavka demo: proxy on {p}, admin on http://{admin}\n\
         Watch the Cache-Status header (-i shows it):\n\n\
         \x20 miss, then hit:          curl -si {p}/cacheable | grep -i -e cache-status -e age -e '#'  (run twice)\n\
         \x20 never stored:            curl -si {p}/private | grep -i cache-status ; curl -si {p}/no-store | grep -i cache-status\n\
         \x20 Vary variants:           curl -si -H 'Accept-Encoding: gzip' {p}/vary ; curl -si -H 'Accept-Encoding: br' {p}/vary\n\
         \x20 revalidation (304):      curl -si {p}/etag ; sleep 6 ; curl -si {p}/etag | grep -i cache-status\n\
         \x20 stale-while-revalidate:  curl -si {p}/stale ; sleep 6 ; curl -si {p}/stale | grep -i cache-status\n\
         \x20 CDN-Cache-Control:       curl -si {p}/cdn | grep -i -e cache-control -e cache-status\n\
         \x20 collapsing:              for i in 1 2 3 4 5; do curl -s -o /dev/null -w '%{{time_total}}\\n' {p}/slow & done; wait\n\
         \x20 large streamed body:     curl -s -o /dev/null -w '%{{size_download}} bytes in %{{time_total}} s\\n' {p}/large\n\
         \x20 invalidation by POST:    curl -si -X POST {p}/cacheable ; curl -si {p}/cacheable | grep -i cache-status\n\
         \x20 metrics:                 curl -s http://{admin}/metrics | grep ^stavka_requests\n\n\
         Ctrl-C stops it.\n"
    )
}

/// Run the demo until interrupted.
pub fn run(proxy: SocketAddr, admin: SocketAddr) -> anyhow::Result<()> {
    let origin = start_origin()?;
    let config = config(proxy, admin, origin);
    config.validate().context("demo configuration")?;
    println!("{}", walkthrough(proxy, admin));
    crate::server::run(config)
}
