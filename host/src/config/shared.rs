//! `[shared]`: the shared tier on Redis behind every node's local store,
//! and the cluster-wide purge bus on the same Redis. Absent, a node has no
//! shared tier and its purges stay local.

use std::time::Duration;

use bytesize::ByteSize;
use edge_cdn_store::{RedisConfig, RedisServers, SharedWrites};
use serde::Deserialize;

/// The longest purge log kept in Redis (`purge_log`).
const MAX_PURGE_LOG: u64 = 10_000_000;

/// The shared tier and the purge bus.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Shared {
    /// One standalone Redis, as a URL (`redis://[user:password@]host:port[/db]`).
    /// Give this or `cluster`.
    pub redis: Option<String>,
    /// The seed nodes of a Redis Cluster, as URLs. Give this or `redis`.
    pub cluster: Option<Vec<String>>,
    /// Put before every key and the purge channel, to share a Redis with
    /// others (or keep two stavka fleets apart). Default `stavka:`.
    pub key_prefix: String,
    /// Each Redis round trip fails after this long. Default `250ms`.
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// How long a lookup waits for the shared tier before going to the
    /// origin (`store.shared_timeout`). Default `50ms`.
    #[serde(with = "humantime_serde")]
    pub lookup_timeout: Duration,
    /// Objects up to this size are shared, streamed
    /// (`store.shared_max_object`). Default `8MiB`.
    pub max_object: ByteSize,
    /// `write-through` (every stored object) or `on-promotion` (objects read
    /// again locally) (`store.shared_writes`). Default `write-through`.
    pub writes: SharedWrites,
    /// Objects written to the shared tier at once
    /// (`store.shared_write_concurrency`). Default 16.
    pub write_concurrency: usize,
    /// Body chunk size: one key and one round trip each. Default `256KiB`.
    pub chunk_size: ByteSize,
    /// Consecutive failures that open the circuit breaker. Default 5.
    pub breaker_failures: u32,
    /// How long an open breaker answers at once before one probe. Default `5s`.
    #[serde(with = "humantime_serde")]
    pub breaker_cooldown: Duration,
    /// Send purges accepted here to every node, and apply theirs. Default
    /// `true`.
    pub purge: bool,
    /// About how many purges the Redis stream keeps for nodes catching up
    /// after a disconnection (`XADD ... MAXLEN ~`). Default 10000.
    pub purge_log: u64,
    /// This node's name on the purge bus (it ignores its own purges).
    /// Default: host name, process id and start time.
    pub node_id: Option<String>,
}

impl Default for Shared {
    fn default() -> Self {
        let redis = RedisConfig::default();
        let store = edge_cdn_store::StoreConfig::default();
        Shared {
            redis: None,
            cluster: None,
            key_prefix: redis.key_prefix,
            timeout: redis.timeout,
            lookup_timeout: store.shared_timeout,
            max_object: store.shared_max_object,
            writes: store.shared_writes,
            write_concurrency: store.shared_write_concurrency,
            chunk_size: redis.chunk_size,
            breaker_failures: redis.breaker_failures,
            breaker_cooldown: redis.breaker_cooldown,
            purge: true,
            purge_log: 10_000,
            node_id: None,
        }
    }
}

impl Shared {
    /// The servers, once validated.
    pub fn servers(&self) -> RedisServers {
        match (&self.redis, &self.cluster) {
            (_, Some(nodes)) => RedisServers::Cluster(nodes.clone()),
            (Some(url), None) => RedisServers::Standalone(url.clone()),
            (None, None) => RedisConfig::default().servers,
        }
    }

    /// The servers for logs: URLs without their user and password.
    pub fn servers_for_log(&self) -> String {
        let hide = |url: &String| match (url.find("://"), url.rfind('@')) {
            (Some(scheme), Some(at)) if at > scheme => {
                format!("{}***{}", &url[..scheme + 3], &url[at..])
            }
            _ => url.clone(),
        };
        match self.servers() {
            RedisServers::Standalone(url) => hide(&url),
            RedisServers::Cluster(nodes) => nodes.iter().map(hide).collect::<Vec<_>>().join(", "),
        }
    }

    /// The tier's own configuration.
    pub fn redis_config(&self) -> RedisConfig {
        RedisConfig {
            servers: self.servers(),
            key_prefix: self.key_prefix.clone(),
            chunk_size: self.chunk_size,
            timeout: self.timeout,
            breaker_failures: self.breaker_failures,
            breaker_cooldown: self.breaker_cooldown,
        }
    }

    /// `store` with this section's sharing settings.
    pub fn apply_to(&self, store: &mut edge_cdn_store::StoreConfig) {
        store.shared_timeout = self.lookup_timeout;
        store.shared_max_object = self.max_object;
        store.shared_writes = self.writes;
        store.shared_write_concurrency = self.write_concurrency;
    }

    /// Problems with the values, each naming its field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        match (&self.redis, &self.cluster) {
            (None, None) => out.push(("redis", "give redis or cluster".into())),
            (Some(_), Some(_)) => out.push(("cluster", "give redis or cluster, not both".into())),
            _ => {}
        }
        let urls = (self.redis.iter().map(|u| ("redis", u)))
            .chain(self.cluster.iter().flatten().map(|u| ("cluster", u)));
        for (field, url) in urls {
            if let Err(e) = redis::Client::open(url.as_str()) {
                out.push((field, format!("{url:?}: {e}")));
            }
        }
        // The tier's own checks, under this section's names.
        for (field, problem) in self.redis_config().problems() {
            let field = if field == "servers" { "cluster" } else { field };
            out.push((field, problem));
        }
        if self.lookup_timeout.is_zero() {
            out.push(("lookup_timeout", "must be greater than 0".into()));
        }
        if self.write_concurrency == 0 {
            out.push(("write_concurrency", "must be at least 1".into()));
        }
        if self.purge_log == 0 || self.purge_log > MAX_PURGE_LOG {
            out.push((
                "purge_log",
                format!("must be between 1 and {MAX_PURGE_LOG}"),
            ));
        }
        if self
            .node_id
            .as_deref()
            .is_some_and(|id| id.is_empty() || !id.chars().all(crate::node::is_quotable))
        {
            out.push((
                "node_id",
                "must be non-empty visible ASCII, without spaces, quotes or backslashes".into(),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Shared {
        toml::from_str(text).unwrap()
    }

    #[test]
    fn one_server_or_a_cluster() {
        let one = parse("redis = \"redis://127.0.0.1:7000\"");
        assert!(one.problems().is_empty(), "{:?}", one.problems());
        assert_eq!(
            one.servers(),
            RedisServers::Standalone("redis://127.0.0.1:7000".into())
        );
        let many = parse("cluster = [\"redis://127.0.0.1:7000\", \"redis://127.0.0.1:7001\"]");
        assert!(many.problems().is_empty());
        assert!(matches!(many.servers(), RedisServers::Cluster(n) if n.len() == 2));
        let neither = parse("timeout = \"1s\"");
        assert_eq!(neither.problems()[0].0, "redis");
        let both = parse("redis = \"redis://a:1\"\ncluster = [\"redis://b:1\"]");
        assert_eq!(both.problems()[0].0, "cluster");
    }

    #[test]
    fn logs_never_show_credentials() {
        let one = parse("redis = \"redis://user:secret@10.0.0.1:6379/2\"");
        assert_eq!(one.servers_for_log(), "redis://***@10.0.0.1:6379/2");
        let many = parse("cluster = [\"redis://:pw@a:1\", \"redis://b:2\"]");
        assert_eq!(many.servers_for_log(), "redis://***@a:1, redis://b:2");
    }

    #[test]
    fn problems_name_the_field() {
        let bad = parse(
            "redis = \"nope://x\"\ntimeout = \"0s\"\nchunk_size = \"0B\"\npurge_log = 0\nwrites = \"on-promotion\"",
        );
        let fields: Vec<_> = bad.problems().into_iter().map(|(f, _)| f).collect();
        for field in ["redis", "timeout", "chunk_size", "purge_log"] {
            assert!(fields.contains(&field), "{field} in {fields:?}");
        }
        assert_eq!(bad.writes, SharedWrites::OnPromotion);
    }

    /// RFC 8586 §2: the node name goes into `CDN-Loop` as a quoted string.
    #[test]
    fn a_node_id_that_cannot_be_quoted_is_refused() {
        let ok = "redis = \"redis://a:1\"\nnode_id = ";
        assert!(parse(&format!("{ok}\"edge-1.fra\"")).problems().is_empty());
        for bad in ["\"\"", "\"a b\"", "\"a\\\"b\"", "\"a\\\\b\"", "\"é\""] {
            let problems = parse(&format!("{ok}{bad}")).problems();
            assert_eq!(problems.len(), 1, "{bad}: {problems:?}");
            assert_eq!(problems[0].0, "node_id", "{bad}");
        }
    }
}
