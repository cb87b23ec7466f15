//! The access log as log tools read it: `access_format = "combined"` lines
//! alone on stdout, hostile values kept inside their quoted field, and
//! sampling that still writes every failure.

use std::time::Duration;

use axum::Router;
use reqwest::header::HeaderValue;
use stavka_e2e::{client, eventually, fixed, free_addr, raw_exchange, Origin, Stavka};

/// One combined line, its quoted fields unescaped.
#[derive(Debug)]
struct Combined {
    addr: String,
    user: String,
    request: Vec<u8>,
    status: u16,
    bytes: u64,
    referer: Vec<u8>,
    agent: Vec<u8>,
    cache_status: String,
}

/// Parse `line` as nginx's combined format plus a quoted `Cache-Status`,
/// strictly: printable ASCII only, every quoted field escaped as nginx
/// escapes, nothing after the last field.
fn parse(line: &str) -> Combined {
    assert!(
        line.bytes().all(|b| (0x20..0x7F).contains(&b)),
        "not printable ASCII: {line:?}"
    );
    let bad = |what: &str| -> ! { panic!("{what} in {line:?}") };
    let (addr, rest) = line.split_once(' ').unwrap_or_else(|| bad("no address"));
    let rest = rest.strip_prefix("- ").unwrap_or_else(|| bad("no ident"));
    let (user, rest) = rest.split_once(' ').unwrap_or_else(|| bad("no user"));
    let rest = rest.strip_prefix('[').unwrap_or_else(|| bad("no ["));
    let (time, rest) = rest.split_once("] ").unwrap_or_else(|| bad("no ]"));
    let (request, rest) = quoted(rest).unwrap_or_else(|| bad("bad request"));
    let rest = rest.strip_prefix(' ').unwrap_or_else(|| bad("no status"));
    let (status, rest) = rest.split_once(' ').unwrap_or_else(|| bad("no status"));
    let (bytes, rest) = rest.split_once(' ').unwrap_or_else(|| bad("no bytes"));
    let (referer, rest) = quoted(rest).unwrap_or_else(|| bad("bad referer"));
    let rest = rest.strip_prefix(' ').unwrap_or_else(|| bad("no agent"));
    let (agent, rest) = quoted(rest).unwrap_or_else(|| bad("bad agent"));
    let rest = rest
        .strip_prefix(' ')
        .unwrap_or_else(|| bad("no cache status"));
    let (cache_status, rest) = quoted(rest).unwrap_or_else(|| bad("bad cache status"));
    assert!(rest.is_empty(), "{rest:?} after the last field of {line:?}");
    assert!(
        time.len() == 26 && time.ends_with(" +0000") && time.as_bytes()[2] == b'/',
        "time {time:?}"
    );
    assert!(status.len() == 3, "status {status:?}");
    Combined {
        addr: addr.into(),
        user: user.into(),
        request,
        status: status.parse().unwrap_or_else(|_| bad("status")),
        bytes: bytes.parse().unwrap_or_else(|_| bad("bytes")),
        referer,
        agent,
        cache_status: String::from_utf8(cache_status).unwrap(),
    }
}

/// A `"`-quoted field at the start of `s`, unescaped, and what follows it;
/// `None` unless every `\` starts a `\xHH` escape.
fn quoted(s: &str) -> Option<(Vec<u8>, &str)> {
    let (field, rest) = s.strip_prefix('"')?.split_once('"')?;
    let mut out = Vec::new();
    let mut bytes = field.bytes();
    while let Some(b) = bytes.next() {
        if b == b'\\' {
            let escape: Vec<u8> = bytes.by_ref().take(3).collect();
            let hex = escape.strip_prefix(b"x")?;
            let hex = std::str::from_utf8(hex).ok()?;
            if hex.len() != 2 || hex.bytes().any(|h| h.is_ascii_lowercase()) {
                return None;
            }
            out.push(u8::from_str_radix(hex, 16).ok()?);
        } else {
            out.push(b);
        }
    }
    Some((out, rest))
}

/// The lines on stdout once there are `n` of them (or whatever is there
/// after 5 s).
async fn lines(stavka: &Stavka, n: usize) -> Vec<String> {
    eventually(Duration::from_secs(5), || stavka.stdout_lines().len() >= n).await;
    stavka.stdout_lines()
}

const HOSTILE_AGENT: &[u8] = b"evil\" 200 1 \"-\" \"x\\n1.2.3.4 - - [\xe2\x80\xa8\xc2\x85 \\\"";

#[tokio::test]
async fn combined_lines_parse_and_hostile_values_stay_in_their_field() {
    let origin = Origin::start(
        Router::new().route("/a", fixed(&[("cache-control", "max-age=60")], "hello")),
    )
    .await;
    let stavka = Stavka::in_front_of(&origin, "[log]\naccess_format = \"combined\"\n").await;

    for _ in 0..2 {
        let resp = client()
            .get(stavka.url("/a?b=1"))
            .header("referer", "https://ref.example/page")
            .header("user-agent", "curl/8.5")
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
    }
    let hostile = client()
        .get(stavka.url("/%22q%0A%5C"))
        .header(
            "user-agent",
            HeaderValue::from_bytes(HOSTILE_AGENT).unwrap(),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(hostile.status(), 404);
    // Raw `"` and `\` in the request target, a byte that is not UTF-8 in
    // the agent. (pingora itself answers 400 to a target that is not
    // UTF-8, before stavka sees a request.)
    let raw = raw_exchange(
        stavka.proxy,
        b"GET /raw\"\\ HTTP/1.1\r\nHost: test.example\r\nUser-Agent: a\"b\xff\r\nConnection: close\r\n\r\n",
        Duration::from_secs(5),
    )
    .await;
    assert!(raw.starts_with("HTTP/1.1 404 "), "{raw}");

    let lines = lines(&stavka, 4).await;
    assert_eq!(lines.len(), 4, "one line per request: {lines:#?}");
    let parsed: Vec<Combined> = lines.iter().map(|l| parse(l)).collect();
    // A line is written when its request ends: a miss that stores its
    // response may end after the hit that follows it.
    let on = |target: &[u8]| -> Vec<&Combined> {
        let request = [b"GET ", target, b" HTTP/1.1"].concat();
        parsed.iter().filter(|l| l.request == request).collect()
    };

    let pair = on(b"/a?b=1");
    assert_eq!(pair.len(), 2, "{lines:#?}");
    for line in &pair {
        assert_eq!(line.addr, "127.0.0.1");
        assert_eq!(line.user, "-");
        assert_eq!(line.status, 200);
        assert_eq!(line.bytes, 5);
        assert_eq!(line.referer, b"https://ref.example/page");
        assert_eq!(line.agent, b"curl/8.5");
    }
    let statuses: Vec<&str> = pair.iter().map(|l| l.cache_status.as_str()).collect();
    assert!(
        statuses.iter().any(|s| s.starts_with("stavka; hit; ttl="))
            && statuses.iter().any(|s| s.contains("; stored")),
        "{statuses:?}"
    );

    let hostile = on(b"/%22q%0A%5C");
    let [hostile] = hostile.as_slice() else {
        panic!("{lines:#?}")
    };
    assert_eq!(hostile.status, 404);
    assert_eq!(hostile.referer, b"-");
    assert_eq!(hostile.agent, HOSTILE_AGENT, "the agent, byte for byte");
    assert!(
        lines.iter().any(|l| l.contains(
            r#" "evil\x22 200 1 \x22-\x22 \x22x\x5Cn1.2.3.4 - - [\xE2\x80\xA8\xC2\x85 \x5C\x22" "#
        )),
        "{lines:#?}"
    );
    assert!(hostile.cache_status.starts_with("stavka; "), "{hostile:?}");

    let raw = on(b"/raw\"\\");
    let [raw] = raw.as_slice() else {
        panic!("{lines:#?}")
    };
    assert_eq!(raw.agent, b"a\"b\xff");
    assert_eq!(raw.status, 404);
}

#[tokio::test]
async fn a_tiny_sample_logs_almost_nothing_but_every_failure() {
    let origin = Origin::start(Router::new().route("/ok", fixed(&[], "ok"))).await;
    let dead = free_addr();
    let stavka = Stavka::in_front_of(
        &origin,
        &format!(
            "[log]\naccess_format = \"combined\"\naccess_sample = 0.000001\n\n\
             [[site]]\nname = \"dead\"\nhosts = [\"dead.example\"]\norigin = {{ address = \"{dead}\" }}\n"
        ),
    )
    .await;

    for _ in 0..100 {
        assert_eq!(stavka.get("/ok").await.status, 200);
    }
    for _ in 0..2 {
        assert_eq!(stavka.get_host("dead.example", "/gone").await.status, 502);
    }

    let lines = lines(&stavka, 2).await;
    let failures: Vec<Combined> = lines
        .iter()
        .map(|l| parse(l))
        .filter(|l| l.status == 502)
        .collect();
    assert_eq!(failures.len(), 2, "{lines:#?}");
    for failure in &failures {
        assert_eq!(failure.request, b"GET /gone HTTP/1.1");
    }
    // One of 100 at 1e-6 happens once in 10,000 runs.
    assert!(lines.len() <= 3, "{lines:#?}");
}

#[tokio::test]
async fn text_access_lines_stay_off_stdout() {
    let origin = Origin::start(Router::new().route("/ok", fixed(&[], "ok"))).await;
    let stavka = Stavka::in_front_of(&origin, "").await;
    assert_eq!(stavka.get("/ok").await.status, 200);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(stavka.stdout_lines(), Vec::<String>::new());
}

#[tokio::test]
async fn a_sample_outside_zero_to_one_is_refused_by_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("stavka.toml");
    for bad in ["0", "1.5", "-1"] {
        std::fs::write(&path, format!("[log]\naccess_sample = {bad}\n")).unwrap();
        let (code, stderr) = stavka_e2e::check_config(&path);
        assert_eq!(code, Some(2), "{bad}: {stderr}");
        assert!(stderr.contains("log.access_sample:"), "{bad}: {stderr}");
    }
    std::fs::write(
        &path,
        "[log]\naccess_sample = 0.01\naccess_format = \"combined\"\n",
    )
    .unwrap();
    assert_eq!(stavka_e2e::check_config(&path).0, Some(0));
}
