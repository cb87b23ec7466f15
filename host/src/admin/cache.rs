//! `/purge` and `/inspect`: steering and looking into the cache by URL,
//! URL prefix and surrogate tag.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{Query, State};
use axum::Json;
use edge_cdn_store::{Listed, Selector};
use serde::{Deserialize, Serialize};

use super::error::ApiError;
use super::AdminState;
use crate::cache::key::{self, cache_key};
use crate::cache::store::{PurgeMode, PurgeSelector};
use crate::events::EventKind;
use crate::host_name;
use pingora_cache::key::CacheHashKey;

/// A purge request: exactly one of `url`, `prefix` and `tag`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PurgeRequest {
    url: Option<String>,
    prefix: Option<String>,
    tag: Option<String>,
    #[serde(default)]
    soft: bool,
}

/// What a purge did: `#/components/schemas/PurgeReport`.
#[derive(Debug, Serialize)]
pub struct PurgeReport {
    /// `url`, `prefix` or `tag`.
    selector: &'static str,
    /// The URL, prefix or tag as given.
    value: String,
    /// `hard` (removed) or `soft` (marked stale).
    mode: &'static str,
    /// Entries the selector matched in the catalog.
    matched: usize,
    /// Entries removed or marked stale (fewer if some went meanwhile).
    purged: usize,
    /// How long the purge took.
    took_ms: f64,
    /// `local` (no purge bus), `sent` (handed to every other node) or
    /// `failed: why` (applied here only).
    cluster: String,
}

/// Every stored entry of a URL: `#/components/schemas/Inspection`.
#[derive(Debug, Serialize)]
pub struct Inspection {
    /// The URL as given.
    url: String,
    /// The site serving its host.
    site: String,
    /// The host, as the cache key holds it.
    host: String,
    /// Path and query, as the cache key holds it.
    target: String,
    /// One per stored Vary variant.
    entries: Vec<Entry>,
    /// Its record and stored blocks, when it is a sliced object.
    #[serde(skip_serializing_if = "Option::is_none")]
    slice: Option<SliceState>,
}

/// A sliced object as stored: `#/components/schemas/Slice`.
#[derive(Debug, Serialize)]
struct SliceState {
    record: Option<Entry>,
    blocks_stored: usize,
    /// Inclusive runs of stored block indices.
    blocks: Vec<[u64; 2]>,
}

/// One stored entry: `#/components/schemas/Entry`.
#[derive(Debug, Serialize)]
struct Entry {
    target: Option<String>,
    variant: Option<String>,
    status: u16,
    headers: Vec<(String, String)>,
    created: String,
    age_seconds: u64,
    state: Freshness,
    ttl_seconds: u64,
    stale_while_revalidate_seconds: u32,
    stale_if_error_seconds: u32,
    stale_while_revalidate_remaining_seconds: u64,
    stale_if_error_remaining_seconds: u64,
    tags: Vec<String>,
    size_bytes: u64,
    tier: &'static str,
}

/// Which of its lifetimes (RFC 9111, RFC 5861) an entry is in now.
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(rename_all = "kebab-case")]
enum Freshness {
    /// Served as is.
    Fresh,
    /// Served while one request revalidates it.
    StaleWhileRevalidate,
    /// Served only if the origin fails.
    StaleIfError,
    /// Not served without revalidation.
    Stale,
}

/// A URL as an operator writes it, resolved to the cache's terms.
struct Located {
    site: String,
    host: String,
    target: String,
}

impl Located {
    /// The primary key bytes of exactly this URL.
    fn primary(&self) -> Vec<u8> {
        key::primary(&self.site, &self.host, &self.target)
    }
}

/// Accept `https://host/path?q`, `http://…`, `//host/path` or `host/path`;
/// the scheme is not part of the cache key. `default_target` is the path
/// of a bare host: `/` for a URL, empty (everything) for a prefix.
fn locate(state: &AdminState, url: &str, default_target: &str) -> Result<Located, ApiError> {
    let lower = url.get(..8).unwrap_or(url).to_ascii_lowercase();
    let rest = if lower.starts_with("https://") {
        &url[8..]
    } else if lower.starts_with("http://") {
        &url[7..]
    } else {
        url.strip_prefix("//").unwrap_or(url)
    };
    let split = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, target) = rest.split_at(split);
    let host = host_name::normalize(authority).into_owned();
    if host.is_empty() {
        return Err(ApiError::BadRequest(format!("{url:?} names no host")));
    }
    let target = match target {
        "" => default_target.to_owned(),
        t if t.starts_with('?') => format!("/{t}"),
        t => t.to_owned(),
    };
    let sites = state.sites.load();
    let site = sites
        .route(Some(&host))
        .ok_or_else(|| ApiError::BadRequest(format!("no site serves host {host:?}")))?;
    Ok(Located {
        site: site.name.clone(),
        host,
        target,
    })
}

/// Purge by URL (every Vary variant), prefix or tag, hard or soft.
pub async fn purge(
    State(state): State<Arc<AdminState>>,
    request: Result<Json<PurgeRequest>, JsonRejection>,
) -> Result<Json<PurgeReport>, ApiError> {
    let Json(request) = request?;
    let started = Instant::now();
    let (value, selector) = match (request.url, request.prefix, request.tag) {
        (Some(url), None, None) => {
            let primary = locate(&state, &url, "/")?.primary();
            (url, PurgeSelector::Url(primary))
        }
        (None, Some(prefix), None) => {
            let at = locate(&state, &prefix, "")?;
            let bytes = key::primary(&at.site, &at.host, &at.target);
            (prefix, PurgeSelector::Prefix(bytes))
        }
        (None, None, Some(tag)) if !tag.trim().is_empty() => {
            let trimmed = tag.trim().to_owned();
            (tag, PurgeSelector::Tag(trimmed))
        }
        _ => {
            return Err(ApiError::BadRequest(
                "give exactly one of \"url\", \"prefix\" and \"tag\"".into(),
            ))
        }
    };
    let mode = if request.soft {
        PurgeMode::Soft
    } else {
        PurgeMode::Hard
    };
    let objects = state
        .store
        .select_by(&selector)
        .await
        .map_err(ApiError::catalog)?;
    let matched = objects.len();
    let purged = state.store.purge(objects, mode).await;
    let kind = selector.kind();
    // Applied here first (a hard purge also deletes the shared tier's
    // copy), then sent: another node that misses after applying it finds
    // no shared copy either.
    let cluster = match &state.purge_bus {
        None => "local".to_owned(),
        Some(bus) => match bus.publish(selector, mode).await {
            Ok(()) => "sent".to_owned(),
            Err(why) => format!("failed: {why}"),
        },
    };
    let selector = kind;
    let report = PurgeReport {
        selector,
        value,
        mode: match mode {
            PurgeMode::Hard => "hard",
            PurgeMode::Soft => "soft",
        },
        matched,
        purged,
        took_ms: started.elapsed().as_secs_f64() * 1000.0,
        cluster,
    };
    tracing::info!(selector, value = %report.value, mode = report.mode, matched, purged, cluster = %report.cluster, "purge");
    state.metrics.events.record(
        EventKind::Purge,
        format!("{selector} {}", report.value),
        format!("{}: matched {matched}, purged {purged}", report.mode),
    );
    Ok(Json(report))
}

/// `?url=`: the URL to inspect.
#[derive(Debug, Deserialize)]
pub struct InspectQuery {
    url: String,
}

/// Every stored entry (Vary variant) of a URL, as the cache holds it.
pub async fn inspect(
    State(state): State<Arc<AdminState>>,
    query: Result<Query<InspectQuery>, QueryRejection>,
) -> Result<Json<Inspection>, ApiError> {
    let Query(query) = query?;
    let at = locate(&state, &query.url, "/")?;
    let primary = at.primary();
    let hash = cache_key(&at.site, &at.host, &at.target).primary_bin();
    let mut entries = Vec::new();
    let objects = state
        .store
        .select(Selector::Primary(&hash))
        .await
        .map_err(ApiError::catalog)?;
    for object in objects {
        if let Some(entry) = describe(&state, &object).await {
            entries.push(entry);
        }
    }
    let slice = slice_state(&state, &primary).await;
    Ok(Json(Inspection {
        url: query.url,
        site: at.site,
        host: at.host,
        target: at.target,
        entries,
        slice,
    }))
}

/// The record and stored blocks of the sliced object `primary`, if any;
/// only the record is read from the store, blocks are counted from the
/// catalog.
async fn slice_state(state: &AdminState, primary: &[u8]) -> Option<SliceState> {
    let prefix = key::slice_prefix(primary);
    let objects = match state.store.select(Selector::Prefix(&prefix)).await {
        Ok(objects) if !objects.is_empty() => objects,
        Ok(_) => return None,
        Err(error) => {
            tracing::warn!(%error, "slice blocks not listed: the store's catalog did not read");
            return None;
        }
    };
    let mut indices: Vec<u64> = objects
        .iter()
        .filter_map(|o| key::slice_block_index(primary, &o.primary_key))
        .collect();
    indices.sort_unstable();
    let mut blocks: Vec<[u64; 2]> = Vec::new();
    for i in &indices {
        match blocks.last_mut() {
            Some(run) if run[1] + 1 == *i => run[1] = *i,
            _ => blocks.push([*i, *i]),
        }
    }
    let record = match objects.iter().find(|o| *o.primary_key == *prefix) {
        Some(object) => describe(state, object).await,
        None => None,
    };
    Some(SliceState {
        record,
        blocks_stored: indices.len(),
        blocks,
    })
}

/// One entry: status, stored headers, age, remaining freshness, the
/// stale windows (RFC 5861) and which one applies now, tags, size, tier.
async fn describe(state: &AdminState, object: &Listed) -> Option<Entry> {
    let described = state.store.describe(object).await?;
    let meta = &described.meta;
    let now = SystemTime::now();
    let fresh_until = meta.fresh_until();
    let seconds_after = |t: SystemTime| t.duration_since(now).map_or(0, |d| d.as_secs());
    let swr = meta.stale_while_revalidate_sec();
    let sie = meta.stale_if_error_sec();
    let state_now = if meta.is_fresh(now) {
        Freshness::Fresh
    } else if meta.serve_stale_while_revalidate(now) {
        Freshness::StaleWhileRevalidate
    } else if meta.serve_stale_if_error(now) {
        Freshness::StaleIfError
    } else {
        Freshness::Stale
    };
    let header = meta.response_header();
    let headers = super::report::field_pairs(&header.headers);
    let target = key::parts(&object.primary_key).map(|(_, _, t)| t.to_owned());
    Some(Entry {
        target,
        variant: object.key.variance.as_ref().map(|v| hex(v.as_ref())),
        status: header.status.as_u16(),
        headers,
        created: httpdate::fmt_http_date(meta.created()),
        age_seconds: meta.age().as_secs(),
        state: state_now,
        ttl_seconds: seconds_after(fresh_until),
        stale_while_revalidate_seconds: swr,
        stale_if_error_seconds: sie,
        stale_while_revalidate_remaining_seconds: seconds_after(
            fresh_until + std::time::Duration::from_secs(swr.into()),
        ),
        stale_if_error_remaining_seconds: seconds_after(
            fresh_until + std::time::Duration::from_secs(sie.into()),
        ),
        tags: object.tags.iter().map(|t| t.to_string()).collect(),
        size_bytes: described.size,
        tier: described.tier.as_str(),
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
