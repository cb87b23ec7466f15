//! HTTP/2 abuse on the h2c listener (issue 17): the advertised
//! SETTINGS_MAX_CONCURRENT_STREAMS and header list size hold (RFC 9113
//! §6.5.2, §5.1.2, §10.5.1), a rapid-reset flood (CVE-2023-44487) is cut off
//! by GOAWAY after a bounded number of streams without reaching the origin
//! thousands of times, and a CONTINUATION flood (CVE-2024-27316 and
//! friends) is refused. Meanwhile other connections keep getting 200s from
//! the cache. The well-behaved client is the `h2` crate; the abusive ones
//! write frames by hand so the test controls exactly what goes on the wire
//! and can read the server's SETTINGS and GOAWAY frames.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use bytes::Bytes;
use stavka_e2e::{default_site, fixed, Origin, Stavka};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Every test is bounded in time, whatever the server does.
const LIMIT: Duration = Duration::from_secs(60);

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const DATA: u8 = 0x0;
const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const ACK: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;
const SETTINGS_MAX_HEADER_LIST_SIZE: u16 = 0x6;
const REFUSED_STREAM: u32 = 0x7;
const CANCEL: u32 = 0x8;

/// `/page` is cacheable; anything else answers uncacheably, so every
/// request for it that the proxy forwards is counted by the origin.
fn routes() -> Router {
    Router::new()
        .route(
            "/page",
            fixed(&[("cache-control", "public, max-age=600")], "page body"),
        )
        .fallback(|uri: http::Uri| async move {
            // `/slow/...` keeps its stream open for a while.
            if uri.path().starts_with("/slow/") {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            ([("cache-control", "no-store")], "other")
        })
}

async fn start(limits: &str) -> (Origin, Stavka) {
    let origin = Origin::start(routes()).await;
    let stavka = Stavka::start_listening(
        "h2c = true",
        &format!("[limits]\n{limits}\n{}", default_site(&origin, None)),
        &[],
    )
    .await;
    (origin, stavka)
}

// ---- a well-behaved client: the h2 crate, h2c with prior knowledge ----

type Client = h2::client::SendRequest<Bytes>;

/// An h2c connection (RFC 9113 §3.3) whose connection task runs in the
/// background.
async fn h2_client(stavka: &Stavka) -> Client {
    let tcp = TcpStream::connect(stavka.proxy).await.unwrap();
    let (send, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    send
}

fn request(path: &str) -> http::Request<()> {
    http::Request::get(format!("http://test.example{path}"))
        .body(())
        .unwrap()
}

/// GET `path` on `client`: status, `Cache-Status`, body.
async fn h2_get(client: &Client, path: &str) -> Result<(u16, String, Bytes), h2::Error> {
    h2_send(client, request(path)).await
}

async fn h2_send(
    client: &Client,
    request: http::Request<()>,
) -> Result<(u16, String, Bytes), h2::Error> {
    let mut send = client.clone().ready().await?;
    let (response, _) = send.send_request(request, true)?;
    let response = response.await?;
    let status = response.status().as_u16();
    let cache_status = response
        .headers()
        .get("cache-status")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let mut body = response.into_body();
    let mut all = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        all.extend_from_slice(&chunk);
    }
    Ok((status, cache_status, all.into()))
}

/// A well-behaved client on its own connection, fetching the cached
/// `/page` until `stop`: how many 200s with the right body it got, and
/// how many answers were anything else.
fn bystander(
    client: Client,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(usize, Vec<String>)> {
    tokio::spawn(async move {
        let (mut ok, mut bad) = (0, Vec::new());
        while !stop.load(Ordering::SeqCst) || ok == 0 {
            match h2_get(&client, "/page").await {
                Ok((200, _, body)) if body == "page body" => ok += 1,
                other => bad.push(format!("{other:?}")),
            }
            if bad.len() > 10 {
                break;
            }
        }
        (ok, bad)
    })
}

// ---- an abusive client: frames written by hand ----

fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap();
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&len.to_be_bytes()[1..]);
    out.extend_from_slice(&[kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// An HPACK string literal without Huffman coding (RFC 7541 §5.2), short.
fn hpack_str(out: &mut Vec<u8>, s: &str) {
    out.push(u8::try_from(s.len()).ok().filter(|n| *n < 127).unwrap());
    out.extend_from_slice(s.as_bytes());
}

/// The header block of `GET http://test.example{path}` (RFC 7541 Appendix
/// A static table: 2 `:method GET`, 6 `:scheme http`; literal values
/// without indexing for `:path` (4) and `:authority` (1)).
fn get_block(path: &str) -> Vec<u8> {
    let mut out = vec![0x82, 0x86, 0x04];
    hpack_str(&mut out, path);
    out.push(0x01);
    hpack_str(&mut out, "test.example");
    out
}

/// One literal header field without indexing, with a new name.
fn literal_field(name: &str, value: &str) -> Vec<u8> {
    let mut out = vec![0x00];
    hpack_str(&mut out, name);
    hpack_str(&mut out, value);
    out
}

/// A frame the server sent.
#[derive(Debug)]
struct Frame {
    kind: u8,
    flags: u8,
    stream: u32,
    payload: Vec<u8>,
}

async fn read_frame(r: &mut (impl AsyncReadExt + Unpin)) -> Option<Frame> {
    let mut head = [0u8; 9];
    r.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0; len];
    r.read_exact(&mut payload).await.ok()?;
    let stream = u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff;
    Some(Frame {
        kind: head[3],
        flags: head[4],
        stream,
        payload,
    })
}

fn u32_at(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// GOAWAY's last stream id and error code (RFC 9113 §6.8).
fn goaway(frame: &Frame) -> (u32, u32) {
    (
        u32_at(&frame.payload, 0) & 0x7fff_ffff,
        u32_at(&frame.payload, 4),
    )
}

/// Open an h2c connection by hand: the preface and an empty SETTINGS, the
/// server's SETTINGS read and acknowledged. Returns the connection and the
/// server's settings as (identifier, value) pairs.
async fn raw_connect(stavka: &Stavka) -> (TcpStream, Vec<(u16, u32)>) {
    let mut tcp = TcpStream::connect(stavka.proxy).await.unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    tcp.write_all(&hello).await.unwrap();
    // RFC 9113 §3.4: the server's preface is a SETTINGS frame, first.
    let settings = read_frame(&mut tcp).await.expect("server preface");
    assert_eq!(settings.kind, SETTINGS, "{settings:?}");
    assert_eq!(settings.flags & ACK, 0, "{settings:?}");
    let pairs = settings
        .payload
        .chunks(6)
        .map(|c| (u16::from_be_bytes([c[0], c[1]]), u32_at(c, 2)))
        .collect();
    tcp.write_all(&frame(SETTINGS, ACK, 0, &[])).await.unwrap();
    (tcp, pairs)
}

fn setting(pairs: &[(u16, u32)], id: u16) -> Option<u32> {
    pairs.iter().find(|(i, _)| *i == id).map(|(_, v)| *v)
}

/// Read frames until GOAWAY or the end of the connection (or `limit`):
/// the GOAWAY (if any), and every RST_STREAM as (stream, error code).
async fn until_goaway(
    r: &mut (impl AsyncReadExt + Unpin),
    limit: Duration,
) -> (Option<(u32, u32)>, Vec<(u32, u32)>) {
    let mut resets = Vec::new();
    let read = async {
        while let Some(f) = read_frame(r).await {
            match f.kind {
                GOAWAY => return Some(goaway(&f)),
                RST_STREAM => resets.push((f.stream, u32_at(&f.payload, 0))),
                _ => {}
            }
        }
        None
    };
    let away = tokio::time::timeout(limit, read).await.ok().flatten();
    (away, resets)
}

/// HEADERS (END_STREAM) then RST_STREAM(CANCEL) for up to `STREAMS`
/// streams on one connection, `batch` pairs per write, with `pause`
/// between writes: how many streams were written, the GOAWAY (last stream,
/// error code) if any, and whether the connection was closed.
async fn reset_flood(
    stavka: &Stavka,
    batch: u32,
    pause: Option<Duration>,
) -> (usize, Option<(u32, u32)>, bool) {
    const STREAMS: u32 = 10_000;
    let (raw, _) = raw_connect(stavka).await;
    let (mut r, mut w) = raw.into_split();
    let sent = Arc::new(AtomicUsize::new(0));
    let away = Arc::new(AtomicBool::new(false));
    let writer = {
        let (sent, away) = (sent.clone(), away.clone());
        tokio::spawn(async move {
            let mut id = 1u32;
            while id < 2 * STREAMS && !away.load(Ordering::SeqCst) {
                let mut frames = Vec::new();
                for _ in 0..batch {
                    let path = format!("/flood/{id}");
                    frames.extend(frame(
                        HEADERS,
                        END_STREAM | END_HEADERS,
                        id,
                        &get_block(&path),
                    ));
                    frames.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
                    id += 2;
                }
                if w.write_all(&frames).await.is_err() {
                    break;
                }
                sent.fetch_add(batch as usize, Ordering::SeqCst);
                match pause {
                    Some(pause) => tokio::time::sleep(pause).await,
                    None => tokio::task::yield_now().await,
                }
            }
        })
    };
    let (goaway, _) = until_goaway(&mut r, Duration::from_secs(40)).await;
    away.store(true, Ordering::SeqCst);
    writer.await.unwrap();
    // The connection ends after the GOAWAY.
    let mut rest = Vec::new();
    let closed = goaway.is_some()
        && tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut rest))
            .await
            .is_ok();
    (sent.load(Ordering::SeqCst), goaway, closed)
}

// ---- the tests ----

/// RFC 9113 §6.5.2 and §5.1.2: SETTINGS_MAX_CONCURRENT_STREAMS is the
/// configured `h2_max_streams` and a stream over it is refused
/// (REFUSED_STREAM); SETTINGS_MAX_HEADER_LIST_SIZE is 64 KiB and a request
/// over it is refused (431 or a stream reset, RFC 9113 §10.5.1, RFC 6585
/// §5) while the same connection and others keep serving from the cache.
#[tokio::test]
async fn advertised_stream_and_header_list_limits_hold_rfc9113_6_5_2() {
    tokio::time::timeout(LIMIT, async {
        let (origin, stavka) = start("h2_max_streams = 3").await;

        // On the wire: the server's first SETTINGS.
        let (mut raw, settings) = raw_connect(&stavka).await;
        assert_eq!(
            setting(&settings, SETTINGS_MAX_CONCURRENT_STREAMS),
            Some(3),
            "{settings:?}"
        );
        assert_eq!(
            setting(&settings, SETTINGS_MAX_HEADER_LIST_SIZE),
            Some(64 * 1024),
            "{settings:?}"
        );

        // A client that ignores the limit: three slow requests stay open,
        // the fourth and fifth are refused, stream by stream (§5.1.2).
        let mut burst = Vec::new();
        for id in [1u32, 3, 5, 7, 9] {
            burst.extend(frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                id,
                &get_block(&format!("/slow/{id}")),
            ));
        }
        raw.write_all(&burst).await.unwrap();
        let mut refused = Vec::new();
        let mut answered = Vec::new();
        while refused.len() + answered.len() < 5 {
            let f = tokio::time::timeout(Duration::from_secs(20), read_frame(&mut raw))
                .await
                .expect("an answer to every stream")
                .expect("the connection stays open");
            match f.kind {
                RST_STREAM => {
                    assert_eq!(u32_at(&f.payload, 0), REFUSED_STREAM, "{f:?}");
                    refused.push(f.stream);
                }
                DATA if f.flags & END_STREAM != 0 => answered.push(f.stream),
                GOAWAY => panic!("GOAWAY {:?}", goaway(&f)),
                _ => {}
            }
        }
        refused.sort_unstable();
        answered.sort_unstable();
        assert_eq!(refused, [7, 9], "streams over the limit are refused");
        assert_eq!(answered, [1, 3, 5], "streams within it are served");
        assert_eq!(
            origin.count_prefix("/slow/"),
            3,
            "refused streams never reach the origin"
        );
        drop(raw);

        // The h2 crate sees the same limit once the handshake is done.
        let tcp = TcpStream::connect(stavka.proxy).await.unwrap();
        let (client, mut conn) = h2::client::handshake(tcp).await.unwrap();
        let first = tokio::select! {
            r = h2_get(&client, "/page") => r.unwrap(),
            r = &mut conn => panic!("connection ended: {r:?}"),
        };
        assert_eq!(first.0, 200);
        assert!(first.1.contains("miss"), "{first:?}");
        assert_eq!(conn.max_concurrent_send_streams(), 3);
        tokio::spawn(async move {
            let _ = conn.await;
        });

        // 70,000 bytes of one field: over the 64 KiB list (the field's
        // size is its name, value and 32, RFC 9113 §6.5.2) but not so far
        // over that h2 treats it as abuse of the connection.
        let mut big = request("/page");
        big.headers_mut()
            .insert("x-big", "x".repeat(70_000).parse().unwrap());
        let refused = h2_send(&client, big).await;
        eprintln!("oversized header list: {refused:?}");
        match refused {
            Ok((status, _, _)) => assert_eq!(status, 431),
            Err(e) => assert_eq!(e.reason(), Some(h2::Reason::REFUSED_STREAM), "{e:?}"),
        }
        // The same connection, and another, keep serving from the cache.
        let again = h2_get(&client, "/page").await.unwrap();
        assert_eq!(again.0, 200);
        assert!(again.1.contains("hit"), "{again:?}");
        let other = h2_get(&h2_client(&stavka).await, "/page").await.unwrap();
        assert_eq!((other.0, &other.2[..]), (200, &b"page body"[..]));
        assert_eq!(origin.count("/page"), 1);
    })
    .await
    .expect("bounded in time");
}

/// CVE-2023-44487 (HTTP/2 rapid reset): HEADERS then RST_STREAM(CANCEL)
/// (RFC 9113 §6.4), thousands of times on one connection, 50 streams per
/// write as an attacker's packets carry them, each for a path the cache
/// does not hold. Observed: GOAWAY(ENHANCE_YOUR_CALM) with last stream 41
/// (h2's limit of 20 reset streams pending accept), none forwarded. The server must end the connection with GOAWAY
/// (§6.8) after a bounded number of streams, the origin must not see
/// thousands of requests, and another connection keeps getting 200s.
#[tokio::test]
async fn rapid_reset_flood_is_cut_off_by_goaway_cve_2023_44487() {
    tokio::time::timeout(LIMIT, async {
        let (origin, stavka) = start("h2_max_streams = 100").await;
        let warm = h2_get(&h2_client(&stavka).await, "/page").await.unwrap();
        assert_eq!(warm.0, 200);

        let stop = Arc::new(AtomicBool::new(false));
        let good = bystander(h2_client(&stavka).await, stop.clone());

        let (sent, goaway, closed) = reset_flood(&stavka, 50, None).await;

        stop.store(true, Ordering::SeqCst);
        let (ok, bad) = good.await.unwrap();
        let forwarded = origin.count_prefix("/flood/");
        eprintln!(
            "rapid reset: {sent} streams written, GOAWAY {goaway:?}, closed {closed}, \
             {forwarded} reached the origin; bystander {ok} ok, {bad:?}"
        );
        let (last, code) = goaway.expect("the flood is answered with GOAWAY");
        assert_eq!(code, 0xb, "ENHANCE_YOUR_CALM (RFC 9113 §7)");
        assert!(
            last < 2 * 1000,
            "cut off within 1000 streams (last stream {last})"
        );
        assert!(closed, "the connection is closed after the GOAWAY");
        assert!(
            forwarded < 1000,
            "{forwarded} flood requests reached the origin"
        );
        assert!(ok > 0 && bad.is_empty(), "bystander: {ok} ok, {bad:?}");
        assert_eq!(
            origin.count("/page"),
            1,
            "the bystander was served from the cache"
        );
        assert_eq!(
            stavka
                .metric_reaching("stavka_limited_total{limit=\"h2-abuse\"}", 1.0)
                .await,
            Some(1.0),
            "the connection closed for the flood is counted"
        );
        assert_eq!(
            h2_get(&h2_client(&stavka).await, "/page").await.unwrap().0,
            200
        );
    })
    .await
    .expect("bounded in time");
}

/// The same flood paced one stream per write, 1 ms apart, so that the
/// server accepts each stream before its reset arrives: h2's limit on
/// reset streams still pending accept never trips (with h2 0.4.20 all
/// 10,000 streams used to be served and forwarded). stavka counts the
/// streams a client resets before their answer against `h2_max_resets`
/// (here 50, refilled at 5 a second) and answers the connection past it
/// with GOAWAY(ENHANCE_YOUR_CALM), counted as `h2-rapid-reset`, while
/// another connection keeps being served.
#[tokio::test]
async fn paced_rapid_reset_flood_is_cut_off_cve_2023_44487() {
    tokio::time::timeout(LIMIT, async {
        let (origin, stavka) = start("h2_max_streams = 100\nh2_max_resets = 50").await;
        let stop = Arc::new(AtomicBool::new(false));
        let good = bystander(h2_client(&stavka).await, stop.clone());
        let (sent, goaway, closed) = reset_flood(&stavka, 1, Some(Duration::from_millis(1))).await;
        stop.store(true, Ordering::SeqCst);
        let (ok, bad) = good.await.unwrap();
        let forwarded = origin.count_prefix("/flood/");
        eprintln!(
            "paced rapid reset: {sent} streams written, GOAWAY {goaway:?}, closed {closed}, \
             {forwarded} reached the origin; bystander {ok} ok, {bad:?}"
        );
        assert!(ok > 0 && bad.is_empty(), "bystander: {ok} ok, {bad:?}");
        let (last, code) = goaway.expect("the flood is answered with GOAWAY");
        assert_eq!(code, 0xb, "ENHANCE_YOUR_CALM (RFC 9113 §7)");
        assert!(
            last < 2 * 300,
            "cut off within 300 streams of a budget of 50 (last stream {last})"
        );
        assert!(closed, "the connection is closed after the GOAWAY");
        assert!(
            forwarded < 300,
            "{forwarded} flood requests reached the origin"
        );
        assert_eq!(
            stavka
                .metric_reaching("stavka_limited_total{limit=\"h2-abuse\"}", 1.0)
                .await,
            Some(1.0)
        );
    })
    .await
    .expect("bounded in time");
}

/// A client that cancels some of its streams, as a browser or a video
/// player does when the user moves on (30 in 300 ms), stays within
/// `h2_max_resets` and keeps its connection: the budget is for floods, not
/// for cancelling.
#[tokio::test]
async fn cancelling_within_the_reset_budget_keeps_the_connection() {
    tokio::time::timeout(LIMIT, async {
        let (_origin, stavka) = start("h2_max_resets = 50").await;
        let (mut raw, _) = raw_connect(&stavka).await;
        for id in (1u32..60).step_by(2) {
            let mut frames = frame(
                HEADERS,
                END_STREAM | END_HEADERS,
                id,
                &get_block(&format!("/flood/{id}")),
            );
            frames.extend(frame(RST_STREAM, 0, id, &CANCEL.to_be_bytes()));
            raw.write_all(&frames).await.unwrap();
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        // Let the cancelled streams finish (those reset before their
        // accept never reach the origin), then ask on the same connection.
        tokio::time::sleep(Duration::from_millis(500)).await;
        raw.write_all(&frame(
            HEADERS,
            END_STREAM | END_HEADERS,
            61,
            &get_block("/page"),
        ))
        .await
        .unwrap();
        loop {
            let f = tokio::time::timeout(Duration::from_secs(20), read_frame(&mut raw))
                .await
                .expect("an answer")
                .expect("the connection stays open");
            assert_ne!(f.kind, GOAWAY, "GOAWAY {:?}", goaway(&f));
            if f.stream == 61 && f.kind == DATA && f.flags & END_STREAM != 0 {
                break;
            }
        }
        assert_eq!(
            stavka
                .metric("stavka_limited_total{limit=\"h2-abuse\"}")
                .await,
            Some(0.0)
        );
    })
    .await
    .expect("bounded in time");
}

/// CONTINUATION flood (CVE-2024-27316 and the 2024 family, RFC 9113
/// §6.10): HEADERS without END_HEADERS, then CONTINUATION frames that never
/// end the block. The server must refuse it at the connection level (a
/// header block it cannot finish is a connection error) without buffering
/// the whole stream of frames, no request reaches the origin, and another
/// connection keeps getting 200s from the cache.
#[tokio::test]
async fn continuation_flood_is_refused_rfc9113_6_10() {
    tokio::time::timeout(LIMIT, async {
        let (origin, stavka) = start("h2_max_streams = 100").await;
        let warm = h2_get(&h2_client(&stavka).await, "/page").await.unwrap();
        assert_eq!(warm.0, 200);

        let (raw, _) = raw_connect(&stavka).await;
        let (mut r, mut w) = raw.into_split();
        const FRAMES: usize = 100_000;
        let written = Arc::new(AtomicUsize::new(0));
        let writer = {
            let written = written.clone();
            tokio::spawn(async move {
                let head = frame(HEADERS, END_STREAM, 1, &get_block("/continuation"));
                if w.write_all(&head).await.is_err() {
                    return;
                }
                for i in 0..FRAMES {
                    let field = literal_field(&format!("x-f{i}"), &"v".repeat(100));
                    if w.write_all(&frame(CONTINUATION, 0, 1, &field))
                        .await
                        .is_err()
                    {
                        return;
                    }
                    written.fetch_add(1, Ordering::SeqCst);
                }
            })
        };
        let (goaway, _) = until_goaway(&mut r, Duration::from_secs(30)).await;
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(10), r.read_to_end(&mut rest))
            .await
            .is_ok();
        writer.abort();
        let written = written.load(Ordering::SeqCst);
        eprintln!(
            "continuation flood: {written} CONTINUATION frames written, GOAWAY {goaway:?}, \
             closed {closed}"
        );
        let (_, code) = goaway.expect("the flood is answered with GOAWAY");
        assert_ne!(code, 0, "GOAWAY with an error code, not NO_ERROR");
        assert!(closed, "the connection is closed after the GOAWAY");
        assert!(
            written < FRAMES,
            "the server stopped reading before all {FRAMES} frames were written"
        );
        assert_eq!(origin.count("/continuation"), 0);
        let other = h2_get(&h2_client(&stavka).await, "/page").await.unwrap();
        assert_eq!(other.0, 200);
        assert!(other.1.contains("hit"), "{other:?}");
    })
    .await
    .expect("bounded in time");
}
