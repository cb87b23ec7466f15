//! One module's trouble stays its own: the watcher does not reload a broken
//! module over and over, a long-lived module never has more instances than
//! `instances` (so its state is as wide as documented), and a failing
//! module's circuit breaker stops it costing the other sites their CPU.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use futures_util::future::join_all;
use stavka_e2e::{client, install, Origin, Stavka};

fn origin_routes() -> Router {
    Router::new().route(
        "/plain",
        get(|| async { ([("cache-control", "max-age=60")], "plain") }),
    )
}

/// A metric's value, 0 when it is not exported (yet).
async fn metric(stavka: &Stavka, sample: &str) -> f64 {
    stavka.metric(sample).await.unwrap_or(0.0)
}

async fn wait_for(stavka: &Stavka, sample: &str, at_least: f64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while metric(stavka, sample).await < at_least {
        assert!(
            Instant::now() < deadline,
            "{sample} never reached {at_least}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

fn loads(module: &str, result: &str) -> String {
    format!("stavka_policy_loads_total{{module=\"{module}\",result=\"{result}\"}}")
}

#[tokio::test]
async fn a_broken_module_is_tried_again_only_when_its_content_changes() {
    let origin = Origin::start(origin_routes()).await;
    let stavka = Stavka::start_with_modules(
        &stavka_e2e::default_site(&origin, Some("good")),
        &[("good", "blue", "")],
    )
    .await;
    install(
        &stavka.policy_dir,
        "x",
        b"these bytes are not a component",
        "",
    );
    wait_for(&stavka, &loads("x", "rejected"), 1.0).await;
    assert_eq!(metric(&stavka, &loads("good", "loaded")).await, 1.0);

    // Left alone for 3 s, neither file is read into a compile again: the
    // watcher's own reads are not changes.
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        metric(&stavka, &loads("x", "rejected")).await,
        1.0,
        "the broken module is not retried while nothing changes"
    );
    for result in ["loaded", "rejected", "unchanged"] {
        let expected = if result == "loaded" { 1.0 } else { 0.0 };
        assert_eq!(
            metric(&stavka, &loads("good", result)).await,
            expected,
            "the valid module is left alone ({result})"
        );
    }

    // Rewritten with the same broken bytes every 100 ms for 3 s: tried again
    // only as its backoff (1 s, then 2 s, ...) allows.
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        install(
            &stavka.policy_dir,
            "x",
            b"these bytes are not a component",
            "",
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rejected = metric(&stavka, &loads("x", "rejected")).await;
    assert!(
        rejected <= 4.0,
        "same broken content retried {rejected} times in 3 s"
    );

    // New content loads at once, backoff or not.
    let replaced = Instant::now();
    install(&stavka.policy_dir, "x", &stavka_e2e::guest("green"), "");
    wait_for(&stavka, &loads("x", "loaded"), 1.0).await;
    eprintln!("replaced module loaded after {:?}", replaced.elapsed());
    let listing = stavka.admin_json("/policies").await;
    let x = listing["modules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "x")
        .cloned()
        .unwrap();
    assert_eq!(x["status"], "serving", "{listing}");
}

/// `n` GETs of `/plain`, one after another on one connection, from the
/// source address `from`; their statuses.
async fn get_from(stavka: &Stavka, from: IpAddr, n: usize) -> Vec<u16> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .local_address(from)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let mut statuses = Vec::with_capacity(n);
    for _ in 0..n {
        let resp = client.get(stavka.url("/plain")).send().await;
        statuses.push(resp.expect("request").status().as_u16());
    }
    statuses
}

#[tokio::test]
async fn a_long_lived_budget_holds_under_concurrent_clients() {
    let origin = Origin::start(origin_routes()).await;
    let stavka = Stavka::with_policy(
        &origin,
        "client-budget",
        "mode = \"long-lived\"\ninstances = 1\nfailure = \"closed\"\n[init]\nrequests = 5\nwindow_seconds = 60\n",
    )
    .await;
    // Three clients (three source addresses: the budget is per address),
    // each with four connections sending eight requests apiece at once.
    let clients: Vec<IpAddr> = (1..=3)
        .map(|i| IpAddr::V4(Ipv4Addr::new(127, 0, 0, i)))
        .collect();
    let connections = clients
        .iter()
        .flat_map(|&from| (0..4).map(move |_| from))
        .map(|from| {
            let stavka = &stavka;
            async move { (from, get_from(stavka, from, 8).await) }
        });
    let mut statuses: HashMap<IpAddr, HashMap<u16, usize>> = HashMap::new();
    for (from, got) in join_all(connections).await {
        for status in got {
            *statuses.entry(from).or_default().entry(status).or_default() += 1;
        }
    }
    for from in &clients {
        let got = &statuses[from];
        assert_eq!(
            got.get(&200),
            Some(&5),
            "{from}: exactly the budget: {got:?}"
        );
        assert_eq!(
            got.get(&429),
            Some(&27),
            "{from}: the rest refused: {got:?}"
        );
    }
    let busy = r#"stavka_policy_failures_total{hook="on-request",kind="busy",module="p"}"#;
    assert_eq!(metric(&stavka, busy).await, 0.0, "no call waited too long");
}

/// Two sites on one server: `bad.example` decided by a guest that never
/// returns, `good.example` by none.
fn two_sites(origin: &Origin) -> String {
    let addr = origin.addr;
    format!(
        "[[site]]\nname = \"bad\"\nhosts = [\"bad.example\"]\npolicy = \"loop\"\norigin = {{ address = \"{addr}\" }}\n\n\
         [[site]]\nname = \"good\"\nhosts = [\"good.example\"]\ndefault = true\norigin = {{ address = \"{addr}\" }}\n"
    )
}

/// `total` GETs of `/plain` on `host`, `concurrency` at a time; the
/// statuses seen, and requests per second.
async fn drive(stavka: &Stavka, host: &str, total: usize, concurrency: usize) -> (Vec<u16>, f64) {
    let started = Instant::now();
    let per_worker = total / concurrency;
    let workers = (0..concurrency).map(|_| async move {
        let client = client();
        let mut statuses = Vec::with_capacity(per_worker);
        for _ in 0..per_worker {
            let resp = client
                .get(stavka.url("/plain"))
                .header("host", host)
                .send()
                .await
                .expect("request");
            statuses.push(resp.status().as_u16());
        }
        statuses
    });
    let statuses: Vec<u16> = join_all(workers).await.into_iter().flatten().collect();
    let rate = statuses.len() as f64 / started.elapsed().as_secs_f64();
    (statuses, rate)
}

#[tokio::test]
async fn a_failing_module_trips_its_breaker_and_the_other_site_keeps_serving() {
    let origin = Origin::start(origin_routes()).await;
    let stavka = Stavka::start_with_modules(
        &two_sites(&origin),
        &[(
            "loop",
            "looping",
            "deadline = \"5ms\"\nfailure = \"closed\"\nbreaker_failures = 3\nbreaker_window = \"10s\"\nbreaker_cooldown = \"60s\"\n",
        )],
    )
    .await;
    let state = r#"stavka_policy_breaker_state{module="loop"}"#;
    assert_eq!(metric(&stavka, state).await, 0.0, "closed at start");

    let (alone, rate_alone) = drive(&stavka, "good.example", 400, 8).await;
    assert!(alone.iter().all(|s| *s == 200), "{alone:?}");

    let (bad, good) = tokio::join!(
        drive(&stavka, "bad.example", 400, 16),
        drive(&stavka, "good.example", 400, 8)
    );
    let (bad, _) = bad;
    let (good, rate_beside) = good;
    eprintln!(
        "healthy site: {rate_alone:.0} req/s alone, {rate_beside:.0} req/s beside a looping neighbour"
    );
    assert!(good.iter().all(|s| *s == 200), "the healthy site: {good:?}");
    assert!(
        bad.iter().all(|s| *s == 503),
        "the looping site answers with its failure mode (closed)"
    );

    let opens = r#"stavka_policy_breaker_opens_total{module="loop"}"#;
    assert!(metric(&stavka, opens).await >= 1.0, "the breaker opened");
    assert_eq!(metric(&stavka, state).await, 2.0, "and stays open");
    let calls = r#"stavka_policy_calls_total{hook="on-request",module="loop"}"#;
    let deadlines =
        r#"stavka_policy_failures_total{hook="on-request",kind="deadline",module="loop"}"#;
    let refused =
        r#"stavka_policy_failures_total{hook="on-request",kind="breaker-open",module="loop"}"#;
    let entered = metric(&stavka, calls).await;
    assert!(
        (3.0..400.0).contains(&entered),
        "the guest was entered {entered} times for 400 requests"
    );
    assert_eq!(metric(&stavka, deadlines).await, entered);

    // While open, requests are answered without entering the guest.
    let refused_before = metric(&stavka, refused).await;
    let (more, _) = drive(&stavka, "bad.example", 50, 5).await;
    assert!(more.iter().all(|s| *s == 503), "{more:?}");
    assert_eq!(
        metric(&stavka, calls).await,
        entered,
        "the guest was not entered"
    );
    assert_eq!(metric(&stavka, refused).await, refused_before + 50.0);

    let listing = stavka.admin_json("/policies").await;
    assert_eq!(listing["modules"][0]["breaker"], "open", "{listing}");
    assert_eq!(stavka.health().await, 200);
}

#[tokio::test]
async fn an_open_breaker_probes_after_its_cooldown_and_a_new_version_closes_it() {
    let origin = Origin::start(origin_routes()).await;
    let stavka = Stavka::with_policy(
        &origin,
        "looping",
        "deadline = \"5ms\"\nfailure = \"closed\"\nbreaker_failures = 2\nbreaker_cooldown = \"1s\"\n",
    )
    .await;
    let state = r#"stavka_policy_breaker_state{module="p"}"#;
    let opens = r#"stavka_policy_breaker_opens_total{module="p"}"#;
    let calls = r#"stavka_policy_calls_total{hook="on-request",module="p"}"#;
    for _ in 0..4 {
        assert_eq!(stavka.get("/plain").await.status, 503);
    }
    assert_eq!(metric(&stavka, calls).await, 2.0, "two failures opened it");
    assert_eq!(metric(&stavka, opens).await, 1.0);

    // After the cool-down one call probes the module, fails, and reopens it.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    for _ in 0..3 {
        assert_eq!(stavka.get("/plain").await.status, 503);
    }
    assert_eq!(metric(&stavka, calls).await, 3.0, "one probe");
    assert_eq!(metric(&stavka, opens).await, 2.0);
    assert_eq!(metric(&stavka, state).await, 2.0);

    // A new version starts with the breaker closed.
    stavka.install("p", "blue", "");
    wait_for(&stavka, &loads("p", "loaded"), 2.0).await;
    assert_eq!(metric(&stavka, state).await, 0.0);
    assert_eq!(stavka.get("/plain").await.text(), "blue");

    // The event log tells the trip once (not the probe that reopened it)
    // and the recovery.
    let events = stavka.admin_json("/events").await;
    let kinds: Vec<&str> = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["subject"] == "p")
        .map(|e| e["kind"].as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        [
            "policy-loaded",
            "breaker-opened",
            "breaker-recovered",
            "policy-loaded"
        ],
        "{events}"
    );
}
