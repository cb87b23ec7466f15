//! `stavka policy new`: the crate it writes builds against the SDK as a
//! policy author outside this repository gets it (its package, unpacked),
//! and the module loads into a running proxy without a restart.

use std::process::Command;
use std::time::Duration;

use axum::Router;
use stavka_e2e::{
    cargo_in, fixed, install, stavka_bin, target_dir, workspace_root, Origin, Stavka,
};

#[tokio::test]
async fn a_scaffolded_policy_builds_from_the_packaged_sdk_and_hot_loads() {
    let work = tempfile::tempdir().unwrap();
    cargo_in(
        &workspace_root(),
        &[
            "package",
            "-p",
            "stavka-policy",
            "--allow-dirty",
            "--no-verify",
            "--quiet",
        ],
        &[],
    );
    // The SDK is versioned apart from the workspace.
    let manifest = std::fs::read_to_string(workspace_root().join("guest-sdk/Cargo.toml")).unwrap();
    let version = manifest
        .lines()
        .find_map(|l| l.strip_prefix("version = \""))
        .and_then(|v| v.strip_suffix('"'))
        .expect("guest-sdk/Cargo.toml names its version");
    let package = target_dir()
        .join("package")
        .join(format!("stavka-policy-{version}.crate"));
    let unpacked = Command::new("tar")
        .arg("xzf")
        .arg(&package)
        .arg("-C")
        .arg(work.path())
        .status()
        .unwrap();
    assert!(unpacked.success(), "tar {}", package.display());
    let sdk = work.path().join(format!("stavka-policy-{version}"));

    let made = Command::new(stavka_bin())
        .args(["policy", "new", "hello-policy", "--dir"])
        .arg(work.path())
        .arg("--sdk")
        .arg(&sdk)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let again = Command::new(stavka_bin())
        .args(["policy", "new", "hello-policy", "--dir"])
        .arg(work.path())
        .output()
        .unwrap();
    assert!(!again.status.success(), "it never overwrites");
    assert!(String::from_utf8_lossy(&again.stderr).contains("already exists"));

    // One command builds it, as its README says.
    let crate_dir = work.path().join("hello-policy");
    let built = target_dir().join("scaffold");
    cargo_in(
        &crate_dir,
        &["build", "--release", "--quiet"],
        &[("CARGO_TARGET_DIR", &built)],
    );
    let module = std::fs::read(built.join("wasm32-wasip2/release/hello_policy.wasm")).unwrap();
    let sidecar = std::fs::read_to_string(crate_dir.join("hello-policy.toml")).unwrap();

    let origin = Origin::start(
        Router::new().route("/page", fixed(&[("cache-control", "max-age=60")], "hello")),
    )
    .await;
    let stavka = Stavka::start(&stavka_e2e::default_site(&origin, Some("hello-policy"))).await;
    assert_eq!(
        stavka.get("/page").await.status,
        503,
        "named, not loaded yet"
    );
    install(&stavka.policy_dir, "hello-policy", &module, &sidecar);
    let mut served = None;
    for _ in 0..100 {
        let resp = stavka.get("/page?utm_source=mail").await;
        if resp.status == 200 {
            served = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let served = served.expect("the module loaded without a restart");
    assert_eq!(served.header("x-policy"), "hello-policy");
    let plain = stavka.get("/page").await;
    assert!(
        plain.cache_status().contains("hit"),
        "tracking parameters stay out of the key: {}",
        plain.cache_status()
    );
    assert_eq!(origin.count("/page"), 1);
}

/// `stavka policy try` runs a built module through the host's runtime and
/// prints each hook's decision: here ttl-rules' normalised key and its
/// day-long TTL, token-auth's refusal, and the test guest's slicing.
#[test]
fn policy_try_prints_what_each_hook_decided() {
    let guest = |name: &str| stavka_e2e::guests_dir().join(format!("{name}.wasm"));
    let run = |args: &[&str]| {
        let out = Command::new(stavka_bin())
            .args(["policy", "try"])
            .args(args)
            .arg("--json")
            .output()
            .unwrap();
        assert!(out.status.success(), "{args:?}: {out:?}");
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let ttl = guest("ttl_rules");
    let ttl = ttl.to_str().unwrap();
    let rules = run(&[
        ttl,
        "--request",
        "GET /static/app.css?utm_source=x&v=2",
        "--response",
        "200",
        "-R",
        "cache-control: no-store",
    ]);
    assert_eq!(rules["on-request"]["key"], "/static/app.css?v=2", "{rules}");
    assert_eq!(rules["on-response"]["decision"], "store", "{rules}");
    assert_eq!(rules["on-response"]["ttl_seconds"], 86400, "{rules}");
    assert!(rules["on-response"]["headers"]
        .to_string()
        .contains("x-policy-ttl"));

    let auth = guest("token_auth");
    let denied = run(&[auth.to_str().unwrap(), "--request", "GET /private/doc"]);
    assert_eq!(denied["on-request"]["decision"], "respond", "{denied}");
    assert_eq!(denied["on-request"]["status"], 403, "{denied}");

    let slicer = guest("slicer");
    let sliced = run(&[slicer.to_str().unwrap(), "--request", "GET /v"]);
    assert_eq!(sliced["slicing"]["block_kib"], 128, "{sliced}");

    let broken = Command::new(stavka_bin())
        .args(["policy", "try", "/nonexistent.wasm"])
        .output()
        .unwrap();
    assert!(!broken.status.success());
}
