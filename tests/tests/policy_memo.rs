//! Policies at near-zero cost: decisions reused without entering the
//! guest when they provably depend only on what they read (issue 14), the
//! 0.1 contract kept, and `host.rate-limit` shared by every instance.

use std::time::Duration;

use axum::http::HeaderMap;
use axum::routing::get;
use axum::Router;
use stavka_e2e::{default_site, guest, install, Origin, Stavka};

/// `/echo/...`: the `x-memo-path` header the policy set for the origin
/// request, never stored, so every request reaches the origin and shows
/// the policy's decision.
fn echo() -> Router {
    Router::new().route(
        "/echo/{*rest}",
        get(|headers: HeaderMap| async move {
            let seen = headers
                .get("x-memo-path")
                .map_or("-", |v| v.to_str().unwrap_or("?"))
                .to_owned();
            ([("cache-control", "no-store")], seen)
        }),
    )
}

async fn count(stavka: &Stavka, family: &str, hook: &str) -> f64 {
    stavka
        .metric(&format!("{family}{{hook=\"{hook}\",module=\"p\"}}"))
        .await
        .unwrap_or(0.0)
}

async fn calls(stavka: &Stavka) -> f64 {
    count(stavka, "stavka_policy_calls_total", "on-request").await
}

async fn memo_hits(stavka: &Stavka) -> f64 {
    count(stavka, "stavka_policy_memo_hits_total", "on-request").await
}

#[tokio::test]
async fn a_pure_decision_is_reused_for_requests_that_agree_on_what_it_read() {
    let origin = Origin::start(echo()).await;
    // Per-request: a fresh instance's call is a function of what it read,
    // so the memo is on by default.
    let stavka = Stavka::with_policy(&origin, "memo-pure", "").await;
    assert_eq!(stavka.get("/echo/a").await.text(), "/echo/a");
    assert_eq!((calls(&stavka).await, memo_hits(&stavka).await), (1.0, 0.0));

    // The same path from another query and other headers: memo-pure read
    // only the path, so the guest is not entered and the decision (the
    // origin header edit and the key) is the same.
    let again = stavka_e2e::client()
        .get(stavka.url("/echo/a?utm=1"))
        .header("cookie", "s=2")
        .send()
        .await
        .unwrap();
    assert_eq!(again.text().await.unwrap(), "/echo/a");
    assert_eq!((calls(&stavka).await, memo_hits(&stavka).await), (1.0, 1.0));

    assert_eq!(stavka.get("/echo/b").await.text(), "/echo/b");
    assert_eq!((calls(&stavka).await, memo_hits(&stavka).await), (2.0, 1.0));

    let policies = stavka.admin_json("/policies").await;
    let module = &policies["modules"][0];
    assert_eq!(module["wit"], "0.2", "{module}");
    assert_eq!(module["memo"], 2, "two decisions kept: {module}");
    assert_eq!(module["counters"]["memo_hits"], 1, "{module}");
    assert_eq!(
        module["hooks"],
        serde_json::json!(["on-request"]),
        "{module}"
    );
}

#[tokio::test]
async fn a_call_that_used_a_clock_kv_counter_or_log_is_never_reused() {
    let origin = Origin::start(echo()).await;
    for name in ["memo-clock", "memo-kv", "memo-counter", "memo-log"] {
        let stavka = Stavka::with_policy(&origin, name, "").await;
        for _ in 0..3 {
            assert_eq!(stavka.get("/echo/same").await.status, 200, "{name}");
        }
        assert_eq!(
            (calls(&stavka).await, memo_hits(&stavka).await),
            (3.0, 0.0),
            "{name}: every call enters the guest"
        );
        let policies = stavka.admin_json("/policies").await;
        assert_eq!(policies["modules"][0]["memo"], 0, "{name}: {policies}");
    }
}

#[tokio::test]
async fn long_lived_modules_reuse_decisions_only_when_their_sidecar_says_so() {
    let origin = Origin::start(echo()).await;
    let off = Stavka::with_policy(&origin, "memo-pure", "mode = \"long-lived\"\n").await;
    for _ in 0..3 {
        assert_eq!(off.get("/echo/a").await.text(), "/echo/a");
    }
    assert_eq!((calls(&off).await, memo_hits(&off).await), (3.0, 0.0));
    assert_eq!(
        off.admin_json("/policies").await["modules"][0]["memo"],
        serde_json::Value::Null
    );

    let on =
        Stavka::with_policy(&origin, "memo-pure", "mode = \"long-lived\"\nmemo = true\n").await;
    for _ in 0..3 {
        assert_eq!(on.get("/echo/a").await.text(), "/echo/a");
    }
    assert_eq!((calls(&on).await, memo_hits(&on).await), (1.0, 2.0));
}

/// The memo belongs to one module version: a new file (here the same
/// component with a custom section appended, so only its hash differs)
/// starts with none.
#[tokio::test]
async fn a_new_module_version_starts_with_an_empty_memo() {
    let origin = Origin::start(echo()).await;
    let stavka = Stavka::with_policy(&origin, "memo-pure", "").await;
    stavka.get("/echo/a").await;
    stavka.get("/echo/a").await;
    assert_eq!(memo_hits(&stavka).await, 1.0);
    let old = stavka.admin_json("/policies").await["modules"][0]["hash"].clone();

    let mut bytes = guest("memo-pure");
    // A custom section (id 0): name "x", payload "new version".
    let name = b"x";
    let payload = b"new version";
    bytes.extend([0, (1 + name.len() + payload.len()) as u8, name.len() as u8]);
    bytes.extend(name);
    bytes.extend(payload);
    install(&stavka.policy_dir, "p", &bytes, "");
    let mut swapped = false;
    for _ in 0..100 {
        let module = &stavka.admin_json("/policies").await["modules"][0];
        if module["hash"] != old && module["status"] == "serving" {
            swapped = true;
            assert_eq!(module["memo"], 0, "{module}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(swapped, "the new version was published");
    let before = calls(&stavka).await;
    assert_eq!(stavka.get("/echo/a").await.text(), "/echo/a");
    assert_eq!(
        calls(&stavka).await,
        before + 1.0,
        "not answered from the old memo"
    );
    assert_eq!(stavka.get("/echo/a").await.text(), "/echo/a");
    assert_eq!(memo_hits(&stavka).await, 2.0);
}

/// `stavka:policy` 0.2 changed the request into a resource; modules built
/// for 0.1.1 (ttl-rules from the 0.1.1 SDK, `tests/fixtures/`) still load
/// and decide as the same policy built for 0.2 does; and one built for
/// 0.2.0, before 0.2.1 added prefetching and `on-body`, loads beside them.
#[tokio::test]
async fn modules_built_for_policy_0_1_1_and_0_2_0_behave_as_the_current_build() {
    let origin = Origin::start(
        Router::new()
            .route(
                "/static/app.css",
                stavka_e2e::fixed(&[("cache-control", "no-store")], "css"),
            )
            .route(
                "/api/items",
                stavka_e2e::fixed(&[("cache-control", "max-age=60")], "[1]"),
            ),
    )
    .await;
    let fixture = |name: &str| {
        std::fs::read(format!("{}/fixtures/{name}", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    let builds = [
        fixture("ttl_rules_v0_1_1.wasm"),
        fixture("ttl_rules_v0_2_0.wasm"),
        guest("ttl-rules"),
    ];
    let mut seen = Vec::new();
    for bytes in builds {
        let stavka = Stavka::start(&default_site(&origin, Some("p"))).await;
        install(&stavka.policy_dir, "p", &bytes, "mode = \"long-lived\"\n");
        let mut first = None;
        for _ in 0..100 {
            let resp = stavka.get("/static/app.css?utm_source=x&b=2&a=1").await;
            if resp.status == 200 {
                first = Some(resp);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let first = first.expect("the module loaded and the site serves");
        let second = stavka.get("/static/app.css?a=1&b=2").await;
        let api = stavka.get("/api/items").await;
        let module = stavka.admin_json("/policies").await["modules"][0].clone();
        assert_eq!(module["status"], "serving", "{module}");
        seen.push((
            module["wit"].clone(),
            (
                first.header("x-policy-ttl").to_owned(),
                second.cache_status().to_owned(),
                api.header("x-policy-ttl").to_owned(),
            ),
        ));
    }
    assert_eq!(
        (&seen[0].0, &seen[1].0, &seen[2].0),
        (&"0.1".into(), &"0.2".into(), &"0.2".into())
    );
    assert_eq!(seen[0].1 .0, "86400", "on-response ran: {seen:?}");
    assert_eq!(seen[0].1, seen[1].1, "the same decisions");
    assert_eq!(seen[1].1, seen[2].1, "the same decisions");
}

/// `host.rate-limit` is one bucket per key for the whole module: eight
/// long-lived instances on two proxy threads, forty requests at once from
/// one client with a budget of ten, and ten get through (the bucket
/// refills one token in six minutes, far longer than the test).
#[tokio::test]
async fn the_rate_limit_primitive_holds_across_instances_and_threads() {
    let origin = Origin::start(Router::new().route(
        "/plain",
        stavka_e2e::fixed(&[("cache-control", "max-age=60")], "plain"),
    ))
    .await;
    let stavka = Stavka::start_with_modules(
        &format!(
            "[server]\nthreads = 2\n{}",
            default_site(&origin, Some("p"))
        ),
        &[(
            "p",
            "client-budget",
            "mode = \"long-lived\"\ninstances = 8\n[init]\nrequests = 10\nwindow_seconds = 3600\n",
        )],
    )
    .await;
    let stavka = std::sync::Arc::new(stavka);
    let tasks: Vec<_> = (0..40)
        .map(|_| {
            let stavka = stavka.clone();
            tokio::spawn(async move { stavka.get("/plain").await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    let ok = statuses.iter().filter(|s| **s == 200).count();
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert_eq!((ok, refused), (10, 30), "{statuses:?}");
}
