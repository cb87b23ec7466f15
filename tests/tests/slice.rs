//! Large objects as block-aligned slices (RFC 9110 §14), end to end: a
//! real origin that honours `Range` and counts what it sends, the real
//! binary, and every response compared byte for byte with the source.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use bytes::Bytes;
use futures_util::StreamExt;
use stavka_e2e::{client, default_site, eventually, Fetched, Origin, Stavka};

/// Block size in the tests' `[slice]`.
const BLOCK: u64 = 64 * 1024;
/// The object: sixteen blocks.
const LEN: u64 = 16 * BLOCK;
const SLICE: &str =
    "[slice]\nenabled = true\nblock_size = \"64KiB\"\nthreshold = \"256KiB\"\nread_ahead = 2\n";

/// Byte `i` of version `version` of the object.
fn byte(version: u8, i: u64) -> u8 {
    (i.wrapping_mul(2_654_435_761) >> 13) as u8 ^ version
}

fn source(version: u8, len: u64) -> Vec<u8> {
    (0..len).map(|i| byte(version, i)).collect()
}

/// How the origin answers.
#[derive(Clone)]
struct Behaviour {
    version: u8,
    len: u64,
    /// Send an ETag (strong) naming the version.
    etag: bool,
    /// Answer every request with the whole object.
    ignore_range: bool,
    /// Fail the body (close mid-message) when it reaches this offset.
    cut_at: Option<u64>,
    /// Answer a range with the bytes this far after the ones asked for.
    shift: u64,
    /// Wait this long before each 16 KiB of body.
    pace: Duration,
    max_age: u32,
}

#[derive(Clone)]
struct Shared {
    behaviour: Arc<Mutex<Behaviour>>,
    /// Body bytes the origin has handed to its connection.
    sent: Arc<AtomicU64>,
    /// The `Range` of every request ("-" without one).
    ranges: Arc<Mutex<Vec<String>>>,
}

/// An origin serving one object at `/v`, honouring single byte ranges.
struct Ranged {
    origin: Origin,
    shared: Shared,
}

impl Ranged {
    async fn start(behaviour: Behaviour) -> Ranged {
        let shared = Shared {
            behaviour: Arc::new(Mutex::new(behaviour)),
            sent: Arc::default(),
            ranges: Arc::default(),
        };
        let routes = Router::new()
            .route("/v", get(answer))
            .route("/static/v", get(answer))
            .route("/whole", get(answer))
            .with_state(shared.clone());
        Ranged {
            origin: Origin::start(routes).await,
            shared,
        }
    }

    fn ranges(&self) -> Vec<String> {
        self.shared.ranges.lock().unwrap().clone()
    }

    fn sent(&self) -> u64 {
        self.shared.sent.load(Ordering::SeqCst)
    }

    fn change(&self, change: impl FnOnce(&mut Behaviour)) {
        change(&mut self.shared.behaviour.lock().unwrap());
    }
}

fn object() -> Behaviour {
    Behaviour {
        version: 1,
        len: LEN,
        etag: true,
        ignore_range: false,
        cut_at: None,
        shift: 0,
        pace: Duration::ZERO,
        max_age: 600,
    }
}

/// `bytes=S-E`, `bytes=S-` or `bytes=-N` against `len`: `Err(())` when
/// unsatisfiable.
fn parse(value: &str, len: u64) -> Option<Result<(u64, u64), ()>> {
    let (first, last) = value.strip_prefix("bytes=")?.split_once('-')?;
    Some(
        match (first.parse::<u64>().ok(), last.parse::<u64>().ok()) {
            (None, Some(n)) if n > 0 => Ok((len.saturating_sub(n), len - 1)),
            (Some(f), last) if f < len => Ok((f, last.unwrap_or(len - 1).min(len - 1))),
            _ => Err(()),
        },
    )
}

async fn answer(State(shared): State<Shared>, headers: HeaderMap) -> Response {
    let b = shared.behaviour.lock().unwrap().clone();
    let range = headers
        .get("range")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    shared
        .ranges
        .lock()
        .unwrap()
        .push(range.clone().unwrap_or_else(|| "-".into()));
    let asked = range
        .filter(|_| !b.ignore_range)
        .and_then(|r| parse(&r, b.len));
    let mut resp = Response::builder().header("cache-control", format!("max-age={}", b.max_age));
    if b.etag {
        resp = resp.header("etag", format!("\"v{}\"", b.version));
    }
    let (start, end) = match asked {
        Some(Err(())) => {
            return resp
                .status(StatusCode::RANGE_NOT_SATISFIABLE)
                .header("content-range", format!("bytes */{}", b.len))
                .body(Body::empty())
                .unwrap();
        }
        Some(Ok((start, end))) => {
            let (start, end) = (
                (start + b.shift).min(b.len - 1),
                (end + b.shift).min(b.len - 1),
            );
            resp = resp
                .status(StatusCode::PARTIAL_CONTENT)
                .header("content-range", format!("bytes {start}-{end}/{}", b.len));
            (start, end)
        }
        None => (0, b.len - 1),
    };
    resp = resp.header("content-length", end - start + 1);
    let chunks: Vec<(u64, u64)> = (start..=end)
        .step_by(16 * 1024)
        .map(|at| (at, (at + 16 * 1024 - 1).min(end)))
        .collect();
    let sent = shared.sent.clone();
    let body = futures_util::stream::iter(chunks).then(move |(from, to)| {
        let sent = sent.clone();
        async move {
            if b.cut_at.is_some_and(|cut| (from..=to).contains(&cut)) {
                // Let what was sent arrive before the connection breaks.
                tokio::time::sleep(Duration::from_millis(200)).await;
                return Err(std::io::Error::other("cut"));
            }
            tokio::time::sleep(b.pace).await;
            sent.fetch_add(to - from + 1, Ordering::SeqCst);
            Ok(Bytes::from(
                (from..=to).map(|i| byte(b.version, i)).collect::<Vec<_>>(),
            ))
        }
    });
    resp.body(Body::from_stream(body)).unwrap()
}

async fn get_range(stavka: &Stavka, range: &str) -> Fetched {
    let resp = client()
        .get(stavka.url("/v"))
        .header("range", range)
        .send()
        .await
        .expect("request");
    Fetched::from(resp).await
}

/// The response is exactly bytes `start..=end` of `version`.
fn assert_part(resp: &Fetched, version: u8, start: u64, end: u64) {
    assert_eq!(resp.status, 206, "{:?}", resp.headers);
    assert_eq!(
        resp.header("content-range"),
        format!("bytes {start}-{end}/{LEN}")
    );
    let want = &source(version, LEN)[start as usize..=end as usize];
    assert!(
        resp.body == want,
        "bytes {start}-{end} differ from the source"
    );
}

/// Wait (at most ten seconds) until blocks `first..=last` of `/v` are stored,
/// as `/inspect` lists them.
async fn wait_for_blocks(stavka: &Stavka, first: u64, last: u64) {
    for _ in 0..200 {
        let inspected = stavka.inspect(&stavka.url("/v")).await;
        let runs = inspected["slice"]["blocks"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let stored = |i: u64| {
            runs.iter().any(|run| {
                let (a, b) = (
                    run[0].as_u64().unwrap_or(u64::MAX),
                    run[1].as_u64().unwrap_or(0),
                );
                a <= i && i <= b
            })
        };
        if (first..=last).all(stored) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("blocks {first}..={last} were not stored");
}

async fn sliced(behaviour: Behaviour) -> (Ranged, Stavka) {
    let origin = Ranged::start(behaviour).await;
    let stavka = Stavka::in_front_of(&origin.origin, SLICE).await;
    (origin, stavka)
}

/// The seed's promise: a cold range fetches the blocks covering it,
/// floored to a block, plus `read_ahead` more — never the whole object —
/// and the next sequential range is a hit.
#[tokio::test]
async fn rfc9110_14_2_a_cold_range_fetches_its_blocks_and_reads_ahead() {
    let (origin, stavka) = sliced(object()).await;
    let cold = get_range(&stavka, "bytes=100000-150000").await;
    assert_part(&cold, 1, 100_000, 150_000);
    assert!(
        cold.cache_status().contains("fwd=uri-miss")
            && cold.cache_status().contains("detail=slice-0/2-hit"),
        "{}",
        cold.cache_status()
    );
    // Blocks 1 and 2 cover it; read-ahead adds 3 and 4.
    assert_eq!(
        origin.ranges(),
        [format!("bytes={}-{}", BLOCK, 5 * BLOCK - 1)]
    );
    assert!(
        eventually(Duration::from_secs(5), || origin.sent() == 4 * BLOCK).await,
        "the origin sent {} bytes",
        origin.sent()
    );

    let warm = get_range(&stavka, "bytes=100000-150000").await;
    assert_part(&warm, 1, 100_000, 150_000);
    assert!(
        warm.cache_status().contains("hit"),
        "{}",
        warm.cache_status()
    );
    assert!(warm.cache_status().contains("detail=slice-2/2-hit"));
    let next = get_range(&stavka, &format!("bytes={}-{}", 3 * BLOCK, 5 * BLOCK - 1)).await;
    assert_part(&next, 1, 3 * BLOCK, 5 * BLOCK - 1);
    assert!(
        next.cache_status().contains("; hit"),
        "{}",
        next.cache_status()
    );
    // Reading read-ahead blocks moved the window on (blocks 5 and 6): the
    // origin was asked for nothing it had sent before.
    let later: Vec<String> = origin.ranges().into_iter().skip(1).collect();
    assert!(
        later
            .iter()
            .all(|r| r.starts_with(&format!("bytes={}-", 5 * BLOCK))),
        "read-ahead made it a hit, and only the window moved: {later:?}"
    );
    let stored = |result: &str| format!("stavka_slice_blocks_total{{result=\"{result}\"}}");
    assert_eq!(
        stavka.metric_reaching(&stored("read-ahead"), 4.0).await,
        Some(4.0),
        "blocks 3 and 4, then 5 and 6 as the window moved"
    );
    assert_eq!(
        stavka
            .metric_reaching(&stored("read-ahead-read"), 2.0)
            .await,
        Some(2.0),
        "both read-ahead blocks were read"
    );
    assert_eq!(
        stavka
            .metric("stavka_origin_requests_total{site=\"test\"}")
            .await,
        Some(origin.ranges().len() as f64),
        "slice fetches count as origin requests"
    );
    assert_eq!(
        stavka.metric("stavka_cache_stores_abandoned_total").await,
        Some(0.0),
        "a stored block is not an abandoned store"
    );
}

/// Ranges across block boundaries, the first and last bytes, suffixes,
/// open ends and the whole object, every byte checked; a range past the
/// end is 416 with the length (RFC 9110 §15.5.17).
#[tokio::test]
async fn rfc9110_14_1_every_range_form_is_byte_exact() {
    let (origin, stavka) = sliced(object()).await;
    let last = LEN - 1;
    for (range, start, end) in [
        ("bytes=0-0".to_owned(), 0, 0),
        (format!("bytes={}-{}", BLOCK - 1, BLOCK), BLOCK - 1, BLOCK),
        ("bytes=-1".to_owned(), last, last),
        ("bytes=-100000".to_owned(), LEN - 100_000, last),
        (format!("bytes={}-", LEN - 5), LEN - 5, last),
        (
            format!("bytes={}-{}", 5 * BLOCK + 7, 9 * BLOCK),
            5 * BLOCK + 7,
            9 * BLOCK,
        ),
        (format!("bytes=10-{}", LEN * 2), 10, last),
    ] {
        let resp = get_range(&stavka, &range).await;
        assert_part(&resp, 1, start, end);
    }
    let whole = stavka.get("/v").await;
    assert_eq!(whole.status, 200);
    assert_eq!(whole.header("content-length"), LEN.to_string());
    assert!(whole.body == source(1, LEN), "the whole object differs");
    // RFC 9110 §14.2: several ranges are answered with the whole object.
    let several = get_range(&stavka, "bytes=0-9,100-109").await;
    assert_eq!(several.status, 200);
    assert!(
        several.body == source(1, LEN),
        "several ranges: the whole object"
    );
    let past = get_range(&stavka, &format!("bytes={LEN}-")).await;
    assert_eq!(past.status, 416);
    assert_eq!(past.header("content-range"), format!("bytes */{LEN}"));

    // Nothing was fetched twice: every origin range started at a block
    // boundary and no byte was asked for twice.
    let mut asked: Vec<(u64, u64)> = origin
        .ranges()
        .iter()
        .filter_map(|r| match parse(r, LEN) {
            Some(Ok(span)) => Some(span),
            _ => None,
        })
        .collect();
    asked.sort();
    for pair in asked.windows(2) {
        assert!(pair[0].1 < pair[1].0, "overlapping origin ranges {asked:?}");
    }
    assert!(asked.iter().all(|(s, _)| s % BLOCK == 0), "{asked:?}");
}

/// HEAD, If-None-Match and If-Range (RFC 9110 §13.1.5) on a sliced object.
#[tokio::test]
async fn rfc9110_13_conditions_and_head_on_a_sliced_object() {
    let (origin, stavka) = sliced(object()).await;
    get_range(&stavka, "bytes=0-10").await;
    let head = client().head(stavka.url("/v")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(head.headers()["content-length"], LEN.to_string().as_str());
    let not_modified = client()
        .get(stavka.url("/v"))
        .header("if-none-match", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(not_modified.status(), 304);
    let stale_if_range = client()
        .get(stavka.url("/v"))
        .header("range", "bytes=0-10")
        .header("if-range", "\"v0\"")
        .send()
        .await
        .unwrap();
    assert_eq!(
        stale_if_range.status(),
        200,
        "a stale If-Range gets it whole"
    );
    assert_eq!(stale_if_range.bytes().await.unwrap(), source(1, LEN));
    let fresh_if_range = client()
        .get(stavka.url("/v"))
        .header("range", "bytes=0-10")
        .header("if-range", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(fresh_if_range.status(), 206);
    assert!(
        origin.ranges().iter().all(|r| r != "-"),
        "the origin was only asked for ranges"
    );
}

/// A new version at the origin (another ETag) replaces every block of the
/// old one: no response mixes versions.
#[tokio::test]
async fn a_changed_validator_invalidates_every_old_block() {
    let (origin, stavka) = sliced(Behaviour {
        max_age: 1,
        ..object()
    })
    .await;
    assert_part(&get_range(&stavka, "bytes=0-200000").await, 1, 0, 200_000);
    origin.change(|b| b.version = 2);
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let after = get_range(&stavka, "bytes=0-200000").await;
    assert_part(&after, 2, 0, 200_000);
    let again = get_range(&stavka, "bytes=0-200000").await;
    assert_part(&again, 2, 0, 200_000);
    assert!(
        again.cache_status().contains("hit"),
        "{}",
        again.cache_status()
    );
}

/// An origin that ignores Range: the client still gets exactly its range,
/// the blocks pass into the store, and reading stops after the read-ahead.
#[tokio::test]
async fn an_origin_ignoring_range_still_serves_exact_ranges() {
    let (origin, stavka) = sliced(Behaviour {
        ignore_range: true,
        ..object()
    })
    .await;
    let resp = get_range(&stavka, &format!("bytes={}-{}", BLOCK + 5, BLOCK + 10)).await;
    assert_part(&resp, 1, BLOCK + 5, BLOCK + 10);
    let again = get_range(&stavka, &format!("bytes={}-{}", BLOCK + 5, BLOCK + 10)).await;
    assert_part(&again, 1, BLOCK + 5, BLOCK + 10);
    assert!(
        again.cache_status().contains("hit"),
        "{}",
        again.cache_status()
    );
    assert_eq!(origin.ranges().len(), 1);
}

/// An origin that fails mid-block: the client's response is cut (never a
/// clean end), and the partial block is not stored — the next request
/// fetches it again and gets it whole.
#[tokio::test]
async fn a_block_cut_short_is_never_stored() {
    let (origin, stavka) = sliced(Behaviour {
        cut_at: Some(BLOCK + 20_000),
        ..object()
    })
    .await;
    let cut = client()
        .get(stavka.url("/v"))
        .header("range", format!("bytes={}-{}", BLOCK, 2 * BLOCK - 1))
        .send()
        .await
        .unwrap();
    assert_eq!(cut.status(), 206);
    assert!(
        cut.bytes().await.is_err(),
        "a cut body is an error to the client"
    );
    origin.change(|b| b.cut_at = None);
    let whole = get_range(&stavka, &format!("bytes={}-{}", BLOCK, 2 * BLOCK - 1)).await;
    assert_part(&whole, 1, BLOCK, 2 * BLOCK - 1);
    assert!(
        !whole.cache_status().contains("; hit"),
        "{}",
        whole.cache_status()
    );
    assert_eq!(origin.ranges().len(), 2);
}

/// Twenty clients asking for the same cold range make one origin request.
#[tokio::test]
async fn concurrent_misses_on_a_block_make_one_origin_fetch() {
    let (origin, stavka) = sliced(object()).await;
    let stavka = Arc::new(stavka);
    let clients: Vec<_> = (0..20)
        .map(|_| {
            let stavka = stavka.clone();
            tokio::spawn(async move { get_range(&stavka, "bytes=300000-400000").await })
        })
        .collect();
    for c in clients {
        assert_part(&c.await.unwrap(), 1, 300_000, 400_000);
    }
    let asked = origin.ranges();
    assert_eq!(asked.len(), 1, "{asked:?}");
}

/// Purging the URL removes its record and every block; blocks survive a
/// restart (the store's index recovery).
#[tokio::test]
async fn purge_removes_every_block_and_a_restart_keeps_them() {
    let (origin, mut stavka) = sliced(object()).await;
    get_range(&stavka, "bytes=0-300000").await;
    wait_for_blocks(&stavka, 0, 6).await;
    stavka.restart().await;
    let kept = get_range(&stavka, "bytes=0-300000").await;
    assert_part(&kept, 1, 0, 300_000);
    assert!(
        kept.cache_status().contains("hit"),
        "{}",
        kept.cache_status()
    );
    assert_eq!(origin.ranges().len(), 1);

    let purged = stavka
        .purge(serde_json::json!({"url": "127.0.0.1/v"}))
        .await;
    assert!(purged["purged"].as_u64().unwrap() >= 2, "{purged}");
    let after = get_range(&stavka, "bytes=0-300000").await;
    assert_part(&after, 1, 0, 300_000);
    assert!(
        !after.cache_status().contains("; hit"),
        "{}",
        after.cache_status()
    );
    assert_eq!(origin.ranges().len(), 2);
}

/// A whole response over the threshold is not stored whole: it becomes a
/// sliced object, its blocks stored as it passes to its client, so the
/// next request is served from blocks without the origin.
#[tokio::test]
async fn a_large_whole_response_is_stored_as_blocks_as_it_passes() {
    let (origin, stavka) = sliced(object()).await;
    let first = stavka.get("/v").await;
    assert!(first.body == source(1, LEN));
    assert!(
        first.cache_status().contains("detail=sliced"),
        "{}",
        first.cache_status()
    );
    assert_eq!(
        stavka
            .metric_reaching("stavka_slice_blocks_total{result=\"fetched\"}", 16.0)
            .await,
        Some(16.0),
        "every block was stored on the way"
    );
    let second = stavka.get("/v").await;
    assert!(second.body == source(1, LEN));
    assert!(
        second.cache_status().contains("; hit")
            && second.cache_status().contains("detail=slice-16/16-hit"),
        "{}",
        second.cache_status()
    );
    let part = get_range(&stavka, "bytes=500000-600000").await;
    assert_part(&part, 1, 500_000, 600_000);
    assert_eq!(origin.ranges(), ["-"], "the origin was asked once");
}

/// A whole response cut short on its way: the blocks it completed are
/// stored, the one it was writing is not, and a later request fetches
/// only what is missing.
#[tokio::test]
async fn a_whole_response_cut_short_keeps_its_complete_blocks() {
    let (origin, stavka) = sliced(Behaviour {
        cut_at: Some(5 * BLOCK + 100),
        ..object()
    })
    .await;
    let cut = client().get(stavka.url("/v")).send().await.unwrap();
    assert!(cut.bytes().await.is_err(), "the client sees the cut");
    origin.change(|b| b.cut_at = None);
    let whole = stavka.get("/v").await;
    assert!(whole.body == source(1, LEN), "whole and exact");
    let ranges = origin.ranges();
    assert_eq!(ranges.len(), 2, "{ranges:?}");
    assert!(
        ranges[1].starts_with(&format!("bytes={}-", 5 * BLOCK)),
        "only the blocks from the cut on were fetched again: {ranges:?}"
    );
}

/// Without a validator two versions' blocks could not be told apart:
/// nothing is stored, every range goes to the origin, exactly.
#[tokio::test]
async fn without_a_validator_nothing_is_sliced() {
    let (origin, stavka) = sliced(Behaviour {
        etag: false,
        ..object()
    })
    .await;
    for _ in 0..2 {
        assert_part(&get_range(&stavka, "bytes=10-20").await, 1, 10, 20);
    }
    assert_eq!(origin.ranges().len(), 2);
}

/// An origin whose 206 carries other bytes than asked: the client gets a
/// 502, not those bytes, and nothing is stored.
#[tokio::test]
async fn a_206_for_other_bytes_is_refused() {
    let (origin, stavka) = sliced(Behaviour {
        shift: 10,
        ..object()
    })
    .await;
    let refused = get_range(&stavka, "bytes=0-99").await;
    assert_eq!(refused.status, 502, "{:?}", refused.headers);
    origin.change(|b| b.shift = 0);
    assert_part(&get_range(&stavka, "bytes=0-99").await, 1, 0, 99);
}

/// A new version appearing between two runs of one response: the response
/// ends (its client sees an error, never bytes of the second version after
/// the first), the old blocks are gone, and the next request gets the new
/// version whole.
#[tokio::test]
async fn a_version_change_mid_response_ends_it_and_mixes_nothing() {
    let (origin, stavka) = sliced(object()).await;
    assert_part(&get_range(&stavka, "bytes=0-1000").await, 1, 0, 1000);
    assert!(eventually(Duration::from_secs(5), || origin.sent() == 3 * BLOCK).await);
    tokio::time::sleep(Duration::from_millis(100)).await;
    origin.change(|b| b.version = 2);
    let mixed = client().get(stavka.url("/v")).send().await.unwrap();
    assert_eq!(mixed.status(), 200);
    match mixed.bytes().await {
        Err(_) => {}
        Ok(body) => panic!("a body of {} bytes ended cleanly", body.len()),
    }
    let whole = stavka.get("/v").await;
    assert_eq!(whole.status, 200);
    assert!(whole.body == source(2, LEN), "the new version, whole");
}

/// A range whose blocks another request is still reading ahead follows
/// that fetch (`collapsed`): the origin is asked nothing more.
#[tokio::test]
async fn a_range_in_a_read_ahead_still_arriving_follows_it() {
    let (origin, stavka) = sliced(Behaviour {
        pace: Duration::from_millis(50),
        ..object()
    })
    .await;
    assert_part(&get_range(&stavka, "bytes=0-99").await, 1, 0, 99);
    let ahead = get_range(&stavka, &format!("bytes={}-{}", 2 * BLOCK, 2 * BLOCK + 99)).await;
    assert_part(&ahead, 1, 2 * BLOCK, 2 * BLOCK + 99);
    assert!(
        ahead.cache_status().contains("collapsed") && !ahead.cache_status().contains("stored"),
        "{}",
        ahead.cache_status()
    );
    // Block 2 was not asked for again; reading it moved the read-ahead
    // window on, past what the first run fetched.
    let ranges = origin.ranges();
    assert!(
        ranges[1..]
            .iter()
            .all(|r| r.starts_with(&format!("bytes={}-", 3 * BLOCK))),
        "{ranges:?}"
    );
}

/// A site with a policy slices too: the policy's cache key (tracking
/// parameters dropped) names the object, and its `on-response` decides
/// how long the record is fresh and edits its header (ttl-rules: a day for
/// `/static/`, with `x-policy-ttl`).
#[tokio::test]
async fn a_policy_sites_key_and_response_decision_apply_to_slices() {
    let origin = Ranged::start(object()).await;
    let stavka = Stavka::start_with_modules(
        &format!("{SLICE}\n{}", default_site(&origin.origin, Some("p"))),
        &[("p", "ttl-rules", "mode = \"long-lived\"\n")],
    )
    .await;
    let ranged = |path: &'static str| {
        client()
            .get(stavka.url(path))
            .header("range", "bytes=1000-2000")
            .send()
    };
    let first = Fetched::from(ranged("/static/v?utm_source=mail").await.unwrap()).await;
    assert_part(&first, 1, 1000, 2000);
    assert_eq!(first.header("x-policy-ttl"), "86400", "{:?}", first.headers);
    let ttl: i64 = first
        .cache_status()
        .split("ttl=")
        .nth(1)
        .and_then(|t| t.split(';').next())
        .and_then(|t| t.trim().parse().ok())
        .expect("a ttl");
    assert!(
        ttl > 86_000,
        "the policy's day, not the origin's 600 s: {ttl}"
    );
    let stored = "stavka_slice_blocks_total{result=\"read-ahead\"}";
    assert_eq!(stavka.metric_reaching(stored, 2.0).await, Some(2.0));
    let second = Fetched::from(ranged("/static/v").await.unwrap()).await;
    assert_part(&second, 1, 1000, 2000);
    assert!(
        second.cache_status().contains("; hit"),
        "{}",
        second.cache_status()
    );
    assert_eq!(origin.ranges().len(), 1);
    assert_eq!(origin.origin.count("/static/v"), 1);
}

/// A policy's `slicing` hook (stavka:policy 0.1.1) decides per request:
/// the test guest slices `/v` in 128 KiB blocks with no read-ahead on a site
/// that does not slice, and keeps `/whole` whole.
#[tokio::test]
async fn a_policy_decides_slicing_block_size_and_read_ahead() {
    let origin = Ranged::start(object()).await;
    let stavka = Stavka::start_with_modules(
        &default_site(&origin.origin, Some("p")),
        &[("p", "slicer", "mode = \"long-lived\"\n")],
    )
    .await;
    let part = get_range(&stavka, "bytes=1000-2000").await;
    assert_part(&part, 1, 1000, 2000);
    assert_eq!(
        origin.ranges(),
        ["bytes=0-131071"],
        "one 128 KiB block, nothing ahead"
    );
    let fetched = "stavka_slice_blocks_total{result=\"fetched\"}";
    assert_eq!(stavka.metric_reaching(fetched, 1.0).await, Some(1.0));
    let again = get_range(&stavka, "bytes=1000-2000").await;
    assert!(
        again.cache_status().contains("; hit"),
        "{}",
        again.cache_status()
    );

    let whole = client()
        .get(stavka.url("/whole"))
        .header("range", "bytes=1000-2000")
        .send()
        .await
        .unwrap();
    assert_eq!(whole.status(), 206);
    assert!(
        !whole.headers()["cache-status"]
            .to_str()
            .unwrap()
            .contains("slice"),
        "{:?}",
        whole.headers()
    );
    assert_eq!(
        origin.ranges().last().map(String::as_str),
        Some("-"),
        "fetched whole"
    );
}

/// A player reading on: each read-ahead block it reads moves the window,
/// so every range after the first is a hit, no block is fetched twice, and
/// the origin is never asked for more than the window ahead of the reader.
#[tokio::test]
async fn a_sequential_reader_keeps_hitting_as_the_window_moves() {
    let (origin, stavka) = sliced(object()).await;
    for i in 0..16 {
        let range = format!("bytes={}-{}", i * BLOCK, (i + 1) * BLOCK - 1);
        let resp = get_range(&stavka, &range).await;
        assert_part(&resp, 1, i * BLOCK, (i + 1) * BLOCK - 1);
        if i > 0 {
            assert!(
                resp.cache_status().contains("; hit"),
                "range {i}: {}",
                resp.cache_status()
            );
        }
        let fetched_ahead = origin
            .ranges()
            .iter()
            .filter_map(|r| match parse(r, LEN) {
                Some(Ok((_, end))) => Some(end / BLOCK),
                _ => None,
            })
            .max()
            .unwrap_or(0);
        assert!(
            fetched_ahead <= i + 2,
            "block {fetched_ahead} asked for while reading {i}"
        );
        // Let the window's fetch land before the next read.
        wait_for_blocks(&stavka, i, (i + 1).min(15)).await;
    }
    assert_eq!(
        origin.sent(),
        LEN,
        "every block once: {:?}",
        origin.ranges()
    );
}
