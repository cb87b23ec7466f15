//! `[limits]` against hostile clients: each request limit answers its own
//! status (431, 414, 413, 429 with Retry-After), connections over the total
//! or per-address bound are closed at accept, a slowloris client gets 408
//! and is cut off while others are served, and every refusal is counted.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::routing::{get, post};
use axum::Router;
use stavka_e2e::{client, Origin, Stavka};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

/// The largest request body the origin received whole.
static LARGEST_BODY: AtomicUsize = AtomicUsize::new(0);

fn routes() -> Router {
    Router::new().route("/", get(|| async { "ok" })).route(
        "/upload",
        post(|body: axum::body::Bytes| async move {
            LARGEST_BODY.fetch_max(body.len(), Ordering::SeqCst);
            format!("got {}", body.len())
        }),
    )
}

async fn metric(stavka: &Stavka, limit: &str) -> f64 {
    let sample = format!("stavka_limited_total{{limit=\"{limit}\"}}");
    stavka.metric(&sample).await.unwrap_or(0.0)
}

/// A TCP connection to `addr` from the loopback address `from`.
async fn connect_from(from: [u8; 4], addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((from, 0))).unwrap();
    socket.connect(addr).await.unwrap()
}

/// Make a request on `stream` and read the start of its answer, keeping
/// the connection open: proof that the server accepted and counted it,
/// however loaded the machine is.
async fn served_and_held(stream: &mut TcpStream) {
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: test.example\r\n\r\n")
        .await
        .unwrap();
    let mut start = [0u8; 12];
    stream.read_exact(&mut start).await.unwrap();
    assert_eq!(&start, b"HTTP/1.1 200");
}

/// Whether the server closes `stream` (EOF or reset) within `wait`.
async fn closed_within(stream: &mut TcpStream, wait: Duration) -> bool {
    let mut byte = [0u8; 1];
    matches!(
        tokio::time::timeout(wait, stream.read(&mut byte)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn each_request_limit_answers_its_status_and_is_counted() {
    let origin = Origin::start(routes()).await;
    let stavka = Stavka::in_front_of(
        &origin,
        "[limits]\nmax_header_bytes = \"2KiB\"\nmax_headers = 20\nmax_uri_bytes = \"256B\"\nmax_body_bytes = \"1KiB\"\nrequests_per_second = 5\nburst = 5\n",
    )
    .await;
    let send = |req: reqwest::RequestBuilder| async move { req.send().await.unwrap() };
    let c = client();

    // RFC 6585 §5: header fields too large, or too many.
    let big = send(c.get(stavka.url("/")).header("x-big", "v".repeat(3000))).await;
    assert_eq!(big.status(), 431);
    assert!(big.headers()["cache-status"]
        .to_str()
        .unwrap()
        .contains("detail=header-too-large"));
    let mut many = c.get(stavka.url("/"));
    for i in 0..25 {
        many = many.header(format!("x-h{i}"), "1");
    }
    assert_eq!(send(many).await.status(), 431);
    // RFC 9110 §15.5.15: the target.
    let long = send(c.get(stavka.url(&format!("/{}", "a".repeat(300))))).await;
    assert_eq!(long.status(), 414);
    // RFC 9110 §15.5.14: a declared body, and one that streams past the limit.
    let declared = send(c.post(stavka.url("/upload")).body(vec![b'x'; 2048])).await;
    assert_eq!(declared.status(), 413);
    let chunks = futures_util::stream::iter(
        (0..8).map(|_| Ok::<_, std::io::Error>(bytes::Bytes::from(vec![b'x'; 512]))),
    );
    let streamed = c
        .post(stavka.url("/upload"))
        .body(reqwest::Body::wrap_stream(chunks))
        .send()
        .await;
    match streamed {
        Ok(r) => assert_eq!(r.status(), 413),
        // The proxy may close before the client finished sending.
        Err(e) => assert!(e.is_request() || e.is_body(), "{e:?}"),
    }
    let small = send(c.post(stavka.url("/upload")).body(vec![b'x'; 100])).await;
    assert_eq!(small.status(), 200);
    assert_eq!(small.text().await.unwrap(), "got 100");
    assert_eq!(
        LARGEST_BODY.load(Ordering::SeqCst),
        100,
        "no body over the limit reached the origin whole"
    );

    // RFC 6585 §4: the rate, per address, with Retry-After.
    let mut limited = None;
    for _ in 0..20 {
        let resp = send(c.get(stavka.url("/"))).await;
        if resp.status() == 429 {
            limited = Some(resp);
            break;
        }
    }
    let limited = limited.expect("a 429 within 20 requests at 5/s with a burst of 5");
    assert_eq!(limited.headers()["retry-after"], "1");
    let other = reqwest::Client::builder()
        .no_proxy()
        .local_address(std::net::IpAddr::from([127, 0, 0, 2]))
        .build()
        .unwrap();
    assert_eq!(
        other.get(stavka.url("/")).send().await.unwrap().status(),
        200,
        "another address has its own bucket"
    );
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        send(c.get(stavka.url("/"))).await.status(),
        200,
        "tokens come back"
    );

    for (limit, at_least) in [
        ("header-too-large", 1.0),
        ("too-many-headers", 1.0),
        ("uri-too-long", 1.0),
        ("body-too-large", 1.0),
        ("rate-limited", 1.0),
    ] {
        assert!(metric(&stavka, limit).await >= at_least, "{limit}");
    }
}

#[tokio::test]
async fn connections_over_the_bounds_are_closed_at_accept() {
    let origin = Origin::start(routes()).await;
    let stavka = Stavka::in_front_of(
        &origin,
        "[limits]\nmax_connections = 6\nmax_connections_per_ip = 3\n",
    )
    .await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut stream = connect_from([127, 0, 0, 1], stavka.proxy).await;
        served_and_held(&mut stream).await;
        held.push(stream);
    }
    let mut fourth = connect_from([127, 0, 0, 1], stavka.proxy).await;
    assert!(
        closed_within(&mut fourth, Duration::from_secs(2)).await,
        "a fourth from one address"
    );
    // Another address is served.
    let mut other = connect_from([127, 0, 0, 2], stavka.proxy).await;
    other
        .write_all(b"GET / HTTP/1.1\r\nhost: test.example\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut answer = String::new();
    other.read_to_string(&mut answer).await.unwrap();
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    // The total: 3 held + 3 more from other addresses fill it.
    let mut more = Vec::new();
    for from in [[127, 0, 0, 3], [127, 0, 0, 4], [127, 0, 0, 5]] {
        let mut stream = connect_from(from, stavka.proxy).await;
        served_and_held(&mut stream).await;
        more.push(stream);
    }
    let mut over = connect_from([127, 0, 0, 6], stavka.proxy).await;
    assert!(
        closed_within(&mut over, Duration::from_secs(2)).await,
        "a seventh in all"
    );
    // Closing one makes room.
    drop(held.pop());
    drop(more);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let resp = client().get(stavka.url("/")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(metric(&stavka, "too-many-connections-per-ip").await >= 1.0);
    assert!(metric(&stavka, "too-many-connections").await >= 1.0);
}

#[tokio::test]
async fn a_slowloris_client_gets_408_and_is_cut_off_while_others_are_served() {
    let origin = Origin::start(routes()).await;
    let stavka = Stavka::in_front_of(&origin, "[limits]\nheader_timeout = \"1s\"\n").await;
    let mut slow = TcpStream::connect(stavka.proxy).await.unwrap();
    let started = Instant::now();
    let dribble = async {
        slow.write_all(b"GET / HTTP/1.1\r\nhost: test.example\r\n")
            .await
            .unwrap();
        // One byte every 200 ms: never a whole header.
        let mut answer = Vec::new();
        loop {
            if slow.write_all(b"x").await.is_err() {
                break;
            }
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(200), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => break,
                Ok(Ok(n)) => answer.extend_from_slice(&buf[..n]),
                Err(_) => {}
            }
            assert!(started.elapsed() < Duration::from_secs(10), "never cut off");
        }
        answer
    };
    // Others are served meanwhile.
    let others = async {
        for _ in 0..5 {
            assert_eq!(stavka.get("/").await.status, 200);
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    let (answer, ()) = tokio::join!(dribble, others);
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    let took = started.elapsed();
    assert!(took >= Duration::from_millis(900), "cut off after {took:?}");
    assert!(metric(&stavka, "header-timeout").await >= 1.0);
}
