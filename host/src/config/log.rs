//! `[log]`: log output.

use serde::Deserialize;

/// Log output.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Log {
    /// `text` or `json`. The level comes from `RUST_LOG` (default `info`).
    pub format: LogFormat,
    /// One line per request, target `stavka::access`. Default `true`.
    pub access_log: bool,
}

impl Default for Log {
    fn default() -> Self {
        Log {
            format: LogFormat::Text,
            access_log: true,
        }
    }
}

/// How log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}
