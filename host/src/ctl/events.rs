//! `stavka ctl events`: `GET /events`, the server's recent events — purges,
//! policy loads and rejections, breaker trips, eviction spikes — oldest
//! first, like the dashboard's event log.

use std::time::{Duration, UNIX_EPOCH};

use super::client::Client;
use super::table::{Align, Table};
use crate::admin::report::Events;

/// How many events `events` asks for.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// At most this many, the newest.
    #[arg(long, short = 'n', default_value_t = 50)]
    count: usize,
}

/// The events, as a table or the API's JSON.
pub async fn run(client: &Client, args: &Args, json: bool) -> anyhow::Result<String> {
    let reply = client.get(&format!("/events?n={}", args.count)).await?;
    if json {
        return reply.pretty();
    }
    let events: Events = reply.json()?;
    if events.events.is_empty() {
        return Ok("no events\n".to_owned());
    }
    let mut table = Table::new(&[
        ("TIME", Align::Left),
        ("", Align::Left),
        ("EVENT", Align::Left),
        ("SUBJECT", Align::Left),
        ("DETAIL", Align::Left),
    ]);
    for e in events.events {
        let at = UNIX_EPOCH + Duration::from_secs_f64(e.at.max(0.0));
        table.row(vec![
            httpdate::fmt_http_date(at),
            if e.warning { "!" } else { "" }.to_owned(),
            e.kind.as_str().to_owned(),
            e.subject,
            // One line per event: load errors span several.
            e.detail.split_whitespace().collect::<Vec<_>>().join(" "),
        ]);
    }
    Ok(table.render())
}
