//! What a policy adds to a request, per instance mode, with the memo off
//! (every call enters the guest: a genuinely fresh per-request instance)
//! and on (the same hot request again, answered from the memo): p50 and
//! p99 of the policy work a cache hit does (`on-request`, and `on-hit` if
//! the policy decides hits — the ttl-rules example does not — copying the
//! request only for a call that enters the guest, as the proxy does),
//! against the same loop with no policy, in one run.
//!
//! Needs the example guests built (`./x bench-policy` does it):
//! `cargo bench -p stavka --bench policy_overhead [MODE...]`; naming modes
//! runs only those (and the no-policy baseline), e.g. to profile one.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::HeaderMap;
use stavka::config;
use stavka::metrics::Metrics;
use stavka::policy::{
    CallInput, CallView, Entry, PolicyMetrics, PolicyRegistry, Request, RequestInstance,
};

const WARMUP: usize = 2_000;
const SAMPLES: usize = 50_000;

fn guests_dir() -> PathBuf {
    std::env::var_os("STAVKA_GUESTS")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/wasm32-wasip2/release")
        })
}

/// A browser-like request: the copy of its fields and headers is part of
/// the cost.
fn request() -> Request {
    let mut headers = HeaderMap::new();
    for (k, v) in [
        ("host", "www.example.com"),
        ("user-agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36"),
        ("accept", "text/html,application/xhtml+xml,application/xml;q=0.9,image/avif,image/webp,*/*;q=0.8"),
        ("accept-language", "en-GB,en;q=0.9"),
        ("accept-encoding", "gzip, deflate, br"),
        ("cookie", "session=abcdef0123456789; theme=dark; consent=yes"),
        ("referer", "https://www.example.com/"),
        ("sec-fetch-mode", "navigate"),
        ("sec-fetch-site", "same-origin"),
        ("upgrade-insecure-requests", "1"),
    ] {
        headers.insert(k, v.parse().unwrap());
    }
    Request {
        method: "GET".into(),
        scheme: "http".into(),
        host: "www.example.com".into(),
        path: "/news/today".into(),
        query: Some("b=2&a=1&utm_source=mail".into()),
        client_addr: Some([192, 0, 2, 7].into()),
        headers,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    let dir = std::env::temp_dir().join(format!("stavka-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let module = std::fs::read(guests_dir().join("ttl_rules.wasm"))
        .expect("ttl_rules.wasm: build the guests first (./x bench)");
    const MODES: [(&str, &str); 4] = [
        ("per-request", "mode = \"per-request\"\nmemo = false\n"),
        ("per-request-memo", "mode = \"per-request\"\nmemo = true\n"),
        (
            "long-lived",
            "mode = \"long-lived\"\ninstances = 4\nmemo = false\n",
        ),
        (
            "long-lived-memo",
            "mode = \"long-lived\"\ninstances = 4\nmemo = true\n",
        ),
    ];
    for (name, sidecar) in MODES {
        std::fs::write(dir.join(format!("{name}.wasm")), &module).unwrap();
        std::fs::write(dir.join(format!("{name}.toml")), sidecar).unwrap();
    }
    let config = config::Policy {
        dir: dir.clone(),
        ..config::Policy::default()
    };
    let metrics = Metrics::new();
    let registry = PolicyRegistry::new(
        &config,
        Arc::new(PolicyMetrics::new(
            metrics.registry(),
            metrics.events.clone(),
        )),
    )
    .unwrap();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(registry.load_all());

    let req = request();
    let entry = Entry {
        status: 200,
        age_seconds: 12,
        ttl_seconds: 48,
        tags: Vec::new(),
    };
    let response: Arc<HeaderMap> = Arc::new(HeaderMap::new());

    println!(
        "policy work per cache hit (header copy + on-request + on-hit if the policy decides hits), {SAMPLES} samples each"
    );
    println!(
        "{:<18} {:>10} {:>10} {:>14} {:>14}",
        "mode", "p50", "p99", "added p50", "added p99"
    );
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|arg| !arg.starts_with('-'))
        .collect();
    let chosen = MODES
        .map(|(name, _)| name)
        .into_iter()
        .filter(|name| only.is_empty() || only.iter().any(|o| o == name));
    let mut baseline = (Duration::ZERO, Duration::ZERO);
    for mode in std::iter::once("none").chain(chosen) {
        let module = registry.get(mode);
        let mut samples = Vec::with_capacity(SAMPLES);
        runtime.block_on(async {
            for i in 0..WARMUP + SAMPLES {
                let started = Instant::now();
                if let Some(module) = &module {
                    // One request: its hooks share a per-request instance.
                    // As in the proxy, the request is read where it lies,
                    // and copied only if a call enters the guest.
                    let mut instance = RequestInstance::default();
                    let request = std::sync::OnceLock::new();
                    let owned = || request.get_or_init(|| Arc::new(req.clone())).clone();
                    let view = CallView {
                        request: Some(req.view()),
                        response: None,
                    };
                    let input = || CallInput {
                        request: Some(owned()),
                        ..CallInput::default()
                    };
                    let outcome = module.on_request(&mut instance, view, input).await;
                    std::hint::black_box(outcome.expect("exported").expect("no failure"));
                    if module.decides_hits() {
                        let view = CallView {
                            request: Some(req.view()),
                            response: Some(&response),
                        };
                        let input = || CallInput {
                            request: Some(owned()),
                            response: Some(response.clone()),
                            ..CallInput::default()
                        };
                        let decision = module.on_hit(&mut instance, &entry, view, input).await;
                        std::hint::black_box(decision.expect("exported").expect("no failure"));
                    }
                } else {
                    std::hint::black_box(&req);
                }
                if i >= WARMUP {
                    samples.push(started.elapsed());
                }
            }
        });
        samples.sort_unstable();
        let (p50, p99) = (percentile(&samples, 0.50), percentile(&samples, 0.99));
        if mode == "none" {
            baseline = (p50, p99);
        }
        println!(
            "{:<18} {:>8.2}µs {:>8.2}µs {:>12.2}µs {:>12.2}µs",
            mode,
            p50.as_secs_f64() * 1e6,
            p99.as_secs_f64() * 1e6,
            p50.saturating_sub(baseline.0).as_secs_f64() * 1e6,
            p99.saturating_sub(baseline.1).as_secs_f64() * 1e6,
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}
