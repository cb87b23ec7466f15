//! `stavka ctl policies`: `GET /policies`, one row per module.

use serde::Deserialize;

use super::client::Client;
use super::format;
use super::table::{Align, Table};

/// `#/components/schemas/Policies`.
#[derive(Debug, Deserialize)]
struct Policies {
    dir: String,
    modules: Vec<Module>,
}

/// `#/components/schemas/Module`: a failed module has only `name`,
/// `status` and `last_error`.
#[derive(Debug, Deserialize)]
struct Module {
    name: String,
    status: String,
    hash: Option<String>,
    mode: Option<String>,
    #[serde(default)]
    hooks: Vec<String>,
    last_error: Option<String>,
}

/// The modules, as a table or the API's JSON.
pub async fn run(client: &Client, json: bool) -> anyhow::Result<String> {
    let reply = client.get("/policies").await?;
    if json {
        return reply.pretty();
    }
    let policies: Policies = reply.json()?;
    let mut out = format!("dir: {}\n", policies.dir);
    if policies.modules.is_empty() {
        out.push_str("no modules\n");
        return Ok(out);
    }
    let mut table = Table::new(&[
        ("NAME", Align::Left),
        ("STATUS", Align::Left),
        ("HASH", Align::Left),
        ("MODE", Align::Left),
        ("HOOKS", Align::Left),
        ("LAST ERROR", Align::Left),
    ]);
    for m in policies.modules {
        table.row(vec![
            m.name,
            m.status,
            format::or_dash(m.hash.as_deref()),
            format::or_dash(m.mode.as_deref()),
            format::or_dash(Some(&m.hooks.join(","))),
            // One line per module: compile errors span several.
            format::or_dash(m.last_error.as_deref())
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" "),
        ]);
    }
    out.push_str(&table.render());
    Ok(out)
}
