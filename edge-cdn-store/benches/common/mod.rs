//! What the store's benchmarks share: a store on a directory, and a fill
//! of many 1 KiB objects through the `Storage` interface.

// Each bench uses its own subset of these.
#![allow(dead_code)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use bytesize::ByteSize;
use edge_cdn_store::{NoopObserver, StoreConfig, TieredStore};
use pingora_cache::key::CacheKey;
use pingora_cache::storage::Storage;
use pingora_cache::trace::Span;
use pingora_cache::CacheMeta;
use pingora_http::ResponseHeader;

/// Fills in flight at once.
const FILLERS: usize = 16;

/// Where a store keeps small objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Engine {
    /// The segment ring (the default).
    Ring,
    /// Two files per object.
    Files,
}

impl Engine {
    /// Its name in what a bench prints.
    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Ring => "segment ring",
            Engine::Files => "files",
        }
    }

    /// Its name in a child process's environment.
    pub fn label(self) -> &'static str {
        match self {
            Engine::Ring => "ring",
            Engine::Files => "files",
        }
    }

    /// Back from [`Engine::label`]; `None` for anything else.
    pub fn from_label(label: &str) -> Option<Engine> {
        [Engine::Ring, Engine::Files]
            .into_iter()
            .find(|e| e.label() == label)
    }
}

/// The engines the environment variable `var` names, comma-separated by
/// label (`ring,files`), or both.
///
/// # Panics
/// On a label that names no engine.
pub fn engines(var: &str) -> Vec<Engine> {
    match std::env::var(var) {
        Ok(labels) => labels
            .split(',')
            .map(|l| Engine::from_label(l.trim()).unwrap_or_else(|| panic!("{var}: no engine {l}")))
            .collect(),
        Err(_) => vec![Engine::Ring, Engine::Files],
    }
}

/// The environment variable `var` as a count, or `default`.
pub fn count(var: &str, default: usize) -> usize {
    std::env::var(var)
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(default)
}

/// A temporary directory under the directory the environment variable
/// `var` names, or under the system's.
pub fn scratch(var: &str) -> tempfile::TempDir {
    match std::env::var_os(var) {
        Some(parent) => tempfile::tempdir_in(parent),
        None => tempfile::tempdir(),
    }
    .unwrap()
}

/// A day-fresh JavaScript response with no tags: the meta of any object
/// `i`.
pub fn meta(_: usize) -> CacheMeta {
    let now = SystemTime::now();
    let mut header = ResponseHeader::build(200, None).unwrap();
    header
        .append_header("Cache-Control", "public, max-age=86400")
        .unwrap();
    header
        .append_header("Content-Type", "application/javascript")
        .unwrap();
    CacheMeta::new(now + Duration::from_secs(86400), now, 0, 0, header)
}

/// A store in `dir` with room for everything and no free-space floor,
/// keeping small objects in `engine`, for the rest of the process
/// (pingora wants `'static`).
pub fn open(dir: &Path, engine: Engine) -> &'static TieredStore {
    let config = StoreConfig {
        dir: dir.to_path_buf(),
        disk_bytes: ByteSize::gib(64),
        segment_bytes: match engine {
            Engine::Ring => Some(ByteSize::gib(16)),
            Engine::Files => Some(ByteSize::b(0)),
        },
        min_free_percent: 0,
        ..StoreConfig::default()
    };
    Box::leak(Box::new(
        TieredStore::open(config, Arc::new(NoopObserver)).unwrap(),
    ))
}

/// The key of object `i`.
pub fn key(i: usize) -> CacheKey {
    CacheKey::new(format!("www.example.com/o/{i:09}"), "www")
}

/// Store objects `0..n` of 1 KiB each, object `i` with `meta(i)`, from
/// [`FILLERS`] tasks.
pub async fn fill(
    store: &'static TieredStore,
    n: usize,
    meta: impl Fn(usize) -> CacheMeta + Clone + Send + 'static,
) {
    let body = Bytes::from(vec![7u8; 1024]);
    let fillers: Vec<_> = (0..FILLERS)
        .map(|t| {
            let body = body.clone();
            let meta = meta.clone();
            tokio::spawn(async move {
                let span = Span::inactive().handle();
                for i in (t..n).step_by(FILLERS) {
                    let mut miss = store
                        .get_miss_handler(&key(i), &meta(i), &span)
                        .await
                        .unwrap();
                    miss.write_body(body.clone(), true).await.unwrap();
                    miss.finish().await.unwrap();
                }
            })
        })
        .collect();
    for filler in fillers {
        filler.await.unwrap();
    }
}
