//! The cluster-wide purge bus: a purge accepted by any node reaches every
//! node's local store, over the Redis of the shared tier.
//!
//! A node that accepts a purge applies it locally first (which also deletes
//! a hard-purged object from the shared tier), then appends it to a Redis
//! stream (`XADD {key_prefix}purge MAXLEN ~ purge_log`) and rings a bell on
//! a channel (`PUBLISH {key_prefix}purge:bell`). Every node subscribes to
//! the bell and, on each ring, reads the stream from the last entry it
//! applied (`XRANGE (last +`), skips its own entries (they carry its node
//! id) and applies the others exactly as a local purge, without sending
//! them again. The stream is the only record: the bell says only "read",
//! so two nodes publishing at once can never make a third apply one purge
//! and skip another because their bells arrived out of order. A node also
//! reads the stream every [`POLL`] and right after each (re)subscription,
//! so one that was disconnected catches up from where it stopped as long
//! as the stream still holds that far back.
//!
//! The last applied id lives in memory. A node starts from its start time
//! (stream ids are milliseconds): purges accepted elsewhere while it was
//! down are not applied to what it recovered from disk.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures_util::StreamExt;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use redis::{FromRedisValue, RedisResult};
use tokio::sync::OnceCell;

use super::store::{CacheStore, PurgeMode, PurgeSelector};
use crate::config::Shared;
use edge_cdn_store::RedisServers;

/// How often the stream is read without a bell.
const POLL: Duration = Duration::from_secs(2);
/// Entries read from the stream per round trip.
const BATCH: usize = 256;
/// The pause between attempts to subscribe while Redis is unreachable.
const RETRY: Duration = Duration::from_millis(250);

/// The process's Redis runtime: one worker thread that keeps the Redis
/// connections and the bus's subscriber running for the life of the
/// process (the start-up runtime and pingora's come and go).
pub fn runtime() -> &'static tokio::runtime::Runtime {
    static RUNTIME: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RUNTIME.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("stavka-redis")
            .enable_all()
            .build()
            .expect("the Redis runtime starts")
    })
}

/// One purge as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurgeMessage {
    /// The node that accepted it.
    pub node: String,
    /// What it selects, in cache-key terms.
    pub selector: PurgeSelector,
    /// Hard or soft.
    pub mode: PurgeMode,
}

impl PurgeMessage {
    fn fields(&self) -> Vec<(&'static str, Vec<u8>)> {
        let (kind, value) = match &self.selector {
            PurgeSelector::Url(primary) => ("url", primary.clone()),
            PurgeSelector::Prefix(prefix) => ("prefix", prefix.clone()),
            PurgeSelector::Tag(tag) => ("tag", tag.as_bytes().to_vec()),
        };
        let mode = match self.mode {
            PurgeMode::Hard => "hard",
            PurgeMode::Soft => "soft",
        };
        vec![
            ("node", self.node.as_bytes().to_vec()),
            ("kind", kind.as_bytes().to_vec()),
            ("mode", mode.as_bytes().to_vec()),
            ("value", value),
        ]
    }

    /// A stream entry's flat field list back into a message.
    fn parse(flat: &[Vec<u8>]) -> Option<PurgeMessage> {
        let field = |name: &str| {
            flat.chunks_exact(2)
                .find(|kv| kv[0] == name.as_bytes())
                .map(|kv| kv[1].clone())
        };
        let node = String::from_utf8(field("node")?).ok()?;
        let value = field("value")?;
        let selector = match &field("kind")?[..] {
            b"url" => PurgeSelector::Url(value),
            b"prefix" => PurgeSelector::Prefix(value),
            b"tag" => PurgeSelector::Tag(String::from_utf8(value).ok()?),
            _ => return None,
        };
        let mode = match &field("mode")?[..] {
            b"hard" => PurgeMode::Hard,
            b"soft" => PurgeMode::Soft,
            _ => return None,
        };
        Some(PurgeMessage {
            node,
            selector,
            mode,
        })
    }
}

/// The bus's counters: `stavka_purge_bus_total{event}` and whether the
/// subscription is up.
struct BusMetrics {
    published: prometheus::IntCounter,
    publish_failed: prometheus::IntCounter,
    received: prometheus::IntCounter,
    applied: prometheus::IntCounter,
    malformed: prometheus::IntCounter,
    objects: prometheus::IntCounter,
    connected: prometheus::IntGauge,
}

impl BusMetrics {
    fn new(registry: &prometheus::Registry) -> prometheus::Result<BusMetrics> {
        let family = prometheus::IntCounterVec::new(
            prometheus::Opts::new(
                "stavka_purge_bus_total",
                "Cluster-wide purges: published (accepted here and sent), publish-failed (accepted here, Redis unreachable: applied here only), received (another node's, read from the stream), applied (received and applied to this node's store), malformed.",
            ),
            &["event"],
        )?;
        let objects = prometheus::IntCounter::new(
            "stavka_purge_bus_objects_total",
            "Objects this node removed or marked stale because of other nodes' purges.",
        )?;
        let connected = prometheus::IntGauge::new(
            "stavka_purge_bus_connected",
            "1 while this node is subscribed to the purge bus, 0 while it is not (it catches up when it is again).",
        )?;
        registry.register(Box::new(family.clone()))?;
        registry.register(Box::new(objects.clone()))?;
        registry.register(Box::new(connected.clone()))?;
        Ok(BusMetrics {
            published: family.with_label_values(&["published"]),
            publish_failed: family.with_label_values(&["publish-failed"]),
            received: family.with_label_values(&["received"]),
            applied: family.with_label_values(&["applied"]),
            malformed: family.with_label_values(&["malformed"]),
            objects,
            connected,
        })
    }
}

/// Commands (not the subscription) on a standalone server or a cluster.
enum Commands {
    Standalone(ConnectionManager),
    Cluster {
        client: Box<ClusterClient>,
        conn: OnceCell<ClusterConnection>,
    },
}

impl Commands {
    async fn query<T: FromRedisValue>(&self, cmd: &redis::Cmd) -> RedisResult<T> {
        match self {
            Commands::Standalone(manager) => cmd.query_async(&mut manager.clone()).await,
            Commands::Cluster { client, conn } => {
                let conn = conn
                    .get_or_try_init(|| client.get_async_connection())
                    .await?;
                cmd.query_async(&mut conn.clone()).await
            }
        }
    }
}

/// The purge bus of one node.
pub struct PurgeBus {
    node: String,
    stream: String,
    channel: String,
    max_len: u64,
    timeout: Duration,
    commands: Commands,
    /// Where the subscription connects: the server, or each cluster seed in
    /// turn (a cluster forwards every `PUBLISH` to every node).
    subscribe_to: Vec<redis::Client>,
    store: &'static CacheStore,
    /// The id of the last stream entry read.
    last: Mutex<String>,
    connected: AtomicBool,
    metrics: BusMetrics,
}

impl PurgeBus {
    /// Start the bus for `store`: subscribes in the background on the Redis
    /// runtime, retrying while Redis is down (a node starts without it).
    pub fn start(
        shared: &Shared,
        store: &'static CacheStore,
        registry: &prometheus::Registry,
    ) -> anyhow::Result<Arc<PurgeBus>> {
        let _entered = runtime().enter();
        let (commands, urls) = match shared.servers() {
            RedisServers::Standalone(url) => {
                let client = redis::Client::open(url.as_str())?;
                let manager = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(shared.timeout))
                    .set_response_timeout(Some(shared.timeout))
                    .set_number_of_retries(1);
                (
                    Commands::Standalone(ConnectionManager::new_lazy_with_config(client, manager)?),
                    vec![url],
                )
            }
            RedisServers::Cluster(nodes) => {
                let client =
                    redis::cluster::ClusterClientBuilder::new(nodes.iter().map(String::as_str))
                        .connection_timeout(shared.timeout)
                        .response_timeout(shared.timeout)
                        .build()?;
                (
                    Commands::Cluster {
                        client: Box::new(client),
                        conn: OnceCell::new(),
                    },
                    nodes,
                )
            }
        };
        let subscribe_to = urls
            .iter()
            .map(|u| redis::Client::open(u.as_str()))
            .collect::<RedisResult<Vec<_>>>()?;
        let started = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap_or_default()
            .as_millis();
        let bus = Arc::new(PurgeBus {
            node: crate::node::init(shared.node_id.as_deref()).to_owned(),
            stream: format!("{}purge", shared.key_prefix),
            channel: format!("{}purge:bell", shared.key_prefix),
            max_len: shared.purge_log,
            timeout: shared.timeout,
            commands,
            subscribe_to,
            store,
            last: Mutex::new(format!("{started}-0")),
            connected: AtomicBool::new(false),
            metrics: BusMetrics::new(registry)?,
        });
        tracing::info!(node = %bus.node, stream = %bus.stream, "purge bus starting");
        runtime().spawn(bus.clone().subscribe_forever());
        Ok(bus)
    }

    /// This node's id on the bus.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// Whether the subscription is up.
    pub fn connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed)
    }

    /// Send a purge this node accepted (and already applied) to every other
    /// node. `Err` says why it could not be: the other nodes then keep
    /// what they hold.
    pub async fn publish(&self, selector: PurgeSelector, mode: PurgeMode) -> Result<(), String> {
        let message = PurgeMessage {
            node: self.node.clone(),
            selector,
            mode,
        };
        let mut xadd = redis::cmd("XADD");
        xadd.arg(&self.stream)
            .arg("MAXLEN")
            .arg("~")
            .arg(self.max_len)
            .arg("*");
        for (field, value) in message.fields() {
            xadd.arg(field).arg(value);
        }
        let mut bell = redis::cmd("PUBLISH");
        bell.arg(&self.channel).arg(&self.node);
        let sent = tokio::time::timeout(self.timeout * 4, async {
            let _: String = self.commands.query(&xadd).await?;
            // The entry is in the stream: a lost bell only delays it to
            // the next poll.
            let _ = self.commands.query::<i64>(&bell).await;
            RedisResult::Ok(())
        })
        .await;
        let error = match sent {
            Ok(Ok(())) => {
                self.metrics.published.inc();
                return Ok(());
            }
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        self.metrics.publish_failed.inc();
        tracing::warn!(error = %error, "purge bus: the purge was applied here only");
        Err(error)
    }

    /// Subscribe, catch up, follow the bell; again after every loss.
    async fn subscribe_forever(self: Arc<Self>) {
        let mut warned = false;
        loop {
            match self.subscribe().await {
                Ok(mut pubsub) => {
                    warned = false;
                    self.set_connected(true);
                    tracing::info!(node = %self.node, "purge bus subscribed");
                    self.catch_up().await;
                    let mut bells = pubsub.on_message();
                    // A bell, or POLL without one: read. The end: lost.
                    while let Ok(Some(_)) | Err(_) = tokio::time::timeout(POLL, bells.next()).await
                    {
                        self.catch_up().await;
                    }
                    self.set_connected(false);
                    tracing::warn!(node = %self.node, "purge bus: subscription lost; resubscribing");
                }
                Err(e) => {
                    if !warned {
                        tracing::warn!(error = %e, "purge bus: cannot subscribe; retrying");
                        warned = true;
                    }
                }
            }
            tokio::time::sleep(RETRY).await;
        }
    }

    fn set_connected(&self, up: bool) {
        self.connected.store(up, Ordering::Relaxed);
        self.metrics.connected.set(i64::from(up));
    }

    async fn subscribe(&self) -> RedisResult<redis::aio::PubSub> {
        let mut last_error = None;
        for client in &self.subscribe_to {
            let attempt = tokio::time::timeout(self.timeout * 4, async {
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(&self.channel).await?;
                RedisResult::Ok(pubsub)
            })
            .await;
            match attempt {
                Ok(Ok(pubsub)) => return Ok(pubsub),
                Ok(Err(e)) => last_error = Some(e),
                Err(_) => {
                    last_error = Some(redis::RedisError::from((
                        redis::ErrorKind::Io,
                        "subscribing timed out",
                    )))
                }
            }
        }
        Err(last_error.unwrap_or_else(|| {
            redis::RedisError::from((redis::ErrorKind::Client, "no server to subscribe to"))
        }))
    }

    /// Read and apply every entry after the last one read.
    async fn catch_up(&self) {
        loop {
            let after = format!("({}", self.last.lock().unwrap_or_else(|e| e.into_inner()));
            let mut xrange = redis::cmd("XRANGE");
            xrange
                .arg(&self.stream)
                .arg(after)
                .arg("+")
                .arg("COUNT")
                .arg(BATCH);
            let read = tokio::time::timeout(
                self.timeout * 4,
                self.commands.query::<Vec<(String, Vec<Vec<u8>>)>>(&xrange),
            )
            .await;
            let entries = match read {
                Ok(Ok(entries)) => entries,
                Ok(Err(e)) => {
                    tracing::debug!(error = %e, "purge bus: cannot read the stream");
                    return;
                }
                Err(_) => return,
            };
            let full = entries.len() == BATCH;
            for (id, flat) in entries {
                self.apply(&flat).await;
                *self.last.lock().unwrap_or_else(|e| e.into_inner()) = id;
            }
            if !full {
                return;
            }
        }
    }

    async fn apply(&self, flat: &[Vec<u8>]) {
        let Some(message) = PurgeMessage::parse(flat) else {
            self.metrics.malformed.inc();
            return;
        };
        if message.node == self.node {
            return;
        }
        self.metrics.received.inc();
        let objects = match self.store.select_by(&message.selector).await {
            Ok(objects) => objects,
            Err(error) => {
                tracing::warn!(from = %message.node, selector = message.selector.kind(), %error, "purge from another node not applied: the store's catalog did not read");
                return;
            }
        };
        let matched = objects.len();
        let purged = self.store.purge(objects, message.mode).await;
        self.metrics.applied.inc();
        self.metrics.objects.inc_by(purged as u64);
        tracing::info!(
            from = %message.node,
            selector = message.selector.kind(),
            mode = ?message.mode,
            matched,
            purged,
            "purge from another node applied"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_survive_the_stream() {
        for (selector, mode) in [
            (
                PurgeSelector::Url(b"site\0host/a".to_vec()),
                PurgeMode::Hard,
            ),
            (PurgeSelector::Prefix(vec![0, 255, 1]), PurgeMode::Soft),
            (PurgeSelector::Tag("news".into()), PurgeMode::Hard),
        ] {
            let message = PurgeMessage {
                node: "n1".into(),
                selector,
                mode,
            };
            let flat: Vec<Vec<u8>> = message
                .fields()
                .into_iter()
                .flat_map(|(k, v)| [k.as_bytes().to_vec(), v])
                .collect();
            assert_eq!(PurgeMessage::parse(&flat), Some(message));
        }
        assert_eq!(PurgeMessage::parse(&[b"node".to_vec()]), None);
    }
}
