//! Load over HTTPS from `h2load` (Debian's `nghttp2-client`): HTTP/1.1 or
//! h2 by ALPN, and its report read back.

use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};

/// The HTTP version h2load asks for by ALPN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Alpn {
    /// `http/1.1` (`--h1`): one request at a time per connection.
    Http1,
    /// `h2`.
    H2,
}

impl Alpn {
    /// The protocol name in ALPN, as h2load reports it.
    pub fn name(self) -> &'static str {
        match self {
            Alpn::Http1 => "http/1.1",
            Alpn::H2 => "h2",
        }
    }
}

/// What one h2load run asks for.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// HTTP/1.1 or h2.
    pub alpn: Alpn,
    /// Connections.
    pub connections: usize,
    /// Requests in flight per connection (h2 streams; 1 for HTTP/1.1).
    pub streams: usize,
}

impl Shape {
    /// How it reads in a table header, e.g. `h2, 8 conn. × 8 streams`.
    pub fn label(&self) -> String {
        match self.alpn {
            Alpn::Http1 => format!("HTTP/1.1, {} conn.", self.connections),
            Alpn::H2 => format!(
                "h2, {} conn. × {} stream{}",
                self.connections,
                self.streams,
                if self.streams == 1 { "" } else { "s" }
            ),
        }
    }
}

/// How long an h2load run goes on.
#[derive(Debug, Clone, Copy)]
pub enum Length {
    /// This many requests.
    Requests(usize),
    /// This long (whole seconds, at least one).
    Time(Duration),
}

/// One h2load run.
#[derive(Debug, Clone)]
pub struct Load {
    /// Requests per second.
    pub rps: f64,
    /// Requests that succeeded.
    pub succeeded: u64,
    /// Body bytes received.
    pub data_bytes: u64,
    /// The TLS version, cipher suite and key exchange negotiated, e.g.
    /// `TLSv1.3 TLS_AES_128_GCM_SHA256 X25519`.
    pub tls: String,
}

/// `shape` against `url` for `length`. One h2load thread, which inherits
/// the driver's CPUs. Any failed, errored, timed-out or non-2xx request,
/// or another protocol than asked, fails the run.
pub async fn run(url: &str, shape: Shape, length: Length) -> Result<Load> {
    let mut command = tokio::process::Command::new("h2load");
    command
        .arg("-t1")
        .arg(format!("-c{}", shape.connections))
        .arg(format!("-m{}", shape.streams));
    if shape.alpn == Alpn::Http1 {
        command.arg("--h1");
    }
    match length {
        Length::Requests(n) => command.arg(format!("-n{n}")),
        Length::Time(d) => command.arg(format!("--duration={}", d.as_secs().max(1))),
    };
    let out = command
        .arg(url)
        .output()
        .await
        .context("running h2load (Debian's nghttp2-client)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "h2load failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&text, shape.alpn).with_context(|| format!("reading h2load's report:\n{text}"))
}

fn parse(report: &str, alpn: Alpn) -> Result<Load> {
    let mut rps = None;
    let mut succeeded = None;
    let mut data_bytes = None;
    let (mut version, mut cipher, mut group, mut protocol) = (None, None, None, None);
    for line in report.lines().map(str::trim) {
        if let Some(rest) = line.strip_prefix("finished in ") {
            // `finished in 3.00s, 22063.00 req/s, 26.60MB/s`
            let v = rest
                .split(", ")
                .nth(1)
                .and_then(|s| s.strip_suffix(" req/s"));
            rps = Some(v.context("no req/s")?.parse::<f64>()?);
        } else if let Some(rest) = line.strip_prefix("requests: ") {
            // `44126 total, 44126 started, 44126 done, 44126 succeeded,
            // 0 failed, 0 errored, 0 timeout`
            for part in rest.split(", ") {
                let (n, what) = part.split_once(' ').context("a count and its name")?;
                let n: u64 = n.parse()?;
                match what {
                    "succeeded" => succeeded = Some(n),
                    "failed" | "errored" | "timeout" if n > 0 => bail!("requests {what}: {line}"),
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("status codes: ") {
            for part in rest.split(", ").filter(|p| !p.ends_with(" 2xx")) {
                ensure!(part.starts_with("0 "), "responses with errors: {line}");
            }
        } else if let Some(rest) = line.strip_prefix("traffic: ") {
            // `… 57.07MB (59840512) data`
            let data = rest
                .rsplit(", ")
                .next()
                .and_then(|d| d.strip_suffix(") data"));
            let exact = data.and_then(|d| d.rsplit_once('(')).map(|(_, n)| n);
            data_bytes = Some(exact.context("no data bytes")?.parse::<u64>()?);
        } else if let Some(v) = line.strip_prefix("TLS Protocol: ") {
            version = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("Cipher: ") {
            cipher = Some(v.to_owned());
        } else if let Some(v) = line.strip_prefix("Server Temp Key: ") {
            group = v.split_whitespace().next().map(str::to_owned);
        } else if let Some(v) = line.strip_prefix("Application protocol: ") {
            protocol = Some(v.to_owned());
        }
    }
    let protocol = protocol.context("no application protocol: not TLS?")?;
    ensure!(
        protocol == alpn.name(),
        "asked for {} by ALPN, got {protocol}",
        alpn.name()
    );
    match (rps, succeeded, data_bytes, version, cipher) {
        (Some(rps), Some(succeeded), Some(data_bytes), Some(v), Some(c)) => Ok(Load {
            rps,
            succeeded,
            data_bytes,
            tls: format!("{v} {c} {}", group.as_deref().unwrap_or("?")),
        }),
        _ => bail!("no req/s, counts or TLS parameters"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "starting benchmark...
spawning thread #0: 16 total client(s). Timing-based test with 1s of warm-up time and 2s of main duration for measurements.
Warm-up started for thread #0.
progress: 100% of clients started
TLS Protocol: TLSv1.3
Cipher: TLS_AES_128_GCM_SHA256
Server Temp Key: X25519 253 bits
Application protocol: http/1.1
Warm-up phase is over for thread #0.
Main benchmark duration is started for thread #0.
Main benchmark duration is over for thread #0. Stopping all clients.
Stopped all clients for thread #0

finished in 3.00s, 22063.00 req/s, 26.60MB/s
requests: 44126 total, 44126 started, 44126 done, 44126 succeeded, 0 failed, 0 errored, 0 timeout
status codes: 44126 2xx, 0 3xx, 0 4xx, 0 5xx
traffic: 53.19MB (55775264) total, 10.53MB (11044782) headers (space savings 0.00%), 57.07MB (59840512) data
                     min         max         mean         sd        +/- sd
time for request:      148us      8.58ms       724us      1.23ms    87.98%
time for connect:        0us         0us         0us         0us     0.00%
time to 1st byte:        0us         0us         0us         0us     0.00%
req/s           :    1371.63     1383.77     1376.66        3.62    62.50%
";

    #[test]
    fn reads_throughput_latency_and_tls() {
        let load = parse(REPORT, Alpn::Http1).unwrap();
        assert_eq!(load.rps, 22063.0);
        assert_eq!(load.succeeded, 44126);
        assert_eq!(load.data_bytes, 59840512);
        assert_eq!(load.tls, "TLSv1.3 TLS_AES_128_GCM_SHA256 X25519");
    }

    #[test]
    fn errors_and_another_protocol_fail_the_run() {
        assert!(parse(REPORT, Alpn::H2).is_err());
        let failed = REPORT.replace("0 failed", "3 failed");
        assert!(parse(&failed, Alpn::Http1).is_err());
        let not_found = REPORT.replace("0 4xx", "12 4xx");
        assert!(parse(&not_found, Alpn::Http1).is_err());
        let plain = REPORT.replace("Application protocol: http/1.1\n", "");
        assert!(parse(&plain, Alpn::Http1).is_err());
    }
}
