//! `stavka ctl kv`: a policy module's key-value store under
//! `/policies/{module}/kv`, which its guest reads with `host.kv-get`.

use std::collections::BTreeMap;

use clap::Subcommand;
use percent_encoding::utf8_percent_encode;

use super::client::Client;
use super::table::{Align, Table};

/// What to do with the store.
#[derive(Debug, Subcommand)]
pub enum Action {
    /// Print one value (`--json`: as a JSON string).
    Get {
        /// The module (its file name without `.wasm`).
        module: String,
        /// The key.
        key: String,
    },
    /// Set a value; a running module sees it on its next call.
    Put {
        /// The module.
        module: String,
        /// The key.
        key: String,
        /// The value, as text.
        value: String,
    },
    /// Remove a value.
    Del {
        /// The module.
        module: String,
        /// The key.
        key: String,
    },
    /// Every entry, by key.
    List {
        /// The module.
        module: String,
    },
}

/// `/policies/{module}/kv`, then `/{key}` if given, each segment escaped.
fn path(module: &str, key: Option<&str>) -> String {
    let segment = |s: &str| utf8_percent_encode(s, super::ESCAPED).to_string();
    let mut path = format!("/policies/{}/kv", segment(module));
    if let Some(key) = key {
        path.push('/');
        path.push_str(&segment(key));
    }
    path
}

/// Run `action`. The API answers `put` and `del` with no body, so with
/// `--json` they print nothing; success is the exit status.
pub async fn run(client: &Client, action: &Action, json: bool) -> anyhow::Result<String> {
    match action {
        Action::Get { module, key } => {
            let value = client.get(&path(module, Some(key))).await?.text()?;
            Ok(if json {
                format!("{}\n", serde_json::Value::String(value))
            } else {
                format!("{value}\n")
            })
        }
        Action::Put { module, key, value } => {
            client
                .put_text(&path(module, Some(key)), value.clone())
                .await?;
            Ok(if json {
                String::new()
            } else {
                format!("set {key:?} in {module}\n")
            })
        }
        Action::Del { module, key } => {
            client.delete(&path(module, Some(key))).await?;
            Ok(if json {
                String::new()
            } else {
                format!("deleted {key:?} from {module}\n")
            })
        }
        Action::List { module } => {
            let reply = client.get(&path(module, None)).await?;
            if json {
                return reply.pretty();
            }
            let entries: BTreeMap<String, String> = reply.json()?;
            if entries.is_empty() {
                return Ok(format!("no entries in {module}\n"));
            }
            let mut table = Table::new(&[("KEY", Align::Left), ("VALUE", Align::Left)]);
            for (key, value) in entries {
                table.row(vec![key, value.replace('\n', "\\n")]);
            }
            Ok(table.render())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_are_one_path_segment() {
        assert_eq!(path("p", None), "/policies/p/kv");
        assert_eq!(path("p", Some("a/b c")), "/policies/p/kv/a%2Fb%20c");
    }
}
