//! A full or vanished cache disk costs caching, never a response: against
//! the real binary, with the store on a small tmpfs this test mounts over
//! the store's directory (root only, as CI runs; elsewhere the tmpfs cases
//! say so and pass without running).

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use axum::body::Body;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use stavka_e2e::{client, Fetched, Origin, Stavka};

/// `len` bytes that differ by position, so a reordered or shortened body
/// cannot compare equal.
fn payload(len: usize) -> Bytes {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[1])
        .collect::<Vec<u8>>()
        .into()
}

const BIG: usize = 3 * 1024 * 1024;
const MEDIUM: usize = 300 * 1024;

/// `/small/*`, `/medium/*` (in one piece) and `/big/*` (streamed in
/// 64 KiB pieces with pauses, so collapsed requests follow it), all
/// cacheable for ten minutes.
fn routes() -> Router {
    let cached = |body: Body| ([("cache-control", "max-age=600")], body).into_response();
    Router::new()
        .route(
            "/small/{n}",
            get(move || async move { cached(Body::from(payload(4096))) }),
        )
        .route(
            "/medium/{n}",
            get(move || async move { cached(Body::from(payload(MEDIUM))) }),
        )
        .route(
            "/big/{n}",
            get(move || async move {
                let pieces: Vec<Bytes> = payload(BIG)
                    .chunks(64 * 1024)
                    .map(Bytes::copy_from_slice)
                    .collect();
                let stream = futures_util::stream::iter(pieces).then(|piece| async move {
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    Ok::<_, Infallible>(piece)
                });
                cached(Body::from_stream(stream))
            }),
        )
}

/// A tmpfs of `size` mounted over `dir`, lazily unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    /// `None`, said on stderr, when this process may not mount.
    fn over(dir: &Path, size: &str) -> Option<Tmpfs> {
        let root = Command::new("id")
            .arg("-u")
            .output()
            .is_ok_and(|o| o.stdout.trim_ascii() == b"0");
        if !root {
            eprintln!("skipped: mounting a tmpfs needs root");
            return None;
        }
        let mounted = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir)
            .status()
            .is_ok_and(|s| s.success());
        if !mounted {
            eprintln!("skipped: mount -t tmpfs was refused");
            return None;
        }
        Some(Tmpfs(dir.to_path_buf()))
    }

    /// Fill it with a ballast file until about `leave` bytes are free.
    fn fill(&self, leave: u64) {
        let out = Command::new("df")
            .args(["-B1", "--output=avail"])
            .arg(&self.0)
            .output()
            .unwrap();
        let free: u64 = String::from_utf8_lossy(&out.stdout)
            .lines()
            .nth(1)
            .and_then(|l| l.trim().parse().ok())
            .unwrap();
        std::fs::write(
            self.ballast(),
            vec![0u8; free.saturating_sub(leave) as usize],
        )
        .unwrap();
    }

    fn ballast(&self) -> PathBuf {
        self.0.join("ballast")
    }

    /// Files left in the store's `tmp/` (none, or a missing directory).
    fn temp_files(&self) -> usize {
        std::fs::read_dir(self.0.join("tmp")).map_or(0, |d| d.count())
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

/// An origin and stavka storing on a 2 MiB tmpfs with `min_free_percent`,
/// filled until `leave` bytes are free; `None` where it cannot mount.
async fn on_full_tmpfs(min_free_percent: u8, leave: u64) -> Option<(Origin, Stavka, Tmpfs)> {
    let origin = Origin::start(routes()).await;
    let store = format!("[store]\nmin_free_percent = {min_free_percent}\n");
    let stavka = Stavka::in_front_of(&origin, &store).await;
    let fs = Tmpfs::over(&stavka.store_dir(), "2m")?;
    fs.fill(leave);
    Some((origin, stavka, fs))
}

async fn no_space_failures(stavka: &Stavka) -> f64 {
    stavka
        .metric("stavka_cache_write_failures_total{reason=\"no-space\"}")
        .await
        .unwrap_or(0.0)
}

async fn readiness(stavka: &Stavka) -> (u16, serde_json::Value) {
    let resp = client()
        .get(stavka.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

/// GET `path` twice: the second answer shows whether the first was stored.
async fn stored(stavka: &Stavka, path: &str) -> bool {
    let again = stavka.get(path).await;
    assert_eq!(again.status, 200);
    again.cache_status().contains("hit")
}

#[tokio::test]
async fn a_full_disk_serves_misses_uncached_and_reports_low_space() {
    let Some((origin, stavka, fs)) = on_full_tmpfs(10, 32 * 1024).await else {
        return;
    };

    let miss = stavka.get("/medium/a").await;
    assert_eq!(miss.status, 200);
    assert_eq!(miss.body, payload(MEDIUM), "the origin's whole body");
    assert!(!stored(&stavka, "/medium/a").await, "nothing was stored");
    assert_eq!(origin.count("/medium/a"), 2);
    assert!(
        no_space_failures(&stavka).await >= 1.0,
        "the failure is counted"
    );
    assert_eq!(fs.temp_files(), 0);

    let (code, body) = readiness(&stavka).await;
    assert_eq!(code, 200, "low space degrades, it does not unready: {body}");
    let degraded = body["degraded"].to_string();
    assert!(degraded.contains("min_free_percent"), "{body}");

    std::fs::remove_file(fs.ballast()).unwrap();
    assert_eq!(stavka.get("/small/b").await.status, 200);
    assert!(
        stored(&stavka, "/small/b").await,
        "storing resumes with room"
    );
    let (_, body) = readiness(&stavka).await;
    assert_eq!(body["degraded"], serde_json::json!([]), "{body}");
}

#[tokio::test]
async fn a_disk_filling_mid_write_still_serves_the_whole_body_to_every_client() {
    let Some((origin, stavka, fs)) = on_full_tmpfs(0, 512 * 1024).await else {
        return;
    };

    let (first, second) = tokio::join!(stavka.get("/big/x"), async {
        tokio::time::sleep(Duration::from_millis(30)).await;
        stavka.get("/big/x").await
    });
    for (who, got) in [("the miss", &first), ("a collapsed request", &second)] {
        assert_eq!(got.status, 200, "{who}");
        assert_eq!(got.body.len(), BIG, "{who}");
        assert!(got.body == payload(BIG), "{who}: the body is intact");
    }
    assert!(
        no_space_failures(&stavka).await >= 1.0,
        "the failure is counted"
    );
    // Its Cache-Status said `stored` before the disk filled; the log and
    // this counter say what happened.
    assert_eq!(
        stavka
            .metric_reaching("stavka_cache_stores_abandoned_total", 1.0)
            .await,
        Some(1.0)
    );
    assert_eq!(fs.temp_files(), 0, "the partial object is gone");
    assert!(!stored(&stavka, "/big/x").await);
    assert!(
        origin.count("/big/x") >= 2,
        "the next request went to the origin"
    );

    std::fs::remove_file(fs.ballast()).unwrap();
    assert_eq!(stavka.get("/medium/y").await.body, payload(MEDIUM));
    assert!(
        stored(&stavka, "/medium/y").await,
        "storing resumes with room"
    );
}

#[tokio::test]
async fn a_deleted_store_directory_is_recreated_and_storing_resumes() {
    let origin = Origin::start(routes()).await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    assert_eq!(stavka.get("/small/1").await.status, 200);
    assert!(stored(&stavka, "/small/1").await);

    std::fs::remove_dir_all(stavka.store_dir()).unwrap();
    let miss = stavka.get("/small/2").await;
    assert_eq!((miss.status, miss.body.len()), (200, 4096));
    assert!(stored(&stavka, "/small/2").await, "storing resumes");
    let gone: Fetched = stavka.get("/small/1").await;
    assert_eq!(
        gone.status, 200,
        "an object deleted with the directory is a miss"
    );

    std::fs::remove_dir_all(stavka.store_dir()).unwrap();
    let (code, body) = readiness(&stavka).await;
    assert_eq!(
        (code, body["checks"]["storage"].as_str()),
        (200, Some("ok")),
        "{body}"
    );
}
