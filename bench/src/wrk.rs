//! Keep-alive load from `wrk`, and its report read back.

use std::time::Duration;

use anyhow::{bail, Context, Result};

/// One wrk run.
#[derive(Debug, Clone, Copy)]
pub struct Load {
    /// Requests completed.
    pub requests: u64,
    /// Completed requests per second.
    pub rps: f64,
    /// Median latency.
    pub p50: Duration,
    /// 99th percentile latency.
    pub p99: Duration,
}

/// Run `wrk` with one thread (it inherits the driver's CPUs) and
/// `connections` keep-alive connections against `url` for `duration`. Any
/// non-2xx response or socket error fails the run: a figure measured on
/// errors is not a figure.
pub async fn run(url: &str, connections: usize, duration: Duration) -> Result<Load> {
    let out = tokio::process::Command::new("wrk")
        .arg("-t1")
        .arg(format!("-c{connections}"))
        .arg(format!("-d{}s", duration.as_secs().max(1)))
        .arg("--latency")
        .arg(url)
        .output()
        .await
        .context("running wrk")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "wrk failed ({}): {text}{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&text).with_context(|| format!("reading wrk's report:\n{text}"))
}

fn parse(report: &str) -> Result<Load> {
    let mut requests = None;
    let mut rps = None;
    let mut p50 = None;
    let mut p99 = None;
    for line in report.lines().map(str::trim) {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some(n), Some("requests")) => requests = Some(n.parse::<u64>()?),
            (Some("Requests/sec:"), Some(v)) => rps = Some(v.parse::<f64>()?),
            (Some("50%"), Some(v)) => p50 = Some(duration(v)?),
            (Some("99%"), Some(v)) => p99 = Some(duration(v)?),
            (Some("Non-2xx"), _) => bail!("responses with errors: {line}"),
            (Some("Socket"), _) => bail!("socket errors: {line}"),
            _ => {}
        }
    }
    match (requests, rps, p50, p99) {
        (Some(requests), Some(rps), Some(p50), Some(p99)) => Ok(Load {
            requests,
            rps,
            p50,
            p99,
        }),
        _ => bail!("no request count, Requests/sec or latency distribution"),
    }
}

/// wrk prints latencies as `635.00us`, `1.53ms` or `2.01s`.
fn duration(text: &str) -> Result<Duration> {
    let (number, scale) = if let Some(n) = text.strip_suffix("us") {
        (n, 1e-6)
    } else if let Some(n) = text.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = text.strip_suffix('s') {
        (n, 1.0)
    } else {
        bail!("latency without a unit: {text}");
    };
    Ok(Duration::from_secs_f64(number.parse::<f64>()? * scale))
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 5s test @ http://127.0.0.1:4000/obj/1024/hot
  1 threads and 64 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.04ms  120.31us   4.12ms   91.20%
    Req/Sec    61.89k     1.51k   63.98k    80.00%
  Latency Distribution
     50%  635.00us
     75%    1.01ms
     90%    1.13ms
     99%    1.53ms
  308052 requests in 5.00s, 338.11MB read
Requests/sec:  61575.34
Transfer/sec:     67.58MB
";

    #[test]
    fn reads_throughput_and_percentiles() {
        let load = parse(REPORT).unwrap();
        assert_eq!(load.requests, 308052);
        assert_eq!(load.rps, 61575.34);
        assert_eq!(load.p50, Duration::from_micros(635));
        assert_eq!(load.p99, Duration::from_micros(1530));
    }

    #[test]
    fn errors_fail_the_run() {
        let with_errors = REPORT.replace(
            "Requests/sec:",
            "  Non-2xx or 3xx responses: 12\nRequests/sec:",
        );
        assert!(parse(&with_errors).is_err());
        let with_socket_errors = REPORT.replace(
            "Requests/sec:",
            "  Socket errors: connect 0, read 3, write 0, timeout 0\nRequests/sec:",
        );
        assert!(parse(&with_socket_errors).is_err());
    }

    #[test]
    fn units() {
        assert_eq!(duration("2.5s").unwrap(), Duration::from_millis(2500));
        assert!(duration("12").is_err());
    }
}
