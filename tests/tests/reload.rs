//! Live reconfiguration (SIGHUP, POST /config/reload): a valid file is
//! published while traffic flows without a failed request; an invalid one
//! changes nothing and says why; settings only a restart applies are named.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::routing::get;
use axum::Router;
use stavka_e2e::{client, Load, Origin, Stavka};

fn site(name: &str, host: &str, origin: &Origin, policy: &str) -> String {
    format!(
        "[[site]]\nname = \"{name}\"\nhosts = [\"{host}\"]\norigin = {{ address = \"{}\" }}\n{policy}\n",
        origin.addr
    )
}

/// The configuration file with `old` replaced by `new`.
fn rewrite(stavka: &Stavka, old: &str, new: &str) {
    let path = stavka.config_path();
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(old), "{old:?} in {text}");
    std::fs::write(&path, text.replacen(old, new, 1)).unwrap();
}

async fn get_host(stavka: &Stavka, host: &str, path: &str) -> reqwest::Response {
    client()
        .get(stavka.url(path))
        .header("host", host)
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn sighup_adds_a_site_and_changes_a_policy_under_load_without_a_failed_request() {
    let origin = Origin::start(Router::new().route(
        "/",
        get(|| async { ([("cache-control", "max-age=60")], "origin") }),
    ))
    .await;
    let a = site("a", "a.test", &origin, "policy = \"blue\"");
    let stavka = Arc::new(
        Stavka::start_with_modules(&a, &[("blue", "blue", ""), ("green", "green", "")]).await,
    );
    assert_eq!(
        get_host(&stavka, "a.test", "/").await.text().await.unwrap(),
        "blue"
    );
    assert_eq!(get_host(&stavka, "b.test", "/").await.status(), 421);

    let requests = (0..20)
        .map(|_| client().get(stavka.url("/")).header("host", "a.test"))
        .collect();
    let load = Load::start(requests, |status, body| {
        status == 200 && matches!(body, "blue" | "green")
    });
    tokio::time::sleep(Duration::from_millis(300)).await;

    // Site a now runs module green, and site b is new.
    rewrite(
        &stavka,
        &a,
        &format!(
            "{}\n{}",
            site("a", "a.test", &origin, "policy = \"green\""),
            site("b", "b.test", &origin, "")
        ),
    );
    stavka.signal("HUP");
    let deadline = Instant::now() + Duration::from_secs(10);
    while get_host(&stavka, "a.test", "/").await.text().await.unwrap() != "green" {
        assert!(Instant::now() < deadline, "the reload never took effect");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let b = get_host(&stavka, "b.test", "/").await;
    assert_eq!(b.status(), 200);
    assert_eq!(b.text().await.unwrap(), "origin");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (served, failed) = load.stop().await;
    assert_eq!(failed, 0, "failed requests during the reload");
    assert!(served > 50, "the load was real");

    let events = stavka.admin_json("/events").await;
    let reloaded = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "config-reloaded")
        .unwrap_or_else(|| panic!("a config-reloaded event in {events}"));
    assert!(
        reloaded["detail"]
            .as_str()
            .unwrap()
            .starts_with("1 added, 0 removed, 1 changed"),
        "{reloaded}"
    );
}

#[tokio::test]
async fn a_rejected_reload_changes_nothing_and_restart_only_settings_are_named() {
    let origin = Origin::start(Router::new().route("/", get(|| async { "origin" }))).await;
    let a = site("a", "a.test", &origin, "");
    let stavka = Stavka::start(&a).await;
    let reload = || async {
        client()
            .post(stavka.admin_url("/config/reload"))
            .send()
            .await
            .unwrap()
    };

    // Two problems, both named; the old configuration keeps serving.
    rewrite(
        &stavka,
        &a,
        "[[site]]\nname = \"a\"\nhosts = [\"*.*.bad\"]\norigin = { address = \"no-port\" }\n",
    );
    let refused = reload().await;
    assert_eq!(refused.status(), 422);
    let body: serde_json::Value = refused.json().await.unwrap();
    let error = body["error"].as_str().unwrap();
    assert!(
        error.contains("site[0].hosts[0]") && error.contains("site[0].origin.address"),
        "{error}"
    );
    assert_eq!(get_host(&stavka, "a.test", "/").await.status(), 200);

    // An origin that does not resolve is refused too.
    std::fs::write(
        stavka.config_path(),
        std::fs::read_to_string(stavka.config_path())
            .unwrap()
            .replace(
                "origin = { address = \"no-port\" }",
                "origin = { address = \"no-such-host.invalid:80\" }",
            )
            .replace("*.*.bad", "a.test"),
    )
    .unwrap();
    let refused = reload().await;
    assert_eq!(refused.status(), 422);
    let body: serde_json::Value = refused.json().await.unwrap();
    assert!(
        body["error"]
            .as_str()
            .unwrap()
            .contains("no-such-host.invalid"),
        "{body}"
    );
    assert_eq!(
        get_host(&stavka, "a.test", "/").await.text().await.unwrap(),
        "origin"
    );

    // A valid file with a restart-only change: applied, and the change named.
    std::fs::write(
        stavka.config_path(),
        std::fs::read_to_string(stavka.config_path())
            .unwrap()
            .replace("no-such-host.invalid:80", &origin.addr.to_string())
            + "\n[server]\nthreads = 3\n",
    )
    .unwrap();
    let applied = reload().await;
    assert_eq!(applied.status(), 200);
    let report: serde_json::Value = applied.json().await.unwrap();
    assert_eq!(
        report["restart_required"],
        serde_json::json!(["server"]),
        "{report}"
    );
    assert_eq!(report["unchanged"], 1, "{report}");

    let reloads = |result: &str| format!("stavka_config_reloads_total{{result=\"{result}\"}}");
    assert_eq!(stavka.metric(&reloads("rejected")).await, Some(2.0));
    assert_eq!(stavka.metric(&reloads("applied")).await, Some(1.0));
    let kinds: Vec<String> = stavka.admin_json("/events").await["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .filter(|k| k.starts_with("config-"))
        .collect();
    assert_eq!(
        kinds,
        ["config-rejected", "config-rejected", "config-reloaded"]
    );
}
