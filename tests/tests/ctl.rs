//! `stavka ctl` against the real proxy: the real binary as a subprocess,
//! its `--json` output checked against what the admin API itself answers,
//! its tables checked for their columns, and its errors for one clear line
//! and exit status 1.

use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use serde_json::Value;
use stavka_e2e::{client, default_site, stavka_bin, Origin, Stavka};

/// The admin token the proxy under test requires (16+ characters).
const TOKEN: &str = "ctl-test-token-0123456789";

/// What a `stavka ctl` run left behind.
struct Run {
    code: Option<i32>,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Its standard output as JSON, asserting it succeeded.
    fn json(&self) -> Value {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("{e}: not JSON: {}", self.stdout))
    }

    /// Its standard output, asserting it succeeded.
    fn ok(&self) -> &str {
        assert_eq!(self.code, Some(0), "stderr: {}", self.stderr);
        &self.stdout
    }

    /// Its one-line error, asserting it failed with status 1.
    fn failed(&self) -> &str {
        assert_eq!(self.code, Some(1), "stdout: {}", self.stdout);
        assert_eq!(
            self.stderr.trim_end().lines().count(),
            1,
            "one line: {}",
            self.stderr
        );
        &self.stderr
    }
}

/// Run `stavka <args>` with no `STAVKA_ADMIN*` from the test's environment
/// and `env` added.
async fn stavka_cmd(args: &[&str], env: &[(&str, &str)]) -> Run {
    let mut command = tokio::process::Command::new(stavka_bin());
    command
        .args(args)
        .env_remove("STAVKA_ADMIN")
        .env_remove("STAVKA_ADMIN_TOKEN")
        .envs(env.iter().copied());
    let out = tokio::time::timeout(Duration::from_secs(20), command.output())
        .await
        .expect("stavka ctl finished")
        .expect("run stavka");
    Run {
        code: out.status.code(),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// `stavka ctl <args>` pointed at `stavka` with the right token.
async fn ctl(stavka: &Stavka, args: &[&str]) -> Run {
    let admin = stavka.admin.to_string();
    let mut all = vec!["ctl", "--admin", &admin, "--token", TOKEN];
    all.extend_from_slice(args);
    stavka_cmd(&all, &[]).await
}

/// What the admin API answers for `GET path`, with the token.
async fn api(stavka: &Stavka, path: &str) -> Value {
    let resp = client()
        .get(stavka.admin_url(path))
        .bearer_auth(TOKEN)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "GET {path}");
    resp.json().await.unwrap()
}

/// An origin with two cacheable paths tagged `t1`, and stavka in front of
/// it requiring [`TOKEN`].
async fn started() -> (Origin, Stavka) {
    let cached = || {
        get(|uri: axum::http::Uri| async move {
            (
                [("cache-control", "max-age=60"), ("surrogate-key", "t1")],
                format!("body of {}", uri.path()),
            )
                .into_response()
        })
    };
    let origin = Origin::start(Router::new().route("/a", cached()).route("/b", cached())).await;
    let extra = format!(
        "[admin]\ntoken = \"{TOKEN}\"\n\n{}",
        default_site(&origin, None)
    );
    let stavka = Stavka::start(&extra).await;
    (origin, stavka)
}

#[tokio::test]
async fn every_command_prints_what_the_api_answers() {
    let (origin, stavka) = started().await;
    for path in ["/a", "/a", "/b"] {
        assert_eq!(stavka.get(path).await.status, 200);
    }
    assert_eq!(origin.count("/a"), 1, "the second /a is a hit");
    let url_a = format!("http://{}/a", stavka.proxy);

    // inspect
    let inspected = ctl(&stavka, &["inspect", &url_a, "--json"]).await.json();
    let expected = api(&stavka, &format!("/inspect?url={url_a}")).await;
    assert_eq!(inspected["url"], expected["url"]);
    assert_eq!(inspected["site"], "test");
    let entries = inspected["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 1, "{inspected}");
    assert_eq!(entries.len(), expected["entries"].as_array().unwrap().len());
    assert_eq!(entries[0]["status"], 200);
    assert_eq!(entries[0]["tags"], serde_json::json!(["t1"]));
    let table = ctl(&stavka, &["inspect", &url_a]).await;
    let table = table.ok();
    for column in [
        "ENTRY", "STATUS", "AGE", "TTL", "STATE", "TIER", "SIZE", "TAGS",
    ] {
        assert!(table.contains(column), "{column} in {table}");
    }
    assert!(table.contains("primary") && table.contains("fresh") && table.contains("t1"));

    // stats, and top's one frame
    let stats = ctl(&stavka, &["stats", "--json"]).await.json();
    assert!(
        stats["totals"]["requests"].as_u64().unwrap() >= 3,
        "{stats}"
    );
    assert!(stats["rates"].get("10s").is_some());
    let table = ctl(&stavka, &["stats"]).await;
    let table = table.ok();
    for row in [
        "TOTAL",
        "10s",
        "60s",
        "requests",
        "hit ratio",
        "origin latency",
    ] {
        assert!(table.contains(row), "{row} in {table}");
    }
    assert!(table.contains("OBJECTS") && table.contains("memory") && table.contains("disk"));
    for row in ["client latency p99", "origin latency p99", "5xx responses"] {
        assert!(table.contains(row), "{row} in {table}");
    }
    // The site's line: it fetched /a and /b from a healthy origin.
    let site_line = table
        .lines()
        .find(|l| l.starts_with("test "))
        .unwrap_or_else(|| panic!("a line for site test in {table}"));
    assert!(site_line.contains("healthy"), "{site_line}");
    let frame = ctl(&stavka, &["top", "--once"]).await;
    let frame = frame.ok();
    assert!(
        frame.contains("hit ratio") && frame.contains("requests/s"),
        "{frame}"
    );
    assert!(!frame.contains('\x1b'), "--once draws no escape codes");
    assert!(
        frame.contains("TOP URLS BY REQUESTS")
            && frame.contains(&format!("{}/", stavka.proxy.ip())),
        "the heaviest URLs: {frame}"
    );
    let frame = ctl(&stavka, &["top", "--once", "--json"]).await.json();
    assert!(frame["totals"]["requests"].as_u64().unwrap() >= 3);

    // policies: a file that is no module is listed as failed
    std::fs::write(stavka.policy_dir.join("broken.wasm"), b"not wasm").unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while api(&stavka, "/policies").await["modules"]
        .as_array()
        .unwrap()
        .is_empty()
    {
        assert!(Instant::now() < deadline, "broken.wasm never listed");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let listed = ctl(&stavka, &["policies", "--json"]).await.json();
    assert_eq!(listed, api(&stavka, "/policies").await);
    assert_eq!(listed["modules"][0]["status"], "failed");
    let table = ctl(&stavka, &["policies"]).await;
    let table = table.ok();
    for column in ["NAME", "STATUS", "HASH", "MODE", "HOOKS", "LAST ERROR"] {
        assert!(table.contains(column), "{column} in {table}");
    }
    assert!(
        table.contains("broken") && table.contains("failed"),
        "{table}"
    );

    // events: the rejection is one, marked as a warning
    let events = ctl(&stavka, &["events", "--json"]).await.json();
    assert_eq!(events, api(&stavka, "/events?n=50").await);
    let rejected = events["events"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["kind"] == "policy-rejected")
        .unwrap_or_else(|| panic!("a rejection in {events}"));
    assert_eq!(rejected["subject"], "broken");
    assert_eq!(rejected["warning"], true);
    let table = ctl(&stavka, &["events", "-n", "5"]).await;
    let table = table.ok();
    assert!(
        table.contains("EVENT") && table.contains("policy-rejected") && table.contains("broken"),
        "{table}"
    );

    // kv: put, get, list, del
    assert!(ctl(&stavka, &["kv", "put", "p", "k/1", "v 1"])
        .await
        .ok()
        .contains("set"));
    assert_eq!(ctl(&stavka, &["kv", "get", "p", "k/1"]).await.ok(), "v 1\n");
    assert_eq!(
        ctl(&stavka, &["kv", "get", "p", "k/1", "--json"])
            .await
            .json(),
        "v 1"
    );
    let listed = ctl(&stavka, &["kv", "list", "p", "--json"]).await.json();
    assert_eq!(listed, serde_json::json!({ "k/1": "v 1" }));
    assert_eq!(listed, api(&stavka, "/policies/p/kv").await);
    let table = ctl(&stavka, &["kv", "list", "p"]).await;
    assert!(table.ok().starts_with("KEY"), "{}", table.stdout);
    ctl(&stavka, &["kv", "del", "p", "k/1"]).await.ok();
    assert_eq!(api(&stavka, "/policies/p/kv").await, serde_json::json!({}));
    let gone = ctl(&stavka, &["kv", "get", "p", "k/1"]).await;
    assert!(
        gone.failed().contains("(404): no such key"),
        "{}",
        gone.stderr
    );

    // purge: by URL, then by tag, soft
    let report = ctl(&stavka, &["purge", &url_a, "--json"]).await.json();
    assert_eq!(
        (report["matched"].as_u64(), report["purged"].as_u64()),
        (Some(1), Some(1))
    );
    assert_eq!(report["mode"], "hard");
    let after = api(&stavka, &format!("/inspect?url={url_a}")).await;
    assert_eq!(after["entries"], serde_json::json!([]), "{after}");
    let table = ctl(&stavka, &["purge", "--tag", "t1", "--soft"]).await;
    let table = table.ok();
    for column in ["SELECTOR", "MATCHED", "PURGED", "TOOK", "tag", "soft"] {
        assert!(table.contains(column), "{column} in {table}");
    }
    let prefix = format!("{}/", stavka.proxy);
    let report = ctl(&stavka, &["purge", "--prefix", &prefix, "--json"])
        .await
        .json();
    assert_eq!(report["selector"], "prefix");
    assert_eq!(report["matched"], 1, "only /b is left: {report}");

    // a purge names exactly one selector: a usage error, status 2
    let usage = ctl(&stavka, &["purge"]).await;
    assert_eq!(usage.code, Some(2), "{}", usage.stderr);
    let usage = ctl(&stavka, &["purge", &url_a, "--tag", "t1"]).await;
    assert_eq!(usage.code, Some(2), "{}", usage.stderr);
}

#[tokio::test]
async fn it_finds_the_server_from_the_environment_and_the_config_file() {
    let (_origin, stavka) = started().await;
    let config = stavka.config_path();
    let config = config.to_str().unwrap();
    // Address and token from the proxy's own file.
    let stats = stavka_cmd(&["--config", config, "ctl", "stats", "--json"], &[]).await;
    assert!(stats.json()["totals"].is_object());
    // From the environment.
    let admin = stavka.admin.to_string();
    let env = [
        ("STAVKA_ADMIN", admin.as_str()),
        ("STAVKA_ADMIN_TOKEN", TOKEN),
    ];
    let policies = stavka_cmd(&["ctl", "policies", "--json"], &env).await;
    assert!(policies.json()["modules"].is_array());
    // A flag wins over the file.
    let wrong = stavka_cmd(
        &["--config", config, "ctl", "--token", "nope", "stats"],
        &[],
    )
    .await;
    assert!(
        wrong.failed().contains("refused the token (403)"),
        "{}",
        wrong.stderr
    );
}

#[tokio::test]
async fn failures_are_one_line_and_exit_1() {
    let (_origin, stavka) = started().await;
    let admin = stavka.admin.to_string();

    let wrong = stavka_cmd(
        &[
            "ctl",
            "--admin",
            &admin,
            "--token",
            "wrong-token-0123456789",
            "stats",
        ],
        &[],
    )
    .await;
    let message = wrong.failed();
    assert!(
        message.contains("the admin API refused the token (403): wrong token"),
        "{message}"
    );

    let none = stavka_cmd(&["ctl", "--admin", &admin, "stats"], &[]).await;
    let message = none.failed();
    assert!(message.contains("needs a token (401)"), "{message}");

    let nobody = stavka_e2e::free_addr().to_string();
    let unreachable = stavka_cmd(&["ctl", "--admin", &nobody, "stats"], &[]).await;
    let message = unreachable.failed();
    assert!(
        message.contains(&format!("cannot reach the admin API at {nobody}")),
        "{message}"
    );

    let missing = ctl(&stavka, &["kv", "get", "no-such-module", "k"]).await;
    let message = missing.failed();
    assert!(
        message.contains("refused the request (404): no such key: \"k\""),
        "{message}"
    );
}
