//! `stavka ctl top`: the rates from `/stats` and the heaviest URLs from
//! `/top`, redrawn in place every second with plain ANSI (clear, home),
//! like `varnishstat`'s and `varnishtop`'s live views.

use std::time::Duration;

use super::client::Client;
use super::stats::{self, Columns};
use super::table::{Align, Table};
use crate::admin::report::{Stats, Top, TopUrl};

/// How often the view refreshes: the server samples once a second.
const REFRESH: Duration = Duration::from_secs(1);
/// Clear the screen and move the cursor home.
const CLEAR: &str = "\x1b[2J\x1b[H";
/// The sparkline's levels, lowest first.
const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
/// Seconds of requests the sparkline shows.
const SPARK_SECONDS: usize = 60;
/// URLs listed per measure.
const TOP_URLS: usize = 5;

/// How `top` runs.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Print one frame (no escape codes) and exit, for scripts and tests.
    #[arg(long)]
    once: bool,
}

/// Draw frames until interrupted (or one with `--once`). A failure on the
/// first fetch ends it (a wrong address or token will not mend); later ones
/// are shown in place and retried, so a restarting proxy does not end it.
pub async fn run(client: &Client, args: &Args, json: bool) -> anyhow::Result<()> {
    let mut first = true;
    loop {
        let frame = match frame(client, json).await {
            Ok(frame) => frame,
            Err(e) if !first => format!("stavka: {e:#} (retrying)\n"),
            Err(e) => return Err(e),
        };
        first = false;
        if args.once {
            return super::print(&frame);
        }
        if json {
            super::print(&frame)?;
        } else {
            super::print(&format!("{CLEAR}{frame}"))?;
        }
        tokio::time::sleep(REFRESH).await;
    }
}

async fn frame(client: &Client, json: bool) -> anyhow::Result<String> {
    let reply = client.get("/stats").await?;
    if json {
        return reply.pretty();
    }
    let stats: Stats = reply.json()?;
    let top: Top = client.get(&format!("/top?n={TOP_URLS}")).await?.json()?;
    let at = std::time::UNIX_EPOCH + Duration::from_secs_f64(stats.at.max(0.0));
    Ok(format!(
        "stavka top: {}, {} (Ctrl-C quits)\n\n{}\nrequests/s, last {} s: {}\n\n{}\n{}\n{}",
        client.addr(),
        httpdate::fmt_http_date(at),
        stats::figures(&stats, Columns::Rates),
        SPARK_SECONDS,
        sparkline(&stats),
        stats::sites(&stats),
        urls(&top),
        stats::store(&stats)
    ))
}

/// The heaviest URLs of the last minute or two, by requests and by origin
/// fetches, side by side.
fn urls(top: &Top) -> String {
    let mut table = Table::new(&[
        ("TOP URLS BY REQUESTS", Align::Left),
        ("REQUESTS", Align::Right),
        ("BY MISSES", Align::Left),
        ("MISSES", Align::Right),
    ]);
    let cell = |list: &[TopUrl], i: usize| {
        list.get(i).map_or((String::new(), String::new()), |u| {
            (u.url.clone(), u.count.to_string())
        })
    };
    for i in 0..top.requests.len().max(top.misses.len()) {
        let (url, count) = cell(&top.requests, i);
        let (missed, misses) = cell(&top.misses, i);
        table.row(vec![url, count, missed, misses]);
    }
    table.render()
}

/// The last minute of requests per second, one bar a second, scaled to
/// the busiest second.
fn sparkline(stats: &Stats) -> String {
    let points = &stats.series[stats.series.len().saturating_sub(SPARK_SECONDS)..];
    let peak = points
        .iter()
        .map(|p| p.requests_per_second)
        .fold(0.0, f64::max);
    if points.is_empty() {
        return "-".to_owned();
    }
    let line: String = points
        .iter()
        .map(|p| {
            let level = if peak > 0.0 {
                (p.requests_per_second / peak * (BARS.len() - 1) as f64).round() as usize
            } else {
                0
            };
            BARS[level.min(BARS.len() - 1)]
        })
        .collect();
    format!("{line} (peak {peak:.1}/s)")
}
