//! `stavka ctl purge`: `POST /purge` by URL, prefix or tag, hard or soft.

use clap::ArgGroup;
use serde::Deserialize;
use serde_json::json;

use super::client::Client;
use super::table::{Align, Table};

/// What to purge: exactly one of a URL, `--prefix` or `--tag`.
#[derive(Debug, clap::Args)]
#[command(group(ArgGroup::new("selector").required(true).args(["url", "prefix", "tag"])))]
pub struct Args {
    /// Every stored variant (Vary) of this URL: `https://host/path?query`,
    /// `//host/path` or `host/path`.
    url: Option<String>,
    /// Every URL starting with this host and path (a bare host: the whole
    /// host).
    #[arg(long)]
    prefix: Option<String>,
    /// Every object carrying this surrogate tag (`Surrogate-Key`,
    /// `Cache-Tag`, or set by a policy).
    #[arg(long)]
    tag: Option<String>,
    /// Mark stale instead of removing: the next request revalidates, and
    /// stale-if-error can still serve.
    #[arg(long)]
    soft: bool,
}

/// The request field a purge selects by, as the API names it.
#[derive(Debug, Clone, Copy)]
enum Selector {
    Url,
    Prefix,
    Tag,
}

impl Selector {
    /// The field name in `PurgeRequest`.
    fn as_str(self) -> &'static str {
        match self {
            Selector::Url => "url",
            Selector::Prefix => "prefix",
            Selector::Tag => "tag",
        }
    }
}

impl Args {
    /// The selector and its value; clap's group guarantees exactly one.
    fn selector(&self) -> (Selector, &str) {
        [
            (Selector::Url, &self.url),
            (Selector::Prefix, &self.prefix),
            (Selector::Tag, &self.tag),
        ]
        .into_iter()
        .find_map(|(s, v)| v.as_deref().map(|v| (s, v)))
        .expect("clap requires one selector")
    }
}

/// `#/components/schemas/PurgeReport`.
#[derive(Debug, Deserialize)]
struct Report {
    selector: String,
    value: String,
    mode: String,
    matched: u64,
    purged: u64,
    took_ms: f64,
    /// `local`, `sent` or `failed: why`; absent from older servers.
    #[serde(default)]
    cluster: String,
}

/// Purge, and say how many entries matched and went.
pub async fn run(client: &Client, args: &Args, json: bool) -> anyhow::Result<String> {
    let (selector, value) = args.selector();
    let body = json!({ selector.as_str(): value, "soft": args.soft });
    let reply = client.post_json("/purge", &body).await?;
    if json {
        return reply.pretty();
    }
    let report: Report = reply.json()?;
    let mut table = Table::new(&[
        ("SELECTOR", Align::Left),
        ("VALUE", Align::Left),
        ("MODE", Align::Left),
        ("MATCHED", Align::Right),
        ("PURGED", Align::Right),
        ("TOOK", Align::Right),
    ]);
    table.row(vec![
        report.selector,
        report.value,
        report.mode,
        report.matched.to_string(),
        report.purged.to_string(),
        format!("{:.1} ms", report.took_ms),
    ]);
    // With a purge bus: whether the other nodes were told.
    let cluster = match report.cluster.as_str() {
        "" | "local" => String::new(),
        "sent" => "sent to every node\n".to_owned(),
        failed => format!("other nodes not told: {failed}\n"),
    };
    Ok(table.render() + &cluster)
}
