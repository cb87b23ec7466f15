//! `[slice]`: large objects cached as fixed-size blocks, so a range request
//! fetches only the blocks it covers (and a bounded read-ahead), never the
//! whole object.

use bytesize::ByteSize;
use serde::Deserialize;

/// The smallest block: below it the per-block bookkeeping (a meta file, an
/// index entry, an origin round trip per run) outweighs the bytes.
pub const MIN_BLOCK: ByteSize = ByteSize::kib(64);
/// The largest block: a client waits for up to one block minus one byte
/// before its first byte arrives.
pub const MAX_BLOCK: ByteSize = ByteSize::mib(64);
/// The most blocks read ahead of a range.
pub const MAX_READ_AHEAD: u32 = 64;

/// Sliced caching of large objects.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Slice {
    /// Whether sites slice at all (a site may still say `slice = false`).
    /// Default `false`.
    pub enabled: bool,
    /// Responses larger than this, fetched whole, are not stored whole:
    /// the next request for them is served from blocks. Range requests for
    /// objects not held whole are always served from blocks. Default
    /// `8MiB`.
    pub threshold: ByteSize,
    /// The size of one block, the unit fetched, stored and evicted.
    /// Default `1MiB`.
    pub block_size: ByteSize,
    /// Blocks fetched beyond the end of a range, so the next sequential
    /// range is a hit. Default 4.
    pub read_ahead: u32,
}

impl Default for Slice {
    fn default() -> Self {
        Slice {
            enabled: false,
            threshold: ByteSize::mib(8),
            block_size: ByteSize::mib(1),
            read_ahead: 4,
        }
    }
}

impl Slice {
    /// Problems with the values, each naming its field.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(MIN_BLOCK..=MAX_BLOCK).contains(&self.block_size) {
            out.push((
                "block_size",
                format!("{} is outside {MIN_BLOCK}..={MAX_BLOCK}", self.block_size),
            ));
        }
        if self.read_ahead > MAX_READ_AHEAD {
            out.push((
                "read_ahead",
                format!("{} blocks is more than {MAX_READ_AHEAD}", self.read_ahead),
            ));
        }
        if self.threshold < self.block_size {
            out.push((
                "threshold",
                "must be at least block_size: a smaller object is one block".into(),
            ));
        }
        out
    }
}
