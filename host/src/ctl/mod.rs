//! `stavka ctl`: the admin API from a shell, as `varnishadm` and
//! `varnishstat` are for Varnish. Tables for people; `--json` hands the
//! server's own JSON to scripts. Each command lives in its own file and
//! returns what to print, so [`run`] alone touches standard output.

mod client;
mod events;
mod format;
mod inspect;
mod json;
mod kv;
mod policies;
mod purge;
mod stats;
mod table;
mod target;
mod top;

use std::io::Write;
use std::path::Path;

use anyhow::Context;
use clap::Subcommand;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC};

use client::Client;
use target::Target;

/// Bytes escaped in a query value or a path segment: all but RFC 3986's
/// unreserved ones, so a URL's own `?`, `&` and `#` stay inside the value
/// and a key's `/` inside its segment.
const ESCAPED: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

/// `stavka ctl`'s flags, shared by every command, and the command.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The admin API's host:port. Else $STAVKA_ADMIN, else listen.admin from
    /// --config, else 127.0.0.1:9090.
    #[arg(long, global = true, value_name = "ADDR")]
    admin: Option<String>,
    /// The bearer token. Else $STAVKA_ADMIN_TOKEN (preferable: a flag shows
    /// in `ps`), else admin.token or the variable admin.token_env names in
    /// --config.
    #[arg(long, global = true, value_name = "TOKEN")]
    token: Option<String>,
    /// Print the server's JSON (indented) instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// The admin API's operations.
#[derive(Debug, Subcommand)]
enum Command {
    /// Purge by URL, --prefix or --tag; --soft marks stale instead.
    Purge(purge::Args),
    /// Every stored entry of a URL, and a sliced object's blocks.
    Inspect {
        /// `https://host/path?query`, `//host/path` or `host/path`.
        url: String,
    },
    /// Requests, hit ratio, bytes, origin latency, store sizes and policy
    /// calls, since start and over the last 10 and 60 seconds.
    Stats,
    /// The policy modules: status, hash, mode, hooks, last load error.
    Policies,
    /// A policy module's key-value store.
    Kv {
        #[command(subcommand)]
        action: kv::Action,
    },
    /// Request rate, hit ratio, bytes/s and origin latency, redrawn every
    /// second.
    Top(top::Args),
    /// Recent events: purges, policy loads and rejections, circuit
    /// breakers, eviction spikes.
    Events(events::Args),
}

/// Run one `ctl` command against the admin API found from `args`, the
/// environment and the `--config` file.
pub fn run(args: Args, config: Option<&Path>) -> anyhow::Result<()> {
    let target = Target::resolve(args.admin, args.token, config)?;
    let client = Client::new(target);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the HTTP client's runtime")?;
    let json = args.json;
    runtime.block_on(async {
        let out = match &args.command {
            Command::Purge(purge) => purge::run(&client, purge, json).await?,
            Command::Inspect { url } => inspect::run(&client, url, json).await?,
            Command::Stats => stats::run(&client, json).await?,
            Command::Policies => policies::run(&client, json).await?,
            Command::Kv { action } => kv::run(&client, action, json).await?,
            Command::Events(events) => events::run(&client, events, json).await?,
            Command::Top(top) => return top::run(&client, top, json).await,
        };
        print(&out)
    })
}

/// Write `text` to standard output at once and flush it, so a live view
/// draws whole frames; a closed pipe (`| head`) is an error, not a panic.
fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
        .context("writing to standard output")
}
