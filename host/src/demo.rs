//! `stavka demo`: the proxy in front of a built-in origin whose paths each
//! show one caching behaviour, with the curl commands to watch them.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
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
use crate::slice::range::{self, Requested, Span};

/// Size of `/large` and of each chunk it is sent in.
const LARGE_BYTES: usize = 8 * 1024 * 1024;
const LARGE_CHUNK: usize = 64 * 1024;
/// Size of `/video`, which honours byte ranges: the object the slice
/// demo serves in blocks.
const VIDEO_BYTES: u64 = 32 * 1024 * 1024;
/// The validator `/etag` answers with.
const ETAG: &str = "\"demo-v1\"";
/// Segments in `/live/playlist.m3u8`, the HLS playlist the prefetch demo
/// serves (a finished, video-on-demand one of 4-second segments).
const HLS_SEGMENTS: u32 = 20;

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
        .route("/video", get(video))
        .route("/live/playlist.m3u8", get(playlist))
        .route("/live/{segment}", get(segment))
        .route("/static/{*rest}", get(policy_path))
        .route("/api/{*rest}", get(policy_path))
        .route("/news/{*rest}", get(policy_path))
        .route("/private/{*rest}", get(policy_path))
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
        "stavka demo origin: /cacheable /private /no-store /vary /etag /stale /cdn /slow /large /video\n"
            .to_owned(),
    )
}

/// Paths the example policies have rules for. The origin asks for
/// `no-store` on `/static/`, so that a policy storing it anyway is visible.
async fn policy_path(State(s): State<Shared>, uri: axum::http::Uri) -> Response {
    let cache_control = if uri.path().starts_with("/static/") {
        "no-store"
    } else {
        "max-age=10"
    };
    reply(
        cache_control,
        counted(&s, &format!("{} (origin says {cache_control})", uri.path())),
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

/// A 32 MiB object answering single byte ranges (RFC 9110 §14), with a
/// strong validator: what stavka caches as blocks.
async fn video(headers: HeaderMap) -> Response {
    let requested = headers
        .get(header::RANGE)
        .map_or(Requested::Whole, |v| range::requested(v.as_bytes()));
    let span = match requested {
        Requested::Whole => Span::whole(VIDEO_BYTES),
        Requested::One(spec) => match spec.resolve(VIDEO_BYTES) {
            Some(span) => Some(span),
            None => {
                let mut resp = StatusCode::RANGE_NOT_SATISFIABLE.into_response();
                let unsatisfied = range::unsatisfied_value(VIDEO_BYTES);
                if let Ok(value) = HeaderValue::from_str(&unsatisfied) {
                    resp.headers_mut().insert(header::CONTENT_RANGE, value);
                }
                return resp;
            }
        },
    };
    let Some(span) = span else {
        return StatusCode::NO_CONTENT.into_response();
    };
    let chunks = futures_util::stream::unfold(span.start, move |at| async move {
        if at > span.end {
            return None;
        }
        let end = (at + LARGE_CHUNK as u64 - 1).min(span.end);
        let chunk: Vec<u8> = (at..=end).map(|i| (i % 251) as u8).collect();
        Some((Ok::<_, std::io::Error>(chunk), end + 1))
    });
    let mut resp = Response::new(Body::from_stream(chunks));
    if requested != Requested::Whole {
        *resp.status_mut() = StatusCode::PARTIAL_CONTENT;
        let value = range::content_range_value(span, VIDEO_BYTES);
        if let Ok(value) = HeaderValue::from_str(&value) {
            resp.headers_mut().insert(header::CONTENT_RANGE, value);
        }
    }
    let h = resp.headers_mut();
    h.insert(header::CONTENT_LENGTH, HeaderValue::from(span.size()));
    h.insert(header::ETAG, HeaderValue::from_static("\"video-v1\""));
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("max-age=300"),
    );
    h.insert(header::ACCEPT_RANGES, HeaderValue::from_static("bytes"));
    resp
}

/// An HLS media playlist (RFC 8216) of [`HLS_SEGMENTS`] numbered segments.
async fn playlist() -> Response {
    let mut text = String::from(
        "#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:4\n#EXT-X-MEDIA-SEQUENCE:1\n",
    );
    for n in 1..=HLS_SEGMENTS {
        text.push_str(&format!("#EXTINF:4.0,\nseg_{n:05}.ts\n"));
    }
    text.push_str("#EXT-X-ENDLIST\n");
    let mut resp = reply("max-age=60", text);
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/vnd.apple.mpegurl"),
    );
    resp
}

/// One 64 KiB segment of the playlist, after 200 ms of origin latency, so
/// a prefetched one (a hit) is visibly faster; counted.
async fn segment(
    State(s): State<Shared>,
    axum::extract::Path(name): axum::extract::Path<String>,
) -> Response {
    let known = name
        .strip_prefix("seg_")
        .and_then(|n| n.strip_suffix(".ts"))
        .and_then(|n| n.parse::<u32>().ok())
        .is_some_and(|n| (1..=HLS_SEGMENTS).contains(&n));
    if !known {
        return (StatusCode::NOT_FOUND, "no such segment\n").into_response();
    }
    tokio::time::sleep(Duration::from_millis(200)).await;
    s.served.fetch_add(1, Ordering::Relaxed);
    let mut resp = reply("max-age=600", "x".repeat(64 * 1024));
    resp.headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static("video/mp2t"));
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

/// The example policies the demo installs: module name, the guest file it
/// is built as, its sidecar, and the Host name whose site runs it.
const POLICIES: [(&str, &str, &str, &str); 5] = [
    (
        "ttl-rules",
        "ttl_rules.wasm",
        "mode = \"per-request\"\n",
        "rules.localhost",
    ),
    (
        "token-auth",
        "token_auth.wasm",
        "mode = \"per-request\"\nfailure = \"closed\"\n",
        "auth.localhost",
    ),
    (
        "blocklist",
        "blocklist.wasm",
        "mode = \"long-lived\"\n",
        "takedown.localhost",
    ),
    (
        "client-budget",
        "client_budget.wasm",
        "mode = \"long-lived\"\ninstances = 1\n[init]\nrequests = 5\nwindow_seconds = 10\n",
        "budget.localhost",
    ),
    (
        "hls-prefetch",
        "hls_prefetch.wasm",
        "mode = \"long-lived\"\n[init]\nsegments = 3\n",
        "video.localhost",
    ),
];

/// The configuration the demo runs: a default site in front of the built-in
/// origin, and one site per example policy in front of the same origin.
pub fn config(
    proxy: SocketAddr,
    admin: SocketAddr,
    origin: SocketAddr,
    policy_dir: Option<PathBuf>,
) -> Config {
    let mut config = Config::default();
    config.listen.proxy = proxy;
    config.listen.admin = admin;
    config.store.dir =
        std::env::temp_dir().join(format!("stavka-demo-cache-{}", std::process::id()));
    config.slice.enabled = true;
    let site = |name: &str, host: &str, default: bool, policy: Option<&str>| Site {
        default,
        policy: policy.map(str::to_owned),
        // Only a module that prefetches needs room to.
        prefetch: (policy == Some("hls-prefetch")).then(Default::default),
        ..Site::new(name, vec![host.into()], Origin::plain(origin.to_string()))
    };
    config.sites.push(site("demo", "localhost", true, None));
    if let Some(dir) = policy_dir {
        config.policy.dir = dir;
        for (module, _, _, host) in POLICIES {
            config.sites.push(site(module, host, false, Some(module)));
        }
    }
    config
}

/// Copy the example policies from `guests` (their build directory) into a
/// fresh policy directory.
fn install_policies(guests: &Path) -> anyhow::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("stavka-demo-policies-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (module, file, sidecar, _) in POLICIES {
        let from = guests.join(file);
        std::fs::copy(&from, dir.join(format!("{module}.wasm"))).with_context(|| {
            format!(
                "{} (build the guests: see examples-guests/README.md)",
                from.display()
            )
        })?;
        std::fs::write(dir.join(format!("{module}.toml")), sidecar)?;
    }
    Ok(dir)
}

/// The walkthrough printed at start.
fn walkthrough(proxy: SocketAddr, admin: SocketAddr, policy_dir: Option<&Path>) -> String {
    let p = format!("http://{proxy}");
    let a = format!("http://{admin}");
    let policies = match policy_dir {
        None => "\n(Run with --guests DIR, as ./x demo does, to add the example Wasm policies.)\n".to_owned(),
        Some(dir) => format!(
            "\nWasm policies from examples-guests/, one site per Host name (modules in {dir}):\n\n\
             \x20 TTL override (origin says no-store):  curl -si -H 'Host: rules.localhost' {p}/static/app.css | grep -i -e x-policy-ttl -e cache-status  (run twice)\n\
             \x20 normalised cache key:  curl -s -o /dev/null -H 'Host: rules.localhost' '{p}/news/a?b=2&a=1&utm_source=x' ; curl -si -H 'Host: rules.localhost' '{p}/news/a?a=1&b=2' | grep -i cache-status\n\
             \x20 access control:        curl -si -H 'Host: auth.localhost' {p}/private/doc | head -1\n\
             \x20                        curl -s -X PUT --data demo-token {a}/policies/token-auth/kv/tokens\n\
             \x20                        curl -si -H 'Host: auth.localhost' -H 'Authorization: Bearer demo-token' {p}/private/doc | head -1\n\
             \x20 takedown at the edge:  curl -s -H 'Host: takedown.localhost' {p}/cacheable >/dev/null ; curl -s -X PUT --data /cacheable {a}/policies/blocklist/kv/blocked\n\
             \x20                        curl -si -H 'Host: takedown.localhost' {p}/cacheable | head -1\n\
             \x20 request budget:        for i in $(seq 7); do curl -s -o /dev/null -w '%{{http_code}} ' -H 'Host: budget.localhost' {p}/cacheable; done; echo\n\
             \x20 prefetch (HLS):        curl -s -o /dev/null -H 'Host: video.localhost' {p}/live/playlist.m3u8 ; sleep 1 ; curl -s -o /dev/null -w '%{{time_total}} s\\n' -D - -H 'Host: video.localhost' {p}/live/seg_00001.ts | grep -i -e cache-status -e ' s$'  (a hit: detail=prefetched, no 200 ms origin wait)\n\
             \x20 loaded modules:        curl -s {a}/policies\n\
             \x20 hot swap:              copy any module over {dir}/ttl-rules.wasm; it is reloaded without a restart\n",
            dir = dir.display()
        ),
    };
    let basics = format!(
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
         \x20 a range, in blocks:      curl -s -o /dev/null -D - -r 20000000-20999999 {p}/video | grep -i -e content-range -e cache-status  (run twice; then -r 21000000-21999999 is a hit: read-ahead)\n\
         \x20 invalidation by POST:    curl -si -X POST {p}/cacheable ; curl -si {p}/cacheable | grep -i cache-status\n\
         \x20 purge (hard; add \"soft\":true to mark stale):  curl -s -X POST -H 'Content-Type: application/json' -d '{{\"url\":\"{p}/cacheable\"}}' http://{admin}/purge\n\
         \x20 inspect an entry:        curl -s 'http://{admin}/inspect?url={p}/vary'\n\
         \x20 stats:                   curl -s http://{admin}/stats\n\
         \x20 dashboard:               open http://{admin}/dashboard\n\
         \x20 metrics:                 curl -s http://{admin}/metrics | grep ^stavka_requests\n"
    );
    format!("{basics}{policies}\nCtrl-C stops it.\n")
}

/// Run the demo until interrupted. With `guests` (the directory the
/// example policies were built into) the policy sites are added.
pub fn run(proxy: SocketAddr, admin: SocketAddr, guests: Option<&Path>) -> anyhow::Result<()> {
    let origin = start_origin()?;
    let policy_dir = guests.map(install_policies).transpose()?;
    let config = config(proxy, admin, origin, policy_dir.clone());
    config.validate().context("demo configuration")?;
    println!("{}", walkthrough(proxy, admin, policy_dir.as_deref()));
    crate::server::run(config, None, false)
}
