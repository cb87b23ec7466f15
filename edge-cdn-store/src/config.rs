//! The store's configuration: one serde struct, every field defaulted.

use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use serde::Deserialize;

/// How the store is sized and where it keeps its files.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct StoreConfig {
    /// The disk tier's directory. Default `cache`.
    pub dir: PathBuf,
    /// Bytes the disk tier may hold (bodies and metadata), the segment
    /// ring included: the rest is the limit of the store's eviction
    /// manager ([`TieredStore::eviction`](crate::TieredStore::eviction)),
    /// which evicts the least used objects kept in files beyond it.
    /// Default `1GiB`.
    pub disk_bytes: ByteSize,
    /// Bytes of `disk_bytes` given to the segment ring, where small objects
    /// are appended to 8 MiB regions of one file instead of two files each,
    /// and space is reclaimed a region at a time, oldest first (objects
    /// read since they were stored are copied forward). Whole regions; at least
    /// three, or `0` for no ring. Default: a quarter of `disk_bytes`, or no
    /// ring if that is under three regions.
    pub segment_bytes: Option<ByteSize>,
    /// Objects whose stored entry (body, headers and key) is at most this
    /// size go to the segment ring; larger ones, to files. At most
    /// `256KiB`. Default `128KiB`.
    pub segment_max_object: ByteSize,
    /// Bytes of bodies the memory tier may hold. Default `64MiB`.
    pub memory_bytes: ByteSize,
    /// Objects up to this size are kept in memory when written and
    /// promoted to memory when read from disk. Default `256KiB`.
    pub memory_max_object: ByteSize,
    /// Larger objects are not stored. Default `64MiB`, at most `4GiB`.
    pub max_object_size: ByteSize,
    /// Objects being written to disk at once, by misses and shared-tier
    /// fills alike; an object beyond it is served but not stored. Default 64.
    pub write_concurrency: usize,
    /// Bodies up to this size are checked whole before a lookup reports a
    /// hit, so their corruption is a miss; larger ones are checked block by
    /// block as they are sent. Default `1MiB`.
    pub verify_whole_below: ByteSize,
    /// Percent of the store's filesystem to keep free: under it, new
    /// objects are served but not stored, and readiness reports low
    /// space, until room returns. At most 99; 0 turns the floor off (a
    /// full disk then fails writes, which are abandoned the same way).
    /// Default 5.
    pub min_free_percent: u8,
    /// `fsync` files before they are committed: survives power loss, not
    /// just process death, at the cost of write latency. Default `false`.
    pub fsync: bool,
    /// How long a lookup waits for the shared tier before going to the
    /// origin. Default `50ms`.
    #[serde(with = "humantime_serde")]
    pub shared_timeout: Duration,
    /// When objects are written to the shared tier. Default `write-through`.
    pub shared_writes: crate::shared::SharedWrites,
    /// Objects up to this size are written to the shared tier, streamed.
    /// Default `8MiB`.
    pub shared_max_object: ByteSize,
    /// Objects being written to the shared tier at once, in the background;
    /// an object beyond it is not shared. Each holds at most one chunk in
    /// memory. Default 16.
    pub shared_write_concurrency: usize,
    /// Response fields whose values are an object's surrogate tags, for
    /// purging by tag: lists split on commas and whitespace. Default
    /// `["surrogate-key", "cache-tag"]`.
    pub tag_headers: Vec<String>,
    /// How disk hits read ring entries and body blocks: `auto` (io_uring
    /// where the kernel has it, else the blocking pool), `io-uring` (fail
    /// to open without it) or `blocking-pool`. Default `auto`.
    pub io_engine: crate::io::IoEngineChoice,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            dir: PathBuf::from("cache"),
            disk_bytes: ByteSize::gib(1),
            segment_bytes: None,
            segment_max_object: ByteSize::kib(128),
            memory_bytes: ByteSize::mib(64),
            memory_max_object: ByteSize::kib(256),
            max_object_size: ByteSize::mib(64),
            write_concurrency: 64,
            verify_whole_below: ByteSize::mib(1),
            min_free_percent: 5,
            fsync: false,
            shared_timeout: Duration::from_millis(50),
            shared_writes: crate::shared::SharedWrites::WriteThrough,
            shared_max_object: ByteSize::mib(8),
            shared_write_concurrency: 16,
            tag_headers: vec!["surrogate-key".into(), "cache-tag".into()],
            io_engine: crate::io::IoEngineChoice::Auto,
        }
    }
}

/// Fewest regions a segment ring has: the head, the one being freed and
/// one between.
const MIN_REGIONS: u64 = 3;

impl StoreConfig {
    /// Regions in the segment ring (0: no ring), from `segment_bytes`.
    pub fn segment_regions(&self) -> usize {
        let region = crate::segments::REGION_BYTES;
        let regions = match self.segment_bytes {
            Some(bytes) => bytes.as_u64() / region,
            None => self.disk_bytes.as_u64() / 4 / region,
        };
        if regions < MIN_REGIONS {
            0
        } else {
            usize::try_from(regions).unwrap_or(0)
        }
    }

    /// Bytes the segment ring takes.
    pub fn ring_bytes(&self) -> u64 {
        self.segment_regions() as u64 * crate::segments::REGION_BYTES
    }

    /// Problems with the values, each naming its field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.disk_bytes.as_u64() == 0 {
            out.push(("disk_bytes", "must be greater than 0".into()));
        }
        if self.max_object_size > ByteSize::gib(4) {
            out.push(("max_object_size", "may be at most 4GiB".into()));
        } else if self.max_object_size > self.disk_bytes {
            out.push((
                "max_object_size",
                format!("is larger than disk_bytes ({})", self.disk_bytes),
            ));
        }
        if let Some(bytes) = self.segment_bytes.filter(|b| b.as_u64() != 0) {
            let least = crate::segments::REGION_BYTES * MIN_REGIONS;
            if bytes.as_u64() < least {
                out.push((
                    "segment_bytes",
                    format!(
                        "is {bytes}; at least {} (three regions) or 0",
                        ByteSize::b(least)
                    ),
                ));
            } else if bytes >= self.disk_bytes {
                out.push((
                    "segment_bytes",
                    format!("must be less than disk_bytes ({})", self.disk_bytes),
                ));
            }
        }
        if self.segment_max_object > ByteSize::kib(256) {
            out.push(("segment_max_object", "may be at most 256KiB".into()));
        }
        if self.memory_max_object > self.memory_bytes {
            out.push((
                "memory_max_object",
                format!("is larger than memory_bytes ({})", self.memory_bytes),
            ));
        }
        if let Some(bad) = self
            .tag_headers
            .iter()
            .find(|f| http::HeaderName::from_bytes(f.as_bytes()).is_err())
        {
            out.push(("tag_headers", format!("{bad:?} is not a header field name")));
        }
        if self.min_free_percent > 99 {
            out.push((
                "min_free_percent",
                format!(
                    "is {}; at most 99 (a floor of 100% would never store)",
                    self.min_free_percent
                ),
            ));
        }
        if self.write_concurrency == 0 {
            out.push(("write_concurrency", "must be at least 1".into()));
        }
        if self.shared_write_concurrency == 0 {
            out.push(("shared_write_concurrency", "must be at least 1".into()));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn min_free_percent_is_at_most_99() {
        let with = |min_free_percent| StoreConfig {
            min_free_percent,
            ..StoreConfig::default()
        };
        assert!(with(0).problems().is_empty());
        assert!(with(99).problems().is_empty());
        let problems = with(100).problems();
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].0, "min_free_percent");
    }

    #[test]
    fn the_segment_ring_is_whole_regions_within_disk_bytes() {
        let with = |disk: u64, segment: Option<u64>| StoreConfig {
            disk_bytes: ByteSize::mib(disk),
            segment_bytes: segment.map(ByteSize::mib),
            ..StoreConfig::default()
        };
        assert_eq!(
            with(1024, None).segment_regions(),
            32,
            "a quarter by default"
        );
        assert_eq!(with(64, None).segment_regions(), 0, "too small for three");
        assert_eq!(with(1024, Some(0)).segment_regions(), 0);
        assert_eq!(with(1024, Some(30)).segment_regions(), 3);
        assert!(with(1024, Some(30)).problems().is_empty());
        assert_eq!(with(1024, Some(16)).problems()[0].0, "segment_bytes");
        assert_eq!(with(64, Some(64)).problems()[0].0, "segment_bytes");
        let big = StoreConfig {
            segment_max_object: ByteSize::kib(257),
            ..StoreConfig::default()
        };
        assert_eq!(big.problems()[0].0, "segment_max_object");
    }
}
