//! Reusing decisions changes nothing but the cost (issue 14): random
//! requests through a host that keeps decisions and one that does not get
//! identical decisions from every example guest, hook by hook, in both
//! instance modes.

use std::sync::Arc;

use http::HeaderMap;
use proptest::prelude::*;
use stavka::config;
use stavka::metrics::Metrics;
use stavka::policy::{
    CallInput, CallView, Entry, PolicyMetrics, PolicyModule, PolicyRegistry, Request,
    RequestInstance, Response,
};
use stavka_e2e::guest;

/// The example policies, and the pure test policy that is reused most.
const GUESTS: [&str; 5] = [
    "ttl-rules",
    "token-auth",
    "blocklist",
    "client-budget",
    "memo-pure",
];

/// The guests compared call for call. client-budget's decisions depend on
/// when they are made (its token buckets refill with time), so two hosts
/// cannot be compared call for call: it is checked to keep nothing
/// instead (`rate-limit` makes a call impure).
const COMPARED: [&str; 4] = ["ttl-rules", "token-auth", "blocklist", "memo-pure"];

/// Two registries over the same modules, one keeping decisions.
struct Hosts {
    _dirs: [tempfile::TempDir; 2],
    keeping: PolicyRegistry,
    calling: PolicyRegistry,
}

fn registry(memo: bool, runtime: &tokio::runtime::Runtime) -> (tempfile::TempDir, PolicyRegistry) {
    let dir = tempfile::tempdir().unwrap();
    for name in GUESTS {
        for mode in ["per-request", "long-lived"] {
            let module = format!("{name}-{mode}");
            let sidecar = format!(
                "mode = \"{mode}\"\nmemo = {memo}\n{}",
                if name == "client-budget" {
                    "[init]\nrequests = 5\nwindow_seconds = 3600\n"
                } else {
                    ""
                }
            );
            stavka_e2e::install(dir.path(), &module, &guest(name), &sidecar);
        }
    }
    let config = config::Policy {
        dir: dir.path().to_owned(),
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
    runtime.block_on(registry.load_all());
    (dir, registry)
}

fn request() -> impl Strategy<Value = Request> {
    (
        prop::sample::select(vec!["GET", "HEAD", "POST"]),
        prop::sample::select(vec![
            "/",
            "/static/app.css",
            "/static/img/a.png",
            "/api/items",
            "/private/doc",
            "/news/today",
        ]),
        prop::option::of(prop::sample::select(vec![
            "a=1",
            "b=2&a=1",
            "utm_source=mail&a=1",
            "expires=1&sig=00",
        ])),
        prop::sample::select(vec!["192.0.2.1", "192.0.2.2", "198.51.100.7"]),
        prop::option::of(prop::sample::select(vec!["Bearer secret", "Bearer wrong"])),
        prop::option::of(prop::sample::select(vec!["session=1", "theme=dark"])),
    )
        .prop_map(|(method, path, query, client, auth, cookie)| {
            let mut headers = HeaderMap::new();
            if let Some(auth) = auth {
                headers.insert("authorization", auth.parse().unwrap());
            }
            if let Some(cookie) = cookie {
                headers.insert("cookie", cookie.parse().unwrap());
            }
            Request {
                method: method.into(),
                scheme: "http".into(),
                host: "example.com".into(),
                path: path.into(),
                query: query.map(str::to_owned),
                client_addr: Some(client.parse().unwrap()),
                headers,
            }
        })
}

/// Every hook the module implements, as a request would call them: the
/// request, then a hit on an entry, then (on a fresh instance, as after an
/// origin wait) the response.
async fn decide(module: &PolicyModule, req: &Request, status: u16) -> String {
    let req = Arc::new(req.clone());
    let mut headers = HeaderMap::new();
    headers.insert("cache-control", "max-age=60".parse().unwrap());
    let headers = Arc::new(headers);
    fn view<'a>(req: &'a Request, response: Option<&'a HeaderMap>) -> CallView<'a> {
        CallView {
            request: Some(req.view()),
            response,
        }
    }
    let input = |response: Option<Arc<HeaderMap>>| {
        let req = req.clone();
        move || CallInput {
            request: Some(req),
            response,
            ..CallInput::default()
        }
    };
    let mut instance = RequestInstance::default();
    let mut decisions = format!(
        "{:?}",
        module
            .on_request(&mut instance, view(&req, None), input(None))
            .await
    );
    let entry = Entry {
        status,
        age_seconds: 5,
        ttl_seconds: 55,
        tags: vec!["static".into()],
    };
    decisions += &format!(
        "{:?}",
        module
            .on_hit(
                &mut instance,
                &entry,
                view(&req, Some(&headers)),
                input(Some(headers.clone()))
            )
            .await
    );
    instance.release();
    decisions += &format!(
        "{:?}",
        module
            .on_response(
                &mut instance,
                Response { status },
                view(&req, Some(&headers)),
                input(Some(headers.clone()))
            )
            .await
    );
    decisions
}

#[test]
fn decisions_kept_for_reuse_are_the_decisions_the_guest_makes() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (a, keeping) = registry(true, &runtime);
    let (b, calling) = registry(false, &runtime);
    let hosts = Hosts {
        _dirs: [a, b],
        keeping,
        calling,
    };
    let config = ProptestConfig {
        cases: 64,
        ..ProptestConfig::default()
    };
    proptest!(config, |(requests in prop::collection::vec((request(), prop::sample::select(vec![200u16, 404, 503])), 20..60))| {
        for name in COMPARED {
            for mode in ["per-request", "long-lived"] {
                let module = format!("{name}-{mode}");
                let keeping = hosts.keeping.get(&module).expect("loaded");
                let calling = hosts.calling.get(&module).expect("loaded");
                for (req, status) in &requests {
                    let kept = runtime.block_on(decide(&keeping, req, *status));
                    let called = runtime.block_on(decide(&calling, req, *status));
                    prop_assert_eq!(&kept, &called, "{} {} {:?}", module, status, req);
                }
            }
        }
    });
    // The pure policy's decisions were reused, so the test compared
    // reused decisions, not only calls.
    let pure = hosts.keeping.get("memo-pure-per-request").unwrap();
    assert!(pure.memo_len().unwrap() > 0);
    // A call that used `rate-limit` is never kept.
    for mode in ["per-request", "long-lived"] {
        let budget = hosts.keeping.get(&format!("client-budget-{mode}")).unwrap();
        let req = Request {
            method: "GET".into(),
            path: "/".into(),
            client_addr: Some([192, 0, 2, 1].into()),
            ..Request::default()
        };
        for _ in 0..10 {
            runtime.block_on(decide(&budget, &req, 200));
        }
        assert_eq!(budget.memo_len(), Some(0), "client-budget {mode}");
    }
}
