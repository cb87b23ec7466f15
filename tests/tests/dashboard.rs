//! The dashboard in a real headless Chromium (Debian's `chromium`, driven
//! by Playwright through `tests/dashboard/dashboard.mjs`), against the real
//! proxy with live traffic. `./x test` installs Chromium and Playwright.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::routing::get;
use axum::Router;
use stavka_e2e::{client, default_site, Origin, Stavka};

const TOKEN: &str = "dashboard-test-token";

#[tokio::test]
async fn the_dashboard_shows_live_numbers_and_purges_from_its_form() {
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("dashboard");
    assert!(
        script.join("node_modules/playwright-core").exists() && std::path::Path::new("/usr/bin/chromium").exists(),
        "needs Debian's chromium and playwright-core in tests/dashboard: run ./x test, which installs both"
    );
    let page = || async { ([("cache-control", "max-age=600")], "page") };
    let uncached = || async { ([("cache-control", "no-store")], "fresh every time") };
    let origin = Origin::start(
        Router::new()
            .route("/hot", get(page))
            .route("/target", get(page))
            .route("/live", get(uncached)),
    )
    .await;
    // A second site whose origin is down: nothing listens on its port.
    let down = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    // A TLS listener with a default certificate, for the certificates panel.
    let certs = tempfile::tempdir().unwrap();
    let key = rcgen::KeyPair::generate().unwrap();
    let cert = rcgen::CertificateParams::new(vec!["dashboard.test".to_owned()])
        .unwrap()
        .self_signed(&key)
        .unwrap();
    std::fs::write(certs.path().join("d.pem"), cert.pem()).unwrap();
    std::fs::write(certs.path().join("d.key"), key.serialize_pem()).unwrap();
    let stavka = Stavka::start_listening(
        &format!("tls = \"{}\"", stavka_e2e::free_addr()),
        &format!(
            "[admin]\ntoken = \"{TOKEN}\"\n\n[tls]\ncert = \"{}\"\nkey = \"{}\"\n\n{}\n[[site]]\nname = \"down\"\nhosts = [\"down.example\"]\norigin = {{ address = \"{down}\" }}\n",
            certs.path().join("d.pem").display(),
            certs.path().join("d.key").display(),
            default_site(&origin, Some("p"))
        ),
        &[("p", "ttl-rules", "")],
    )
    .await;
    stavka.get("/target").await;
    stavka.get("/hot").await;

    let stop = Arc::new(AtomicBool::new(false));
    let traffic = {
        let (stop, hot, live) = (stop.clone(), stavka.url("/hot"), stavka.url("/live"));
        tokio::spawn(async move {
            let client = client();
            while !stop.load(Ordering::SeqCst) {
                // Hits, origin fetches, and 502s from the site that is down.
                let _ = client.get(&hot).send().await;
                let _ = client.get(&hot).send().await;
                let _ = client.get(&live).send().await;
                let _ = client.get(&hot).header("host", "down.example").send().await;
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
    };
    let screenshot = stavka_e2e::target_dir().join("dashboard.png");
    let run = tokio::task::spawn_blocking({
        let (admin, purge, inspect) = (
            stavka.admin_url(""),
            stavka.url("/target"),
            stavka.url("/hot"),
        );
        move || {
            Command::new("node")
                .arg(script.join("dashboard.mjs"))
                .env("ADMIN", admin)
                .env("TOKEN", TOKEN)
                .env("PURGE_URL", purge)
                .env("INSPECT_URL", inspect)
                .env("SCREENSHOT", screenshot)
                .output()
                .expect("node runs")
        }
    })
    .await
    .unwrap();
    stop.store(true, Ordering::SeqCst);
    traffic.await.unwrap();
    assert!(
        run.status.success(),
        "dashboard script failed:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );

    // The purge from the form took effect: the next request is a miss.
    let after = stavka.get("/target").await;
    assert!(
        after.cache_status().contains("miss"),
        "{}",
        after.cache_status()
    );
    assert_eq!(origin.count("/target"), 2);
}
