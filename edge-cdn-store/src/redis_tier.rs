//! [`RedisTier`]: the shared tier on Redis or Redis Cluster (cargo feature
//! `redis`), through the `redis` crate: a reconnecting multiplexed
//! connection for a standalone server, the async cluster client for a
//! cluster.
//!
//! # Layout
//!
//! For an object whose cache-key hash is `h` (32 hex digits), written with a
//! random version `v` (16 hex digits, new for every write), under the
//! configured `key_prefix` `p`:
//!
//! - `p{h}:v:n` — body chunk `n` (from 0), `chunk_size` bytes each but the
//!   last. Written first.
//! - `p{h}:m` — the meta, written **last**: magic and format, `v`, the body
//!   length, the chunk size and count, and pingora's two meta blobs.
//!
//! A reader finds the meta, then the chunks *of that version*, so it never
//! sees a half-written object: until the meta names them, a write's chunks
//! are invisible, and a newer write's chunks never mix with an older
//! object's. Before a lookup answers, every chunk is checked to exist (one
//! `EXISTS` with the first chunk's `GET`, in one round trip); a missing one
//! — evicted by Redis, or expired — makes the lookup a miss. A chunk that
//! vanishes later, or has the wrong length, is an error mid-body, never a
//! clean short one.
//!
//! The braces are a Redis Cluster hash tag: one object's meta and chunks
//! hash to one slot, so they live on one node and a lookup's pipeline
//! goes to one place.
//!
//! Every key has a Redis TTL: the meta the object's stale horizon (the
//! `ttl` the store passes), each chunk that horizon plus a second, counted
//! from one deadline taken when the put began, so chunks written before
//! the meta never expire before it. When a write replaces an object, the
//! old version's chunks are given [`REPLACED_GRACE`] to live, for readers
//! still streaming them. A delete removes the meta, then that version's
//! chunks. Needs Redis 6.2 or later (`SET … GET`, `GETDEL`).
//!
//! # Failures
//!
//! Each round trip is bounded by `timeout` and goes through a [`Breaker`]:
//! after `breaker_failures` consecutive failures (connection errors,
//! timeouts, cluster errors — not the server refusing one command) calls
//! fail at once for `breaker_cooldown`, then one probe decides. Nothing
//! connects at construction: a tier created while Redis is down works
//! once it is up.

use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use bytes::{Bytes, BytesMut};
use bytesize::ByteSize;
use redis::aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig};
use redis::cluster::{ClusterClient, ClusterClientBuilder};
use redis::cluster_async::ClusterConnection;
use redis::{Cmd, ErrorKind, Pipeline, RedisError, RedisFuture, Value};
use serde::Deserialize;
use tokio::sync::OnceCell;
use tokio::task::JoinHandle;

use crate::breaker::{Breaker, BreakerState, SharedOp};
use crate::observer::StoreObserver;
use crate::shared::{BytesBody, SharedBody, SharedError, SharedHit, SharedMeta, SharedTier};

/// How long the chunks of an object replaced by a newer write live on, for
/// readers streaming them when it was replaced.
const REPLACED_GRACE: Duration = Duration::from_secs(30);

/// How much longer than the meta each chunk lives, so chunks written
/// before it never expire first.
const CHUNK_GRACE: Duration = Duration::from_secs(1);

/// The largest `chunk_size` (Redis's own limit for a value is 512 MiB).
const MAX_CHUNK: u64 = 64 * 1024 * 1024;

/// Where the Redis servers are.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum RedisServers {
    /// One standalone server (or a proxy in front of several), as a URL:
    /// `redis://[user:password@]host:port[/db]`.
    Standalone(String),
    /// The seed nodes of a Redis Cluster, as URLs; the client discovers
    /// the rest and follows slot moves.
    Cluster(Vec<String>),
}

/// How [`RedisTier`] reaches Redis and lays objects out (serde, every field
/// defaulted).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    /// A URL for a standalone server, or a list of URLs for the nodes of a
    /// cluster. Default `redis://127.0.0.1:6379`.
    pub servers: RedisServers,
    /// Put before every key, to share a Redis with others. Default
    /// `stavka:`.
    pub key_prefix: String,
    /// Body chunk size: a body is written and read this much per key and
    /// per round trip. Default `256KiB`, at most `64MiB`.
    pub chunk_size: ByteSize,
    /// Each round trip (and each connection attempt) fails after this
    /// long. Default `250ms`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Consecutive failures that open the circuit breaker. Default 5.
    pub breaker_failures: u32,
    /// How long an open breaker fails calls at once before one probe.
    /// Default `5s`.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
}

impl Default for RedisConfig {
    fn default() -> Self {
        RedisConfig {
            servers: RedisServers::Standalone("redis://127.0.0.1:6379".into()),
            key_prefix: "stavka:".into(),
            chunk_size: ByteSize::kib(256),
            timeout: Duration::from_millis(250),
            breaker_failures: 5,
            breaker_cooldown: Duration::from_secs(5),
        }
    }
}

impl RedisConfig {
    /// Problems with the values, each naming its field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if let RedisServers::Cluster(nodes) = &self.servers {
            if nodes.is_empty() {
                out.push(("servers", "names no cluster node".into()));
            }
        }
        let chunk = self.chunk_size.as_u64();
        if chunk == 0 || chunk > MAX_CHUNK {
            out.push(("chunk_size", "must be between 1 byte and 64MiB".into()));
        }
        if self.timeout.is_zero() {
            out.push(("timeout", "must be greater than 0".into()));
        }
        if self.key_prefix.contains(['{', '}']) {
            out.push((
                "key_prefix",
                "may not contain braces (they would change the cluster hash tag)".into(),
            ));
        }
        if self.breaker_failures == 0 {
            out.push(("breaker_failures", "must be at least 1".into()));
        }
        out
    }
}

/// Why a [`RedisTier`] could not be created.
#[derive(Debug, thiserror::Error)]
pub enum RedisTierError {
    /// A configuration value is out of range.
    #[error("redis tier: {0}: {1}")]
    Config(&'static str, String),
    /// The client refused the server addresses.
    #[error("redis tier: {0}")]
    Client(#[from] RedisError),
}

/// How one object is laid out: which version, how its body is cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    version: u64,
    body_len: u64,
    chunk_size: u32,
    chunks: u32,
}

/// The meta value's magic and format.
const MAGIC: &[u8; 4] = b"SKV1";
/// Magic, version, body length, chunk size and count, blob lengths.
const META_FIXED: usize = 4 + 8 + 8 + 4 + 4 + 4 + 4;

impl Layout {
    /// The length chunk `n` must have.
    fn chunk_len(&self, n: u32) -> usize {
        let size = u64::from(self.chunk_size);
        let start = u64::from(n) * size;
        self.body_len.saturating_sub(start).min(size) as usize
    }

    /// The meta value for this layout and pingora's blobs.
    fn encode(&self, internal: &[u8], header: &[u8]) -> Vec<u8> {
        let mut out = Vec::with_capacity(META_FIXED + internal.len() + header.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.body_len.to_be_bytes());
        out.extend_from_slice(&self.chunk_size.to_be_bytes());
        out.extend_from_slice(&self.chunks.to_be_bytes());
        out.extend_from_slice(&(internal.len() as u32).to_be_bytes());
        out.extend_from_slice(&(header.len() as u32).to_be_bytes());
        out.extend_from_slice(internal);
        out.extend_from_slice(header);
        out
    }

    /// A meta value read back: the layout and pingora's blobs (slices of
    /// `value`); `None` if it is not one this format wrote.
    fn decode(value: &Bytes) -> Option<(Layout, Bytes, Bytes)> {
        if value.len() < META_FIXED || &value[..4] != MAGIC {
            return None;
        }
        let u64_at = |at: usize| u64::from_be_bytes(value[at..at + 8].try_into().unwrap());
        let u32_at = |at: usize| u32::from_be_bytes(value[at..at + 4].try_into().unwrap());
        let layout = Layout {
            version: u64_at(4),
            body_len: u64_at(12),
            chunk_size: u32_at(20),
            chunks: u32_at(24),
        };
        let (internal_len, header_len) = (u32_at(28) as usize, u32_at(32) as usize);
        if layout.chunk_size == 0
            || u64::from(layout.chunks) != layout.body_len.div_ceil(u64::from(layout.chunk_size))
            || value.len() != META_FIXED + internal_len + header_len
        {
            return None;
        }
        let internal = value.slice(META_FIXED..META_FIXED + internal_len);
        let header = value.slice(META_FIXED + internal_len..);
        Some((layout, internal, header))
    }
}

/// A new write's version: random, so two writers of one object never
/// share chunk keys.
fn new_version() -> u64 {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    RandomState::new().hash_one((
        COUNTER.fetch_add(1, Ordering::Relaxed),
        std::process::id(),
        Instant::now(),
    ))
}

/// Milliseconds from now until `deadline` plus `grace`; `None` if the
/// deadline has passed.
fn px(deadline: Instant, grace: Duration) -> Option<u64> {
    let left = deadline.checked_duration_since(Instant::now())?;
    let ms = (left + grace).as_millis();
    (ms > 0).then(|| u64::try_from(ms).unwrap_or(u64::MAX))
}

/// Whether `error` says the tier is unreachable (what the breaker counts),
/// rather than that a server refused one command.
fn is_outage(error: &RedisError) -> bool {
    error.is_io_error()
        || error.is_timeout()
        || error.is_connection_dropped()
        || error.is_connection_refusal()
        || error.is_cluster_error()
        || error.kind() == ErrorKind::ClusterConnectionNotFound
}

/// The two kinds of connection, as one.
#[derive(Clone)]
enum Conn {
    Standalone(ConnectionManager),
    Cluster(ClusterConnection),
}

impl ConnectionLike for Conn {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match self {
            Conn::Standalone(c) => c.req_packed_command(cmd),
            Conn::Cluster(c) => c.req_packed_command(cmd),
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match self {
            Conn::Standalone(c) => c.req_packed_commands(pipeline, offset, count),
            Conn::Cluster(c) => c.req_packed_commands(pipeline, offset, count),
        }
    }

    fn get_db(&self) -> i64 {
        match self {
            Conn::Standalone(c) => c.get_db(),
            Conn::Cluster(c) => c.get_db(),
        }
    }
}

enum Backend {
    /// Reconnects by itself in the background after an I/O error.
    Standalone(ConnectionManager),
    /// Connected on first use (and again after a failed first connection);
    /// from then on the cluster connection follows the topology itself.
    Cluster {
        client: Box<ClusterClient>,
        conn: OnceCell<ClusterConnection>,
    },
}

struct Inner {
    backend: Backend,
    breaker: Breaker,
    prefix: String,
    chunk_size: usize,
    timeout: Duration,
}

/// The meta key of `hash`: `prefix{hash}:m`.
fn meta_key(prefix: &str, hash: u128) -> String {
    format!("{prefix}{{{hash:032x}}}:m")
}

/// The key of chunk `n` of `hash`'s write `version`: `prefix{hash}:version:n`.
fn chunk_key(prefix: &str, hash: u128, version: u64, n: u32) -> String {
    format!("{prefix}{{{hash:032x}}}:{version:016x}:{n}")
}

impl Inner {
    fn meta_key(&self, hash: u128) -> String {
        meta_key(&self.prefix, hash)
    }

    fn chunk_key(&self, hash: u128, version: u64, n: u32) -> String {
        chunk_key(&self.prefix, hash, version, n)
    }

    fn chunk_keys(&self, hash: u128, layout: &Layout) -> Vec<String> {
        (0..layout.chunks)
            .map(|n| self.chunk_key(hash, layout.version, n))
            .collect()
    }

    async fn conn(&self) -> Result<Conn, RedisError> {
        match &self.backend {
            Backend::Standalone(manager) => Ok(Conn::Standalone(manager.clone())),
            Backend::Cluster { client, conn } => {
                let conn = conn
                    .get_or_try_init(|| client.get_async_connection())
                    .await?;
                Ok(Conn::Cluster(conn.clone()))
            }
        }
    }

    /// One round trip, `work` on a connection: through the breaker and
    /// bounded by the timeout.
    ///
    /// # Cancel safety
    ///
    /// Dropped, the breaker counts it as a failure (see [`Breaker`]).
    async fn call<T, F, Fut>(&self, op: SharedOp, work: F) -> Result<T, SharedError>
    where
        F: FnOnce(Conn) -> Fut,
        Fut: Future<Output = Result<T, RedisError>>,
    {
        let attempt = self.breaker.attempt(op)?;
        let trip = async { work(self.conn().await?).await };
        match tokio::time::timeout(self.timeout, trip).await {
            Ok(Ok(value)) => {
                attempt.succeeded();
                Ok(value)
            }
            Ok(Err(e)) => {
                if is_outage(&e) {
                    attempt.failed();
                } else {
                    attempt.succeeded();
                }
                Err(SharedError::Unavailable(e.to_string()))
            }
            Err(_) => {
                attempt.failed();
                Err(SharedError::Timeout)
            }
        }
    }

    /// `GET key` as bytes.
    async fn get_bytes(&self, op: SharedOp, key: String) -> Result<Option<Bytes>, SharedError> {
        self.call(op, |mut conn| async move {
            redis::cmd("GET").arg(&key).query_async(&mut conn).await
        })
        .await
    }

    /// Write chunk `n` of `version`; false if the deadline has passed.
    async fn set_chunk(
        &self,
        hash: u128,
        version: u64,
        n: u32,
        chunk: Bytes,
        deadline: Instant,
    ) -> Result<bool, SharedError> {
        let Some(ms) = px(deadline, CHUNK_GRACE) else {
            return Ok(false);
        };
        let key = self.chunk_key(hash, version, n);
        self.call(SharedOp::Put, |mut conn| async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(&chunk[..])
                .arg("PX")
                .arg(ms)
                .exec_async(&mut conn)
                .await
        })
        .await?;
        Ok(true)
    }
}

/// The shared tier on Redis or Redis Cluster; see the module documentation
/// for the layout and the failure handling.
pub struct RedisTier {
    inner: Arc<Inner>,
}

impl RedisTier {
    /// A tier on the servers `config` names, reporting failures and breaker
    /// changes to `observer` (give it the store's). Connects lazily, so it
    /// succeeds while Redis is down; it fails only on a bad configuration
    /// or URL. Call it within a tokio runtime: the standalone connection
    /// keeps a task there.
    pub fn new(
        config: &RedisConfig,
        observer: Arc<dyn StoreObserver>,
    ) -> Result<RedisTier, RedisTierError> {
        if let Some((field, problem)) = config.problems().into_iter().next() {
            return Err(RedisTierError::Config(field, problem));
        }
        let backend = match &config.servers {
            RedisServers::Standalone(url) => {
                let client = redis::Client::open(url.as_str())?;
                let manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(config.timeout))
                    .set_response_timeout(Some(config.timeout))
                    .set_number_of_retries(2)
                    .set_min_delay(Duration::from_millis(50))
                    .set_max_delay(Duration::from_secs(1));
                Backend::Standalone(ConnectionManager::new_lazy_with_config(client, manager)?)
            }
            RedisServers::Cluster(nodes) => {
                let client = ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                    .connection_timeout(config.timeout)
                    .response_timeout(config.timeout)
                    .retries(2)
                    .build()?;
                Backend::Cluster {
                    client: Box::new(client),
                    conn: OnceCell::new(),
                }
            }
        };
        Ok(RedisTier {
            inner: Arc::new(Inner {
                backend,
                breaker: Breaker::new(config.breaker_failures, config.breaker_cooldown, observer),
                prefix: config.key_prefix.clone(),
                chunk_size: config.chunk_size.as_u64() as usize,
                timeout: config.timeout,
            }),
        })
    }

    /// Where the circuit breaker stands.
    pub fn breaker_state(&self) -> BreakerState {
        self.inner.breaker.state()
    }

    /// The meta key of `hash` (for operators and tests).
    pub fn meta_key(&self, hash: u128) -> String {
        self.inner.meta_key(hash)
    }

    /// Write `body` as chunks of `version`; returns the layout, or `None`
    /// if the deadline passed while writing.
    async fn write_chunks(
        &self,
        hash: u128,
        version: u64,
        body_len: u64,
        body: &mut dyn SharedBody,
        deadline: Instant,
    ) -> Result<Option<Layout>, SharedError> {
        let inner = &self.inner;
        let size = inner.chunk_size;
        let mut pending = BytesMut::new();
        let (mut n, mut total) = (0u32, 0u64);
        loop {
            let next = body.next_chunk().await?;
            let end = next.is_none();
            if let Some(mut data) = next {
                total += data.len() as u64;
                if total > body_len {
                    return Err(SharedError::Source(format!(
                        "body longer than its {body_len} bytes"
                    )));
                }
                // Whole chunks of an aligned body go as they are, uncopied.
                while pending.is_empty() && data.len() >= size {
                    if !inner
                        .set_chunk(hash, version, n, data.split_to(size), deadline)
                        .await?
                    {
                        return Ok(None);
                    }
                    n += 1;
                }
                pending.extend_from_slice(&data);
            }
            while pending.len() >= size || (end && !pending.is_empty()) {
                let chunk = pending.split_to(pending.len().min(size)).freeze();
                if !inner.set_chunk(hash, version, n, chunk, deadline).await? {
                    return Ok(None);
                }
                n += 1;
            }
            if end {
                break;
            }
        }
        if total != body_len {
            return Err(SharedError::Source(format!(
                "body of {total} bytes, not {body_len}"
            )));
        }
        Ok(Some(Layout {
            version,
            body_len,
            chunk_size: size as u32,
            chunks: n,
        }))
    }
}

#[async_trait]
impl SharedTier for RedisTier {
    /// The meta, then in one round trip whether every chunk of its version
    /// exists and the first chunk: two round trips before the first byte.
    ///
    /// # Cancel safety
    ///
    /// Cancel safe; dropped, it counts as a breaker failure.
    async fn get(&self, hash: u128) -> Result<Option<SharedHit>, SharedError> {
        let inner = &self.inner;
        let Some(value) = inner.get_bytes(SharedOp::Get, inner.meta_key(hash)).await? else {
            return Ok(None);
        };
        let Some((layout, internal, header)) = Layout::decode(&value) else {
            tracing::warn!(target: "edge_cdn_store", hash = %format!("{hash:032x}"), "undecodable shared meta; a miss");
            return Ok(None);
        };
        let meta = SharedMeta {
            internal,
            header,
            body_len: layout.body_len,
        };
        if layout.chunks == 0 {
            let body = Box::new(BytesBody::new(Bytes::new(), 1));
            return Ok(Some(SharedHit { meta, body }));
        }
        let keys = inner.chunk_keys(hash, &layout);
        let (present, first): (u64, Option<Bytes>) = inner
            .call(SharedOp::Get, |mut conn| async move {
                redis::pipe()
                    .cmd("EXISTS")
                    .arg(&keys)
                    .cmd("GET")
                    .arg(&keys[0])
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let first = first.filter(|chunk| chunk.len() == layout.chunk_len(0));
        if present != u64::from(layout.chunks) || first.is_none() {
            tracing::debug!(target: "edge_cdn_store", hash = %format!("{hash:032x}"), present, chunks = layout.chunks, "shared object incomplete; a miss");
            return Ok(None);
        }
        let body = RedisBody {
            inner: inner.clone(),
            hash,
            layout,
            next: 0,
            first,
            ahead: None,
        };
        Ok(Some(SharedHit {
            meta,
            body: Box::new(body),
        }))
    }

    /// Chunks first, each as it fills, then the meta with `SET … GET`;
    /// the version it replaced, if any, has its chunks expire after
    /// `REPLACED_GRACE` (30 s). At most one chunk is held in memory.
    ///
    /// # Cancel safety
    ///
    /// Dropped before the meta is written, nothing is published and the
    /// chunks written expire with their TTL.
    async fn put(
        &self,
        hash: u128,
        meta: SharedMeta,
        ttl: Duration,
        mut body: Box<dyn SharedBody>,
    ) -> Result<(), SharedError> {
        let inner = &self.inner;
        let deadline = Instant::now() + ttl;
        let version = new_version();
        let Some(layout) = self
            .write_chunks(hash, version, meta.body_len, &mut *body, deadline)
            .await?
        else {
            return Ok(());
        };
        let Some(ms) = px(deadline, Duration::ZERO) else {
            return Ok(());
        };
        let value = layout.encode(&meta.internal, &meta.header);
        let key = inner.meta_key(hash);
        let replaced: Option<Bytes> = inner
            .call(SharedOp::Put, |mut conn| async move {
                redis::cmd("SET")
                    .arg(&key)
                    .arg(value)
                    .arg("PX")
                    .arg(ms)
                    .arg("GET")
                    .query_async(&mut conn)
                    .await
            })
            .await?;
        let old = replaced.as_ref().and_then(Layout::decode);
        if let Some((old, _, _)) = old.filter(|(old, _, _)| old.version != version) {
            let keys = inner.chunk_keys(hash, &old);
            if !keys.is_empty() {
                let grace = REPLACED_GRACE.as_millis() as u64;
                // Best effort: they expire with their own TTL otherwise.
                let _ = inner
                    .call(SharedOp::Put, |mut conn| async move {
                        let mut pipe = redis::pipe();
                        for key in &keys {
                            pipe.cmd("PEXPIRE").arg(key).arg(grace).ignore();
                        }
                        pipe.exec_async(&mut conn).await
                    })
                    .await;
            }
        }
        Ok(())
    }

    /// `GETDEL` of the meta, then `DEL` of that version's chunks.
    ///
    /// # Cancel safety
    ///
    /// Dropped after the meta is gone, the object is deleted and its
    /// chunks expire with their TTL.
    async fn delete(&self, hash: u128) -> Result<(), SharedError> {
        let inner = &self.inner;
        let key = inner.meta_key(hash);
        let old: Option<Bytes> = inner
            .call(SharedOp::Delete, |mut conn| async move {
                redis::cmd("GETDEL").arg(&key).query_async(&mut conn).await
            })
            .await?;
        if let Some((layout, _, _)) = old.as_ref().and_then(Layout::decode) {
            let keys = inner.chunk_keys(hash, &layout);
            if !keys.is_empty() {
                inner
                    .call(SharedOp::Delete, |mut conn| async move {
                        redis::cmd("DEL").arg(&keys).exec_async(&mut conn).await
                    })
                    .await?;
            }
        }
        Ok(())
    }

    fn degraded(&self) -> Option<String> {
        self.inner
            .breaker
            .degraded()
            .map(|why| format!("shared tier (redis): {why}"))
    }
}

/// A body streamed from Redis, one chunk per round trip, the next chunk
/// fetched while the current one is sent on.
struct RedisBody {
    inner: Arc<Inner>,
    hash: u128,
    layout: Layout,
    next: u32,
    /// The first chunk, fetched with the lookup.
    first: Option<Bytes>,
    /// The fetch of chunk `next`, once started.
    ahead: Option<JoinHandle<Result<Option<Bytes>, SharedError>>>,
}

impl RedisBody {
    fn fetch(&self, n: u32) -> JoinHandle<Result<Option<Bytes>, SharedError>> {
        let inner = self.inner.clone();
        let key = inner.chunk_key(self.hash, self.layout.version, n);
        tokio::spawn(async move { inner.get_bytes(SharedOp::Read, key).await })
    }
}

#[async_trait]
impl SharedBody for RedisBody {
    /// # Cancel safety
    ///
    /// Cancel safe: a fetch in flight is kept for the next call. A body
    /// dropped with a fetch in flight lets it finish (within the timeout)
    /// and drops its chunk.
    async fn next_chunk(&mut self) -> Result<Option<Bytes>, SharedError> {
        let n = self.next;
        if n >= self.layout.chunks {
            return Ok(None);
        }
        let chunk = match self.first.take() {
            Some(first) => first,
            None => {
                if self.ahead.is_none() {
                    self.ahead = Some(self.fetch(n));
                }
                let fetched = match self.ahead.as_mut() {
                    Some(fetch) => fetch.await,
                    None => unreachable!("started above"),
                };
                self.ahead = None;
                fetched
                    .map_err(|e| SharedError::Unavailable(e.to_string()))??
                    .ok_or_else(|| {
                        SharedError::Incomplete(format!(
                            "chunk {n} of {} is gone",
                            self.layout.chunks
                        ))
                    })?
            }
        };
        let want = self.layout.chunk_len(n);
        if chunk.len() != want {
            return Err(SharedError::Incomplete(format!(
                "chunk {n} has {} bytes, not {want}",
                chunk.len()
            )));
        }
        self.next = n + 1;
        if self.next < self.layout.chunks {
            self.ahead = Some(self.fetch(self.next));
        }
        Ok(Some(chunk))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn meta_round_trips_and_rejects_what_it_did_not_write() {
        let layout = Layout {
            version: 7,
            body_len: 600,
            chunk_size: 256,
            chunks: 3,
        };
        let value = Bytes::from(layout.encode(b"internal", b"header"));
        let (decoded, internal, header) = Layout::decode(&value).unwrap();
        assert_eq!(decoded, layout);
        assert_eq!(
            (&internal[..], &header[..]),
            (&b"internal"[..], &b"header"[..])
        );
        assert_eq!(
            [
                layout.chunk_len(0),
                layout.chunk_len(2),
                layout.chunk_len(3)
            ],
            [256, 88, 0]
        );

        assert!(Layout::decode(&value.slice(..value.len() - 1)).is_none());
        let wrong_count = Layout {
            chunks: 2,
            ..layout
        };
        assert!(Layout::decode(&Bytes::from(wrong_count.encode(b"", b""))).is_none());
        assert!(Layout::decode(&Bytes::from_static(b"junk")).is_none());
    }

    #[test]
    fn an_objects_keys_share_one_hash_tag() {
        let hash = 0xab_u128 << 120 | 1;
        let tag = "{ab000000000000000000000000000001}";
        assert_eq!(meta_key("p:", hash), format!("p:{tag}:m"));
        assert_eq!(
            chunk_key("p:", hash, 0x1f, 3),
            format!("p:{tag}:000000000000001f:3")
        );
    }

    #[test]
    fn config_problems_name_their_fields() {
        let config = RedisConfig::default();
        assert!(config.problems().is_empty());
        let bad = RedisConfig {
            chunk_size: ByteSize::b(0),
            key_prefix: "{x}".into(),
            servers: RedisServers::Cluster(Vec::new()),
            ..RedisConfig::default()
        };
        let fields: Vec<_> = bad.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, ["servers", "chunk_size", "key_prefix"]);
    }

    #[test]
    fn versions_differ() {
        assert_ne!(new_version(), new_version());
    }
}
