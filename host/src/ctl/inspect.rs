//! `stavka ctl inspect URL`: `GET /inspect`, each stored entry of a URL
//! and, for a sliced object, its record and which blocks are stored.

use serde::Deserialize;

use super::client::Client;
use super::format;
use super::table::{Align, Table};

/// `#/components/schemas/Inspection`.
#[derive(Debug, Deserialize)]
struct Inspection {
    url: String,
    site: String,
    host: String,
    target: String,
    entries: Vec<Entry>,
    slice: Option<Slice>,
}

/// `#/components/schemas/Slice`.
#[derive(Debug, Deserialize)]
struct Slice {
    record: Option<Entry>,
    blocks_stored: u64,
    blocks: Vec<[u64; 2]>,
}

/// The fields of `#/components/schemas/Entry` a table shows.
#[derive(Debug, Deserialize)]
struct Entry {
    variant: Option<String>,
    status: u16,
    age_seconds: u64,
    ttl_seconds: u64,
    state: String,
    tier: String,
    size_bytes: u64,
    tags: Vec<String>,
}

/// The inspection of `url`, as a table or the API's JSON.
pub async fn run(client: &Client, url: &str, json: bool) -> anyhow::Result<String> {
    let query: String = percent_encoding::utf8_percent_encode(url, super::ESCAPED).collect();
    let reply = client.get(&format!("/inspect?url={query}")).await?;
    if json {
        return reply.pretty();
    }
    Ok(render(&reply.json()?))
}

fn render(inspection: &Inspection) -> String {
    let mut out = format!(
        "url     {}\nsite    {}\nhost    {}\ntarget  {}\n\n",
        inspection.url, inspection.site, inspection.host, inspection.target
    );
    let mut table = entries_table();
    for entry in &inspection.entries {
        let variant = entry.variant.as_deref().map_or("primary", short_hash);
        table.row(entry_row(variant, entry));
    }
    if let Some(record) = inspection.slice.as_ref().and_then(|s| s.record.as_ref()) {
        table.row(entry_row("slice record", record));
    }
    let has_rows = !inspection.entries.is_empty()
        || inspection
            .slice
            .as_ref()
            .is_some_and(|s| s.record.is_some());
    if has_rows {
        out.push_str(&table.render());
    } else {
        out.push_str("no stored entries\n");
    }
    if let Some(slice) = &inspection.slice {
        if slice.record.is_none() {
            out.push_str("slice record: none (only blocks remain)\n");
        }
        out.push_str(&format!(
            "slice blocks: {} stored: {}\n",
            slice.blocks_stored,
            runs(&slice.blocks)
        ));
    }
    out
}

fn entries_table() -> Table {
    Table::new(&[
        ("ENTRY", Align::Left),
        ("STATUS", Align::Right),
        ("AGE", Align::Right),
        ("TTL", Align::Right),
        ("STATE", Align::Left),
        ("TIER", Align::Left),
        ("SIZE", Align::Right),
        ("TAGS", Align::Left),
    ])
}

fn entry_row(label: &str, entry: &Entry) -> Vec<String> {
    vec![
        label.to_owned(),
        entry.status.to_string(),
        format::seconds(entry.age_seconds),
        format::seconds(entry.ttl_seconds),
        entry.state.clone(),
        entry.tier.clone(),
        format::bytes(entry.size_bytes),
        format::or_dash(Some(&entry.tags.join(","))),
    ]
}

/// The first 12 hex digits of a variance hash: enough to tell variants apart.
fn short_hash(variant: &str) -> &str {
    variant.get(..12).unwrap_or(variant)
}

/// `0-4, 9`, or `none`.
fn runs(blocks: &[[u64; 2]]) -> String {
    if blocks.is_empty() {
        return "none".to_owned();
    }
    blocks
        .iter()
        .map(|[a, b]| {
            if a == b {
                a.to_string()
            } else {
                format!("{a}-{b}")
            }
        })
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sliced_object_shows_its_record_and_runs() {
        let inspection: Inspection = serde_json::from_value(serde_json::json!({
            "url": "t/big", "site": "test", "host": "t", "target": "/big",
            "entries": [],
            "slice": {
                "record": { "variant": null, "status": 200, "age_seconds": 3,
                            "ttl_seconds": 57, "state": "fresh", "tier": "disk",
                            "size_bytes": 900, "tags": [] },
                "blocks_stored": 6, "blocks": [[0, 4], [9, 9]]
            }
        }))
        .unwrap();
        let out = render(&inspection);
        assert!(out.contains("slice record  "), "{out}");
        assert!(out.contains("slice blocks: 6 stored: 0-4, 9"), "{out}");
    }
}
