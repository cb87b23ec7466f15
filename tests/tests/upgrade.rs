//! Zero-downtime binary upgrade: a second process started with `--upgrade`
//! takes the listening sockets over from the running one (which gets
//! SIGQUIT, hands them over and drains), while clients loop: no request
//! fails, the old process exits 0, and the new one serves afterwards. Twice:
//! by hand, then with `stavka upgrade` as systemd's `ExecReload` runs it.

use std::time::Duration;

use axum::routing::get;
use axum::Router;
use stavka_e2e::{client, default_site, Load, Origin, Stavka};

#[tokio::test]
async fn an_upgrade_under_load_fails_no_request() {
    let origin = Origin::start(
        Router::new()
            .route(
                "/cached",
                get(|| async { ([("cache-control", "max-age=600")], "cached") }),
            )
            .route(
                "/live",
                get(|| async { ([("cache-control", "no-store")], "live") }),
            ),
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let sock = dir.path().join("upgrade.sock");
    let mut stavka = Stavka::start(&format!(
        "[server]\nupgrade_sock = \"{}\"\nshutdown_timeout = \"5s\"\n\n{}",
        sock.display(),
        default_site(&origin, None)
    ))
    .await;
    let (proxy, admin) = (stavka.proxy, stavka.admin);

    let requests = (0..20)
        .map(|i| {
            client().get(format!(
                "http://{proxy}/{}",
                if i % 2 == 0 { "cached" } else { "live" }
            ))
        })
        .collect();
    let load = Load::start(requests, |status, _| status == 200);
    tokio::time::sleep(Duration::from_millis(500)).await;

    let old = stavka.upgrade(&sock, Duration::from_secs(30)).await;
    assert!(
        old.is_some_and(|s| s.success()),
        "the old process exited with {old:?}"
    );

    // Again through `stavka upgrade`, as systemd's ExecReload runs it, with
    // a systemd notification socket: the new process says it is the main
    // process now.
    let notify_path = dir.path().join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let (config, pid) = (stavka.config_path(), stavka.pid().to_string());
    // Output to a file: the new process inherits it and outlives the command.
    let out_path = dir.path().join("upgrade.out");
    let out = std::fs::File::create(&out_path).unwrap();
    let upgrade = tokio::task::spawn_blocking(move || {
        std::process::Command::new(stavka_e2e::stavka_bin())
            .arg("--config")
            .arg(config)
            .args(["upgrade", "--pid", &pid])
            .env("NOTIFY_SOCKET", &notify_path)
            .stdout(out)
            .status()
            .unwrap()
    })
    .await
    .unwrap();
    let stdout = std::fs::read_to_string(&out_path).unwrap();
    assert!(upgrade.success(), "{stdout}");
    let stdout = stdout
        .lines()
        .find(|l| l.starts_with("upgraded:"))
        .unwrap_or_else(|| panic!("no upgraded: line in {stdout:?}"))
        .to_owned();
    let newest: u32 = stdout
        .trim()
        .rsplit(' ')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("the new process id in {stdout:?}"));
    // Not the harness's child: stopped here, whatever happens below.
    let _newest = StopOnDrop(newest);
    let mut message = [0u8; 128];
    let n = notify.recv(&mut message).expect("a notification");
    assert_eq!(
        String::from_utf8_lossy(&message[..n]),
        format!("READY=1\nMAINPID={newest}\n")
    );
    let before = load.served();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (served, failed) = load.stop().await;
    assert_eq!(failed, 0, "requests failed during the upgrade");
    assert!(served > before, "the new process serves");
    // Same addresses, and the new process answers the admin API.
    assert_eq!((stavka.proxy, stavka.admin), (proxy, admin));
    let ready = client()
        .get(stavka.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    assert!(
        std::path::Path::new(&format!("/proc/{newest}")).exists(),
        "the newest process is running"
    );
}

/// Sends SIGTERM to a process when dropped.
struct StopOnDrop(u32);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("kill")
            .arg(self.0.to_string())
            .status();
    }
}
