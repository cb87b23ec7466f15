//! Where a stavka hit spends its CPU: `perf record` (the `cpu-clock`
//! software event, which works where hardware counters are not exposed) on
//! the server while wrk loads one 1 KiB hit, reported as self time by
//! binary and by symbol. Without frame pointers the call chains are not
//! reliable, so none are reported.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use tokio::process::Command;

use crate::server::Running;
use crate::wrk;

/// Profile hits on `/obj/1024/{name}` and write the report to `out`.
pub async fn hit_path(
    server: &Running,
    name: &str,
    connections: usize,
    duration: Duration,
    out: &Path,
) -> Result<()> {
    let url = server.url(&format!("/obj/1024/{name}"));
    crate::hit::warm(&url, 1024, connections).await?;
    let data = out.with_extension("data");
    let mut perf = Command::new("perf")
        .args(["record", "-e", "cpu-clock", "-F", "2000", "-o"])
        .arg(&data)
        .args(["-p", &server.pid().to_string(), "--", "sleep"])
        .arg(duration.as_secs().to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .context("running perf (Debian's linux-perf)")?;
    let load = wrk::run(&url, connections, duration).await?;
    ensure!(perf.wait().await?.success(), "perf record failed");
    let mut report = format!(
        "{}, 1 KiB hits, {:.0} req/s under perf; self time\n",
        server.contender.as_str(),
        load.rps
    );
    for (sort, limit) in [("dso", "0"), ("symbol", "0.4")] {
        let printed = Command::new("perf")
            .args([
                "report",
                "--stdio",
                "-g",
                "none",
                "--no-children",
                "--sort",
                sort,
            ])
            .args(["--percent-limit", limit, "-i"])
            .arg(&data)
            .output()
            .await?;
        ensure!(printed.status.success(), "perf report failed");
        report.push('\n');
        // Keep the rows, without perf's comment lines and column padding.
        for row in String::from_utf8_lossy(&printed.stdout).lines() {
            let row = row.trim_end().trim_end_matches(['-', ' ']);
            if !row.is_empty() && !row.starts_with('#') {
                report.push_str(row);
                report.push('\n');
            }
        }
    }
    std::fs::write(out, report)?;
    Ok(())
}
